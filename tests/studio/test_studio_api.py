"""The studio through its HTTP API (gradio_client), as a script or another app would drive it."""

import time
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from pipeline.images import read_png_metadata
from tests.pictures import bad_pictures, offline_hub

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CAT = ASSETS / "examples" / "cat.jpg"
STAR = ASSETS / "examples" / "mini-star.png"  # a creature of the embedded miniature's world
SMALL = dict(size="64x64", steps=1, num_images=1)


@pytest.fixture(scope="module")
def client(studio):
    return Client(studio.url, verbose=False)


def generate(client, reference=CAT, **fields):
    fields = {"prompt": "a photo of the cat on a sofa", **SMALL, **fields}
    upload = handle_file(str(reference)) if reference is not None else None
    return client.predict(reference=upload, **fields, api_name="/generate")


def test_generate_saves_pictures_with_metadata_and_a_history_row(client, studio):
    gallery, seeds, notices, timings = generate(
        client, reference=STAR, prompt="a photo of the cat on a sofa", size="128x128", steps=4, num_images=2,
        randomise=False, seed=41,
    )

    assert seeds == "41, 42"
    assert [item["caption"] for item in gallery] == ["seed 41", "seed 42"]
    for item in gallery:
        with Image.open(item["image"]) as picture:
            assert picture.size == (128, 128)
    metadata = read_png_metadata(gallery[1]["image"])
    assert metadata["prompt"] == "a photo of the cat on a sofa"
    assert metadata["seed"] == 42 and (metadata["width"], metadata["height"], metadata["steps"]) == (128, 128, 4)
    assert timings.startswith("total ")
    assert [line.split(":")[0] for line in notices.splitlines()] == [  # words and a size the miniature cannot draw
        "the embedded miniature does not know the words 'photo', 'cat', 'sofa', and cannot draw what they ask for",
        "the embedded miniature learnt to draw at 64x64 only"]
    saved = sorted((studio.home / "outputs").rglob("*.png"))
    assert saved and all(path.stat().st_size > 0 for path in saved)

    table = client.predict(search="sofa", api_name="/history")
    assert table["headers"] == ["id", "time", "mode", "prompt", "seed", "size", "total s"]
    row = table["data"][0]
    assert row[2:6] == ["identity", "a photo of the cat on a sofa", 41, "128x128"]
    assert client.predict(search="no such prompt", api_name="/history")["data"] == []


def test_the_miniature_says_when_a_reference_is_not_of_its_world(client):
    _, _, notices, _ = generate(client, reference=CAT)
    assert "does not look like a creature of the embedded miniature's world" in notices
    assert "FLUX.1-dev" in notices and "--base" in notices  # how to switch
    assert generate(client, reference=STAR, prompt="a creature, at sea, lit from above, in cool light")[2] == ""
    table = client.predict(search="a photo of the cat on a sofa", api_name="/history")
    assert table["data"]  # the generation with the notice is in the history like any other


def test_the_miniature_names_the_words_and_the_size_it_cannot_draw_and_still_draws(client):
    gallery, _, notices, _ = generate(client, reference=STAR, prompt="a creature in a forest, lit from the left!",
                                      size="128x128")
    words, size = notices.splitlines()
    assert "does not know the word 'forest'" in words and "'lit'" not in words and "'left'" not in words
    assert "at 128x128 expect smeared or repeated creatures" in size and "Use 64x64" in size
    assert "FLUX.1-dev" in words and "FLUX.1-dev" in size and "--base" in size  # how to switch
    assert len(gallery) == 1


def test_the_prompt_helper_writes_in_the_miniatures_words(client):
    prompt = client.predict(scene="sea", light="top", warmth="cool", change="accessory:hat", api_name="/world_prompt")
    assert prompt == "a creature wearing a hat, at sea, lit from above, in cool light"
    assert client.predict(scene="desert", light="left", warmth="warm", change="", api_name="/world_prompt") == (
        "a creature, in a desert, lit from the left, in warm light")
    with pytest.raises(Exception, match="forest"):  # refused with one line: a word the world does not know
        client.predict(scene="forest", light="left", warmth="warm", change="", api_name="/world_prompt")


def test_a_too_long_prompt_still_generates_and_says_what_was_cut(client):
    prompt = "a photo of the cat " + "sitting on a very old red velvet armchair, " * 80
    gallery, _, notices, _ = generate(client, prompt=prompt)

    assert len(gallery) == 1
    assert "the text encoder reads the first 104, the rest was cut" in notices  # the miniature's T5 length


