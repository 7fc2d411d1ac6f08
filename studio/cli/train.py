"""`dsd train`: the fine-tune in the foreground, or runs launched, stopped and resumed as jobs (train/launcher.py)."""

import argparse
import os
from dataclasses import replace
from pathlib import Path

from pipeline.errors import UserInputError


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    source = argparse.ArgumentParser(add_help=False)
    picked = source.add_mutually_exclusive_group()
    picked.add_argument("--config", type=Path, help="a YAML file of train.config.TrainConfig settings")
    picked.add_argument("--preset", help="a preset by name: cpu-smoke, 1x-h100, 8x-h100-fsdp or one saved in the studio")
    source.add_argument("--data", help="training pairs (parquet), instead of the config's")
    training = commands.add_parser("train", parents=[common, source], help="fine-tune a DSD LoRA (foreground without an action)")
    actions = training.add_subparsers(dest="action")
    launch = actions.add_parser("launch", parents=[common, source], help="start a run in the background (queued if its devices are busy)")
    launch.add_argument("--gpus", help="GPU ids, e.g. 0,1 (one process each); 'cpu' for CPU processes")
    launch.add_argument("--processes", type=int, help="processes (default: the config's)")
    launch.add_argument("--name", default="")
    for action, text in (("stop", "save a checkpoint and stop"), ("save", "save a checkpoint now"),
                         ("sample", "draw samples now"), ("resume", "continue a stopped or failed run")):
        actions.add_parser(action, parents=[common], help=text).add_argument("run", help="run id")
    actions.add_parser("status", parents=[common], help="the runs: status, step, loss, time left").add_argument(
        "run", nargs="?", help="one run in detail")


def train_config(args):
    from pipeline.store import data_home
    from studio.resolve import resolve_config
    from train.config import TrainConfig, load_preset

    if args.config:
        config = TrainConfig.from_yaml(args.config)
    elif args.preset:
        config = load_preset(args.preset, data_home(getattr(args, "home", None)))
    else:
        raise UserInputError("give --config FILE.yaml or --preset NAME")
    if args.data:
        config = replace(config, data=str(Path(args.data).resolve()))
    config = resolve_config(config)
    if getattr(args, "gpus", None):
        devices = args.gpus.strip()
        processes = 1 if devices.lower() == "cpu" else len(devices.split(","))
        config = replace(config, devices=devices, processes=args.processes or processes)
    elif getattr(args, "processes", None):
        config = replace(config, processes=args.processes)
    config.validate()
    return config


def run_train(args) -> int:
    from pipeline.store import Store, data_home, utc_now
    from train import launcher

    store = Store(data_home(getattr(args, "home", None)))
    action = args.action
    if action is None:  # the foreground: this process is the run
        from train.worker import execute

        run_id = launcher.create_run(store, train_config(args), status="running", pid=os.getpid(),
                                     started_at=utc_now())
        print(f"run {run_id}", flush=True)
        execute(store, run_id)
        return 0
    if action == "launch":
        run_id = launcher.launch(store, train_config(args), args.name)
        run = launcher.get_run(store, run_id)
        print(f"run {run_id} {run['status']}" + (f": {launcher.command_line(run)}" if run["args"] else
                                                 " (waiting for its devices)"))
        return 0
    if action in launcher.REQUESTS:
        print(launcher.request(store, args.run, action))
        return 0
    if action == "resume":
        from studio.resolve import DEFAULT_BASE

        run = launcher.get_run(store, launcher.resume(store, args.run, default_base=DEFAULT_BASE))
        print(f"run {run['id']} {run['status']}")
        return 0
    print_status(store, args.run)
    return 0


def print_status(store, run_id) -> None:
    """`dsd train status [RUN]`: a line per run; with a run, also its command and log."""
    from train import launcher

    launcher.reconcile(store)
    runs = [launcher.get_run(store, run_id)] if run_id else store.runs(limit=50)
    print(f"{'run':>4}  {'status':8}  {'step':>13}  {'loss':>8}  {'left':>7}  devices  name")
    for run in runs:
        row = launcher.run_summary(store, run)
        loss = f"{row['loss']:.4f}" if row["loss"] is not None else ""
        print(f"{row['id']:>4}  {row['status']:8}  {row['step']:>6}/{row['steps']:<6}  {loss:>8}  {row['eta']:>7}  "
              f"{row['devices']:7}  {row['name']}" + (f"  ({row['error']})" if row["error"] else ""))
    if run_id:
        print(f"command: {launcher.command_line(runs[0]) or '(foreground)'}\nlog: {runs[0]['log_path'] or ''}")
