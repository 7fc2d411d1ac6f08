"""The Data wheel tab in a real browser: see a pair, review it from the keyboard, filter the list."""

import time

from pipeline.store import Store
from tests.studio.conftest import TIMEOUT_MS, save_screenshot


def wait_for_review(store: Store, pair_id: int, timeout: float = 20) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return store.get("reviews", pair_id)
        except KeyError:
            time.sleep(0.1)
    return None


def test_review_pairs_from_the_keyboard(browser, wheel_studio):
    from playwright.sync_api import expect

    store = Store(wheel_studio.home)
    first, second = (pair["pair_id"] for pair in store.review_queue(limit=2))
    total = store.wheel_counts()["pairs"]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(wheel_studio.url)
    page.get_by_role("tab", name="Data wheel").click()
    page.get_by_role("tab", name="Review pairs").click()

    for picture in ("reference", "target", "grid"):
        expect(page.locator(f"#wheel-{picture} img")).to_be_visible()
    position = page.locator("#wheel-position")
    expect(position).to_contain_text(f"1 of {total}")
    expect(position).to_contain_text(f"pair {first} ")

    page.locator("#wheel-note textarea, #wheel-note input").first.fill("")
    page.locator("#wheel-note textarea, #wheel-note input").first.press_sequentially("rank")
    page.locator("#wheel-position").click()  # the focus leaves the note: keys are shortcuts again
    page.keyboard.press("r")

    review = wait_for_review(store, first)
    assert review and review["decision"] == "reject" and review["note"] == "rank"
    expect(position).to_contain_text(f"2 of {total}")
    expect(position).to_contain_text(f"pair {second} ")
    assert store.wheel_counts()["reviews"] == 1, "typing in the note box must not trigger shortcuts"
    expect(page.locator("#wheel-review-state")).to_contain_text("Not reviewed yet")

    save_screenshot(page, "wheel-keyboard.png")

    page.keyboard.press("k")
    expect(position).to_contain_text(f"1 of {total}")
    expect(page.locator("#wheel-review-state")).to_contain_text("Rejected: rank")

    page.locator("#wheel-review-filter input").click()
    page.get_by_role("option", name="rejected").click()
    expect(position).to_contain_text("1 of 1")
    expect(page.locator("#wheel-pairs tbody tr")).to_have_count(1)
    page.close()