def partial_base(tmp_path: Path) -> str:
    (tmp_path / "flux" / "vae").mkdir(parents=True)
    return str(tmp_path / "flux")


def case(name, make_fields, expected, **marks):
    return pytest.param(make_fields, expected, id=name, **marks)


BAD_INPUTS = [
    case("not an image", lambda tmp, mp: {"reference": bad_pictures(tmp)["not an image"]}, "not a picture PIL can read"),
    case("truncated JPEG", lambda tmp, mp: {"reference": bad_pictures(tmp)["truncated"]}, "truncated or corrupt"),
    case("1x1 PNG", lambda tmp, mp: {"reference": bad_pictures(tmp)["1x1"]}, "at least 16 px"),
    case("decompression bomb", lambda tmp, mp: {"reference": bad_pictures(tmp)["bomb"]}, "declares 100000x100000 pixels"),
    case("no reference", lambda tmp, mp: {"reference": None}, "no reference picture"),
    case("size not a multiple of 16", lambda tmp, mp: {"size": "500x512"}, "multiples of 16 (try 496x512 or 512x512)"),
    case("size not a size", lambda tmp, mp: {"size": "big"}, "write it as WIDTHxHEIGHT"),
    case("empty prompt", lambda tmp, mp: {"prompt": "   "}, "the prompt is empty"),
    case("partial weights folder", lambda tmp, mp: {"base": partial_base(tmp)}, "lacks scheduler, text_encoder"),
    case("hub id without network", lambda tmp, mp: offline_hub(mp, tmp) or {"base": "nobody/nothing"},
         "cannot fetch base model 'nobody/nothing'"),
    case("steps left blank", lambda tmp, mp: {"steps": None}, "steps None: give a whole number of at least 1"),
    case("steps as text", lambda tmp, mp: {"steps": "many"}, "steps 'many': give a whole number"),
    case("fractional steps", lambda tmp, mp: {"steps": 1.5}, "steps 1.5: give a whole number"),
    case("fractional seed", lambda tmp, mp: {"seed": 1.5, "randomise": False}, "seed 1.5: give a whole number"),
    case("pictures left blank", lambda tmp, mp: {"num_images": None}, "pictures None: give a whole number"),
    case("guidance as text", lambda tmp, mp: {"guidance": "high"}, "guidance 'high': give a number"),
    case("absurd guidance", lambda tmp, mp: {"guidance": 1e300}, "guidance must be a number from 0 to 30"),
    case("negative text guidance", lambda tmp, mp: {"text_guidance": -1e30}, "text guidance must be a number from 0 to 30"),
    case("guidance steps backwards", lambda tmp, mp: {"guidance_steps": "0.8:0.2"}, "end before they start"),
    case("guidance steps as a number", lambda tmp, mp: {"guidance_steps": 3}, "guidance steps must be text"),
    case("unknown step cache", lambda tmp, mp: {"cache": "teacache"}, "unknown step cache 'teacache': use none, or"),
    case("gpu memory mode without a GPU", lambda tmp, mp: {"memory": "gpu"}, "needs a CUDA GPU",
         marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")),
]


@pytest.mark.parametrize(("make_fields", "expected"), BAD_INPUTS)
def test_bad_input_gets_one_clear_line_and_the_studio_keeps_serving(client, tmp_path, monkeypatch, make_fields, expected):
    with pytest.raises(Exception) as refused:
        generate(client, **make_fields(tmp_path, monkeypatch))

    message = str(refused.value)
    assert expected in message
    assert "\n" not in message and "Traceback" not in message
    monkeypatch.undo()
    gallery, *_ = generate(client)
    assert len(gallery) == 1


def test_an_unexpected_failure_is_a_short_error_not_a_traceback(start_studio, tmp_path, caplog):
    """The generation call goes through `gpu_wrapper` (ZeroGPU's `spaces.GPU` on a Space)."""
    calls = []

    def failing_gpu(generate_fn):
        def run(request, settings, **kwargs):
            calls.append(request.prompt)
            if request.prompt == "explode":
                raise RuntimeError("CUDA driver internals at /opt/secret/path")
            return generate_fn(request, settings, **kwargs)

        return run

    with start_studio(tmp_path, gpu_wrapper=failing_gpu) as studio:
        client = Client(studio.url, verbose=False)
        with pytest.raises(Exception) as failed:
            generate(client, prompt="explode")
        gallery, *_ = generate(client, prompt="a cat")

    assert "generation failed with an internal error" in str(failed.value)
    assert "/opt/secret/path" not in str(failed.value) and "Traceback" not in str(failed.value)
    assert "/opt/secret/path" in caplog.text  # the log keeps the details
    assert calls == ["explode", "a cat"] and len(gallery) == 1


def test_stop_ends_a_long_generation_early_and_keeps_its_pictures(client):
    from gradio_client.utils import Status

    generate(client)  # the model is loaded before the long run starts
    job = client.submit(reference=handle_file(str(CAT)), prompt="the cat in a long run", size="256x256",
                        steps=100, num_images=1, api_name="/generate")
    deadline = time.monotonic() + 60
    while job.status().code != Status.PROGRESS and time.monotonic() < deadline:
        time.sleep(0.05)
    client.predict(api_name="/stop")
    gallery, _, notices, _ = job.result(timeout=120)

    assert len(gallery) == 1 and Path(gallery[0]["image"]).is_file()
    assert "stopped by the user after" in notices and "of 100 steps" in notices
    assert int(notices.split("after ")[1].split(" of")[0]) < 100


def test_the_generate_form_starts_at_the_models_own_size_and_steps(tmp_path):
    """FLUX's 512 px / 28 steps by default; a model folder's sampling.json (the miniature's 64 px) wins."""
    import shutil

    import gradio as gr

    from pipeline.generation.generate import Settings
    from pipeline.generation.weights import ModelSpec
    from studio.generate_tab import form

    base = tmp_path / "base"
    shutil.copytree(Path(__file__).resolve().parents[2] / "assets" / "tiny-dsd", base)
    with gr.Blocks():  # a base folder without sampling.json gets FLUX's defaults
        flux = form(Settings(home=tmp_path, model=ModelSpec(base=str(base))))
    (base / "sampling.json").write_text('{"width": 96, "height": 96, "steps": 12}')
    with gr.Blocks():
        own, embedded = form(Settings(home=tmp_path, model=ModelSpec(base=str(base)))), form(Settings(home=tmp_path))
    assert (flux.size.value, flux.steps.value) == ("512", 28)
    assert (own.size.value, own.steps.value) == ("96", 12)
    assert (embedded.size.value, embedded.steps.value) == ("64", 20)  # the miniature's own


def test_the_header_and_the_forms_size_and_steps_follow_the_model_picked(client, tmp_path):
    """The header kept saying "embedded miniature" after a training run's weights were picked."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(ASSETS / "tiny-dsd", base)
    (base / "sampling.json").write_text('{"width": 96, "height": 128, "steps": 12}')
    header, size, steps = client.predict(base=str(base), dsd="", lora="", dtype="auto", api_name="/model_defaults")
    assert f"**Model:** {base}" in header and "embedded miniature" not in header
    assert (size, steps) == ("96x128", 12)
    # A training run's weights (on the embedded base): the miniature's own size and steps, the run in the header.
    weights = tmp_path / "runs" / "3" / "weights"
    weights.mkdir(parents=True)
    header, size, steps = client.predict(base="", dsd=str(weights), lora="", dtype="auto", api_name="/model_defaults")
    assert str(weights) in header and (size, steps) == ("64", 20)
    header, size, steps = client.predict(base="", dsd="", lora="", dtype="auto", api_name="/model_defaults")
    assert "**Model:** embedded miniature" in header and (size, steps) == ("64", 20)
    (base / "sampling.json").write_text("{broken")
    with pytest.raises(Exception) as refused:
        client.predict(base=str(base), dsd="", lora="", dtype="auto", api_name="/model_defaults")
    assert "sampling.json is not valid JSON of numbers: fix or delete it" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_examples_are_those_the_model_can_draw():
    from pipeline.generation.weights import ModelSpec
    from studio.generate_tab import examples_for
    from studio.resolve import resolve_model

    creatures = examples_for(resolve_model(ModelSpec(dsd="runs/3/weights")))  # a run on the miniature's base
    photos = examples_for(ModelSpec(base="black-forest-labs/FLUX.1-dev"))
    assert [Path(path).name for path, _, _ in creatures] == ["mini-star.png", "mini-circle.png", "mini-triangle.png"]
    assert [Path(path).name for path, _, _ in photos] == ["cat.jpg", "coffee.jpg", "astronaut.jpg"]
