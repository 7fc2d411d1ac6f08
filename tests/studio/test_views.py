"""What the tabs show, read from a real store without Gradio: the history, the jobs table, a run's loss
curve, a pair under review, an evaluation's results."""

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.evaluation import stages as evaluation
from pipeline.store import Store
from studio import views


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "home")


def generation(store: Store, prompt: str, paths: list[str], status: str = "ok") -> int:
    return store.record_generation(mode="identity", prompt=prompt, prompt_used=prompt, model="tiny", seed=5,
                                   num_images=len(paths), params={"width": 64, "height": 96, "seeds": [5, 6]},
                                   output_paths=paths, timings={"total_s": 1.26}, status=status,
                                   error=None if status == "ok" else "out of GPU memory")


def test_the_history_lists_newest_first_marks_failures_and_searches_prompts(store, tmp_path):
    picture = tmp_path / "out.png"
    Image.new("RGB", (64, 96), "red").save(picture)
    first = generation(store, "a cat on a sofa", [str(picture)])
    failed = generation(store, "a dog at sea", [], status="error")
    rows = views.history_rows(store)
    assert [row[0] for row in rows] == [failed, first]
    assert rows[0][3] == "[error] a dog at sea" and rows[1][3] == "a cat on a sofa"
    assert rows[1][5:] == ["64x96", 1.3]
    assert [row[0] for row in views.history_rows(store, "  CAT ")] == [first]


def test_a_generations_details_name_the_pictures_that_are_gone(store, tmp_path):
    kept, gone = tmp_path / "kept.png", tmp_path / "gone.png"
    Image.new("RGB", (8, 8)).save(kept)
    pictures, details = views.generation_details(store, generation(store, "a cat", [str(kept), str(gone)]))
    assert pictures == [(str(kept), "seed 5")]
    assert details["missing_files"] == [str(gone)] and details["prompt"] == "a cat"
    with pytest.raises(UserInputError, match="refresh it"):
        views.generation_details(store, 999)


def test_the_jobs_table_shows_progress_and_the_newest_job_first(store):
    older = store.insert("jobs", {"kind": "wheel:grids", "status": "done", "args": [], "done": 3, "total": 10})
    newer = store.insert("jobs", {"kind": "wheel:curate", "status": "failed", "args": [], "error": "no key"})
    store.insert("jobs", {"kind": "eval:sample", "status": "running", "args": []})
    assert [row[:4] for row in views.job_rows(store, "wheel:")] == [[newer, "curate", "failed", ""],
                                                                  [older, "grids", "done", "3/10"]]
    assert views.job_rows(store, "wheel:")[0][5] == "no key"
    assert views.job_log(store, "wheel:", None) == ""  # no log written yet


def test_a_long_loss_curve_is_thinned_and_keeps_its_newest_step(store):
    run = store.insert("jobs", {"kind": "train", "status": "running", "args": [], "total": 5000})
    store.put("runs", {"id": run, "name": "run", "config": {}, "out": "", "devices": "cpu"})
    assert views.loss_frame(store, run) is None  # before the first step
    store.add("run_metrics", [{"run_id": run, "step": step, "loss": 1 / step, "loss_reference": None,
                               "loss_target": 2 / step} for step in range(1, 2502)])
    frame = views.loss_frame(store, run)
    steps = sorted(set(frame["step"]))
    assert len(steps) <= views.PLOT_POINTS + 1 and steps[-1] == 2501 and steps[0] <= 3
    assert set(frame["series"]) == {"loss", "loss_target"}  # a series with no values is not drawn


def test_a_pair_view_says_when_nothing_matches_or_the_judge_failed(store, tmp_path):
    assert views.pair_view(store, [], 0)[4] == "No pairs match the filters."
    assert views.pair_view(store, [41], 0)[4] == "Pair 41 is gone: refresh the list."
    failed = {"verdict_status": "failed", "judge": "openai:gpt-4o", "verdict_error": "HTTP 429", "same": None,
              "grid_prompt": "a grid", **{key: None for _, key in views.VERDICT_FIELDS[:-1]}}
    assert views.verdict_label(failed) == "failed"
    assert views.verdict_text(failed).startswith("**The judge failed** (openai:gpt-4o): HTTP 429")


def test_an_evaluation_without_judgements_says_what_to_run_next(store):
    assert views.results_view(store, "")[1] == views.NO_EVALUATIONS  # what to do first
    evaluation.create_eval(store, "fresh", size=64, steps=2)
    assert views.results_view(store, "")[1] == "Pick an evaluation."
    figures, note, table, frame = views.results_view(store, "fresh")
    assert figures == [] and "run **Judge** first" in note and "(0 samples)" in note and frame.empty
    assert "run **Sample** first" in views.sample_view(store, "fresh", 0)[3]
