"""Every knob of a training run in one object: YAML file <-> dataclass <-> (later) the Train tab's form.

Defaults follow the paper (section 4): LoRA rank 512 on the released target modules, AdamW at
1e-4, loss over both halves of the canvas. Validated once, before anything starts.
"""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from pipeline.errors import UserInputError
from pipeline.images import check_panel_size

# The modules the released DSD LoRA adapts (DESIGN.md section 3): every attention projection of the
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


@dataclass
class TrainConfig:
    data: str = ""  # parquet in the primecai/dsd_data layout (dsd wheel export writes one)
    base: str | None = None  # FLUX.1-dev folder or hub id; None: the embedded default
    out: str = "runs/dsd"  # the run folder: checkpoints, final weights, samples
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
    seed: int = 0
    log_every: int = 10

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"config {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UserInputError(f"config {path} is not valid YAML: {str(error).splitlines()[0]}") from None
        return cls.from_dict(values, str(path))

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**values)
        config.half_weights = tuple(config.half_weights)
        config.validate()
        return config

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump({**asdict(self), "half_weights": list(self.half_weights)}, sort_keys=False))

    def validate(self) -> None:
        """Refuse a bad config before anything starts, with one message saying what to change."""
        problems = []
        if self.rank < 1:
            problems.append(f"rank must be at least 1, got {self.rank}")
        if not self.data or not Path(self.data).is_file():
            problems.append(f"data {self.data!r} is not a file: give a parquet from `dsd wheel export`")
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
        if problems:
            raise UserInputError("; ".join(problems))
        check_panel_size(self.resolution, self.resolution)
