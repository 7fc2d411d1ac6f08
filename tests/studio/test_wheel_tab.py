"""The Data wheel tab through its HTTP API (gradio_client): stages as jobs, filters, reviews, export."""

import time

import pyarrow.parquet as pq
import pytest
from gradio_client import Client

from pipeline.store import Store
from tests.studio.conftest import CURATED


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
