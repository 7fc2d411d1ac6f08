"""Public mode, played as a visitor: a studio started as a Space starts it (SPACE_ID set, no password),
called over plain HTTP with what the page would never send. Each finding of issue 15 is tried and its
refusal checked; behind DSD_PASSWORD the owner keeps the whole studio."""

import shutil
import time
from contextlib import contextmanager

import httpx
import pytest
from gradio_client import Client, handle_file

from pipeline.generation.generate import Settings
from pipeline.generation.modes import MODES
from pipeline.store import Store
from studio.app import launch
from studio.public import is_public
from tests.studio.conftest import ROOT, free_port
from tests.studio.visitor import call, endpoints, fetch_file, upload

STAR = ROOT / "assets" / "examples" / "mini-star.png"
PROMPT = "a creature, in a desert, lit from the left, in warm light"
IMAGE_GUIDANCE, TEXT_GUIDANCE = MODES["identity"].image_guidance, MODES["identity"].text_guidance
REFUSED_REFERENCE = "the reference must be a picture uploaded to the studio"
WHOLE_STUDIO = {"wheel_start", "train_start", "eval_sample", "eval_judge", "run_weights"}  # a few of the owner's endpoints


def form(reference, steps=4, num_images=1, seed=1) -> list:
    """The public generate endpoint's values, in order, as the page sends them."""
    mode = MODES["identity"]
    return [reference, PROMPT, "identity", "64", steps, num_images, seed, False, 3.5, mode.image_guidance,
            mode.text_guidance, "crop", False, False, "all", "none"]


