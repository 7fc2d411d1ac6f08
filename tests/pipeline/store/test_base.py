"""The data folder's file: shared by threads and processes, reopened, in WAL mode."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from pipeline.errors import UserInputError
from pipeline.store import DB_FILENAME, Store
from tests.pipeline.store.test_generations import generation

REPO = Path(__file__).resolve().parents[3]


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
    assert len(store.list_generations(limit=200)) == 160
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
    assert len(reopened.list_generations()) == 1


def test_database_file_is_in_wal_mode(tmp_path):
    store = Store(tmp_path)

    assert Database(store.path).journal_mode == "wal"


def test_a_database_that_turns_read_only_is_one_line_at_the_next_write(tmp_path, read_only):
    """Opening refuses a read-only file at once (the CLI's tests); a file that becomes read-only while a
    process holds its store is named at the next write, with what to do."""
    store = Store(tmp_path)
    read_only(tmp_path / DB_FILENAME)
    assert store.list_generations() == []  # reading still works
    with pytest.raises(UserInputError, match=f"the database {tmp_path / DB_FILENAME} is read-only: make it writable"):
        store.record_generation(**generation())


def test_a_folder_in_place_of_the_database_is_one_line(tmp_path):
    (tmp_path / DB_FILENAME).mkdir()
    with pytest.raises(UserInputError, match=f"cannot open the database {tmp_path / DB_FILENAME}: check"):
        Store(tmp_path)
