"""The Train tab through its HTTP API (gradio_client): a real CPU run driven by every button; refusals; presets."""

import time
from dataclasses import dataclass, fields
from pathlib import Path

import PIL.Image
import pytest
import yaml
from gradio_client import Client

from pipeline.errors import UserInputError
from pipeline.store import Store
from train import launcher
from train.checkpoints import checkpoints
from train.config import TrainConfig

FIELD_ORDER = [f.name for f in fields(TrainConfig)]


@dataclass
class View:
    """What `train_runs` shows of one run."""

    row: list
    log: str
    points: list
    samples: str | None
    command: str


def view(client, run_id: int) -> View:
    table, log, plot, samples, command = client.predict(run_id=run_id, api_name="/train_runs")
    row = next(row for row in table["data"] if row[0] == run_id)
    return View(row, log, (plot or {}).get("data", []), samples, command)


def wait_for(client, run_id: int, predicate, seconds: float = 60) -> View:
    deadline = time.monotonic() + seconds
    while True:
        seen = view(client, run_id)
        if predicate(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} never got there: {seen.row}\n{seen.log[-2000:]}")
        time.sleep(0.5)


def stop_and_wait(store: Store, run_id: int) -> None:
    """The backstop: whatever a test did, its run has ended when the test does."""
    try:
        launcher.request(store, run_id, "stop")
    except UserInputError:
        pass  # not running any more
    launcher.wait(store, run_id, timeout=120)


def test_a_run_trains_in_the_background_and_every_button_acts_on_it(start_studio, tmp_path):
    store = Store(tmp_path)
    with start_studio(tmp_path) as studio:
        client = Client(studio.url, verbose=False)
        run_id, started = client.predict(name="smoke", steps=100_000, checkpoint_every=1000, sample_every=0,
                                         api_name="/train_start")
        try:
            first = wait_for(client, run_id, lambda seen: seen.points)
            later = wait_for(client, run_id, lambda seen: len(seen.points) > len(first.points))

            saving = client.predict(run_id=run_id, api_name="/train_save")
            wait_for(client, run_id, lambda seen: checkpoints(Path(launcher.get_run(store, run_id)["out"])))
            sampling = client.predict(run_id=None, api_name="/train_sample")  # blank: the newest running run
            sampled = wait_for(client, run_id, lambda seen: seen.samples)

            stopping = client.predict(run_id=None, api_name="/train_stop")
            ended = wait_for(client, run_id, lambda seen: seen.row[2] != "running")
            stopped_at = int(ended.row[3].split("/")[0])
            resumed_id, resuming = client.predict(run_id=None, api_name="/train_resume")
            resumed = wait_for(client, run_id, lambda seen: seen.row[2] == "running"
                               and int(seen.row[3].split("/")[0]) > stopped_at)
            client.predict(run_id=run_id, api_name="/train_stop")
            wait_for(client, run_id, lambda seen: seen.row[2] != "running")
        finally:
            stop_and_wait(store, run_id)

    assert started == f"Started run {run_id} on the CPU."
    assert first.row[1:3] == ["smoke", "running"] and first.row[6] == "cpu"
    # The plot grows, one line per loss, from step 1.
    assert {series for _, _, series in later.points} == {"loss", "loss_reference", "loss_target"}
    assert [step for step, _, series in later.points if series == "loss"][:3] == [1, 2, 3]
    assert "save a checkpoint" in saving and "draw samples" in sampling
    # Sample now drew one row per training pair (the preset samples two) at one step.
    assert PIL.Image.open(sampled.samples).height > 2 * 100 and "run-" in Path(sampled.samples).name
    assert "stops" in stopping and ended.row[2] == "stopped" and not ended.row[7], ended.log[-2000:]
    assert ended.row[3] == f"{stopped_at}/100000" and f"stopped at step {stopped_at}" in ended.log
    assert "accelerate.commands.launch" in ended.command and ended.command.endswith(f"--job {run_id}")
    assert resumed_id == run_id and "Resumed run" in resuming and f"resumed from step {stopped_at}" in resumed.log
    assert launcher.get_run(store, run_id)["status"] == "stopped"


