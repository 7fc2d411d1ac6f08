"""The settings of every wheel and evaluation stage: one frozen dataclass per stage, whose fields are its flags.

`dsd wheel STAGE` and `dsd eval STAGE` build their parsers from these classes and parse their flags into
them (`add_parser`, `from_args`); the Data wheel and Evaluate tabs fill them in from their forms
(`studio.forms`); and `command` turns one into the job's command line, the one place where settings
become flags, so a stage the studio starts runs exactly what the same settings typed in a shell run.
`pipeline.jobs.start_job(store, settings)` starts one. Training's settings object is
`train.config.TrainConfig`, started by `train.launcher.launch` (a run waits in a queue for its devices).
"""

import argparse
import shlex
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pipeline.store import Store

PROVIDER_HELP = "offline (default), openai:MODEL[@BASE_URL] or gemini:MODEL"


def option(*flags: str, default: Any = None, **argparse_options) -> Any:
    """A settings field and its flag, given as argparse takes them; a name without dashes is a positional
    argument. A positional or required one has no default."""
    metadata = {"flags": flags, "argparse": argparse_options}
    if not flags[0].startswith("-") or argparse_options.get("required"):
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def dsd_command(*args: str) -> list[str]:
    """The `dsd` command line as this Python runs it (works without the console script on PATH)."""
    return [sys.executable, "-m", "studio.cli", *args]


@dataclass(frozen=True)
class StageSettings:
    """A stage's options. Subclasses name their command (`dsd wheel grids`) and give their fields as `option`s."""

    COMMAND: ClassVar[tuple[str, str]]
    HELP: ClassVar[str]

    @property
    def kind(self) -> str:
        """The jobs table's kind, "wheel:grids": a tab lists its jobs by the prefix."""
        return ":".join(self.COMMAND)

    @classmethod
    def add_parser(cls, stages, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
        """The stage's subcommand, a flag per field (the field's name is where argparse puts it)."""
        parser = stages.add_parser(cls.COMMAND[1], parents=parents, help=cls.HELP)
        for f in fields(cls):
            flags, options = f.metadata["flags"], dict(f.metadata["argparse"])
            if flags[0].startswith("-"):
                options["dest"] = f.name
                if f.default is not MISSING:
                    options["default"] = f.default
            parser.add_argument(*flags, **options)
        return parser

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StageSettings":
        values = {f.name: getattr(args, f.name) for f in fields(cls)}
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})

    def flags(self) -> list[str]:
        """The flags that parse back into these settings; unset (None or False) fields are left out. A value
        is never read as an option: one that starts with "-" is joined to its flag (`--name=-x`), and
        positional values go after `--` when one of them does."""
        argv, positional = [], []
        for f in fields(self):
            value, flag = getattr(self, f.name), f.metadata["flags"][0]
            if not flag.startswith("-"):
                positional.append(str(value))
            elif value is True:
                argv.append(flag)
            elif isinstance(value, (list, tuple)):
                argv += [flag, *map(str, value)]  # numbers only (`--usd-per-mtok`), which argparse reads as such
            elif value is not None and value is not False:
                argv += [f"{flag}={value}"] if str(value).startswith("-") else [flag, str(value)]
        return argv + (["--"] if any(value.startswith("-") for value in positional) else []) + positional

    def command(self, home: Path) -> list[str]:
        """The job's command line on data folder `home` (the job adds `--job ID`)."""
        return dsd_command(*self.COMMAND, "--home", str(home), *self.flags())

    def shell_line(self) -> str:
        """The same stage as a person would type it: `dsd wheel grids --steps 28 ...`."""
        return shlex.join(["dsd", *self.COMMAND, *self.flags()])


def add_stage_group(commands, name: str, help: str, stages: dict[str, type[StageSettings]],
                    common: argparse.ArgumentParser, job: argparse.ArgumentParser) -> None:
    """`dsd NAME STAGE`: a subcommand per stage, each taking its settings' flags and the hidden `--job`."""
    group = commands.add_parser(name, parents=[common], help=help)
    subcommands = group.add_subparsers(dest="stage", required=True)
    for settings in stages.values():
        settings.add_parser(subcommands, [job])