@contextmanager
def served(home, monkeypatch, **env):
    for name in ("SPACE_ID", "DSD_PASSWORD", "DSD_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    app = launch(Settings(home=home), host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The studio as a Space runs it: SPACE_ID set and no DSD_PASSWORD."""
    home = tmp_path_factory.mktemp("space-home")
    with pytest.MonkeyPatch.context() as monkeypatch, served(home, monkeypatch, SPACE_ID="someone/dsd-studio") as url:
        yield url, home


def test_public_mode_is_on_wherever_others_can_reach_the_studio_without_a_password(monkeypatch):
    for name in ("SPACE_ID", "DSD_PASSWORD", "DSD_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    assert not is_public("127.0.0.1") and is_public("0.0.0.0") and is_public("127.0.0.1", share=True)
    assert is_public("127.0.0.1", forced=True)
    monkeypatch.setenv("SPACE_ID", "someone/dsd-studio")
    assert is_public("127.0.0.1")
    monkeypatch.setenv("DSD_PASSWORD", "secret")
    assert not is_public("0.0.0.0") and is_public("0.0.0.0", forced=True)


def test_a_server_path_as_the_reference_is_refused_without_saying_whether_it_exists(space, tmp_path):
    url, home = space
    secret = tmp_path / "secret.png"
    shutil.copyfile(STAR, secret)  # a picture on the server, outside the upload folder
    paths = (secret, tmp_path / "missing.png", "/etc/hostname")

    # As file data or a bare string, Gradio's own checks refuse them; a bare {"path": ...} it passes on.
    by_gradio = [call(url, "generate", form(value)) for path in paths
                 for value in ({"path": str(path), "meta": {"_type": "gradio.FileData"}}, str(path))]
    bare = [call(url, "generate", form({"path": str(path)})) for path in paths]

    assert [event for event, _ in by_gradio + bare] == ["error"] * 9
    assert {message for _, message in bare} == {f"{REFUSED_REFERENCE}: upload it (or pick an example)"}
    assert Store(home).list_generations() == [] and not list(home.rglob("*.png"))  # nothing read, nothing copied


def test_an_uploaded_picture_is_generated_from_and_no_reply_names_a_server_path(space):
    url, home = space
    event, outputs = call(url, "generate", form(upload(url, STAR)))

    assert event == "complete", outputs
    gallery, seeds, _, _ = outputs
    assert len(gallery) == 1 and seeds == "1"
    assert str(home.resolve()) not in str(outputs) and str(home) not in str(outputs)
    picture = gallery[0]["image"]["path"]
    assert fetch_file(url, picture) == 200  # Gradio's copy, by content hash
    made = Store(home).list_generations()[0]
    for path in made["output_paths"] + [made["reference_path"]]:
        assert fetch_file(url, path) == 403  # the data folder itself is not served


def test_the_database_and_the_data_folder_are_not_served(space):
    url, home = space
    assert (home / "dsd.sqlite").is_file()
    for path in (home / "dsd.sqlite", home / "dsd.sqlite-wal", home, ROOT / "pyproject.toml"):
        assert fetch_file(url, path) in (403, 404), path


def test_only_generation_is_offered_no_endpoint_starts_a_process_or_names_a_provider(space):
    url, _ = space
    offered = endpoints(url)

    assert {"generate", "history", "stop"} <= offered
    assert not offered & WHOLE_STUDIO, offered
    assert not any(name.startswith(("wheel", "train", "eval", "run")) for name in offered), offered
    # The endpoints that were there locally do not exist: a wheel job with the visitor's own judge URL,
    # a captions file, an output folder or an evaluation named like an option cannot even be asked for.
    for api_name, data in (("wheel_start", ["curate", "openai:gpt-4o@http://127.0.0.1:9/v1"]),  # a key to a URL
                           ("wheel_start", ["captions", "../../etc/passwd"]),  # a server file into the database
                           ("train_start", ["run", "/tmp/elsewhere"]),  # writes outside the data folder
                           ("eval_sample", ["--home=/elsewhere"])):  # option text
        assert call(url, api_name, data) == ("refused", 404), api_name


def test_each_visitor_sees_their_own_history_and_their_stop_stops_only_their_generation(space):
    url, _ = space
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    reference = handle_file(str(STAR))
    alice.predict(reference, PROMPT, "identity", "64", 4, 1, 7, False, 3.5, IMAGE_GUIDANCE, TEXT_GUIDANCE, "crop", False, False,
                  api_name="/generate")

    def prompts(client):
        return [row[0] for row in client.predict("", api_name="/history")["data"] if row and row[0] not in (None, "")]

    assert len(prompts(alice)) == 1 and prompts(bob) == []

    # A long generation of Alice's: Bob's Stop leaves it alone, Alice's stops it.
    def long_generation():
        return alice.submit(reference, PROMPT, "identity", "64", 50, 2, 3, False, 3.5, IMAGE_GUIDANCE, TEXT_GUIDANCE, "crop", False,
                            False, api_name="/generate")

    for stopper, stopped in ((bob, False), (alice, True)):
        job = long_generation()
        wait_until_denoising(job)
        stopper.predict(api_name="/stop")
        _, _, notices, _ = job.result(timeout=600)
        assert ("stopped by the user" in notices) is stopped, notices


def test_a_visitor_may_have_one_generation_at_a_time(space):
    url, _ = space
    visitor = Client(url, verbose=False)
    reference = handle_file(str(STAR))
    first = visitor.submit(reference, PROMPT, "identity", "64", 50, 2, 3, False, 3.5, IMAGE_GUIDANCE, TEXT_GUIDANCE, "crop", False,
                           False, api_name="/generate")
    wait_until_denoising(first)
    with pytest.raises(Exception, match="already have a generation"):
        visitor.predict(reference, PROMPT, "identity", "64", 4, 1, 3, False, 3.5, IMAGE_GUIDANCE, TEXT_GUIDANCE, "crop", False, False,
                        api_name="/generate")
    visitor.predict(api_name="/stop")
    first.result(timeout=600)


def wait_until_denoising(job, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.status().progress_data
        if progress and any(unit.desc == "denoising" for unit in progress):
            return
        time.sleep(0.05)
    raise AssertionError("the generation never started denoising")


def test_behind_a_password_the_owner_keeps_the_whole_studio_but_not_the_database(tmp_path, monkeypatch):
    with served(tmp_path, monkeypatch, SPACE_ID="someone/dsd-studio", DSD_PASSWORD="owner-secret") as url:
        owner = Client(url, auth=("dsd", "owner-secret"), verbose=False)
        offered = {name.lstrip("/") for name in owner.view_api(print_info=False, return_format="dict")["named_endpoints"]}
        assert WHOLE_STUDIO <= offered
        assert httpx.get(f"{url}gradio_api/info", timeout=60).status_code == 401  # a stranger gets the login


def test_the_public_studio_in_chromium_shows_only_the_generate_tab(space, browser):
    from playwright.sync_api import expect

    url, _ = space
    page = browser.new_page()
    try:
        page.goto(url)
        expect(page.get_by_role("tab", name="Generate")).to_be_visible()
        for hidden in ("Data wheel", "Train", "Evaluate"):
            expect(page.get_by_role("tab", name=hidden)).to_have_count(0)
        expect(page.get_by_text("Public mode")).to_be_visible()
        expect(page.get_by_text("Base model")).to_have_count(0)  # the model is the owner's
    finally:
        page.close()


def test_the_local_studio_is_whole_and_still_does_not_serve_its_database(tmp_path, monkeypatch):
    with served(tmp_path, monkeypatch) as url:
        assert WHOLE_STUDIO <= endpoints(url)
        assert fetch_file(url, tmp_path / "dsd.sqlite") == 403
