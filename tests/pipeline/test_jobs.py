"""Jobs as real processes: started, watched, stopped, killed, reconciled."""

import os
import signal
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from pipeline.jobs import JobReporter, create_job, reconcile, request_stop, start_job
from pipeline.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A job that counts until told to stop, reporting through the store like the wheel stages do.
WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pipeline.jobs import JobReporter
    from pipeline.store import Store
    reporter = JobReporter(Store(sys.argv[1]), int(sys.argv[sys.argv.index("--job") + 1]))
    print("worker started", flush=True)
    for step in range(1, 10_000):
        if reporter.should_stop():
            print(f"stopping at step {{step}}", flush=True)
            reporter.finish("stopped")
            sys.exit(0)
        reporter.progress(step, 10_000, force=True)
        time.sleep(0.02)
""")


@dataclass(frozen=True)
class Script:
    """Job settings whose command is a given argument list."""

    kind: str
    argv: list[str]

    def command(self, home: Path) -> list[str]:
        return self.argv


@pytest.fixture
def worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=ROOT))
    return Script("test", [sys.executable, str(script), str(tmp_path / "home")])


def wait_for(predicate, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def job(store, job_id):
    """The job's row as the studio sees it: reconciled first."""
    reconcile(store)
    return store.get("jobs", job_id)


def test_a_stage_runs_as_a_job_and_finishes_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the studio may be started from anywhere
    store = Store(tmp_path / "home")
    job_id = start_job(store, Script("wheel:stats", [sys.executable, "-m", "studio.cli", "wheel", "stats", "--home",
                                                     str(store.home)]))
    assert wait_for(lambda: job(store, job_id)["status"] != "running", 120)
    finished = job(store, job_id)
    assert finished["status"] == "done", finished
    assert '"captions": 0' in open(finished["log_path"]).read()


def test_stop_flag_is_honoured_and_work_reported(tmp_path, worker):
    store = Store(tmp_path / "home")
    job_id = start_job(store, worker)
    assert wait_for(lambda: (job(store, job_id)["done"] or 0) >= 3)
    request_stop(store, job_id)
    assert wait_for(lambda: job(store, job_id)["status"] == "stopped")
    assert "stopping at step" in open(job(store, job_id)["log_path"]).read()


def test_a_killed_job_is_marked_failed_with_its_last_log_line(tmp_path, worker):
    store = Store(tmp_path / "home")
    job_id = start_job(store, worker)
    assert wait_for(lambda: (job(store, job_id)["done"] or 0) >= 2)
    os.killpg(job(store, job_id)["pid"], signal.SIGKILL)
    assert wait_for(lambda: job(store, job_id)["status"] != "running")
    failed = job(store, job_id)
    assert failed["status"] == "failed" and failed["error"] == "worker started"


def test_an_ignored_stop_is_escalated_to_signals(tmp_path):
    store = Store(tmp_path / "home")
    stubborn = [sys.executable, "-c", "import time\nprint('busy', flush=True)\nwhile True: time.sleep(0.05)"]
    job_id = start_job(store, Script("test", stubborn))
    assert wait_for(lambda: "busy" in open(job(store, job_id)["log_path"]).read())
    request_stop(store, job_id)
    asked = job(store, job_id)["stop_requested"]
    reconcile(store, now=asked + 31)  # past the grace: SIGINT to the group
    assert wait_for(lambda: job(store, job_id)["status"] == "stopped")


def ended(store: Store, work) -> dict:
    """The row of a job whose work ran inside `JobReporter.finishing`, and what escaped the block."""
    reporter = JobReporter(store, create_job(store, "test", [], status="running"))
    escaped = None
    try:
        with reporter.finishing():
            work(reporter)
    except BaseException as error:  # noqa: BLE001 (the block lets every error go on)
        escaped = error
    return {**store.get("jobs", reporter.job_id), "escaped": type(escaped).__name__ if escaped else None}


def interrupted_after_a_stop(reporter: JobReporter):
    request_stop(reporter.store, reporter.job_id)
    raise KeyboardInterrupt


def honoured_a_stop(reporter: JobReporter):
    reporter.stopped = True


def refused(reporter: JobReporter):
    raise UserInputError("no captions: run the captions stage first")


def crashed(reporter: JobReporter):
    raise RuntimeError("x" * 1000)


def interrupted(reporter: JobReporter):
    raise KeyboardInterrupt


@pytest.mark.parametrize(("work", "status", "error", "escaped"), [
    (lambda reporter: None, "done", None, None),
    (honoured_a_stop, "stopped", None, None),
    (refused, "failed", "no captions: run the captions stage first", "UserInputError"),
    (crashed, "failed", "RuntimeError: " + "x" * 300, "RuntimeError"),
    (interrupted, "failed", "interrupted", "KeyboardInterrupt"),
    (interrupted_after_a_stop, "stopped", "interrupted", "KeyboardInterrupt"),
], ids=["done", "stopped by the work", "user error", "crash", "interrupt", "interrupt after a stop request"])
def test_how_a_job_ends_is_recorded_once_for_every_kind(tmp_path, work, status, error, escaped):
    row = ended(Store(tmp_path), work)
    assert (row["status"], row["error"], row["escaped"]) == (status, error, escaped)
    assert row["ended_at"]


def test_a_finished_job_shows_its_final_counts(tmp_path):
    """Progress is written at most twice a second; a job used to end showing the last count written (18/24)."""
    def work(reporter: JobReporter):
        for done in range(1, 25):
            reporter.progress(done, 24)

    row = ended(Store(tmp_path / "home"), work)
    assert (row["status"], row["done"], row["total"]) == ("done", 24, 24)


def test_a_job_that_is_not_a_job_records_nothing(tmp_path):
    """A stage run by hand (no --job) or a training rank other than 0 has no job row to write."""
    store = Store(tmp_path)
    with pytest.raises(UserInputError), JobReporter(store, None).finishing():
        raise UserInputError("bad")
    assert store.jobs("") == []
