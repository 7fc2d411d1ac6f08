"""TrainConfig as the Train tab's form, without Gradio: the values it shows give the same config back, and a
value the form cannot mean is one clear line."""

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from studio.config_form import FIELD_NAMES, config_from_form, form_values
from train.config import load_preset

CAT = Path(__file__).resolve().parents[2] / "assets" / "examples" / "cat.jpg"


def form(config, **typed) -> list:
    """The form's values for `config`, with some inputs typed over, as a browser sends them."""
    values = dict(zip(FIELD_NAMES, form_values(config)))
    return [typed.get(name, values[name]) for name in FIELD_NAMES]


def test_a_preset_shown_in_the_form_gives_the_same_config_back():
    smoke = load_preset("cpu-smoke")
    shown = dict(zip(FIELD_NAMES, form_values(smoke)))

    assert config_from_form(form(smoke)) == smoke
    assert shown["alpha"] == "" and shown["out"] == ""  # blank: None (the rank; runs/<id>)
    assert shown["half_weights"] == "[1.0, 1.0]"  # a short list on one line, a long one an item a line
    assert shown["target_modules"].splitlines() == [f"- {module}" for module in smoke.target_modules]


def test_what_a_person_types_becomes_the_config():
    smoke = load_preset("cpu-smoke")
    typed = config_from_form(form(smoke, rank=4.0, alpha="2.5", learning_rate="3e-4", half_weights="[0.5, 1]",
                                  samples=f"- {{image: {CAT}, prompt: a cat}}", devices=" cpu ", out=""))

    assert typed == replace(smoke, rank=4, alpha=2.5, learning_rate=3e-4, half_weights=(0.5, 1.0),
                            samples=[{"image": str(CAT), "prompt": "a cat"}], devices="cpu")


BAD_FIELDS = [
    pytest.param({"half_weights": "[1, "}, "half_weights is not valid YAML", id="broken YAML"),
    pytest.param({"target_modules": "proj_out"}, "target_modules 'proj_out': give a YAML list", id="not a list"),
    pytest.param({"learning_rate": ""}, "learning_rate is blank: give a number", id="blank number"),
    pytest.param({"rank": 2.5}, "rank 2.5: give a whole number", id="fractional rank"),
    pytest.param({"alpha": "lots"}, "alpha 'lots': give a number", id="not a number"),
    pytest.param({"rank": 0}, "rank must be at least 1, got 0", id="rank 0 (the config's own check)"),
    pytest.param({"steps": "inf"}, "steps 'inf': give a whole number", id="infinite steps"),
    pytest.param({"learning_rate": "nan"}, "learning_rate must be a finite number, got nan", id="nan learning rate"),
    pytest.param({"half_weights": "[1, 2, 3]"}, "half_weights must be two numbers", id="three half weights"),
]


@pytest.mark.parametrize(("typed", "expected"), BAD_FIELDS)
def test_a_bad_field_is_one_line(typed, expected):
    with pytest.raises(UserInputError) as refused:
        config_from_form(form(load_preset("cpu-smoke"), **typed))
    assert expected in str(refused.value) and "\n" not in str(refused.value)
