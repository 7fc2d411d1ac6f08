"""`TrainConfig` as the Train tab's form: an input per field, the values they show, and the config they give back.

Plain functions, no Gradio (the tab lays the inputs out from `field_kind` and `is_number_box`). Lists are
YAML text; a number that may be blank is a text box, because a cleared number box sends 0.
"""

import math
from dataclasses import Field, fields
from types import UnionType
from typing import get_args, get_origin

import yaml

from pipeline.errors import UserInputError
from train.config import MIXED_PRECISION, SCHEDULES, STRATEGIES, TrainConfig, config_values

FIELDS: tuple[Field, ...] = fields(TrainConfig)
FIELD_NAMES = [f.name for f in FIELDS]
CHOICES = {"schedule": SCHEDULES, "mixed_precision": MIXED_PRECISION, "strategy": STRATEGIES}


def field_kind(f: Field) -> tuple[type, bool]:
    """(bool, int, float, str, list or tuple; whether blank means None) for a config field."""
    args = get_args(f.type) if isinstance(f.type, UnionType) else (f.type,)
    kind = next(arg for arg in args if arg is not type(None))
    return get_origin(kind) or kind, type(None) in args


def is_number_box(f: Field) -> bool:
    """Numbers that cannot be blank get a number box; the others type into a text box, where blank is None
    (a cleared number box would send 0)."""
    kind, optional = field_kind(f)
    return kind in (int, float) and not optional and f.name not in CHOICES


def shown(f: Field, value):
    """A config value as its input shows it: lists as YAML (one line when short), blanks as ""."""
    if field_kind(f)[0] in (list, tuple):
        line = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
        return line if len(line) <= 60 else yaml.safe_dump(value, default_flow_style=False, sort_keys=False).strip()
    if value is None:
        return ""
    return value if is_number_box(f) or field_kind(f)[0] in (bool, str) else str(value)


def form_values(config: TrainConfig) -> list:
    """The form's values for `config`, in field order."""
    values = config_values(config)
    return [shown(f, values[f.name]) for f in FIELDS]


def list_value(f: Field, raw) -> list:
    if not isinstance(raw, str):
        return list(raw or [])
    try:
        value = yaml.safe_load(raw) if raw.strip() else []
    except yaml.YAMLError as error:
        raise UserInputError(f"{f.name} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(value, list):
        raise UserInputError(f"{f.name} {raw!r}: give a YAML list such as [a, b]")
    return value


def field_value(f: Field, raw):
    """One form value as the config takes it; a value the form cannot mean is a UserInputError."""
    kind, optional = field_kind(f)
    blank = raw is None or (isinstance(raw, str) and not raw.strip())
    if kind in (list, tuple):
        return list_value(f, raw)
    if kind is bool:
        return bool(raw)
    if kind is str:
        return None if optional and blank else str(raw or "").strip()
    if blank:
        if optional:
            return None
        raise UserInputError(f"{f.name} is blank: give a number")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise UserInputError(f"{f.name} {raw!r}: give a number") from None
    if kind is int and (not math.isfinite(number) or number != int(number)):
        raise UserInputError(f"{f.name} {raw!r}: give a whole number")
    return int(number) if kind is int else number


def config_from_form(values) -> TrainConfig:
    """The config the form's values (in field order) describe, validated."""
    return TrainConfig.from_dict({f.name: field_value(f, raw) for f, raw in zip(FIELDS, values)}, "the form")
