"""Jobs: long work (wheel stages, evaluation stages, training) in a process of its own, watched through the store.

The studio never does long work inside a web request. A job is started from a settings object
(`JobSettings`: its kind and the command line it turns into): starting writes a `jobs` row and
spawns the command in its own process session with its output in a log file, then returns. The
process reports progress, reads its stop flag and records how it ended through the same row
(`JobReporter`, `JobReporter.finishing`). The studio only reads: `reconcile` turns a "running" row whose process is gone into "failed" with the last
log line, and escalates a stop that was not honoured (SIGINT to the process group, then SIGKILL).
Jobs survive closing the browser and restarting the studio.
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pipeline.errors import UserInputError
from pipeline.store import Store, utc_now

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 30  # after a stop request: SIGINT to the group; twice that: SIGKILL
GRACE_BY_KIND = {"train": 300}  # a trainer writes a checkpoint before it exits


ERROR_CHARS = 300  # of an unexpected error's message, in the jobs table


class JobSettings(Protocol):
    """What a job does, as settings: its kind (the jobs table's, e.g. "wheel:grids") and the command line
    they turn into (an argument list, never a shell line; the job adds `--job ID`)."""

    kind: str

    def command(self, home: Path) -> list[str]: ...


def with_job_id(argv: list[str], job_id: int) -> list[str]:
    """The job's command with `--job ID` among its options: before a `--` that ends them, if there is one."""
    cut = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:cut], "--job", str(job_id), *argv[cut:]]


def start_job(store: Store, settings: JobSettings, env: dict[str, str] | None = None) -> int:
    """Spawn the command of `settings` as a job of its kind; returns the job id at once."""
    job_id = create_job(store, settings.kind, settings.command(store.home.resolve()), status="queued")
    spawn_job(store, job_id, env)
    return job_id


def create_job(store: Store, kind: str, argv: list[str], status: str = "queued", **fields) -> int:
    """A job row without a process yet: it waits in a queue (`spawn_job` starts it), or is this process."""
    return store.insert("jobs", {"kind": kind, "status": status, "args": argv, "done": 0, "stop_requested": 0,
                                 **fields})


def spawn_job(store: Store, job_id: int, env: dict[str, str] | None = None, argv: list[str] | None = None) -> None:
    """Start (or start again, to resume) job `job_id`'s command in its own process session, logging
    to its log file; `argv` replaces the stored command (a fresh port, say)."""
    job = store.get("jobs", job_id)
    argv = argv or job["args"]
    log_path = store.home / "logs" / f"job-{job_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The job imports this project whatever its working directory, installed or not.
    path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            with_job_id(argv, job_id), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONPATH": path, **(env or {})},
        )
    store.update("jobs", job_id, {"pid": process.pid, "log_path": str(log_path), "started_at": utc_now(),
                                  "status": "running", "stop_requested": 0, "error": None, "ended_at": None,
                                  "args": argv})


def claim_job(store: Store, job_id: int) -> bool:
    """Move a queued job to "running" if nobody else did first (the studio and a finishing run may both try)."""
    return store.transition("jobs", job_id, "status", "queued", "running")


def request_stop(store: Store, job_id: int) -> None:
    """Ask a job to stop: it saves what it has and exits; `reconcile` escalates if it does not."""
    store.update("jobs", job_id, {"stop_requested": int(time.time())})


def reconcile(store: Store, now: float | None = None) -> None:
    """Make "running" rows true: finished processes reaped, dead ones failed, ignored stops escalated."""
    now = time.time() if now is None else now
    for job in store.jobs(running=True):
        if not job["pid"]:
            continue
        if not process_alive(job["pid"]):
            # Read the row again: the process may have finished it between our two reads.
            if store.get("jobs", job["id"])["status"] == "running":
                store.update("jobs", job["id"], {
                    "status": "stopped" if job["stop_requested"] else "failed",
                    "error": last_log_line(job["log_path"]) or "the process ended without a word",
                    "ended_at": utc_now(),
                })
        elif job["stop_requested"]:
            waited, grace = now - job["stop_requested"], GRACE_BY_KIND.get(job["kind"], STOP_GRACE_S)
            if waited > 2 * grace:
                _signal_group(job["pid"], signal.SIGKILL)
            elif waited > grace:
                _signal_group(job["pid"], signal.SIGINT)


def log_tail(log_path: str | None, size: int = 6000) -> str:
    """The last `size` bytes of a job's log, as text ("" when there is none yet)."""
    if not log_path or not Path(log_path).is_file():
        return ""
    with open(log_path, "rb") as log:
        log.seek(max(0, os.path.getsize(log_path) - size))
        return log.read().decode("utf-8", "replace")


def last_log_line(log_path: str | None) -> str:
    lines = [line.strip() for line in log_tail(log_path, 4096).splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is running (a finished child of ours is reaped, not alive)."""
    try:
        # Our own children must be reaped, or a finished one lingers as a zombie that looks alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (the studio restarted): fall through
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class JobReporter:
    """The job process's side: progress, the stop flag, and the final status."""

    def __init__(self, store: Store, job_id: int | None):
        self.store, self.job_id = store, job_id
        self.stopped = False  # set by the work when it honoured a stop request
        self._last_write = 0.0
        self._counts: dict[str, int] = {}  # the latest progress, written or not

    def progress(self, done: int, total: int | None = None, force: bool = False) -> None:
        """Record progress, at most twice a second (the studio polls; the database is shared); the latest
        counts are written with the final status in any case."""
        self._counts = {"done": done, **({"total": total} if total is not None else {})}
        if self.job_id is None or (not force and time.monotonic() - self._last_write < 0.5):
            return
        self._last_write = time.monotonic()
        self.store.update("jobs", self.job_id, self._counts)

    def should_stop(self) -> bool:
        return self.job_id is not None and bool(self.store.get("jobs", self.job_id)["stop_requested"])

    def finish(self, status: str, error: str | None = None) -> None:
        if self.job_id is not None:
            self.store.update("jobs", self.job_id, {**self._counts, "status": status, "error": error, "ended_at": utc_now()})

    @contextmanager
    def finishing(self) -> Iterator["JobReporter"]:
        """Record how the work in the block ends, and let its exception go on. Done, or stopped when the
        work set `stopped`; a user error fails with its message; an interrupt (the launcher's backstop
        after an ignored stop request) is stopped if a stop was asked for, else failed; any other error
        fails with its type and message."""
        try:
            yield self
        except UserInputError as error:
            self.finish("failed", str(error))
            raise
        except KeyboardInterrupt:
            self.finish("stopped" if self.should_stop() else "failed", "interrupted")
            raise
        except BaseException as error:
            self.finish("failed", f"{type(error).__name__}: {str(error)[:ERROR_CHARS]}")
            raise
        self.finish("stopped" if self.stopped else "done")
