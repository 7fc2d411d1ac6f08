"""The Train tab in a real browser: start the preset's run from the form, watch it train, stop it."""

from pipeline.errors import UserInputError
from pipeline.store import Store
from tests.studio.conftest import TIMEOUT_MS, save_screenshot
from train import launcher
from train.config import load_preset


def test_start_watch_and_stop_a_cpu_run_from_the_form(browser, start_studio, tmp_path):
    from playwright.sync_api import expect

    store = Store(tmp_path)
    with start_studio(tmp_path) as studio:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(studio.url)
            page.get_by_role("tab", name="Train").click()
            # The cpu-smoke preset is in the form: only the steps change, so that the run is still going when stopped.
            expect(page.locator("#train-field-data textarea, #train-field-data input").first).to_have_value(
                load_preset("cpu-smoke").data)
            page.locator("#train-field-steps input").fill("100000")
            page.locator("#train-start").click()

            expect(page.locator("#train-message")).to_contain_text("Started run 1 on the CPU")
            runs = page.locator("#train-runs")
            expect(runs).to_contain_text("running", timeout=TIMEOUT_MS)
            command = page.locator("#train-command textarea")
            expect(command).to_have_value(launcher.command_line(launcher.get_run(store, 1)))
            expect(page.locator("#train-command").get_by_role("button", name="Copy")).to_be_visible()
            # A line per loss (the whole canvas, each half), named in the legend (a plot that lost its colours has
            # none), and the first samples (the preset draws them every 20 steps).
            expect(page.locator("#train-loss .mark-line path")).to_have_count(3, timeout=TIMEOUT_MS)
            expect(page.locator("#train-loss .role-legend")).to_contain_text("loss_reference")
            expect(page.locator("#train-loss .role-legend")).to_contain_text("loss_target")
            expect(page.locator("#train-sample-grid img")).to_be_visible(timeout=TIMEOUT_MS)

            page.locator("#train-stop").click()
            expect(page.locator("#train-message")).to_contain_text("run 1 saves a checkpoint and stops")
            expect(runs.locator("tbody tr").first).to_contain_text("stopped", timeout=TIMEOUT_MS)
            save_screenshot(page, "train-form.png")
        finally:
            page.close()
            try:
                launcher.request(store, 1, "stop")
            except UserInputError:
                pass  # never started, or ended already
            if store.runs():
                launcher.wait(store, 1, timeout=120)

    run = launcher.get_run(store, 1)
    assert run["status"] == "stopped" and not run["error"]
    assert run["config"]["steps"] == 100_000 and run["config"]["rank"] == 8
    assert run["config"]["alpha"] is None, "a blank field is the default, not 0"
