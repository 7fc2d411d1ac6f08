"""The Generate tab in a real browser: upload, prompt, generate, see the picture and the history."""

import re

from pipeline.generation.modes import MODES
from studio.generate_tab import MINI_EXAMPLES
from tests.studio.conftest import ROOT, TIMEOUT_MS, save_screenshot

PROMPT = "a creature, in a desert, lit from the left, in warm light"  # in the embedded miniature's words


def test_generate_in_the_browser(browser, studio):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(studio.url)

    # A held-out creature of the miniature's world, at the model's own size and steps (64 px, 20).
    page.locator("#reference input[type=file]").set_input_files(str(ROOT / "assets" / "examples" / "mini-star.png"))
    expect(page.locator("#reference img")).to_be_visible()
    page.locator("#prompt textarea").fill(PROMPT)
    expect(page.locator("#size textarea, #size input").first).to_have_value("64")
    expect(page.locator("#steps input[type=number]")).to_have_value("20")
    page.locator("#generate").click()

    expect(page.locator("#gallery img").first).to_be_visible()
    assert_shown_whole(page, "#gallery")
    expect(page.locator("#seeds textarea, #seeds input").first).to_have_value(re.compile(r"^\d+$"))
    expect(page.locator("#history")).to_contain_text(PROMPT)
    row = studio_history(studio)
    page.locator("#history").get_by_test_id("cell-0-3").click()
    expect(page.locator("#history-pictures img").first).to_be_visible()
    assert_shown_whole(page, "#history-pictures")
    expect(page.locator("#history-details")).to_contain_text(str(row["seed"]))
    assert row["params"]["steps"] == 20 and (row["params"]["width"], row["params"]["height"]) == (64, 64)

    save_screenshot(page, "generate-upload.png")

    page.get_by_label("Relighting").check()
    expect(page.locator("#mode-hint")).to_contain_text(MODES["relight"].hint)
    # The miniature's own relighting example, in its words, not FLUX's photo prompt it cannot draw.
    relight = next(prompt for _, mode, prompt in MINI_EXAMPLES if mode == "relight")
    expect(page.locator("#prompt textarea")).to_have_attribute("placeholder", relight)
    expect(page.locator("#size")).to_contain_text("its own: 64")
    page.close()


def studio_history(studio) -> dict:
    from pipeline.store import Store

    rows = Store(studio.home).list_generations(search=PROMPT)
    assert len(rows) == 1, "the click should have made exactly one generation"
    return rows[0]


def assert_shown_whole(page, gallery: str) -> None:
    """The gallery's first picture is drawn whole inside its box (its preview opens just after the pictures
    arrive): a 64 px result in a 2-column grid was scaled to the box's width (580 px) and cut at its height
    (420 px) until clicked."""
    inside = """(gallery) => {
      const box = document.querySelector(gallery).getBoundingClientRect();
      const img = document.querySelector(gallery + " img").getBoundingClientRect();
      return img.top >= box.top && img.bottom <= box.bottom && img.left >= box.left && img.right <= box.right;
    }"""
    page.wait_for_function(inside, arg=gallery)
    shown = page.locator(f"{gallery} img").first
    assert shown.evaluate("img => getComputedStyle(img).objectFit") == "contain"  # the picture fits its element