def by_name(*classes: type[StageSettings]) -> dict[str, type[StageSettings]]:
    return {cls.COMMAND[1]: cls for cls in classes}


# the data wheel (pipeline/wheel/stages.py)


@dataclass(frozen=True)
class CaptionsStage(StageSettings):
    COMMAND, HELP = ("wheel", "captions"), "load reference captions"
    source: str | None = option("--from", help="txt, csv, jsonl or parquet file (default: the embedded "
                                      "miniature's world; photo captions: assets/captions.txt)")
    column: str | None = option("--column", help="caption column of a csv/jsonl/parquet file (default: caption or text)")
    limit: int | None = option("--limit", type=int)
    filter_with: str | None = option("--filter", help=f"keep captions with a clear subject, judged by {PROVIDER_HELP}")


@dataclass(frozen=True)
class PromptsStage(StageSettings):
    COMMAND, HELP = ("wheel", "prompts"), "captions -> grid prompts"
    writer: str | None = option("--writer", help=f"LLM: {PROVIDER_HELP}")
    layout: str = option("--layout", default="2x2", help="2x2 (default), 1x2, 2x3 or 3x3")
    dedupe: float = option("--dedupe", default=0.8, type=float,
                           help="near-duplicate similarity threshold (default 0.8)")
    limit: int | None = option("--limit", type=int)


@dataclass(frozen=True)
class GridsStage(StageSettings):
    COMMAND, HELP = ("wheel", "grids"), "the teacher draws grids (use accelerate launch for GPUs)"
    teacher: str | None = option("--teacher", help="text-to-image folder or hub id (default: the embedded model)")
    per_prompt: int = option("--per-prompt", default=1, type=int,
                             help="grids per prompt, each at its own recorded seed")
    size: str | None = option("--size", help="grid size W[xH] (default 1024, 144 for the embedded miniature)")
    steps: int | None = option("--steps", type=int, help="denoising steps (default: the teacher's own, from its "
                               "sampling.json; FLUX's 28 without one)")
    guidance: float = option("--guidance", default=3.5, type=float)
    limit: int | None = option("--limit", type=int)


@dataclass(frozen=True)
class PairsStage(StageSettings):
    COMMAND, HELP = ("wheel", "pairs"), "cut grids into panels and compose pairs"
    limit: int | None = option("--limit", type=int)


@dataclass(frozen=True)
class CurateStage(StageSettings):
    COMMAND, HELP = ("wheel", "curate"), "a VLM judges and captions every pair"
    judge: str | None = option("--judge", help="default: the embedded miniature's attribute judge (its teacher draws "
                               "the default grids); mini:FOLDER another miniature judge; offline an image-similarity "
                               "stand-in, not a VLM; a VLM: openai:MODEL[@BASE_URL] or gemini:MODEL")
    concurrency: int = option("--concurrency", default=4, type=int)
    limit: int | None = option("--limit", type=int)
    usd_per_mtok: tuple[float, float] | None = option("--usd-per-mtok", type=float, nargs=2,
                                                      metavar=("INPUT", "OUTPUT"),
                                                      help="prices per million tokens, to record the run's cost")


@dataclass(frozen=True)
class ExportStage(StageSettings):
    COMMAND, HELP = ("wheel", "export"), "accepted pairs to parquet (primecai/dsd_data layout)"
    out: Path = option("--out", required=True, type=Path)
    caption_style: str = option("--caption-style", default="target", choices=["target", "instruction"])
    reviewed_only: bool = option("--reviewed-only", default=False, action="store_true",
                                 help="only pairs a person accepted")


@dataclass(frozen=True)
class ImportStage(StageSettings):
    COMMAND, HELP = ("wheel", "import"), "add the pairs of a DSD-style parquet file"
    file: Path = option("file", type=Path)


@dataclass(frozen=True)
class StatsStage(StageSettings):
    COMMAND, HELP = ("wheel", "stats"), "counts per stage, hit and acceptance rates"


WHEEL_STAGES = by_name(CaptionsStage, PromptsStage, GridsStage, PairsStage, CurateStage, ExportStage, ImportStage,
                       StatsStage)


