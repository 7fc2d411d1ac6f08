"""What a running trainer tells the studio, and what it hears back, through the store.

- `SQLiteTracker`: an accelerate tracker (rank 0 only) that writes one `run_metrics` row per step,
  in batches; `flush` is called before a checkpoint is committed, so every step up to a
  checkpoint is on disk when the checkpoint is.
- `RunControl`: rank 0 reads the run's stop / save-now / sample-now flags (at most twice a
  second) and broadcasts them, so every rank acts on the same step.
"""

import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import broadcast

from pipeline.jobs import JobReporter
from pipeline.store import Store

FLUSH_ROWS, FLUSH_SECONDS, POLL_SECONDS = 50, 5.0, 0.5


class SQLiteTracker(GeneralTracker):
    name = "dsd-sqlite"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, store: Store, run_id: int):
        super().__init__()
        self.store, self.run_id = store, run_id
        self.pending: list[dict] = []
        self.flushed_at = time.monotonic()

    @property
    def tracker(self):
        return self.store

    def store_init_configuration(self, values: dict) -> None:
        self.store.update("runs", self.run_id, {"config": values})

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.pending.append({"run_id": self.run_id, "step": step, **values})
        if len(self.pending) >= FLUSH_ROWS or time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.add("run_metrics", self.pending)
        self.pending, self.flushed_at = [], time.monotonic()

    def finish(self) -> None:
        self.flush()


@dataclass
class Requests:
    stop: bool = False
    save: bool = False
    sample: bool = False


class RunControl:
    """The run's flags, the same on every rank. Without a store (a bare `train()` call) nothing is asked."""

    def __init__(self, accelerator: Accelerator, store: Store | None, run_id: int | None):
        self.accelerator, self.store, self.run_id = accelerator, store, run_id
        self.reporter = JobReporter(store, run_id) if store is not None else None
        self.read_at = 0.0

    def poll(self) -> Requests:
        flags = torch.zeros(3, device=self.accelerator.device)
        if self.store is not None and self.accelerator.is_main_process and time.monotonic() - self.read_at > POLL_SECONDS:
            self.read_at = time.monotonic()
            run = self.store.runs(self.run_id)[0]
            flags = torch.tensor([bool(run["stop_requested"]), bool(run["save_requested"]), bool(run["sample_requested"])],
                                 dtype=torch.float32, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flags = broadcast(flags, from_process=0)
        return Requests(*(bool(flag) for flag in flags.tolist()))

    def done(self, request: str) -> None:
        """A save or sample request was carried out: clear its flag."""
        if self.store is not None and self.accelerator.is_main_process:
            self.store.update("runs", self.run_id, {f"{request}_requested": 0})

    def progress(self, step: int, total: int) -> None:
        if self.reporter is not None and self.accelerator.is_main_process:
            self.reporter.progress(step, total)
