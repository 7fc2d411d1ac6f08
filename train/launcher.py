"""Training runs as jobs: the studio's and the CLI's side (the trainer's side is `train.worker`).

A run is a `jobs` row of kind "train" plus a `runs` row with the same id (its config, devices,
requests). Launching checks the config, writes the rows and either spawns
`accelerate launch ... -m train.worker` in its own process session (argument list, never a
shell) or leaves the run queued: runs wait, first in first out, while another run holds any of
their devices. Stop / save now / sample now are flags the trainer's rank 0 reads; `reconcile`
escalates an ignored stop, fails runs whose process is gone and starts queued runs whose
devices are free. It runs on every refresh of the Train tab, on `dsd train status`, and when a
run ends, so the queue moves even with no studio open.
"""

import os
import shlex
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline import jobs
from pipeline.errors import UserInputError
from pipeline.store import Store, utc_now
from train.config import TrainConfig, config_values

KIND = "train"
ACTIVE = ("queued", "running")
REQUESTS = ("stop", "save", "sample")
# The log is for people: the libraries' progress bars and notices stay out of it.
QUIET = {"DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
FSDP_FLAGS = ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
              "--fsdp_transformer_layer_cls_to_wrap", "FluxTransformerBlock,FluxSingleTransformerBlock",
              "--fsdp_use_orig_params", "true", "--fsdp_state_dict_type", "FULL_STATE_DICT"]


def resolve_devices(config: TrainConfig, gpu_count: int | None = None) -> list[str]:
    """The devices a run holds: GPU ids, or ["cpu"]. Refuses what this machine cannot give."""
    if gpu_count is None:
        import torch  # here, not at the top: `dsd train status` and `stop` start without loading torch

        gpu_count = torch.cuda.device_count()
    asked = config.devices.strip().lower()
    if asked == "cpu" or (not asked and gpu_count == 0):
        if config.strategy == "fsdp":
            raise UserInputError("strategy fsdp needs GPUs; use ddp on the CPU")
        if config.processes > (os.cpu_count() or 1):
            raise UserInputError(f"{config.processes} processes asked for, but this machine has {os.cpu_count()} CPU cores")
        return ["cpu"]
    if not asked:
        if config.processes > gpu_count:
            raise UserInputError(f"{config.processes} processes asked for, but this machine has {gpu_count} GPU(s): "
                                 f"set processes to at most {gpu_count}")
        return [str(i) for i in range(config.processes)]
    try:
        ids = [int(part) for part in asked.split(",")]
    except ValueError:
        raise UserInputError(f"devices {config.devices!r}: give GPU ids like 0,1 or 'cpu'") from None
    missing = [i for i in ids if not 0 <= i < gpu_count]
    if missing:
        raise UserInputError(f"GPU(s) {', '.join(map(str, missing))} do not exist: this machine has {gpu_count} GPU(s)")
    if len(set(ids)) != config.processes:
        raise UserInputError(f"devices {config.devices} name {len(set(ids))} GPU(s) for {config.processes} process(es): "
                             "one process per GPU")
    return [str(i) for i in sorted(set(ids))]


def check_config(config: TrainConfig) -> list[str]:
    """What this machine must offer a (validated) config before a process starts: its devices, its data
    and its base's layers. Returns the devices the run will hold."""
    devices = resolve_devices(config)
    check_data(config)
    if not config.base:
        raise UserInputError("no base model: set base to the FLUX.1-dev folder or hub id to fine-tune")
    base = Path(config.base).expanduser()
    if (base / "transformer" / "config.json").is_file():  # a hub id is checked when its files are there
        from train.trainer import check_target_modules

        check_target_modules(config.target_modules, transformer_layer_names(base / "transformer"))
    return devices


def check_data(config: TrainConfig) -> None:
    import pyarrow.parquet as pq

    try:
        columns = set(pq.read_schema(config.data).names)
    except Exception as error:  # noqa: BLE001 (any unreadable file is the same message)
        raise UserInputError(f"data {config.data} is not a readable parquet file ({str(error).splitlines()[0]})") from None
    if not {"image", "conditioning", "caption"} <= columns:
        raise UserInputError(f"data {config.data} lacks the image, conditioning and caption columns of `dsd wheel export`")


