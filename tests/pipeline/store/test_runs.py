"""Jobs and training runs in the store: the queries the Train tab, the launcher and the trainer ask."""

from pipeline import jobs
from pipeline.store import Store


def run_with_metrics(store: Store, steps: int) -> int:
    run_id = jobs.create_job(store, "train", [], status="running", total=steps)
    store.put("runs", {"id": run_id, "name": "a run", "config": {}, "devices": "cpu"})
    store.add("run_metrics", [{"run_id": run_id, "step": step, "loss": 1 / step} for step in range(1, steps + 1)])
    return run_id


def test_a_runs_metrics_thinned_newest_and_dropped_past_a_checkpoint(tmp_path):
    store = Store(tmp_path)
    other = run_with_metrics(store, 3)
    run_id = run_with_metrics(store, 10)

    assert [row["step"] for row in store.run_metrics(run_id)] == list(range(1, 11))
    assert [row["step"] for row in store.run_metrics(run_id, stride=4)] == [4, 8]
    assert store.count_metrics(run_id) == 10 and store.last_metric(run_id)["loss"] == 0.1

    assert store.drop_metrics_after(run_id, 6) == 4
    assert store.last_metric(run_id)["step"] == 6 and store.count_metrics(other) == 3
    assert store.last_metric(run_id + 1) is None


def test_jobs_by_kind_id_and_state_newest_first(tmp_path):
    store = Store(tmp_path)
    curate = jobs.create_job(store, "wheel:curate", [], status="running")
    grids = jobs.create_job(store, "wheel:grids", [], status="done")
    train = jobs.create_job(store, "train", [], status="running")

    assert [job["id"] for job in store.jobs()] == [train, grids, curate]
    assert [job["id"] for job in store.jobs("wheel:")] == [grids, curate]
    assert [job["id"] for job in store.jobs("wheel:", running=True)] == [curate]
    assert [job["id"] for job in store.jobs("wheel:", job_id=grids)] == [grids]
    assert [job["id"] for job in store.jobs(running=True, limit=1)] == [train]
    assert [run["id"] for run in store.runs()] == []
