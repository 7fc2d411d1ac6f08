"""The miniature's world benchmark: the report's held-out items as a benchmark folder, and `dsd eval` on it giving
the figures `dsd mini report` gives for the same row."""

import json

import numpy as np
import pytest
from PIL import Image

from mini import JUDGE, TEACHER
from mini.benchmark import MODES, AttributeJudge, asked_of, evaluation_items, is_world_benchmark, write_benchmark
from mini.judge import AttributeReader
from mini.report import STUDENTS, generate_row, score
from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import BUILTIN, load_benchmark
from pipeline.jobs import JobReporter
from pipeline.store import Store
from studio.cli.eval import run_stage
from studio.job_settings import JudgeStage, ReportStage, SampleStage


def test_the_world_benchmark_holds_the_reports_items_in_its_order(tmp_path):
    folder = write_benchmark(tmp_path / "world", seed=1, per_mode=2)
    items, benchmark = evaluation_items(1, per_mode=2), load_benchmark(folder)
    assert [item.category for item in benchmark.items()] == [mode for mode in MODES for _ in range(2)]
    assert [item.kind for item in benchmark.items()] == [item["mode"] for item in items]
    for mine, theirs in zip(benchmark.items(), items):
        assert mine.prompt == theirs["prompt"]
        assert np.array_equal(np.asarray(Image.open(mine.reference)), np.asarray(theirs["reference"]))
        # what the judge reads from the benchmark's words is what the report holds as the truth
        assert asked_of(mine.subject_name, mine.prompt) == (theirs["preserved"], theirs["requested"])
    assert is_world_benchmark(folder) and not is_world_benchmark(BUILTIN)
    fingerprint = benchmark.fingerprint
    assert write_benchmark(folder, seed=1, per_mode=2) == folder and load_benchmark(folder).fingerprint == fingerprint
    assert not list(tmp_path.glob(".world*"))  # written beside, then renamed into place


def test_the_benchmarks_references_show_their_subjects_as_the_teacher_learned_to_draw_them():
    """Centred, upright and fairly large, as in every teacher's training pictures and the Generate tab's examples:
    a reference in a pose the teacher never drew measures pose, not identity. Only the pose narrows: the items'
    subjects and prompts are the draws they were (`sample_context` makes the same draws at any spread)."""
    from mini import PANEL, world

    items = evaluation_items(0)
    for item in items:
        context = item["context"]  # the world's rotation is within 30 degrees, its x within 0.15 of the centre
        assert abs(context.rotation) <= 30 * world.PORTRAIT_SPREAD
        assert abs(context.x - 0.5) <= 0.15 * world.PORTRAIT_SPREAD + 1e-3  # x is kept to 3 places
        assert np.array_equal(np.asarray(item["reference"]), np.asarray(world.render(item["identity"], context, PANEL)))
    assert max(abs(item["context"].rotation) for item in items) > 1  # narrowed, not pinned to one pose


def test_the_attribute_judge_refuses_a_benchmark_not_of_its_world():
    judge = AttributeJudge.from_pretrained(JUDGE)
    picture = Image.new("RGB", (64, 64))
    with pytest.raises(UserInputError, match="choose a VLM judge for this benchmark"):
        judge.score(reference=picture, generated=picture, prompt="a cat on a sofa", category="animal", subject="cat")


# Tolerance: `dsd eval` draws each picture alone, the report its items in one batch, with the same seeds (an
# evaluation's seed plus the item's place; the report's seed * 10_000 plus its index). Batched and single
# matrix products round differently in float32, which can move a pixel by 1/255 (measured: at most 1, on the
# report's 48 items of seed 0 at 20 steps), and so could flip one attribute reading that sits on a decision
# boundary. One reading moves an item's PF by at most 1/3 (CP by at most 1/4), so a mean over N items by at most
# 1/(3N): the figures must agree to within that. Measured: no reading differed (48 items at 20 steps, and here).
def one_reading(count: int) -> float:
    return 1 / (3 * count) + 1e-9


def test_dsd_eval_on_the_world_benchmark_gives_the_reports_figures_for_the_same_row(tmp_path):
    """The embedded model is the report's `student_curated` row; few items and steps keep it quick."""
    per_mode, steps = 2, 3
    folder = write_benchmark(tmp_path / "world", seed=0, per_mode=per_mode)
    store = Store(tmp_path / "home")
    reporter = JobReporter(store, None)
    # `dsd eval sample --name world --benchmark F --steps 3`; `dsd eval judge world`; `dsd eval report world --json`
    run_stage(store, SampleStage(name="world", benchmark=str(folder), steps=steps), reporter)
    assert "mini-judge:" in run_stage(store, JudgeStage(evaluation="world", runs=1), reporter)  # blank: its judge
    ours = json.loads(run_stage(store, ReportStage(evaluation="world", json=True), reporter))

    items = evaluation_items(0, per_mode)
    outputs = generate_row("student_curated", items, 0, TEACHER, STUDENTS, steps)
    cp, pf = score(items, outputs, AttributeReader.from_pretrained(str(JUDGE)).eval())
    assert ours["cp"]["mean"] == pytest.approx(np.mean(cp), abs=one_reading(len(items)))
    assert ours["pf"]["mean"] == pytest.approx(np.mean(pf), abs=one_reading(len(items)))
    for mode in MODES:
        mine = ours["by_category"][mode]
        assert mine["cp"]["mean"] == pytest.approx(np.mean([c for c, i in zip(cp, items) if i["mode"] == mode]),
                                                   abs=one_reading(per_mode))
        assert mine["pf"]["mean"] == pytest.approx(np.mean([p for p, i in zip(pf, items) if i["mode"] == mode]),
                                                   abs=one_reading(per_mode))
    assert ours["provenance"]["templates"] == "attribute readings" and ours["cp_debiased"] is None
