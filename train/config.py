"""Every knob of a training run in one object: YAML file <-> dataclass <-> the Train tab's form.

Defaults follow the paper (section 4): LoRA rank 512 on the released target modules, AdamW at
1e-4, loss over both halves of the canvas. How the run is launched (processes, devices, DDP or
FSDP) is part of the same object, so a preset YAML file describes a whole run.

Validated once, where a config comes in: the form (`from_dict`), or a YAML file or preset once the
command line's flags are applied (`dsd train`). A run's stored config is read back as it was stored.
"""

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from pipeline.errors import UserInputError
from pipeline.images import check_panel_size, load_image
from pipeline.wheel.dataset import check_pairs_file

# The modules the released DSD LoRA adapts (primecai/dsd_model): every attention projection of the
# double-stream blocks, and q/k/v of the single-stream blocks.
RELEASED_TARGETS = (
    "transformer_blocks.*.attn.to_q", "transformer_blocks.*.attn.to_k", "transformer_blocks.*.attn.to_v",
    "transformer_blocks.*.attn.to_out.0", "transformer_blocks.*.attn.add_q_proj",
    "transformer_blocks.*.attn.add_k_proj", "transformer_blocks.*.attn.add_v_proj",
    "transformer_blocks.*.attn.to_add_out",
    "single_transformer_blocks.*.attn.to_q", "single_transformer_blocks.*.attn.to_k",
    "single_transformer_blocks.*.attn.to_v",
)
SCHEDULES = ("constant", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")
STRATEGIES = ("ddp", "fsdp")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRESETS = PROJECT_ROOT / "train" / "presets"


@dataclass
class TrainConfig:
    data: str = ""  # parquet in the primecai/dsd_data layout (dsd wheel export writes one)
    base: str | None = None  # FLUX.1-dev folder or hub id; None: the caller names it (the studio: its embedded base)
    out: str | None = None  # the run folder (checkpoints, samples, weights); None: <data folder>/runs/<run id>
    resolution: int = 512  # panel size; the canvas is twice as wide
    rank: int = 512
    alpha: float | None = None  # None: equal to the rank (scale 1)
    target_modules: list[str] = field(default_factory=lambda: list(RELEASED_TARGETS))
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "constant"
    steps: int = 100_000
    batch_size: int = 1
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    guidance: float = 3.5  # FLUX-dev's distilled guidance input, as at inference
    condition_dropout: float = 0.1  # all-zero condition: trains image guidance
    caption_dropout: float = 0.1  # empty caption: trains text guidance
    half_weights: tuple[float, float] = (1.0, 1.0)  # loss weight of the (reference, target) halves
    condition_mask: float = 0.0  # probability of blanking a random quadrant of the reference in the condition
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 10  # console lines; every step is recorded in the database
    cache: bool = True  # VAE latents and text embeddings computed once and kept on disk
    checkpoint_every: int = 1000  # steps; a stop or "save now" also checkpoints
    keep_checkpoints: int = 2
    sample_every: int = 1000  # steps; 0: only on "sample now" and at the end
    samples: list[dict] = field(default_factory=list)  # [{image, prompt}]; empty: the first training pairs
    sample_count: int = 2  # training pairs sampled when `samples` is empty
    sample_steps: int = 28
    # Launching (`dsd train launch`, the Train tab): one process per device.
    processes: int = 1
    devices: str = ""  # "": the first `processes` GPUs, or the CPU without GPUs; "cpu"; or GPU ids "0,1"
    strategy: str = "ddp"  # "fsdp" shards the 12B transformer across GPUs

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        """The file's settings, not yet validated: the command line applies its flags first."""
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"config {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as error:
            raise UserInputError(f"config {path} is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
        except yaml.YAMLError as error:
            raise UserInputError(f"config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
        return cls.from_dict(values, str(path), check=False)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config", check: bool = True) -> "TrainConfig":
        """Settings by name; unknown names are refused, and the values validated unless `check` is off
        (a preset before its flags, a run's stored config)."""
        if not isinstance(values, dict):
            raise UserInputError(f"{source}: expected settings by name (a YAML mapping), got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**typed_values(values, source))
        config.half_weights = tuple(config.half_weights)
        if check:
            config.validate()
        return config

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(config_values(self), sort_keys=False))

    def validate(self) -> None:
        """Refuse a bad config before anything starts, with one message saying what to change."""
        numbers = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), float)}
        numbers |= {f"half_weights[{k}]": weight for k, weight in enumerate(self.half_weights)}
        # nan passes every comparison below (nan <= 0 is false), so it is refused first, with inf.
        problems = [f"{name} must be a finite number, got {value}" for name, value in numbers.items()
                    if not math.isfinite(value)]
        if self.rank < 1:
            problems.append(f"rank must be at least 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            problems.append("alpha must be positive (blank: equal to the rank)")
        if not self.data or not Path(self.data).is_file():
            problems.append(f"data {self.data!r} is not a file: give a parquet from `dsd wheel export`")
        else:
            problems += data_problems(self.data)
        if self.learning_rate <= 0 or self.steps < 1 or self.batch_size < 1 or self.gradient_accumulation < 1:
            problems.append("learning_rate, steps, batch_size and gradient_accumulation must be positive")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
        if not all(0 <= p <= 1 for p in (self.condition_dropout, self.caption_dropout)):
            problems.append("condition_dropout and caption_dropout are probabilities between 0 and 1")
        if len(self.half_weights) != 2 or min(self.half_weights) < 0 or sum(self.half_weights) <= 0:
            problems.append("half_weights are two non-negative weights, not both zero")
        if not self.target_modules:
            problems.append("target_modules is empty")
        if not 0 <= self.condition_mask <= 1:
            problems.append("condition_mask is a probability between 0 and 1")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.sample_every < 0 or self.processes < 1:
            problems.append("checkpoint_every, keep_checkpoints and processes must be at least 1, sample_every at least 0")
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {', '.join(STRATEGIES)}")
        problems += [problem for sample in self.samples for problem in sample_problems(sample)]
        if problems:
            raise UserInputError("; ".join(problems))
        check_panel_size(self.resolution, self.resolution)


def _kind_problem(value, kind) -> str | None:
    """What `value` should be instead, when it is not of the field type `kind`; None when it is."""
    if typing.get_origin(kind) is types.UnionType:  # X | None
        return None if value is None else _kind_problem(value, next(a for a in typing.get_args(kind) if a is not type(None)))
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (list, tuple):
        wanted = "two numbers, such as [1.0, 1.0]" if origin is tuple else f"a list of {_KIND_NAMES[args[0]]}"
        length_ok = origin is list or (isinstance(value, (list, tuple)) and len(value) == len(args))
        fits = isinstance(value, (list, tuple)) and length_ok and all(_kind_problem(v, args[0]) is None for v in value)
        return None if fits else wanted
    if kind in (int, float):  # a bool is an int to Python, never a number to a person
        fits = isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)
    else:
        fits = isinstance(value, kind)  # bool, str, dict
    return None if fits else _KIND_NAMES[kind]


