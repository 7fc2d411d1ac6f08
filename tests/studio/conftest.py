"""A running studio on a free port of 127.0.0.1, with its own data folder, closed after use."""

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.generation.generate import Settings
from pipeline.store import Store
from pipeline.wheel import stages as wheel
from studio.app import build_studio
from studio.resolve import resolve_captions, resolve_teacher, resolve_writer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_studio(home: Path, gpu_wrapper: Callable | None = None) -> Iterator[SimpleNamespace]:
    """The studio on the embedded tiny model: `url`, `home` (its data folder) and `settings`."""
    settings = Settings(home=home)
    app = build_studio(settings, gpu_wrapper)
    port = free_port()
    try:
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", home=home, settings=settings)
    finally:
        app.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("studio-home")) as running:
        yield running


@pytest.fixture
def start_studio():
    """`start_studio(home, gpu_wrapper=None)`, a context manager, for a test that needs its own studio."""
    return running_studio


ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        if os.environ.get("DSD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and DSD_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    # Expectations wait as long as actions do: they guard against a hang, they do not time the studio (a
    # picture drawn on a busy 2-core machine can take longer than expect's 5 s default).
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def save_screenshot(page, name: str) -> None:
    """`test-artifacts/<name>`, and `docs/<readme-name>` for the README when DSD_UPDATE_SCREENSHOT=1."""
    artifact = ROOT / "test-artifacts" / name
    artifact.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifact), full_page=True)
    if os.environ.get("DSD_UPDATE_SCREENSHOT") == "1" and name in README_NAMES:
        shutil.copyfile(artifact, ROOT / "docs" / README_NAMES[name])


# The README's pictures of the four tabs, all from the first-hour test's run (test_first_hour.py).
README_NAMES = {"studio-generate.png": "studio.png", "wheel-review.png": "wheel.png", "train-tab.png": "train.png",
                "eval-tab.png": "evaluate.png"}


CURATED = 12  # pairs the judge has seen; the rest (about 14 of the 26 or so) have no verdict yet


def run_offline_wheel(home: Path) -> Store:
    """Every stage in-process on the embedded default, then three "same", one "not same" and one failed verdict, as a VLM gives."""
    store = Store(home)
    wheel.run_captions(store, limit=3, default=resolve_captions(3))  # the world's creatures, as the CLI starts
    wheel.run_prompts(store, resolve_writer(None))
    teacher, size, name = resolve_teacher(None, None)  # the embedded miniature at its own grid size
    wheel.run_grids(store, teacher, size=size, steps=4, teacher_name=name)
    wheel.run_pairs(store)
    wheel.run_curate(store, limit=CURATED)
    judged = [pair["pair_id"] for pair in store.judged_pairs()]
    # What the stand-in says about 4-step grids depends on the CPU's rounding; the tab's filters need each
    # kind of verdict (and two accepted pairs after a rejection), so three "same" verdicts are written here too, as a VLM gives them.
    for pair_id in (judged[0], judged[3], judged[4]):
        store.put("verdicts", {"pair_id": pair_id, "status": "ok", "same": 1, "confidence": 0.8,
                               "subject": "one robot", "description_a": "a red robot", "description_b": "a red robot",
                               "reasoning": "the same robot from two sides", "judge": "test"})
    store.put("verdicts", {"pair_id": judged[1], "status": "ok", "same": 0, "confidence": 0.95,
                           "subject": "two different robots", "description_a": "a red robot", "description_b": "a blue robot",
                           "reasoning": "the colours differ", "judge": "test"})
    store.put("verdicts", {"pair_id": judged[2], "status": "failed", "same": None, "confidence": None,
                           "error": "the reply was not JSON", "judge": "test"})
    return store


@pytest.fixture(scope="module")
def wheel_studio(tmp_path_factory):
    home = tmp_path_factory.mktemp("wheel-studio")
    run_offline_wheel(home)
    with running_studio(home) as running:
        yield running
