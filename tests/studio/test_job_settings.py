"""A stage's settings and the command its job runs: the flags a person would type, and nothing lost on the way
through the command line."""

import sys
from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from pipeline.evaluation.stages import get_eval
from pipeline.jobs import with_job_id
from pipeline.store import Store
from studio.cli import build_parser
from studio.job_settings import (
    CaptionsStage,
    CurateStage,
    ExportStage,
    GridsStage,
    ImportStage,
    JudgeStage,
    MetricsStage,
    PairsStage,
    PromptsStage,
    ReportStage,
    SampleStage,
    StatsStage,
)
from train import launcher
from train.config import load_preset

EVERY_STAGE = [
    CaptionsStage(source="/data/captions.csv", column="text", limit=5, filter_with="openai:gpt-4o-mini"),
    PromptsStage(writer="gemini:gemini-2.0-flash", layout="2x3", dedupe=0.6, limit=10),
    GridsStage(teacher="/models/flux", per_prompt=2, size="512x768", steps=20, guidance=4.0, limit=3),
    PairsStage(limit=7),
    CurateStage(judge="mini:/models/judge", concurrency=8, usd_per_mtok=(0.15, 0.6)),
    ExportStage(out=Path("/data/pairs.parquet"), caption_style="instruction", reviewed_only=True),
    ImportStage(file=Path("/data/dsd_data.parquet")),
    StatsStage(),
    SampleStage(name="my eval", benchmark="/bench", base="/models/flux", dsd="/models/dsd", per_prompt=2, seed=5,
                size=256, steps=12, limit=40),
    SampleStage(name="from a run", run=3),
    JudgeStage(evaluation="my eval", judge_url="http://127.0.0.1:8000/v1", judge_model="qwen", runs=1),
    JudgeStage(evaluation="7", judge_spec="gemini:gemini-2.5-pro", concurrency=2, templates="/dreambench"),
    MetricsStage(evaluation="my eval", clip="/ckpt/clip", dinov2="/ckpt/dinov2"),
    ReportStage(evaluation="my eval", json=True, csv=Path("/out/judgements.csv"), partial=True, runs=3),
    # Free text that looks like an option stays a value: it must not move the job's data folder.
    SampleStage(name="--home=/elsewhere", base="-b"),
    JudgeStage(evaluation="--home=/elsewhere", judge_model="--runs", runs=2),
    CaptionsStage(source="-", column="--limit"),
]


@pytest.mark.parametrize("settings", EVERY_STAGE, ids=lambda settings: settings.kind)
def test_the_command_of_a_stage_parses_back_into_the_same_settings(settings, tmp_path):
    argv = settings.command(tmp_path)
    assert argv[:3] == [sys.executable, "-m", "studio.cli"]
    args = build_parser().parse_args(with_job_id(argv[3:], 12))  # the job launcher adds its id

    assert type(settings).from_args(args) == settings
    assert (args.command, args.stage, args.home, args.job) == (*settings.COMMAND, str(tmp_path), 12)


def test_a_grids_job_runs_the_flags_a_person_would_type(tmp_path):
    settings = GridsStage(per_prompt=2, size="144x144", steps=4)

    assert settings.kind == "wheel:grids"
    assert settings.command(tmp_path)[3:] == ["wheel", "grids", "--home", str(tmp_path), "--per-prompt", "2",
                                              "--size", "144x144", "--steps", "4", "--guidance", "3.5"]
    assert settings.shell_line() == "dsd wheel grids --per-prompt 2 --size 144x144 --steps 4 --guidance 3.5"


def test_unset_fields_are_left_out_and_odd_values_quoted():
    assert CaptionsStage(limit=2).shell_line() == "dsd wheel captions --limit 2"
    assert PairsStage().flags() == []
    assert ExportStage(out=Path("my pairs.parquet")).shell_line() == (
        "dsd wheel export --out 'my pairs.parquet' --caption-style target")


def test_the_cli_defaults_are_the_settings_defaults():
    args = build_parser().parse_args(["eval", "sample", "--name", "plain"])
    assert SampleStage.from_args(args) == SampleStage(name="plain")
    assert SampleStage(name="plain").flags() == ["--name", "plain", "--per-prompt", "1", "--seed", "0"]  # size and
    # steps: the model's own


def test_a_sample_from_a_training_run_makes_one_evaluation_whoever_starts_it(tmp_path):
    """The tab makes the evaluation when the job starts, and the job makes it again from its command line:
    both record the run's base and weights, so the job continues it instead of refusing a clash."""
    store = Store(tmp_path)
    run_id = launcher.create_run(store, load_preset("cpu-smoke"), status="stopped")
    asked = SampleStage(name="from a run", run=run_id, size=64, steps=2)
    with pytest.raises(UserInputError, match=f"run {run_id} has no weights yet"):
        asked.evaluation_id(store)

    weights = tmp_path / "runs" / str(run_id) / "weights"
    weights.mkdir(parents=True)
    store.update("runs", run_id, {"weights": str(weights)})
    by_the_tab = asked.evaluation_id(store)
    by_the_job = SampleStage.from_args(build_parser().parse_args(asked.command(tmp_path)[3:])).evaluation_id(store)

    assert by_the_tab == by_the_job
    assert get_eval(store, by_the_job)["model"] == {"base": load_preset("cpu-smoke").base, "dsd": str(weights),
                                                    "run": run_id}