_KIND_NAMES = {bool: "true or false", str: "text", int: "a whole number", float: "a number",
               dict: "{image: FILE, prompt: TEXT} entries"}


def _yaml_number(value):
    """YAML 1.1 reads `1e-4` (no dot) as text; it is the number everyone means. `1e9999` becomes inf and is
    refused by `validate`, as nan is."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def typed_values(values: dict, source: str) -> dict:
    """The settings, each of its field's type, or one message naming every setting that is not."""
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    values = {name: _yaml_number(value) if kinds[name] in (float, float | None) else value
              for name, value in values.items()}
    problems = [f"{name} must be {wanted}, got {values[name]!r}"
                for name in values if (wanted := _kind_problem(values[name], kinds[name]))]
    if problems:
        raise UserInputError(f"{source}: {'; '.join(problems)}")
    return values


def sample_problems(sample) -> list[str]:
    """A sample to draw during training: an existing picture and a prompt."""
    if not isinstance(sample, dict) or not isinstance(sample.get("prompt"), str) or not sample["prompt"].strip():
        return [f"sample {sample!r} needs an image file and a prompt"]
    try:
        load_image(str(sample.get("image")))
    except UserInputError as error:
        return [f"sample image {sample.get('image')}: {error}"]
    return []


def data_problems(path: str) -> list[str]:
    """The data file is a pairs parquet whose first rows are pictures and captions: a wrong file is found here,
    not when the run has started (every row is read then, when the latents are cached)."""
    try:
        check_pairs_file(path)
    except UserInputError as error:
        return [str(error)]
    return []


def config_values(config: TrainConfig) -> dict:
    """The config as plain values (YAML, JSON in the store, the form)."""
    return {**asdict(config), "half_weights": list(config.half_weights)}


def preset_names(home: Path | None = None) -> list[str]:
    """Built-in presets, then the ones saved in the data folder."""
    found = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    if home is not None:
        found += sorted(p.stem for p in (Path(home) / "presets").glob("*.yaml") if p.stem not in found)
    return found


def preset_path(name: str, home: Path | None = None) -> Path:
    for folder in ([Path(home) / "presets"] if home is not None else []) + [PRESETS]:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise UserInputError(f"no preset {name!r}: use one of {', '.join(preset_names(home))}")


def load_preset(name: str, home: Path | None = None) -> TrainConfig:
    """A preset by name, not yet validated (a GPU preset names no data; the caller adds it); a
    built-in preset's relative data and base paths are the project's (`assets/...`)."""
    path = preset_path(name, home)
    values = yaml.safe_load(path.read_text()) or {}
    for key in ("data", "base"):
        if path.parent == PRESETS and values.get(key) and (PROJECT_ROOT / values[key]).exists():
            values[key] = str(PROJECT_ROOT / values[key])
    return TrainConfig.from_dict(values, f"preset {name}", check=False)


def save_preset(config: TrainConfig, name: str, home: Path) -> Path:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise UserInputError(f"preset name {name!r}: use letters, digits, '-', '_' and '.'")
    path = Path(home) / "presets" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    config.to_yaml(path)
    return path