BAD_SETTINGS = [
    pytest.param({"rank": 0}, "rank must be at least 1, got 0", id="rank 0"),
    pytest.param({"data": "/no/such/pairs.parquet"}, "data '/no/such/pairs.parquet' is not a file", id="missing data"),
    pytest.param({"target_modules": "[transformer_blocks.*.attn.to_qq]"},
                 "target_modules transformer_blocks.*.attn.to_qq match no layer", id="unknown module"),
    pytest.param({"devices": "cpu", "strategy": "fsdp"}, "strategy fsdp needs GPUs", id="fsdp on the CPU"),
    pytest.param({"devices": "99"}, "GPU(s) 99 do not exist", id="a GPU that is not there"),
    pytest.param({"half_weights": "[1, "}, "half_weights is not valid YAML", id="broken YAML"),
    pytest.param({"steps": 0}, "steps, batch_size and gradient_accumulation must be positive", id="steps 0"),
    pytest.param({"alpha": None, "learning_rate": None}, "learning_rate is blank: give a number", id="blank number"),
    pytest.param({"out": "/tmp/elsewhere"}, "the run folder /tmp/elsewhere is outside the data folder", id="out elsewhere"),
    pytest.param({"out": "../escape"}, "the run folder ../escape is outside the data folder", id="out up and out"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_SETTINGS)
def test_a_bad_config_gets_one_line_and_no_run(studio, fields, expected):
    client = Client(studio.url, verbose=False)
    with pytest.raises(Exception) as refused:
        client.predict(**fields, api_name="/train_start")

    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message and "Traceback" not in message
    assert Store(studio.home).runs() == []
    table, *_ = client.predict(run_id=None, api_name="/train_runs")
    assert [row for row in table["data"] if row and row[0] not in (None, "")] == [], "the studio keeps serving"


def test_stop_and_resume_with_no_run_say_so(studio):
    client = Client(studio.url, verbose=False)
    for call, expected in ((dict(run_id=None, api_name="/train_stop"), "no running training run: nothing to stop"),
                           (dict(run_id=None, api_name="/train_sample"), "nothing to sample"),
                           (dict(run_id=99999, api_name="/train_save"), "no training run 99999"),
                           (dict(run_id=None, api_name="/train_resume"), "no stopped or failed training run")):
        with pytest.raises(Exception) as refused:
            client.predict(**call)
        assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_the_form_has_every_setting_and_starts_on_the_cpu_smoke_preset(studio):
    client = Client(studio.url, verbose=False)
    start = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/train_start"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in start["parameters"]}

    assert list(defaults) == ["name", *FIELD_ORDER]
    assert defaults["data"].endswith("assets/pairs/examples.parquet") and defaults["devices"] == "cpu"
    assert defaults["rank"] == 8 and defaults["resolution"] == 64 and defaults["steps"] == 40


def test_a_preset_saved_from_the_form_loads_back_and_is_offered(studio):
    client = Client(studio.url, verbose=False)
    smoke = client.predict(preset="cpu-smoke", api_name="/train_preset_load")

    chosen, message = client.predict(preset_name="small-rank", rank=4, steps=12, api_name="/train_preset_save")
    loaded = dict(zip(FIELD_ORDER, client.predict(preset="small-rank", api_name="/train_preset_load")))

    saved = yaml.safe_load((studio.home / "presets" / "small-rank.yaml").read_text())
    assert chosen["value"] == "small-rank" and ["small-rank", "small-rank"] in chosen["choices"]
    assert "small-rank.yaml" in message
    assert saved["rank"] == loaded["rank"] == 4 and saved["steps"] == loaded["steps"] == 12
    assert loaded["data"] == dict(zip(FIELD_ORDER, smoke))["data"] and loaded["data"].endswith("examples.parquet")
    assert "proj_out" in loaded["target_modules"] and loaded["devices"] == "cpu"
    with pytest.raises(Exception) as refused:
        client.predict(preset_name="../escape", api_name="/train_preset_save")
    assert "preset name '../escape'" in str(refused.value)



def test_a_run_that_died_while_the_studio_was_down_is_failed_when_it_starts(tmp_path, start_studio):
    import subprocess

    from train.config import load_preset

    store = Store(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    log = tmp_path / "job.log"
    log.write_text("step 10/40  loss 1.1\nRuntimeError: CUDA out of memory\n")
    run_id = launcher.create_run(store, load_preset("cpu-smoke"), status="running", pid=gone.pid, log_path=str(log))
    with start_studio(tmp_path):
        run = launcher.get_run(store, run_id)
    assert run["status"] == "failed" and run["error"] == "RuntimeError: CUDA out of memory"
