"""The first hour, played in a real browser: a fresh data folder, the studio on the embedded default, and in
each tab its primary action pressed with the defaults untouched. Every press must succeed and show
something a user can check: pictures, counts, figures. The README's screenshots of the four tabs come
from this run (DSD_UPDATE_SCREENSHOT=1).

Where a default job is long on a 2-core CPU (the wheel's 500 world captions become 500 grids; the world
benchmark is 48 pictures), the test stops it once it has made a few, as a user would who wants to look,
and goes on with what it made: stopping keeps the work, so the next stage has it.
"""

import time

from mini import JUDGE
from pipeline import jobs
from pipeline.store import Store
from studio.generate_tab import MINI_EXAMPLES
from tests.studio.conftest import TIMEOUT_MS, save_screenshot
from train import launcher

LONG_MS = 240_000  # a whole default job (a stage, a training) on a busy 2-core machine


def wait_until(condition, timeout: float = LONG_MS / 1000, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return found


def pick(page, field: str, option: str) -> None:
    """Choose `option` in the Gradio dropdown `#field`, as a user does: open it, click the option."""
    page.locator(f"#{field} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def review_of(store: Store, pair_id: int) -> dict | None:
    try:
        return store.get("reviews", pair_id)
    except KeyError:
        return None


def latest_job(store: Store, kind: str) -> dict:
    return store.jobs(kind_prefix=kind, limit=1)[0]


def test_the_first_hour_on_a_fresh_data_folder(browser, start_studio, tmp_path):
    from playwright.sync_api import expect

    home = tmp_path / "fresh"
    store = Store(home)
    with start_studio(home) as studio:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(studio.url)
            expect(page.locator("#studio-header")).to_contain_text("embedded miniature")
            generate_each_example(page, store)
            run_the_wheel(page, store)
            train_stop_and_resume(page, store)
            evaluate(page, store)
        finally:
            page.close()
            for job in store.jobs(running=True):  # whatever a failed assertion left running
                jobs.request_stop(store, job["id"])
            for job in store.jobs(running=True):
                wait_until(lambda: store.jobs(job_id=job["id"])[0]["status"] != "running", timeout=120)


def generate_each_example(page, store: Store) -> None:
    """Generate: each example as offered (its reference, mode and prompt), the form's other fields untouched."""
    from playwright.sync_api import expect

    for row, (_, mode, prompt) in enumerate(MINI_EXAMPLES):
        page.locator("#examples tbody tr").nth(row).click()
        expect(page.locator("#prompt textarea")).to_have_value(prompt)
        page.locator("#generate").click()
        expect(page.locator("#history")).to_contain_text(prompt)
        expect(page.locator("#gallery img").first).to_be_visible()
        made = store.list_generations(search=prompt)
        assert len(made) == 1 and made[0]["params"]["mode"] == mode, made
        assert (made[0]["params"]["width"], made[0]["params"]["height"], made[0]["params"]["steps"]) == (64, 64, 20)
        expect(page.locator("#notices textarea, #notices input").first).to_have_value("")  # of its world, in its words
    save_screenshot(page, "studio-generate.png")


def run_the_wheel(page, store: Store) -> None:
    """Data wheel: each stage in order with the tab's defaults; grids stopped after a few; then one review."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Data wheel").click()
    start = page.locator("#wheel-start")
    for number, stage in enumerate(("captions", "prompts", "grids", "pairs", "curate"), start=1):
        pick(page, "wheel-stage", stage)
        start.click()
        expect(page.locator("#wheel-message")).to_contain_text(f"Started job {number}:")
        job = latest_job(store, f"wheel:{stage}")
        if stage == "grids":  # 500 grids by default: stop once a few are drawn
            wait_until(lambda: store.wheel_counts()["grids"] >= 4)
            page.locator("#wheel-stop").click()
        ended = wait_until(lambda: (j := store.jobs(job_id=job["id"])[0])["status"] not in ("running", "queued") and j)
        assert ended["status"] in (("stopped", "done") if stage == "grids" else ("done",)), ended
    counts = store.wheel_counts()
    assert counts["captions"] == 500 and counts["grids"] >= 4 and counts["pairs"] > 0, counts
    assert store.judged_pairs(), "the shipped judge (the default) judged the pairs"
    expect(page.locator("#wheel-stats")).to_contain_text("hit_rate")

    page.get_by_role("tab", name="Review pairs").click()
    for picture in ("reference", "target", "grid"):
        expect(page.locator(f"#wheel-{picture} img")).to_be_visible()
    first = store.review_queue(limit=1)[0]["pair_id"]
    page.locator("#wheel-accept").click()
    wait_until(lambda: review_of(store, first))
    save_screenshot(page, "wheel-review.png")


def train_stop_and_resume(page, store: Store) -> None:
    """Train: the default preset (cpu-smoke) started, stopped at once, resumed to its end."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    page.locator("#train-start").click()
    expect(page.locator("#train-message")).to_contain_text("Started run")
    run_id = store.runs()[0]["id"]
    page.locator("#train-stop").click()
    expect(page.locator("#train-message")).to_contain_text(f"run {run_id} saves a checkpoint and stops")
    launcher.wait(store, run_id, timeout=LONG_MS / 1000)
    stopped = launcher.get_run(store, run_id)
    assert stopped["status"] == "stopped" and stopped["step"] < stopped["total_steps"], stopped
    page.locator("#train-resume").click()
    expect(page.locator("#train-message")).to_contain_text(f"run {run_id}")
    wait_until(lambda: launcher.get_run(store, run_id)["status"] not in ("stopped",))
    launcher.wait(store, run_id, timeout=LONG_MS / 1000)
    done = launcher.get_run(store, run_id)
    assert done["status"] == "done" and done["step"] == done["total_steps"] and not done["error"], done
    losses = [row["step"] for row in store.run_metrics(run_id)]
    assert losses == list(range(1, done["total_steps"] + 1)), "the resumed run continues where it stopped"
    expect(page.locator("#train-sample-grid img")).to_be_visible(timeout=LONG_MS)
    expect(page.locator("#train-runs tbody tr").first).to_contain_text("done", timeout=LONG_MS)
    # A line per loss (the whole canvas, each half), named in the legend (a plot that lost its colours has none).
    expect(page.locator("#train-loss .mark-line path")).to_have_count(3)
    for name in ("loss_reference", "loss_target"):
        expect(page.locator("#train-loss .role-legend")).to_contain_text(name)
    expect(page.locator("#train-command textarea")).to_have_value(launcher.command_line(done))
    expect(page.locator("#train-command").get_by_role("button", name="Copy")).to_be_visible()
    assert done["config"]["rank"] == 8 and done["config"]["alpha"] is None, "a blank field is the default, not 0"
    save_screenshot(page, "train-tab.png")


def evaluate(page, store: Store) -> None:
    """Evaluate: Sample (stopped after a few pictures), Judge, then the Results' figures."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Evaluate").click()
    expect(page.locator("#eval-provenance")).to_contain_text("No evaluations yet")
    page.get_by_role("tab", name="Run", exact=True).click()
    page.locator("#eval-sample").click()
    expect(page.locator("#eval-message")).to_contain_text("Started job")
    job = wait_until(lambda: (j := latest_job(store, "eval:sample")) and j)
    evaluation = wait_until(lambda: store.eval_names() and store.eval_names()[0])
    assert evaluation == "miniature"  # the name the form starts with
    wait_until(lambda: store.count_eval_samples(store.eval_named(evaluation)["id"]) >= 6)
    page.locator("#eval-stop").click()
    wait_until(lambda: store.jobs(job_id=job["id"])[0]["status"] not in ("running", "queued"))
    page.locator("#eval-judge").click()
    expect(page.locator("#eval-message")).to_contain_text("Started job")
    judge = wait_until(lambda: (j := latest_job(store, "eval:judge")) and j)
    ended = wait_until(lambda: (j := store.jobs(job_id=judge["id"])[0])["status"] not in ("running", "queued") and j)
    assert ended["status"] == "done", ended
    page.get_by_role("tab", name="Results").click()
    pick(page, "eval-pick", evaluation)
    figures = page.locator("#eval-figures")
    for name in ("CP", "PF", "CP·PF"):
        expect(figures).to_contain_text(name)
    expect(page.locator("#eval-provenance")).to_contain_text(JUDGE.name)
    save_screenshot(page, "eval-tab.png")
