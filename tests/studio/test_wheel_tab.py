"""The Data wheel tab through its HTTP API (gradio_client): stages as jobs, filters, reviews, export."""

import time

import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from mini import JUDGE
from pipeline.store import Store
from pipeline.wheel import stages as wheel
from studio.resolve import resolve_captions, resolve_teacher, resolve_writer
from tests.studio.conftest import CURATED, ROOT


@pytest.fixture(scope="module")
def client(wheel_studio):
    return Client(wheel_studio.url, verbose=False)


def pairs(client, verdict="all", min_confidence=0, review="all", disagreement=False) -> list[list]:
    table = client.predict(verdict=verdict, min_confidence=min_confidence, review=review,
                           disagreement=disagreement, api_name="/wheel_pairs")
    return [row for row in table["data"] if row and row[0] not in (None, "")]


def wait_for_job(client, job_id: int, timeout: float = 60) -> tuple[list, str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        jobs, log, stats = client.predict(job_id=job_id, api_name="/wheel_jobs")
        row = next(row for row in jobs["data"] if row[0] == job_id)
        if row[2] != "running" or time.monotonic() > deadline:
            return row, log, {name: value for name, value in stats["data"]}
        time.sleep(0.3)


def test_a_stage_runs_as_a_background_job_and_reports_through_the_jobs_table(start_studio, tmp_path):
    with start_studio(tmp_path) as studio:
        client = Client(studio.url, verbose=False)
        job_id, message = client.predict(stage="captions", limit=2, api_name="/wheel_start")
        row, log, stats = wait_for_job(client, job_id)

    assert f"Started job {job_id}" in message and "--limit 2" in message
    assert row[1:3] == ["captions", "done"], row
    assert "captions: 2 added" in log
    assert stats["captions"] == 2 and Store(tmp_path).wheel_counts()["captions"] == 2
    assert list(stats)[:3] == ["hit_rate", "acceptance_rate", "review_agreement"]  # the rates at the top


def test_curation_defaults_to_the_miniatures_judge_takes_mini_judges_and_ends_on_its_final_counts(
        start_studio, tmp_path, monkeypatch):
    """The tab called `mini:FOLDER` an unknown provider (the command line took it), curated by default with a
    stand-in that accepts any two similar pictures, and showed a finished job's progress as it last saw it."""
    store = Store(tmp_path)
    wheel.run_captions(store, limit=2, default=resolve_captions(2))
    wheel.run_prompts(store, resolve_writer(None))
    teacher, size, name = resolve_teacher(None, None)
    wheel.run_grids(store, teacher, size=size, steps=2, teacher_name=name)
    wheel.run_pairs(store)
    pairs = store.wheel_counts()["pairs"]
    monkeypatch.chdir(ROOT)
    with start_studio(tmp_path) as studio:
        client = Client(studio.url, verbose=False)
        job_id, message = client.predict(stage="curate", judge="", api_name="/wheel_start")
        row, log, _ = wait_for_job(client, job_id)
        again, named = client.predict(stage="curate", judge="mini:assets/mini/judge", api_name="/wheel_start")
        second, *_ = wait_for_job(client, again)

    assert "--judge" not in message and row[2:4] == ["done", f"{pairs}/{pairs}"], (row, log)
    assert {verdict["judge"].split(":")[0] for verdict in store.judged_pairs()} == {"mini-judge"}
    assert f"--judge mini:{JUDGE}" in named and second[2] == "done"  # nothing left to judge


def test_the_grid_steps_follow_the_teacher(client, tmp_path):
    assert client.predict(teacher="", api_name="/wheel_teacher_steps") == 20  # the embedded teacher's own
    assert client.predict(teacher="black-forest-labs/FLUX.1-dev", api_name="/wheel_teacher_steps") == 28
    (tmp_path / "sampling.json").write_text("{not json")
    with pytest.raises(Exception, match="sampling.json is not valid JSON of numbers: fix or delete it"):
        client.predict(teacher=str(tmp_path), api_name="/wheel_teacher_steps")


def test_the_filters_count_what_the_judge_said(client, wheel_studio):
    total = Store(wheel_studio.home).wheel_counts()["pairs"]

    verdicts = Store(wheel_studio.home).review_queue()
    said = {name: sum(v["verdict_status"] == status and v["same"] == same for v in verdicts)
            for name, status, same in (("same", "ok", 1), ("not same", "ok", 0), ("failed", "failed", None))}

    assert len(pairs(client)) == total
    for verdict, count in said.items():
        rows = pairs(client, verdict=verdict)
        assert len(rows) == count and {row[2] for row in rows} == {verdict}
    assert said["same"] > 0 and said["not same"] >= 1 and said["failed"] == 1
    assert len(pairs(client, verdict="none yet")) == total - CURATED > 0
    confident = [row[3] for row in pairs(client, min_confidence=0.9)]
    assert 0.95 in confident and min(confident) >= 0.9


def test_reviews_are_stored_and_found_by_the_review_and_disagreement_filters(client, wheel_studio):
    store = Store(wheel_studio.home)
    first, second = (row[0] for row in pairs(client, verdict="same")[:2])

    accepted = client.predict(pair_id=first, decision="accept", note="crisp and alike", api_name="/wheel_review")
    rejected = client.predict(pair_id=second, decision="reject", note="different ears", api_name="/wheel_review")

    assert accepted["decision"] == "accept" and rejected["note"] == "different ears"
    assert store.get("reviews", first)["decision"] == "accept"
    assert store.get("reviews", second) | {"updated_at": None} == {
        "pair_id": second, "decision": "reject", "note": "different ears", "updated_at": None}
    assert [row[0] for row in pairs(client, review="accepted")] == [first]
    assert [row[0] for row in pairs(client, disagreement=True)] == [second]
    assert second not in [row[0] for row in pairs(client, review="unreviewed")]


def test_export_writes_the_accepted_pairs_for_download(client, wheel_studio):
    store = Store(wheel_studio.home)
    client.predict(pair_id=pairs(client, verdict="same")[0][0], decision="accept", note="", api_name="/wheel_review")

    reviewed, message = client.predict(caption_style="target", reviewed_only=True, api_name="/wheel_export")
    everything, _ = client.predict(caption_style="instruction", reviewed_only=False, api_name="/wheel_export")

    assert pq.read_table(reviewed).num_rows == len(store.accepted_pairs(reviewed_only=True)) >= 1
    assert pq.read_table(everything).num_rows == len(store.accepted_pairs()) > 1
    assert pq.read_table(reviewed).column_names == ["image", "conditioning", "caption"]
    assert "pairs written to" in message and "exports/pairs-" in message
    assert len(list((wheel_studio.home / "exports").glob("pairs-*.parquet"))) >= 1


BAD_SETTINGS = [
    pytest.param({"stage": "curate", "concurrency": 0}, "concurrency 0: give a whole number of at least 1", id="concurrency 0"),
    pytest.param({"stage": "prompts", "layout": "4x4"}, "Unknown grid layout '4x4'", id="layout 4x4"),
    pytest.param({"stage": "captions", "source": "/no/such/captions.txt"}, "'/no/such/captions.txt' does not exist",
                 id="missing caption file"),
    pytest.param({"stage": "grids", "size": "100"}, "multiple", id="grid size not a multiple of 16"),
    pytest.param({"stage": "captions", "limit": -1}, "limit -1: give a whole number", id="negative limit"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_SETTINGS)
def test_bad_settings_get_one_line_and_no_job(client, wheel_studio, fields, expected):
    jobs_before = len(Store(wheel_studio.home).jobs())
    with pytest.raises(Exception) as refused:
        client.predict(**fields, api_name="/wheel_start")

    message = str(refused.value)
    assert expected in message, message
    assert "\n" not in message and "Traceback" not in message
    assert len(Store(wheel_studio.home).jobs()) == jobs_before
    assert len(pairs(client)) > 0, "the studio keeps serving"


def test_bad_reviews_and_stops_get_one_line(client):
    for call, expected in (
        (dict(pair_id=1, decision="maybe", note="", api_name="/wheel_review"), "unknown decision 'maybe'"),
        (dict(pair_id=99999, decision="accept", note="", api_name="/wheel_review"), "no pair 99999"),
        (dict(job_id=99999, api_name="/wheel_stop"), "no running wheel job 99999"),
    ):
        with pytest.raises(Exception) as refused:
            client.predict(**call)
        assert expected in str(refused.value) and "\n" not in str(refused.value)