def transformer_layer_names(folder: Path) -> set[str]:
    """The layer names of a transformer, from its config alone (no weights are read or allocated)."""
    import torch

    from pipeline.generation.model import DSDTransformer2DModel

    with torch.device("meta"):
        model = DSDTransformer2DModel.from_config(DSDTransformer2DModel.load_config(folder))
    return {name for name, _ in model.named_modules()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(config: TrainConfig, home: Path, port: int) -> list[str]:
    """`accelerate launch` for this run, as this Python runs it; the job adds `--job RUN_ID`."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(config.processes),
            "--num_machines", "1", "--mixed_precision", config.mixed_precision, "--dynamo_backend", "no",
            "--main_process_port", str(port)]
    argv += FSDP_FLAGS if config.strategy == "fsdp" else ["--multi_gpu"] if config.processes > 1 else []
    return argv + ["-m", "train.worker", "--home", str(Path(home).resolve())]


def create_run(store: Store, config: TrainConfig, name: str = "", status: str = "queued", **job_fields) -> int:
    """Check what the machine must offer the config and write the run's rows; the run folder defaults to
    `<home>/runs/<id>`."""
    devices = check_config(config)
    run_id = jobs.create_job(store, KIND, [], status=status, total=config.steps, **job_fields)
    if not config.out:
        config = replace(config, out=str((store.home / "runs" / str(run_id)).resolve()))
    store.put("runs", {"id": run_id, "name": name or f"run {run_id}", "config": config_values(config),
                       "out": config.out, "devices": ",".join(devices), "save_requested": 0, "sample_requested": 0})
    return run_id


def run_config(run: dict) -> TrainConfig:
    """The config a run was created with, as stored (it was validated when the run was made)."""
    return TrainConfig.from_dict(run["config"], f"run {run['id']}", check=False)


def launch(store: Store, config: TrainConfig, name: str = "") -> int:
    """Queue a run and start it if its devices are free; returns the run id at once."""
    run_id = create_run(store, config, name)
    start_queued(store)
    return run_id


def start_queued(store: Store) -> list[int]:
    """Start queued runs whose devices no running run holds, oldest first; a run never overtakes an
    older queued run that wants any of the same devices. Returns the runs started."""
    runs = store.runs()
    busy = {device for run in runs if run["status"] == "running" for device in run["devices"].split(",")}
    started = []
    for run in sorted((run for run in runs if run["status"] == "queued"), key=lambda run: run["id"]):
        wanted = set(run["devices"].split(","))
        if not wanted & busy:
            try:  # the data may have gone while it waited: fail the run rather than hold its devices
                config = run_config(run)
                check_data(config)
            except UserInputError as error:
                store.update("jobs", run["id"], {"status": "failed", "error": str(error), "ended_at": utc_now()})
                continue
            if jobs.claim_job(store, run["id"]):
                env = {**QUIET} if run["devices"] == "cpu" else {**QUIET, "CUDA_VISIBLE_DEVICES": run["devices"]}
                jobs.spawn_job(store, run["id"], env, launch_command(config, store.home, free_port()))
                started.append(run["id"])
        busy |= wanted
    return started


def command_line(run: dict) -> str:
    """The exact command a run was (last) started with, copyable into a shell."""
    if not run["args"]:
        return ""
    env = "" if run["devices"] == "cpu" else f"CUDA_VISIBLE_DEVICES={run['devices']} "
    return env + shlex.join([*run["args"], "--job", str(run["id"])])


def get_run(store: Store, run_id) -> dict:
    try:
        found = store.runs(int(run_id))
    except (TypeError, ValueError):
        found = []
    if not found:
        raise UserInputError(f"no training run {run_id!r}: `dsd train status` lists them")
    return found[0]


def request(store: Store, run_id, what: str) -> str:
    """Stop, save now or sample now; returns what will happen, in a sentence."""
    run = get_run(store, run_id)
    if what not in REQUESTS:
        raise UserInputError(f"unknown request {what!r}: use one of {', '.join(REQUESTS)}")
    if what == "stop" and run["status"] == "queued":
        store.update("jobs", run["id"], {"status": "stopped", "error": "taken off the queue", "ended_at": utc_now()})
        return f"run {run['id']} was waiting; it is off the queue"
    if run["status"] != "running":
        raise UserInputError(f"run {run['id']} is {run['status']}, not running: nothing to {what}")
    if what == "stop":
        jobs.request_stop(store, run["id"])
        return f"run {run['id']} saves a checkpoint and stops (resume continues from there)"
    store.update("runs", run["id"], {f"{what}_requested": int(time.time())})
    return f"run {run['id']} will {'save a checkpoint' if what == 'save' else 'draw samples'} after its current step"


def resume(store: Store, run_id, default_base: str | None = None) -> int:
    """Put a stopped or failed run back in the queue; it continues from its newest checkpoint. A run
    recorded without a base gets `default_base` (the caller's default model)."""
    run = get_run(store, run_id)
    if run["status"] in ACTIVE:
        raise UserInputError(f"run {run['id']} is {run['status']} already")
    if run["status"] == "done":
        raise UserInputError(f"run {run['id']} finished all its steps: start a new run to train more")
    config = run_config(run)
    if not config.base and default_base:
        config = replace(config, base=str(default_base))
        store.update("runs", run["id"], {"config": config_values(config)})
    check_config(config)
    store.update("jobs", run["id"], {"status": "queued", "stop_requested": 0, "error": None, "ended_at": None})
    store.update("runs", run["id"], {"save_requested": 0, "sample_requested": 0})
    start_queued(store)
    return run["id"]


def reconcile(store: Store) -> None:
    """Make the runs table true (dead processes failed, ignored stops escalated), then move the queue."""
    jobs.reconcile(store)
    start_queued(store)


def run_summary(store: Store, run: dict) -> dict:
    """What the runs table shows: progress, the newest loss and an estimate of the time left."""
    last = store.last_metric(run["id"])
    step, total = run["step"] or 0, run["total_steps"] or 0
    speed = last["steps_per_s"] if last else None
    eta = (total - step) / speed if speed and run["status"] == "running" else None
    return {"id": run["id"], "name": run["name"], "status": run["status"], "step": step, "steps": total,
            "loss": last["loss"] if last else None, "eta": format_seconds(eta), "devices": run["devices"],
            "error": run["error"] or ""}


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_weights(store: Store, run_id) -> Path:
    """The final weights of a run (what `dsd generate --run` and the Generate tab load)."""
    run = get_run(store, run_id)
    if not run["weights"] or not Path(run["weights"]).is_dir():
        raise UserInputError(f"run {run['id']} has no weights yet ({run['status']}): they are written when it "
                             "finishes or is stopped")
    return Path(run["weights"])


def runs_with_weights(store: Store) -> list[tuple[str, int]]:
    """(label, run id) of every run that has written weights, newest first: the Generate tab's choices."""
    return [(f"run {run['id']}: {run['name']} ({run['status']}, step {run['step'] or 0})", run["id"])
            for run in store.runs() if run["weights"] and Path(run["weights"]).is_dir()]


def run_model_fields(store: Store, run_id) -> tuple[str, str]:
    """(base, DSD weights) of a run, as the Generate tab's Model fields and `dsd generate --run` take them."""
    weights = run_weights(store, run_id)
    return run_config(get_run(store, run_id)).base or "", str(weights)


def wait(store: Store, run_id: int, statuses=("done", "failed", "stopped"), timeout: float = 600) -> dict:
    """Block until the run reaches one of `statuses` (for scripts and tests); returns its row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconcile(store)
        run = get_run(store, run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still {get_run(store, run_id)['status']} after {timeout} s")