# the evaluation (pipeline/evaluation/stages.py)


@dataclass(frozen=True)
class SampleStage(StageSettings):
    COMMAND, HELP = ("eval", "sample"), "generate one (or K) picture per benchmark prompt"
    name: str = option("--name", required=True, help="the evaluation's name (continues it if it exists)")
    benchmark: str | None = option("--benchmark", help="a DreamBench++ folder (default: on the embedded miniature "
                                   "its world benchmark, else the built-in 4-subject photo set)")
    base: str | None = option("--base", help="FLUX.1-dev folder (default: the embedded model)")
    dsd: str | None = option("--dsd", help="DSD weights folder")
    run: int | None = option("--run", type=int, help="a training run's weights instead of --base/--dsd")
    per_prompt: int = option("--per-prompt", default=1, type=int)
    seed: int = option("--seed", default=0, type=int)
    size: int | None = option("--size", type=int, help="picture size (default: the model's own, 512 for FLUX, "
                              "64 for the embedded miniature)")
    steps: int | None = option("--steps", type=int, help="denoising steps (default: the model's own, 28 for FLUX, "
                               "20 for the embedded miniature)")
    limit: int | None = option("--limit", type=int, help="at most this many new pictures now (resume later)")

    def evaluation_id(self, store: Store) -> int:
        """The evaluation these settings sample: made on first use, refused when the name exists with other
        settings. A training run's weights are recorded as its base and DSD folders; what is left blank is the
        model's own (`studio.eval_defaults`)."""
        from pipeline.evaluation.stages import create_eval
        from studio.eval_defaults import sample_defaults

        base, dsd = self.base, self.dsd
        if self.run is not None:
            from train.launcher import run_model_fields

            base, dsd = run_model_fields(store, self.run)
        benchmark, size, steps = sample_defaults(store.home, base, dsd, self.benchmark, self.size, self.steps)
        return create_eval(store, self.name, benchmark, base, dsd, self.run, self.per_prompt, self.seed, size, steps)


@dataclass(frozen=True)
class JudgeStage(StageSettings):
    COMMAND, HELP = ("eval", "judge"), "a judge scores CP and PF, 3 runs by default"
    evaluation: str = option("evaluation", help="evaluation name or id")
    judge_url: str | None = option("--judge-url", help="OpenAI-compatible endpoint (key from OPENAI_API_KEY)")
    judge_model: str | None = option("--judge-model", help="model name at --judge-url")
    judge_spec: str | None = option("--judge", help="gemini:MODEL (key from GEMINI_API_KEY), openai:MODEL, or "
                                    "mini:FOLDER (a miniature's attribute judge; the default for a benchmark of "
                                    "the miniature's world)")
    runs: int = option("--runs", default=3, type=int)
    concurrency: int = option("--concurrency", default=4, type=int)
    templates: str | None = option("--templates", help="a DreamBench++ checkout (or template folder) for its exact prompts")


@dataclass(frozen=True)
class MetricsStage(StageSettings):
    COMMAND, HELP = ("eval", "metrics"), "CLIP-I, CLIP-T and DINO from local checkpoints"
    evaluation: str = option("evaluation")
    clip: str | None = option("--clip", help="folder of openai/clip-vit-base-patch32")
    dino: str | None = option("--dino", help="folder of facebook/dino-vits8")
    dinov2: str | None = option("--dinov2", help="folder of facebook/dinov2-small")


@dataclass(frozen=True)
class ReportStage(StageSettings):
    COMMAND, HELP = ("eval", "report"), "the figures: JSON, CSV or a Table 1 in Markdown"
    evaluation: str = option("evaluation")
    json: bool = option("--json", default=False, action="store_true", help="print the figures as JSON")
    csv: Path | None = option("--csv", type=Path, help="also write every judgement to this CSV file")
    partial: bool = option("--partial", default=False, action="store_true",
                           help="report even with missing or failed items (says so)")
    runs: int | None = option("--runs", type=int, help="judge runs expected (default: those judged)")


EVAL_STAGES = by_name(SampleStage, JudgeStage, MetricsStage, ReportStage)
