"""What an evaluation leaves blank: the model's own size and steps, and on the embedded miniature its world
benchmark and attribute judge; messages in the words of the tab or of the command line."""

from pathlib import Path

import pytest

from mini import JUDGE
from mini.benchmark import AttributeJudge
from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import BUILTIN, load_benchmark
from pipeline.evaluation.stages import DreamBenchJudge, JudgeFailed, get_eval
from pipeline.store import Store
from studio.cli import build_parser
from studio.eval_defaults import (
    JUDGE_FIELDS,
    JUDGE_FLAGS,
    WORLD_BENCHMARK,
    chosen_judge,
    evaluation_judge,
    judge_failure,
)
from studio.job_settings import SampleStage

TINY_FLUX = str(Path(__file__).resolve().parents[2] / "assets" / "tiny-dsd")  # a base without a sampling.json


def test_on_the_embedded_miniature_a_blank_evaluation_is_its_world_at_its_own_size(tmp_path):
    store = Store(tmp_path)
    asked = SampleStage(name="first")
    by_the_tab = asked.evaluation_id(store)
    by_the_job = SampleStage.from_args(build_parser().parse_args(asked.command(tmp_path)[3:])).evaluation_id(store)
    assert by_the_tab == by_the_job and "--size" not in asked.shell_line()  # the job resolves the same blanks

    found = get_eval(store, by_the_tab)
    assert (found["size"], found["steps"]) == (64, 20)  # the miniature's sampling.json, not FLUX's 512 and 28
    assert found["benchmark"] == str(tmp_path / WORLD_BENCHMARK)
    assert len(load_benchmark(found["benchmark"]).items()) == 48  # the report's items of seed 0
    assert isinstance(evaluation_judge(found, None, None, None), AttributeJudge)


def test_a_flux_base_keeps_fluxs_size_steps_and_the_photo_benchmark(tmp_path):
    found = get_eval(Store(tmp_path), SampleStage(name="flux", base=TINY_FLUX).evaluation_id(Store(tmp_path)))
    assert (found["size"], found["steps"], found["benchmark"]) == (512, 28, str(BUILTIN))
    assert not (tmp_path / WORLD_BENCHMARK).exists()
    given = get_eval(Store(tmp_path), SampleStage(name="given", size=128, steps=3).evaluation_id(Store(tmp_path)))
    assert (given["size"], given["steps"]) == (128, 3)


def test_a_blank_judge_on_another_benchmark_names_the_fields_to_fill_in(monkeypatch):
    photos = {"name": "photos", "benchmark": str(BUILTIN)}
    with pytest.raises(UserInputError, match="--judge-url and --judge-model .* or --judge gemini:MODEL"):
        evaluation_judge(photos, None, None, None)
    with pytest.raises(UserInputError, match="Judge URL and Judge model .* or Or judge gemini:MODEL"):
        evaluation_judge(photos, None, None, None, names=JUDGE_FIELDS)
    with pytest.raises(UserInputError, match="needs both Judge URL and Judge model"):
        chosen_judge("http://127.0.0.1:9/v1", None, None, names=JUDGE_FIELDS)
    assert chosen_judge(None, None, None) is None
    assert isinstance(chosen_judge(None, None, f"mini:{JUDGE}"), AttributeJudge)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert isinstance(evaluation_judge(photos, "http://127.0.0.1:9/v1", "qwen", None), DreamBenchJudge)


def test_a_failed_judge_is_told_in_the_words_of_its_fields():
    unreachable = JudgeFailed("judging stopped, nothing scored: openai:qwen at http://127.0.0.1:9/v1 cannot be "
                              "reached; check the network connection and the base URL.")
    assert judge_failure(unreachable, True, JUDGE_FIELDS).endswith("check the network connection and Judge URL.")
    assert judge_failure(unreachable, True, JUDGE_FLAGS).endswith("check the network connection and --judge-url.")
    scoreless = JudgeFailed("the judge failed all 36 judgements, nothing scored (first: no 'Score: N' line)")
    assert judge_failure(scoreless, False, JUDGE_FIELDS).endswith("line). Check Or judge, then judge again")
