"""Jobs (long work in a process of its own) and training runs: a run is a job of kind "train" with the
same id, its settings in `runs`, its losses in `run_metrics` and its sample pictures in `run_samples`."""

import json
from typing import Any

from pipeline.store.base import StoreBase, decode_row

RUN_VIEW = """
select runs.*, jobs.status, jobs.pid, jobs.done as step, jobs.total as total_steps, jobs.stop_requested,
       jobs.error, jobs.log_path, jobs.args, jobs.started_at, jobs.ended_at
from runs join jobs on jobs.id = runs.id"""


class RunQueries(StoreBase):
    def jobs(self, kind_prefix: str = "", job_id: int | None = None, running: bool = False,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Jobs of a kind (e.g. "wheel:"; all by default), newest first; one of them by id, or only the running ones."""
        where, args = ["kind like ?"], [f"{kind_prefix}%"]
        if job_id is not None:
            where.append("id = ?")
            args.append(int(job_id))
        if running:
            where.append("status = 'running'")
        return self._rows("jobs", " and ".join(where), args, order_by="id desc", limit=limit)

    def runs(self, run_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Training runs with their job's state (status, pid, step, log), newest first."""
        query = RUN_VIEW + (" where runs.id = ?" if run_id is not None else "") + " order by runs.id desc"
        query += f" limit {int(limit)}" if limit is not None else ""
        found = [decode_row("runs", row) for row in self._query(query, [] if run_id is None else [int(run_id)])]
        return [{**run, "args": json.loads(run["args"]) if run["args"] else None} for run in found]

    # a run's losses, written by rank 0 in batches

    def run_metrics(self, run_id: int, stride: int = 1) -> list[dict[str, Any]]:
        """The run's metric rows by step; with `stride`, only the steps it divides (a thinned curve)."""
        return self._rows("run_metrics", "run_id = ? and step % ? = 0", [run_id, max(1, int(stride))], order_by="step")

    def count_metrics(self, run_id: int) -> int:
        return self._count("run_metrics", "run_id = ?", [run_id])

    def last_metric(self, run_id: int) -> dict[str, Any] | None:
        """The newest metric row of the run, or None before its first."""
        return self._first("run_metrics", "run_id = ?", [run_id], order_by="step desc")

    def drop_metrics_after(self, run_id: int, step: int) -> int:
        """Forget the metrics past `step` (a run resuming from its checkpoint there); returns how many."""
        with self._writing() as db:
            before = db.conn.total_changes
            db["run_metrics"].delete_where("run_id = ? and step > ?", [run_id, step])
            return db.conn.total_changes - before

    def run_samples(self, run_id: int) -> list[dict[str, Any]]:
        """The run's sample pictures by step, then by prompt."""
        return self._rows("run_samples", "run_id = ?", [run_id], order_by="step, idx")
