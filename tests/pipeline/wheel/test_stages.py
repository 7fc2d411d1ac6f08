"""The data wheel end to end: offline on the embedded default, and with the real openai and
google-genai clients against a loopback server; crashes, reruns, export and import, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlite_utils import Database

from pipeline.store import Store
from pipeline.wheel.dataset import export_pairs, import_pairs
from pipeline.wheel.stages import wheel_stats
from tests.fake_api import request_images

ROOT = Path(__file__).resolve().parents[3]


def dsd(home: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio.cli", "wheel", *args, "--home", str(home)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


VERDICT = {
    "subject": "a tabby cat", "description_a": "a tabby cat sitting", "description_b": "the tabby cat lying down",
    "reasoning": "same markings and eye colour", "same": True, "confidence": 0.9,
    "caption_target": "the tabby cat lying on a sofa", "caption_instruction": "make the cat lie down on a sofa",
}


def grid_prompt_reply(body) -> str:
    """A valid structured grid prompt for whatever layout the request asked for."""
    text = " ".join(str(part) for part in json.dumps(body).split())
    panels = 6 if "2x3" in text else 9 if "3x3" in text else 2 if "1x2" in text else 4
    return json.dumps({"subject": "a small red robot", "panels": [f"panel {k}: the robot in place {k}, lit from side {k}" for k in range(panels)]})


@pytest.fixture(scope="module")
def offline_home(tmp_path_factory):
    """One offline run of every stage, as a fresh install would do it."""
    home = tmp_path_factory.mktemp("wheel")
    for stage in (["captions", "--limit", "6"], ["prompts"], ["grids", "--steps", "4"], ["pairs"], ["curate"]):
        ok(dsd(home, *stage))
    return home


def test_every_stage_runs_offline_and_exports(offline_home, tmp_path):
    out = tmp_path / "pairs.parquet"
    assert "pairs written" in ok(dsd(offline_home, "export", "--out", str(out)))
    stats = wheel_stats(Store(offline_home))
    assert stats["captions"] == 6 and stats["grid_prompts"] + stats["duplicate_prompts"] >= 6
    assert stats["grids"] >= 1 and stats["panels"] == 4 * stats["grids"]
    assert stats["pairs"] > 0 and stats["verdicts"] == stats["pairs"]
    table = pq.read_table(out)
    assert table.column_names == ["image", "conditioning", "caption"]
    assert table.num_rows == len(Store(offline_home).accepted_pairs())
    judges = {verdict["judge"].split(":")[0] for verdict in Store(offline_home).judged_pairs()}
    assert judges == {"mini-judge"}, "by default the miniature's grids are curated by its own judge"


def test_a_rerun_of_every_stage_adds_nothing(offline_home):
    before = wheel_stats(Store(offline_home))
    for stage in (["captions", "--limit", "6"], ["prompts"], ["grids", "--steps", "4"], ["pairs"], ["curate"]):
        assert ": 0 added" in ok(dsd(offline_home, *stage))
    assert wheel_stats(Store(offline_home)) == before


def test_export_import_round_trip(offline_home, tmp_path):
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    count = export_pairs(Store(offline_home), first)
    assert count > 0
    other = Store(tmp_path / "other")
    assert import_pairs(other, first) == count
    assert import_pairs(other, first) == 0, "importing twice adds nothing"
    export_pairs(other, second)
    a, b = pq.read_table(first).to_pylist(), pq.read_table(second).to_pylist()
    assert [row["caption"] for row in a] == [row["caption"] for row in b]
    assert [row["image"]["bytes"] for row in a] == [row["image"]["bytes"] for row in b]
    assert [row["conditioning"]["bytes"] for row in a] == [row["conditioning"]["bytes"] for row in b]


def test_an_uncurated_control_is_a_seeded_sample_of_every_judged_pair(offline_home, tmp_path):
    store = Store(offline_home)
    judged = store.judged_pairs()
    assert len(judged) > 3
    every = export_pairs(store, tmp_path / "all.parquet", uncurated=True)
    sizes = [export_pairs(store, tmp_path / f"sample-{seed}.parquet", uncurated=True, sample=3, seed=seed)
             for seed in (0, 0, 1)]
    assert every == len(judged) and sizes == [3, 3, 3]
    manifest = lambda name: [row["pair_id"] for row in json.loads((tmp_path / f"{name}.parquet.manifest.json").read_text())["rows"]]  # noqa: E731
    assert manifest("sample-0") == sorted(manifest("sample-0"), key=manifest("all").index)  # in the wheel's order
    assert set(manifest("sample-0")) < set(manifest("all"))
    assert export_pairs(store, tmp_path / "big.parquet", uncurated=True, sample=10**6) == every


def picture_bytes(colour: str) -> bytes:
    import io

    from PIL import Image

    with io.BytesIO() as buffer:
        Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
        return buffer.getvalue()


def parquet_of(path: Path, image: list, conditioning: list, caption: list) -> Path:
    import pyarrow as pa

    pq.write_table(pa.table({"image": image, "conditioning": conditioning, "caption": caption}), path)
    return path


def bad_parquets(folder: Path) -> dict[str, tuple[Path, str]]:
    """Parquet files whose first row is a good pair and whose second is not: name -> (file, the phrase said)."""
    from tests.pictures import png_declaring

    good = {"bytes": picture_bytes("red"), "path": None}
    pair = lambda bad: ([good, bad], [good, good], ["a red square", "a red square"])  # noqa: E731
    return {
        "not a picture": (parquet_of(folder / "text.parquet", *pair({"bytes": b"shopping list", "path": None})),
                          "row 1, image: this file is not a picture"),
        "integer columns": (parquet_of(folder / "numbers.parquet", [1, 2], [3, 4], ["a", "b"]),
                            "row 0: conditioning holds int, not picture bytes"),
        "decompression bomb": (parquet_of(folder / "bomb.parquet", *pair({"bytes": png_declaring(100_000, 100_000),
                                                                            "path": None})),
                               "row 1, image: image declares 100000x100000 pixels"),
        "null caption": (parquet_of(folder / "caption.parquet", [good, good], [good, good], ["a red square", None]),
                         "row 1 has no caption (None)"),
    }


@pytest.mark.parametrize("case", ["not a picture", "integer columns", "decompression bomb", "null caption"])
def test_import_checks_every_row_before_writing_anything(case, tmp_path):
    parquet, expected = bad_parquets(tmp_path)[case]
    home = tmp_path / "home"
    result = dsd(home, "import", str(parquet))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{parquet}, {expected}" in result.stderr, result.stderr
    assert not (home / "wheel").exists()
    assert Store(home).wheel_counts()["pairs"] == 0


@pytest.mark.parametrize("api", ["openai", "gemini"])
def test_prompts_and_curation_through_real_clients(api, fake_api, tmp_path, offline_home):
    home = tmp_path / "home"
    ok(dsd(home, "captions", "--limit", "2"))
    fake_api.reply = grid_prompt_reply
    spec = f"openai:writer@{fake_api.openai_base_url}" if api == "openai" else f"gemini:writer@{fake_api.url}"
    ok(dsd(home, "prompts", "--writer", spec))
    prompts = Store(home).grid_prompts(duplicates=True)
    assert prompts and all(row["subject"] == "a small red robot" and len(row["panels"]) == 4 for row in prompts)
    assert prompts[0]["writer"].startswith(api)
    # The canned reply is the same for every caption: the repeat is marked and gets no grid.
    assert [row["duplicate_of"] for row in prompts] == [None, prompts[0]["id"]]

    ok(dsd(home, "grids", "--steps", "4"))
    ok(dsd(home, "pairs"))
    fake_api.reply = lambda body: json.dumps(VERDICT)
    fake_api.requests.clear()
    judge = f"openai:judge@{fake_api.openai_base_url}" if api == "openai" else f"gemini:judge@{fake_api.url}"
    ok(dsd(home, "curate", "--judge", judge, "--usd-per-mtok", "1000", "2000"))
    pairs = Store(home).wheel_counts()["pairs"]
    run = json.loads([row for row in Database(home / "dsd.sqlite")["stage_runs"].rows if row["stage"] == "curate"][-1]["details"])
    assert run["input_tokens"] > 0 and run["output_tokens"] > 0, "the run's token accounting"
    assert run["usd"] == round((run["input_tokens"] * 1000 + run["output_tokens"] * 2000) / 1e6, 4)
    assert len(fake_api.requests) == pairs
    assert all(len(request_images(r.json)) == 2 for r in fake_api.requests)
    verdicts = Store(home).judged_pairs()
    assert len(verdicts) == pairs and all(v["same"] == 1 and v["caption_target"] == VERDICT["caption_target"] for v in verdicts)


def fresh_curation(fake_api, offline_home, tmp_path) -> tuple:
    """(home, store): a copy of the offline wheel whose verdicts are reset, so a VLM judge (the fake API,
    answering "the same subject") curates every pair afresh."""
    home = tmp_path / "home"
    shutil.copytree(offline_home, home)
    store = Store(home)
    for verdict in store.judged_pairs():
        store.put("verdicts", {"pair_id": verdict["pair_id"], "status": "failed", "error": "reset"})
    fake_api.reply = lambda body: json.dumps(VERDICT)
    return home, store


def test_sigkill_midway_then_rerun_loses_nothing_and_repeats_no_call(fake_api, offline_home, tmp_path):
    home, store = fresh_curation(fake_api, offline_home, tmp_path)
    fake_api.latency = 0.15
    judge = f"openai:judge@{fake_api.openai_base_url}"
    args = [sys.executable, "-m", "studio.cli", "wheel", "curate", "--judge", judge, "--concurrency", "2", "--home", str(home)]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while store.wheel_counts()["verdicts"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    judged_before = store.wheel_counts()["verdicts"]
    assert 3 <= judged_before < store.wheel_counts()["pairs"], "killed midway"
    calls_before = len(fake_api.requests)
    # The killed run's row holds what it did and spent (it used to write none), marked as not finished.
    killed = [row for row in Database(home / "dsd.sqlite")["stage_runs"].rows if row["stage"] == "curate"][-1]
    spent = json.loads(killed["details"])
    assert killed["stopped"] == 1 and killed["added"] == judged_before
    assert spent["input_tokens"] > 0 and spent["output_tokens"] > 0

    ok(dsd(home, "curate", "--judge", judge, "--concurrency", "2"))
    counts = store.wheel_counts()
    pairs = counts["pairs"]
    assert counts["verdicts"] == pairs and counts["failed_verdicts"] == 0
    # Finished pairs were not asked again; at most the calls in flight at the kill are repeated.
    repeated = len(fake_api.requests) - calls_before - (pairs - judged_before)
    assert repeated <= 2


def test_two_curations_of_one_data_folder_judge_each_pair_once(fake_api, offline_home, tmp_path):
    """Two `dsd wheel curate` at once used to judge every pair twice (twice the paid calls)."""
    home, store = fresh_curation(fake_api, offline_home, tmp_path)
    fake_api.latency = 0.1  # both curations are in flight together
    judge = f"openai:judge@{fake_api.openai_base_url}"
    args = [sys.executable, "-m", "studio.cli", "wheel", "curate", "--judge", judge, "--concurrency", "2", "--home", str(home)]
    curations = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outcomes = [process.communicate(timeout=300) for process in curations]

    assert [process.returncode for process in curations] == [0, 0], outcomes
    pairs = store.wheel_counts()["pairs"]
    asked = [tuple(image.tobytes() for _, image in request_images(request.json)) for request in fake_api.requests]
    assert len(asked) == len(set(asked)) == pairs, "exactly one call per pair"
    counts = store.wheel_counts()
    assert counts["verdicts"] == pairs and counts["failed_verdicts"] == 0


@pytest.mark.parametrize("stage, args, phrase", [
    ("captions", ["--from", "{tmp}/missing.txt"], "does not exist"),
    ("captions", ["--from", "{tmp}/empty.txt"], "no captions"),
    ("captions", ["--from", "{tmp}/table.csv", "--column", "alt"], "alt"),
    ("captions", ["--from", "{tmp}/broken.parquet"], "parquet"),
    ("grids", ["--teacher", "{tmp}/no-model"], "neither a folder nor"),
    ("grids", ["--teacher", "{tmp}"], "cannot load the teacher"),
    ("curate", ["--judge", "claude:opus"], "unknown judge 'claude:opus'"),
    ("prompts", ["--writer", "openai:gpt-4o-mini"], "OPENAI_API_KEY"),
    ("prompts", ["--layout", "4x4"], "4x4"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(stage, args, phrase, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "table.csv").write_text("url,caption\nhttp://x,a red car\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    home = tmp_path / "home"
    if stage != "captions":
        ok(dsd(home, "captions", "--limit", "2"))
    before = {table: Store(home).wheel_counts()[table] for table in ("captions", "grid_prompts", "grids")}
    env = {"OPENAI_API_KEY": ""} if "OPENAI" in phrase else {}
    result = dsd(home, stage, *[a.format(tmp=tmp_path) for a in args], env=env)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and phrase in message and "Traceback" not in message
    assert {table: Store(home).wheel_counts()[table] for table in before} == before


def test_grids_split_across_two_processes_each_drawn_once(tmp_path):
    """`accelerate launch` with two processes (gloo on CPU), the command line used for GPUs."""
    home = tmp_path / "home"
    ok(dsd(home, "captions", "--limit", "5"))
    ok(dsd(home, "prompts"))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "studio.cli", "wheel", "grids", "--home", str(home), "--steps", "2", "--size", "64"]
    result = subprocess.run(launch, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    shares = sorted(line for line in result.stdout.splitlines() if line.startswith("grids:"))
    assert len(shares) == 2 and "process 1/2" in shares[0] and "process 2/2" in shares[1]
    store = Store(home)
    prompts = len(store.grid_prompts())
    assert store.wheel_counts()["grids"] == prompts
    assert sum(int(line.split()[1]) for line in shares) == prompts, "every grid drawn by exactly one process"
    files = sorted((home / "wheel" / "grids").iterdir())
    assert len(files) == prompts and all(f.suffix == ".png" for f in files), "no half-written files"


def test_a_refused_key_stops_curation_with_one_line(fake_api, offline_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(offline_home, home)
    store = Store(home)
    for verdict in store.judged_pairs():
        store.put("verdicts", {"pair_id": verdict["pair_id"], "status": "failed", "error": "reset"})
    fake_api.fail_with(*[401] * 50)
    result = dsd(home, "curate", "--judge", f"openai:judge@{fake_api.openai_base_url}",
                 env={"OPENAI_API_KEY": "sk-test-secret-123"})
    assert result.returncode == 1
    message = result.stderr.strip()
    assert "\n" not in message and "401" in message and "Traceback" not in message
    assert "sk-test-secret-123" not in result.stderr + result.stdout
    assert store.wheel_counts()["verdicts"] == 0
    assert len(fake_api.requests) <= 4, "the run stops instead of failing every pair"


def test_a_teacher_folder_can_ask_for_true_guidance(tmp_path):
    """FLUX.1-dev draws without it; a folder whose sampling.json says "true_cfg" (the miniature's teacher,
    trained with caption dropout) draws against the empty prompt at that scale; a bad file is one error."""
    from pipeline.errors import UserInputError
    from pipeline.wheel.teacher import load_teacher

    folder = tmp_path / "teacher"
    shutil.copytree(Path(__file__).resolve().parents[3] / "assets" / "tiny-dsd", folder)
    plain = load_teacher(str(folder))
    (folder / "sampling.json").write_text('{"width": 64, "height": 64, "steps": 20, "true_cfg": 4}')
    guided = load_teacher(str(folder))
    assert (plain.true_cfg, guided.true_cfg) == (1.0, 4.0)
    one, other = plain("a red fox", 64, 64, 2, 3.5, seed=3), guided("a red fox", 64, 64, 2, 3.5, seed=3)
    assert one.size == other.size == (64, 64) and one.tobytes() != other.tobytes()
    assert plain("a red fox", 64, 64, 2, 3.5, seed=3).tobytes() == one.tobytes()
    (folder / "sampling.json").write_text('{"true_cfg": "lots"}')
    with pytest.raises(UserInputError, match="sampling.json is not valid JSON"):
        load_teacher(str(folder))
