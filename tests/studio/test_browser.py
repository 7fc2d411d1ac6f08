"""The Generate tab in a real browser: upload, prompt, generate, see the picture and the history."""

import os
import re
import shutil
from pathlib import Path

import pytest

from pipeline.modes import MODES

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "test-artifacts" / "studio-generate.png"
README_SCREENSHOT = ROOT / "docs" / "studio.png"
PROMPT = "a photo of the cat sleeping on a pile of books"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("DSD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and DSD_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_generate_in_the_browser(browser, studio):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(studio.url)

    page.locator("#reference input[type=file]").set_input_files(str(ROOT / "assets" / "examples" / "cat.jpg"))
    expect(page.locator("#reference img")).to_be_visible()
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#size textarea, #size input").first.fill("128")
    steps = page.locator("#steps input[type=number]")
    steps.fill("4")
    steps.press("Enter")
    page.locator("#generate").click()

    expect(page.locator("#gallery img").first).to_be_visible()
    expect(page.locator("#seeds textarea, #seeds input").first).to_have_value(re.compile(r"^\d+$"))
    expect(page.locator("#history")).to_contain_text(PROMPT)
    row = studio_history(studio)
    page.locator("#history").get_by_test_id("cell-0-3").click()
    expect(page.locator("#history-pictures img").first).to_be_visible()
    expect(page.locator("#history-details")).to_contain_text(str(row["seed"]))
    assert row["params"]["steps"] == 4 and (row["params"]["width"], row["params"]["height"]) == (128, 128)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    if os.environ.get("DSD_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)

    page.get_by_label("Relighting").check()
    expect(page.locator("#mode-hint")).to_contain_text(MODES["relight"].hint)
    expect(page.locator("#prompt textarea")).to_have_attribute("placeholder", MODES["relight"].example)
    page.close()


def studio_history(studio) -> dict:
    from pipeline.store import Store

    rows = Store(studio.home).list_generations(search=PROMPT)
    assert len(rows) == 1, "the click should have made exactly one generation"
    return rows[0]
