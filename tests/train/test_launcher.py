"""Runs launched as real `accelerate launch` processes: two ranks, stop / kill / resume, the queue, refusals."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.store import Store
from train import launcher
from train.checkpoints import checkpoints
from train.config import load_preset

ROOT = Path(__file__).resolve().parents[2]
DSD = [sys.executable, "-m", "studio.cli"]


def smoke(**changes):
    """The cpu-smoke preset (the embedded model on the three example pairs), quieter and changed, then
    validated as `dsd train --preset` validates a preset with its flags."""
    config = replace(load_preset("cpu-smoke"), sample_every=0, sample_count=1, sample_steps=2, **changes)
    config.validate()
    return config


def wait_until(store: Store, run_id: int, predicate, seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        launcher.reconcile(store)
        run = launcher.get_run(store, run_id)
        if predicate(run):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never got there: {launcher.get_run(store, run_id)}\n"
                         f"{Path(run['log_path']).read_text()[-3000:] if run['log_path'] else ''}")


def metric_steps(store: Store, run_id: int) -> list[int]:
    return [row["step"] for row in store.run_metrics(run_id)]


def test_two_processes_on_cpu_train_in_step_and_write_one_set_of_everything(tmp_path):
    store = Store(tmp_path / "home")
    run_id = launcher.launch(store, smoke(processes=2, steps=6, checkpoint_every=1000))
    run = wait_until(store, run_id, lambda run: run["status"] != "running", 300)
    assert run["status"] == "done", Path(run["log_path"]).read_text()[-3000:]
    assert "--multi_gpu" in run["args"] and "--num_processes" in run["args"]
    # One set of metrics (rank 0 only), one checkpoint, and both ranks ended with the same LoRA.
    assert metric_steps(store, run_id) == list(range(1, 7))
    assert [step for step, _ in checkpoints(Path(run["out"]))] == [6]
    assert len(run["rank_digests"]) == 2 and len(set(run["rank_digests"])) == 1
    # The run's weights generate, picked by run id (the Generate tab offers the same choice).
    assert launcher.runs_with_weights(store)[0][1] == run_id
    assert launcher.run_model_fields(store, run_id) == (load_preset("cpu-smoke").base, run["weights"])
    out = tmp_path / "out.png"
    result = subprocess.run([*DSD, "generate", "--home", str(store.home), "--run", str(run_id), "--image",
                             str(ROOT / "assets/examples/cat.jpg"), "--prompt", "the cat", "--size", "64",
                             "--steps", "2", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size == (64, 64)


def test_stop_resume_kill_resume_keeps_steps_and_metrics_continuous(tmp_path):
    store = Store(tmp_path / "home")
    run_id = launcher.launch(store, smoke(steps=100_000, checkpoint_every=7, keep_checkpoints=2))

    # Stop (a flag the trainer reads): it checkpoints where it is and ends as "stopped", not failed.
    for _ in range(2):
        wait_until(store, run_id, lambda run: (run["step"] or 0) >= 3 + (run["resumed_from"] or 0))
        launcher.request(store, run_id, "stop")
        run = wait_until(store, run_id, lambda run: run["status"] != "running")
        assert run["status"] == "stopped" and not run["error"]
        stopped_at = max(metric_steps(store, run_id))
        assert checkpoints(Path(run["out"]))[-1][0] == stopped_at
        assert metric_steps(store, run_id) == list(range(1, stopped_at + 1))
        launcher.resume(store, run_id)
        run = wait_until(store, run_id, lambda run: run["resumed_from"] == stopped_at and run["step"] > stopped_at)

    # SIGKILL the whole process group mid-run: the run is failed, and resumes from its last checkpoint.
    wait_until(store, run_id, lambda run: run["step"] >= stopped_at + 9)
    killed = launcher.get_run(store, run_id)
    os.killpg(killed["pid"], signal.SIGKILL)
    run = wait_until(store, run_id, lambda run: run["status"] != "running")
    assert run["status"] == "failed"
    last_checkpoint = checkpoints(Path(run["out"]))[-1][0]
    # At most the steps since that checkpoint are lost: `checkpoint_every` when the kill lands while the
    # next checkpoint is being written (it is then a .tmp folder, never a half checkpoint).
    assert run["step"] - last_checkpoint <= 7
    launcher.resume(store, run_id)
    run = wait_until(store, run_id, lambda run: run["resumed_from"] == last_checkpoint and run["step"] >= last_checkpoint + 3)
    assert f"resumed from step {last_checkpoint}" in Path(run["log_path"]).read_text()
    launcher.request(store, run_id, "stop")
    run = wait_until(store, run_id, lambda run: run["status"] != "running")

    # No gaps, no duplicates, across every stop, kill and resume; the newest rows continue the checkpoint.
    steps = metric_steps(store, run_id)
    assert steps == list(range(1, run["step"] + 1)), steps
    assert len(checkpoints(Path(run["out"]))) <= 2


def test_runs_on_the_same_devices_wait_in_line(tmp_path):
    store = Store(tmp_path / "home")
    first = launcher.launch(store, smoke(steps=4))
    second = launcher.launch(store, smoke(steps=2), name="second")
    assert launcher.get_run(store, second)["status"] == "queued"
    # The first run starts the next one when it ends, with no studio watching.
    deadline = time.monotonic() + 300
    while launcher.get_run(store, second)["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
    runs = {run["id"]: run for run in store.runs()}
    assert runs[first]["status"] == "done" and runs[second]["status"] == "done"
    assert runs[second]["started_at"] >= runs[first]["ended_at"]


@pytest.mark.parametrize("change, phrase", [
    ({"rank": 0}, "rank must be at least 1"),
    ({"data": "/no/such/pairs.parquet"}, "is not a file"),
    ({"target_modules": ["transformer_blocks.*.attn.to_qq"]}, "to_qq match no layer"),
    ({"devices": "0,1", "processes": 2}, "do not exist"),
    ({"devices": "", "processes": 64}, "this machine has"),
])
def test_bad_configs_are_refused_before_anything_starts(tmp_path, change, phrase):
    store = Store(tmp_path / "home")
    with pytest.raises(UserInputError, match=phrase) as refused:
        launcher.launch(store, smoke(**change))
    assert "\n" not in str(refused.value)
    assert store.runs() == [] and store.jobs() == []


def test_the_cli_launches_reports_and_refuses_in_one_line(tmp_path):
    home = str(tmp_path / "home")
    result = subprocess.run([*DSD, "train", "launch", "--preset", "cpu-smoke", "--gpus", "0,1", "--home", home],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "GPU(s) 0, 1 do not exist" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    result = subprocess.run([*DSD, "train", "stop", "9", "--home", home], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "no training run '9'" in result.stderr
    result = subprocess.run([*DSD, "train", "status", "--home", home], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "status" in result.stdout
