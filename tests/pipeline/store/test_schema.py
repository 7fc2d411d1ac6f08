"""Old data folders open, list and continue: a newer schema only adds tables and columns."""

import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from PIL import Image
from sqlite_utils import Database

from pipeline.evaluation import stages as evaluation
from pipeline.store import Store
from pipeline.wheel.stages import review_queue, run_curate, run_pairs, wheel_stats
from tests.pipeline.store.test_generations import generation
from train import launcher

ROOT = Path(__file__).resolve().parents[3]
OLD_FOLDER = Path(__file__).with_name("data_folder_8fdf65f.sql")
TEACHER = ROOT / "assets" / "mini" / "teacher"


def test_an_older_file_gains_new_columns(tmp_path):
    old = Database(tmp_path / "dsd.sqlite")
    old["generations"].insert({"id": 1, "created_at": "2025-01-01T00:00:00.000+00:00", "mode": "subject",
                               "prompt": "old row", "status": "ok"}, pk="id")
    old.close()

    store = Store(tmp_path)
    gid = store.record_generation(**generation())

    assert store.get_generation(1)["notices"] is None
    assert store.get_generation(gid)["notices"] == ["reference resized to 512x512"]


@pytest.fixture
def old_home(tmp_path) -> Path:
    """The data folder of commit 8fdf65f: its database, the pictures its rows name, the run's training pairs."""
    home = tmp_path / "home"
    home.mkdir()
    dump = OLD_FOLDER.read_text().replace("{HOME}", str(home)).replace("{REPO}", str(ROOT))
    conn = sqlite3.connect(home / "dsd.sqlite")
    conn.executescript(dump)
    conn.close()
    for k, path in enumerate(sorted(set(re.findall(re.escape(str(home)) + r"/[^'\"]+?\.png", dump)))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (40 * k % 256, 90, 160)).save(path)
    shutil.copy(ROOT / "assets" / "pairs" / "examples.parquet", home / "pairs.parquet")
    return home


def test_an_old_data_folder_lists_what_it_holds(old_home):
    store = Store(old_home)

    history = store.list_generations()
    assert [row["prompt"] for row in history] == ["the toy on a beach"]
    assert history[0]["params"]["seeds"] == [7] and Path(history[0]["output_paths"][0]).is_file()

    stats = wheel_stats(store)
    assert {key: stats[key] for key in ("captions", "grid_prompts", "grids", "panels", "pairs", "verdicts", "reviews")} == {
        "captions": 2, "grid_prompts": 2, "grids": 1, "panels": 2, "pairs": 2, "verdicts": 1, "reviews": 1}
    assert [(pair["pair_id"], pair["decision"], pair["note"]) for pair in review_queue(store, review="accepted")] == [
        (1, "accept", "same toy")]
    assert [pair["pair_id"] for pair in review_queue(store, disagreement=True)] == [1]  # the judge said "not same"
    assert [pair["pair_id"] for pair in review_queue(store, verdict="none yet")] == [2]

    run = launcher.get_run(store, 1)
    assert launcher.run_summary(store, run) == {"id": 1, "name": "old run", "status": "stopped", "step": 1, "steps": 2,
                                                "loss": 0.5, "eta": launcher.format_seconds(None), "devices": "cpu",
                                                "error": ""}
    assert launcher.run_config(run).base == "" and [row["path"] for row in store.run_samples(1)] == [
        str(old_home / "runs" / "1" / "samples" / "1-0.png")]

    result = evaluation.report(store, "old-eval", allow_partial=True)
    assert (result["cp"]["mean"], result["pf"]["mean"], result["cp_debiased"]) == (0.625, 1.0, 0.5)
    assert result["metrics"] == {"clip_i": pytest.approx(0.55)} and result["partial"]
    assert result["provenance"]["fingerprint_matches"] and result["provenance"]["judge"] == "old-judge"
    assert "old-eval" in evaluation.markdown_table(result)


def test_an_old_data_folder_continues(old_home):
    store = Store(old_home)

    new = store.record_generation(**generation(prompt="a new one"))
    assert [row["id"] for row in store.list_generations()] == [new, 1]

    assert run_pairs(store).added == 0, "the grid was cut already"
    judged = run_curate(store)
    assert (judged.added, judged.failed) == (1, 0), "only the pair without a verdict is judged"
    first = store.pairs_by_id([1])[0]
    assert (first["confidence"], first["decision"]) == (0.643, "accept"), "the old verdict and review stay"

    # The same settings find the old evaluation, whose report still reads.
    eval_id = evaluation.create_eval(store, "old-eval", size=32, steps=2)
    assert eval_id == 1 and store.count_eval_samples(eval_id) == 2
    before = evaluation.report(store, eval_id, allow_partial=True)
    assert before["coverage"]["scored"] == 2

    # The run was recorded before the base was written down: resuming fills it in and trains on.
    launcher.resume(store, 1, default_base=str(TEACHER))
    assert launcher.run_config(launcher.get_run(store, 1)).base == str(TEACHER)
    deadline = time.monotonic() + 240
    while launcher.get_run(store, 1)["status"] in launcher.ACTIVE and time.monotonic() < deadline:
        launcher.reconcile(store)
        time.sleep(0.2)
    run = launcher.get_run(store, 1)
    assert run["status"] == "done", Path(run["log_path"]).read_text()[-3000:]
    assert [row["step"] for row in store.run_metrics(1)] == [1, 2] and Path(run["weights"]).is_dir()
