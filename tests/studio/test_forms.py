"""The tabs' forms as settings, without Gradio: what a filled-in form starts, and one clear line for a bad field."""

from pathlib import Path

import pytest

from mini import JUDGE
from pipeline.errors import UserInputError
from pipeline.generation.weights import ModelSpec
from studio.forms import (
    generation_request,
    judge_stage,
    metrics_stage,
    model_spec,
    sample_stage,
    wheel_stage,
    whole_number,
)
from studio.job_settings import CaptionsStage, CurateStage, GridsStage, JudgeStage, PromptsStage, SampleStage

CAT = Path(__file__).resolve().parents[2] / "assets" / "examples" / "cat.jpg"


def test_the_wheel_form_starts_the_stage_it_shows(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red fox\n")

    # A browser sends every field; only the chosen stage's are read, numbers may come as floats.
    grids = wheel_stage("grids", 3.0, str(captions), "", "2x2", " /models/flux ", 2.0, "144", 4.0, "", 4)
    assert grids == GridsStage(teacher="/models/flux", per_prompt=2, size="144x144", steps=4, limit=3)
    assert grids.shell_line() == ("dsd wheel grids --teacher /models/flux --per-prompt 2 --size 144x144 --steps 4 "
                                  "--guidance 3.5 --limit 3")
    assert wheel_stage("captions", source=f"  {captions}  ") == CaptionsStage(source=str(captions.resolve()))
    assert wheel_stage("captions", limit="") == CaptionsStage()
    assert wheel_stage("prompts", layout="") == PromptsStage(layout="2x2")
    assert wheel_stage("curate", judge="offline", concurrency=2) == CurateStage(judge="offline", concurrency=2)
    assert wheel_stage("grids", steps="").shell_line() == "dsd wheel grids --per-prompt 1 --guidance 3.5"  # its own


def test_the_wheel_form_takes_the_judges_the_command_line_takes(monkeypatch):
    """`mini:FOLDER` was an unknown provider in the tab while `dsd wheel curate --judge` took it."""
    monkeypatch.chdir(JUDGE.parents[2])
    assert wheel_stage("curate", judge=" mini:assets/mini/judge ").judge == f"mini:{JUDGE}"  # made absolute
    assert wheel_stage("curate", judge="").judge is None  # the default: the same judge
    with pytest.raises(UserInputError, match="no miniature judge in '/nowhere'"):
        wheel_stage("curate", judge="mini:/nowhere")


# More bad fields, sent through the studio's API, are in test_wheel_tab.py.
BAD_WHEEL_FIELDS = [
    pytest.param({"stage": "grids", "steps": 2.5}, "steps 2.5: give a whole number", id="fractional steps"),
    pytest.param({"stage": "grids", "per_prompt": None}, "grids per prompt None: give a whole number",
                 id="blank grids per prompt"),
    pytest.param({"stage": "export"}, "unknown stage 'export': use one of captions, prompts", id="a stage the tab does not run"),
    pytest.param({"stage": "curate", "judge": "openai:gpt-4o"}, "set the environment variable OPENAI_API_KEY",
                 id="judge without its key"),
    pytest.param({"stage": "prompts", "writer": "claude:opus"}, "unknown provider 'claude:opus'", id="unknown writer"),
    pytest.param({"stage": "curate", "judge": "claude:opus"}, "unknown judge 'claude:opus': use blank",
                 id="unknown judge"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_WHEEL_FIELDS)
def test_a_bad_wheel_field_is_one_line(fields, expected, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserInputError) as refused:
        wheel_stage(**fields)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_the_sample_form_gives_absolute_folders_or_a_training_run(tmp_path):
    (tmp_path / "flux").mkdir()

    by_folder = sample_stage(" base check ", "", str(tmp_path / "flux"), "", None, 2.0, 7.0, 256.0, 10.0)
    by_run = sample_stage("run check", run=4.0)

    assert by_folder == SampleStage(name="base check", base=str(tmp_path / "flux"), per_prompt=2, seed=7, size=256,
                                    steps=10)
    assert by_run == SampleStage(name="run check", run=4)
    assert "--run 4" in by_run.shell_line() and "--base" not in by_run.shell_line()
    # the tab's blank fields: no run (a Number may send 0), the model's own size and steps
    assert sample_stage("blank", run=0, size=None, steps="") == SampleStage(name="blank")
    # what the browser sends for the same blank fields (a blank Number arrives as 0)
    assert sample_stage("blank", run=0, size=0, steps=0) == SampleStage(name="blank")
    assert wheel_stage("captions", 0) == wheel_stage("captions", None) == CaptionsStage(limit=None)


BAD_SAMPLE_FIELDS = [
    pytest.param({"name": "  "}, "give the evaluation a name", id="no name"),
    pytest.param({"run": 2, "base": "/models/flux"}, "a training run brings its own base", id="run and base"),
    pytest.param({"base": "/no/such/flux"}, "base folder '/no/such/flux' does not exist", id="missing base"),
    pytest.param({"benchmark": "/no/bench"}, "benchmark folder '/no/bench' does not exist", id="missing benchmark"),
    pytest.param({"size": 500}, "size 500: give a multiple of 16", id="size not a multiple of 16"),
    pytest.param({"seed": None}, "seed None: give a whole number", id="blank seed"),
    pytest.param({"per_prompt": 0}, "pictures per prompt 0: give a whole number of at least 1", id="no pictures"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_SAMPLE_FIELDS)
def test_a_bad_sample_field_is_one_line(fields, expected):
    with pytest.raises(UserInputError) as refused:
        sample_stage(**{"name": "eval", **fields})
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_the_judge_form_builds_its_judge_before_a_job_starts(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)

    by_url = judge_stage("eval", " http://127.0.0.1:9/v1 ", "qwen", "gemini:ignored", 1.0, 2.0)
    assert by_url == JudgeStage(evaluation="eval", judge_url="http://127.0.0.1:9/v1", judge_model="qwen", runs=1,
                                concurrency=2)
    with pytest.raises(UserInputError, match="needs both Judge URL and Judge model"):  # the tab's fields
        judge_stage("eval", judge_model="lonely-model")
    with pytest.raises(UserInputError, match="GEMINI_API_KEY"):
        judge_stage("eval", judge_spec="gemini:gemini-2.5-pro")
    with pytest.raises(UserInputError, match="no miniature judge in '/nowhere'"):
        judge_stage("eval", judge_spec="mini:/nowhere")
    assert judge_stage("eval") == JudgeStage(evaluation="eval")  # the evaluation's own judge, which the tab checks


def test_the_metrics_form_needs_one_checkpoint_folder(tmp_path):
    assert metrics_stage("eval", dino=str(tmp_path)).dino == str(tmp_path)
    with pytest.raises(UserInputError, match="give at least one checkpoint folder"):
        metrics_stage("eval", "", " ", "")
    with pytest.raises(UserInputError, match="clip folder '/no/clip' does not exist"):
        metrics_stage("eval", clip="/no/clip")


def test_the_generate_form_as_a_request_and_a_model():
    request = generation_request({"path": str(CAT)}, "the cat", "relight", "128x96", 4.0, 2.0, 41.0, False, 3.5,
                                 1.0, 1.5, "pad", True, False)

    assert (request.image, request.width, request.height, request.steps, request.num_images) == (str(CAT), 128, 96, 4, 2)
    assert (request.seed, request.mode, request.fit, request.keep_reconstruction) == (41, "relight", "pad", True)
    assert generation_request(str(CAT), "", "identity", "64", 1, 1, None, True, 3.5, 1, 1, "crop", 0, 0).seed is None
    assert model_spec(" ", " /models/dsd ", "", None) == ModelSpec(dsd="/models/dsd", dtype="auto")
    with pytest.raises(UserInputError, match="no reference picture"):
        generation_request(None, "x", "identity", "64", 1, 1, 0, True, 3.5, 1, 1, "crop", False, False)
    with pytest.raises(UserInputError, match="the seed is empty"):
        generation_request(str(CAT), "x", "identity", "64", 1, 1, None, False, 3.5, 1, 1, "crop", False, False)


BAD_GENERATE_NUMBERS = [
    pytest.param({"steps": 1.5}, "steps 1.5: give a whole number", id="fractional steps"),
    pytest.param({"seed": 1.5}, "seed 1.5: give a whole number", id="fractional seed"),
    pytest.param({"seed": -1}, "seed -1: give a whole number of at least 0", id="negative seed"),
    pytest.param({"num_images": None}, "pictures None: give a whole number", id="blank pictures"),
    pytest.param({"steps": "twenty"}, "steps 'twenty': give a whole number", id="steps as text"),
    pytest.param({"guidance": None}, "guidance None: give a number", id="blank guidance"),
    pytest.param({"image_guidance": "lots"}, "image guidance 'lots': give a number", id="guidance as text"),
    pytest.param({"text_guidance": float("nan")}, "text guidance nan: give a number", id="nan guidance"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_GENERATE_NUMBERS)
def test_a_bad_number_in_the_generate_form_is_one_line_not_truncated(fields, expected):
    values = {"steps": 4, "num_images": 1, "seed": 3, "guidance": 3.5, "image_guidance": 1, "text_guidance": 1, **fields}
    with pytest.raises(UserInputError) as refused:
        generation_request(str(CAT), "x", "identity", "64", values["steps"], values["num_images"], values["seed"],
                           False, values["guidance"], values["image_guidance"], values["text_guidance"], "crop",
                           False, False)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_whole_numbers():
    assert whole_number("steps", 28.0) == 28 and whole_number("seed", 0, minimum=0) == 0
    assert whole_number("seed", 2**62 + 1, minimum=0) == 2**62 + 1 and whole_number("steps", " 4 ") == 4
    for bad in (None, 0, 1.5, "", "many", float("nan"), float("inf"), True):
        with pytest.raises(UserInputError, match=f"steps {bad!r}: give a whole number of at least 1"):
            whole_number("steps", bad)
