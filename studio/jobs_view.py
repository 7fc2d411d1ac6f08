"""What a tab shows of its background jobs (wheel stages, evaluation stages): the table, the log, stop.

Jobs of one tab share a kind prefix ("wheel:", "eval:"); the rest of the kind is the stage.
"""

from datetime import datetime

import gradio as gr

from pipeline.errors import UserInputError
from pipeline.jobs import log_tail, request_stop
from pipeline.store import Store

JOB_HEADERS = ["id", "stage", "status", "progress", "started", "error"]
JOBS_SHOWN, LOG_BYTES = 20, 6000


def local_time(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S") if iso else ""


def job_rows(store: Store, prefix: str) -> list[list]:
    """The newest jobs of kind `prefix*`, as the jobs table shows them."""
    return [[job["id"], job["kind"].removeprefix(prefix), job["status"],
             f"{job['done'] or 0}/{job['total']}" if job["total"] else "",
             local_time(job["started_at"]), job["error"] or ""] for job in store.jobs(prefix, limit=JOBS_SHOWN)]


def job_log(store: Store, prefix: str, job_id) -> str:
    """The end of the log of job `job_id`, or of the newest job of kind `prefix*` when none is given."""
    jobs = store.jobs(prefix, job_id=int(job_id) if job_id else None, limit=1)
    return log_tail(jobs[0]["log_path"], LOG_BYTES) if jobs else ""


def stop_job(store: Store, prefix: str, job_id, what: str) -> int:
    """Ask job `job_id` (blank: the newest running one of kind `prefix*`) to stop; returns its id."""
    jobs = store.jobs(prefix, job_id=int(job_id) if job_id else None, running=True, limit=1)
    if not jobs:
        raise UserInputError(f"no running {what} job{f' {int(job_id)}' if job_id else ''}: nothing to stop")
    request_stop(store, jobs[0]["id"])
    return jobs[0]["id"]


def select_job(event: gr.SelectData):
    return (event.row_value or [None])[0]
