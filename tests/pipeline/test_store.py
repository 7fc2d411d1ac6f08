import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlite_utils import Database

from pipeline.store import Store

REPO = Path(__file__).resolve().parents[2]


def generation(**overrides):
    fields = dict(
        mode="subject",
        prompt="A photo of the toy on a beach",
        prompt_used="Left: the toy. Right: a photo of the toy on a beach",
        model="FLUX.1-dev + DSD (bf16)",
        params={"steps": 28, "guidance": 3.5, "image_guidance": 1.0, "text_guidance": 3.5,
                "size": [512, 512], "seeds": [7, 8], "memory_mode": "offload", "dtype": "bfloat16"},
        seed=7,
        num_images=2,
        reference_path="/data/refs/toy.png",
        output_paths=["/data/out/1.png", "/data/out/2.png"],
        timings={"load_s": 12.5, "encode_s": 0.4, "denoise_s": 9.1, "decode_s": 0.3,
                 "total_s": 22.3, "per_step_s": 0.325},
        notices=["reference resized to 512x512"],
    )
    return {**fields, **overrides}


def test_record_then_read_back_decodes_json(tmp_path):
    store = Store(tmp_path / "data")
    fields = generation()

    row = store.get_generation(store.record_generation(**fields))

    for name, value in fields.items():
        assert row[name] == value
    assert row["status"] == "ok" and row["error"] is None
    assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(0)
    assert store.path == tmp_path / "data" / "dsd.sqlite" and store.path.is_file()


def test_failed_generation_keeps_its_error(tmp_path):
    store = Store(tmp_path)
    gid = store.record_generation(**generation(output_paths=[], status="error", error="CUDA out of memory"))

    row = store.get_generation(gid)

    assert (row["status"], row["error"], row["output_paths"]) == ("error", "CUDA out of memory", [])


def test_list_is_newest_first_with_limit_and_offset(tmp_path):
    store = Store(tmp_path)
    ids = [store.record_generation(**generation(prompt=f"prompt {i}")) for i in range(5)]

    assert [row["id"] for row in store.list_generations()] == ids[::-1]
    assert [row["id"] for row in store.list_generations(limit=2, offset=1)] == [ids[3], ids[2]]
    assert store.list_generations(limit=10, offset=5) == []
    assert store.list_generations()[0]["params"]["steps"] == 28
    assert store.count_generations() == 5


def test_search_matches_prompt_substring_ignoring_case(tmp_path):
    store = Store(tmp_path)
    beach = store.record_generation(**generation(prompt="A toy on a BEACH"))
    store.record_generation(**generation(prompt="A toy in a forest", prompt_used="beach"))
    percent = store.record_generation(**generation(prompt="100% cotton beach towel"))

    assert [row["id"] for row in store.list_generations(search="beach")] == [percent, beach]
    assert [row["id"] for row in store.list_generations(search="0% c")] == [percent]
    assert store.list_generations(search="%") == store.list_generations(search="100%")
    assert store.count_generations(search="Beach") == 2
    assert store.count_generations(search="mountain") == 0
    assert len(store.list_generations(search="")) == 3


def test_concurrent_writes_from_threads_all_land(tmp_path):
    store = Store(tmp_path)
    start = threading.Barrier(8)
    ids, errors = [], []

    def write(worker):
        start.wait()
        try:
            for n in range(20):
                ids.append(store.record_generation(**generation(prompt=f"worker {worker} row {n}")))
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(ids)) == 160
    assert store.count_generations() == 160
    assert {row["prompt"] for row in store.list_generations(limit=200)} == {
        f"worker {w} row {n}" for w in range(8) for n in range(20)
    }


def test_rows_written_by_another_process_are_visible(tmp_path):
    store = Store(tmp_path)
    store.record_generation(**generation(prompt="from the studio"))
    child = (
        "import sys; from pipeline.store import Store; "
        "Store(sys.argv[1]).record_generation(mode='subject', prompt='from a job process')"
    )

    subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=REPO, check=True, timeout=30)

    assert [row["prompt"] for row in store.list_generations()] == ["from a job process", "from the studio"]


def test_reopening_the_folder_sees_earlier_rows(tmp_path):
    first = Store(tmp_path)
    gid = first.record_generation(**generation())

    reopened = Store(tmp_path)

    assert reopened.get_generation(gid)["timings"]["total_s"] == 22.3
    assert reopened.count_generations() == 1


@pytest.mark.parametrize("params", [
    {"steps": 28, "api_key": "sk-live-123"},
    {"HF_TOKEN": "hf_abc"},
    {"provider": {"name": "openai", "client_secret": "x"}},
    {"logins": [{"password": "hunter2"}]},
])
def test_secret_looking_params_are_refused(tmp_path, params):
    store = Store(tmp_path)

    with pytest.raises(ValueError, match="secrets"):
        store.record_generation(**generation(params=params))

    assert store.count_generations() == 0


def test_bad_fields_are_refused(tmp_path):
    store = Store(tmp_path)

    with pytest.raises(ValueError, match="prompt_typo"):
        store.record_generation(**generation(prompt_typo="x"))
    with pytest.raises(ValueError, match="id"):
        store.record_generation(**generation(id=5))
    with pytest.raises(ValueError, match="status"):
        store.record_generation(**generation(status="done"))
    assert store.count_generations() == 0


def test_missing_and_deleted_generations_raise_key_error(tmp_path):
    store = Store(tmp_path)
    keep = store.record_generation(**generation(prompt="keep"))
    drop = store.record_generation(**generation(prompt="drop"))

    store.delete_generation(drop)

    with pytest.raises(KeyError):
        store.get_generation(drop)
    with pytest.raises(KeyError):
        store.delete_generation(drop)
    assert [row["id"] for row in store.list_generations()] == [keep]


def test_database_file_is_in_wal_mode(tmp_path):
    store = Store(tmp_path)

    assert store.journal_mode() == "wal"
    assert Database(store.path).journal_mode == "wal"


def test_an_older_file_gains_new_columns(tmp_path):
    old = Database(tmp_path / "dsd.sqlite")
    old["generations"].insert({"id": 1, "created_at": "2025-01-01T00:00:00.000+00:00", "mode": "subject",
                               "prompt": "old row", "status": "ok"}, pk="id")
    old.close()

    store = Store(tmp_path)
    gid = store.record_generation(**generation())

    assert store.get_generation(1)["notices"] is None
    assert store.get_generation(gid)["notices"] == ["reference resized to 512x512"]
