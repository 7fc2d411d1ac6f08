"""The trainer's side of a launched run: what `accelerate launch ... -m train.worker` runs on every rank.

It reads the run's config from the store, trains (resuming from the newest checkpoint), and rank 0
records how the run ended, then starts the next queued run. The foreground `dsd train` runs the
same `execute` in its own process.
"""

import argparse
import os
import sys

from pipeline.errors import UserInputError
from pipeline.jobs import JobReporter
from pipeline.store import Store
from train import launcher
from train.trainer import TrainResult, train


def execute(store: Store, run_id: int) -> TrainResult:
    run = launcher.get_run(store, run_id)
    config = launcher.run_config(run)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    reporter = JobReporter(store, run_id if main_rank else None)

    def report(metrics: dict) -> None:
        if metrics["step"] % config.log_every == 0 or metrics["step"] == config.steps:
            print(f"step {metrics['step']}/{config.steps}  loss {metrics['loss']:.4f}  (reference "
                  f"{metrics['loss_reference']:.4f}, target {metrics['loss_target']:.4f})  lr {metrics['lr']:.2e}  "
                  f"{metrics['steps_per_s']:.2f} steps/s", flush=True)

    with reporter.finishing():
        result = train(config, store.home, store, run_id, on_metrics=report)
        reporter.progress(result.step, config.steps, force=True)
        reporter.stopped = result.stopped
    if main_rank:
        print(f"weights written to {result.weights}", flush=True)
        launcher.start_queued(store)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.worker")
    parser.add_argument("--home", required=True)
    parser.add_argument("--job", type=int, required=True, help="the run id (a run is a job)")
    args = parser.parse_args(argv)
    try:
        execute(Store(args.home), args.job)
    except UserInputError as error:
        print(f"dsd train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
