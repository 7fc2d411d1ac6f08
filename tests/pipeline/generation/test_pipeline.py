"""The DSD generator on a tiny model: sizes, batches, seeds, guidance, reconstructions, fitting."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.generation.pipeline import FULL, IMAGE_ONLY, UNCOND, combine_guidance, guidance_passes

ROOT = Path(__file__).resolve().parents[3]

PROMPT = "a photo of the same subject on a beach"


def run(pipe, image, prompt=PROMPT, seed: int | list[int] = 0, **kwargs):
    """A short generation; `seed` may be a list, one seed per output picture."""
    if isinstance(seed, list):
        generator = [torch.Generator().manual_seed(s) for s in seed]
    else:
        generator = torch.Generator().manual_seed(seed)
    settings = {"height": 64, "width": 64, "num_inference_steps": 2, "output_type": "np", **kwargs}
    return pipe(image, prompt, generator=generator, **settings)


def differ(a, b) -> float:
    """Mean absolute pixel difference, pixels in [0, 1]."""
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


# --- Sizes and batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(64, 64), (128, 64), (64, 128), (96, 160)])
def test_output_has_the_panel_size(tiny_pipe, references, width, height):
    output = run(tiny_pipe, references["coffee"], width=width, height=height, output_type="pil")
    (image,) = output.images
    assert image.size == (width, height)
    assert np.asarray(image).std() > 3, "a picture, not a flat fill"
    assert output.reconstructions is None
    assert set(output.timings) >= {"encode_s", "denoise_s", "decode_s"}


def test_batch_of_references_times_images_per_prompt(tiny_pipe, references):
    pictures = [references["astronaut"], references["cat"]]
    prompts = ["an astronaut on the moon", "a cat sitting in a garden"]
    seeds = [10, 11, 12, 13]
    batch = run(tiny_pipe, pictures, prompts, seed=seeds, num_images_per_prompt=2, width=96).images
    assert batch.shape == (4, 64, 96, 3)
    for i in range(4):
        for j in range(i):
            assert differ(batch[i], batch[j]) > 0.02, f"pictures {i} and {j} are the same"

    # A seed gives the same picture alone or in a batch: picture k is reference k // 2 with seed k.
    for k, seed in enumerate(seeds):
        alone = run(tiny_pipe, pictures[k // 2], prompts[k // 2], seed=seed, width=96).images[0]
        np.testing.assert_allclose(batch[k], alone, atol=2e-3, err_msg=f"picture {k} changed in the batch")


def test_one_prompt_for_several_references(tiny_pipe, references):
    output = run(tiny_pipe, [references["cat"], references["coffee"]], "a photo of it in the snow", output_type="pil")
    assert [image.size for image in output.images] == [(64, 64)] * 2


# --- Seeds ----------------------------------------------------------------------------------------


def test_same_seed_same_picture_other_seed_other_picture(tiny_pipe, references):
    cat = references["cat"]
    first = run(tiny_pipe, cat, seed=5).images[0]
    assert np.array_equal(first, run(tiny_pipe, cat, seed=5).images[0])
    assert differ(first, run(tiny_pipe, cat, seed=6).images[0]) > 0.05


def test_reference_steers_the_picture(tiny_pipe, references):
    cat = run(tiny_pipe, references["cat"], seed=3).images[0]
    coffee = run(tiny_pipe, references["coffee"], seed=3).images[0]
    assert differ(cat, coffee) > 0.005


def test_progress_is_reported_every_step(tiny_pipe, references):
    steps = []
    run(tiny_pipe, references["cat"], num_inference_steps=3, callback_on_step_end=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_interrupt_stops_after_the_current_step_and_returns_pictures(tiny_pipe, references):
    def stop_at_two(step, total):
        if step == 2:
            tiny_pipe.interrupt_run()

    output = run(tiny_pipe, references["cat"], num_inference_steps=6, callback_on_step_end=stop_at_two)
    assert output.steps_done == 2 and len(output.images) == 1
    assert run(tiny_pipe, references["cat"], num_inference_steps=3).steps_done == 3, "the next run is not stopped"


# --- Guidance -------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_scale, text_scale, passes", [
    (1.0, 1.0, (FULL,)),
    (1.0, 3.0, (IMAGE_ONLY, FULL)),
    (1.5, 1.0, (UNCOND, IMAGE_ONLY, FULL)),
    (2.0, 3.0, (UNCOND, IMAGE_ONLY, FULL)),
    (0.0, 2.0, (UNCOND, IMAGE_ONLY, FULL)),
])
def test_guidance_passes(image_scale, text_scale, passes):
    assert guidance_passes(image_scale, text_scale) == passes


@pytest.mark.parametrize("image_scale, text_scale", [(1, 1), (1, 3), (1, 0), (1.5, 1), (2, 3), (0, 2), (3, 0.5)])
def test_combine_guidance_is_the_formula(image_scale, text_scale):
    noise = torch.Generator().manual_seed(0)
    uncond, image, full = (torch.randn(2, 16, 64, generator=noise) for _ in range(3))
    available = {UNCOND: uncond, IMAGE_ONLY: image, FULL: full}
    preds = {name: available[name] for name in guidance_passes(image_scale, text_scale)}
    expected = uncond + image_scale * (image - uncond) + text_scale * (full - image)
    torch.testing.assert_close(combine_guidance(preds, image_scale, text_scale), expected)


def test_batched_guidance_equals_separate_passes(tiny_pipe, references):
    pictures = [references["astronaut"], references["cat"]]
    settings = {"image_guidance_scale": 2.0, "text_guidance_scale": 3.0, "seed": [1, 2]}
    batched = run(tiny_pipe, pictures, batch_guidance=True, **settings).images
    separate = run(tiny_pipe, pictures, batch_guidance=False, **settings).images
    np.testing.assert_allclose(batched, separate, atol=1e-4)
    plain = run(tiny_pipe, pictures, seed=[1, 2]).images
    assert differ(batched, plain) > 0.01, "guidance changes the pictures, so the comparison means something"


def test_text_guidance_alone_changes_the_picture(tiny_pipe, references):
    # The authors' code ignores a text scale unless the image scale is above 1; here it applies.
    cat = references["cat"]
    plain = run(tiny_pipe, cat, seed=4).images[0]
    guided = run(tiny_pipe, cat, seed=4, image_guidance_scale=1.0, text_guidance_scale=3.0).images[0]
    assert differ(plain, guided) > 0.005


# --- Reconstructions, fitting, bad input ----------------------------------------------------------


def test_reconstruction_is_the_left_panel(tiny_pipe, references, monkeypatch):
    canvases = []
    decode = tiny_pipe.decode_canvas

    def keep_canvas(*args):
        canvases.append(decode(*args))
        return canvases[-1]

    monkeypatch.setattr(tiny_pipe, "decode_canvas", keep_canvas)
    output = run(tiny_pipe, references["astronaut"], width=96, height=64, num_images_per_prompt=2,
                 return_reconstruction=True)
    assert output.images.shape == output.reconstructions.shape == (2, 64, 96, 3)
    (canvas,) = canvases
    assert canvas.shape == (2, 3, 64, 192), "the canvas is two panels wide"
    pixels = (canvas / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(output.reconstructions, pixels[:, :, :96], atol=1e-6)
    np.testing.assert_allclose(output.images, pixels[:, :, 96:], atol=1e-6)

    pil = run(tiny_pipe, references["astronaut"], width=96, height=64, return_reconstruction=True, output_type="pil")
    assert [image.size for image in pil.reconstructions] == [(96, 64)]


@pytest.mark.parametrize("width, height", [(72, 64), (64, 100), (100, 100), (136, 65)])
def test_sizes_that_are_not_multiples_of_16_are_refused(tiny_pipe, references, width, height):
    with pytest.raises(UserInputError, match="multiples of 16"):
        run(tiny_pipe, references["cat"], width=width, height=height)


def test_sizes_below_the_minimum_are_refused(tiny_pipe, references):
    with pytest.raises(UserInputError, match="between 64 and 2048"):
        run(tiny_pipe, references["cat"], width=48, height=64)


def test_pad_and_crop_both_fit_the_reference(tiny_pipe, references):
    coffee = references["coffee"]  # landscape, into a portrait panel: crop cuts the sides, pad adds white bands
    cropped = run(tiny_pipe, coffee, width=64, height=128, fit="crop", seed=9).images[0]
    padded = run(tiny_pipe, coffee, width=64, height=128, fit="pad", seed=9).images[0]
    assert cropped.shape == padded.shape == (128, 64, 3)
    assert differ(cropped, padded) > 0.002
    with pytest.raises(UserInputError, match="unknown fit mode 'stretch'"):
        run(tiny_pipe, coffee, fit="stretch")


def test_bad_requests_are_refused(tiny_pipe, references):
    with pytest.raises(UserInputError, match="2 reference pictures and 3 prompts"):
        run(tiny_pipe, [references["cat"], references["coffee"]], ["a", "b", "c"])
    with pytest.raises(UserInputError, match="steps must be at least 1"):
        run(tiny_pipe, references["cat"], num_inference_steps=0)


def test_any_prompt_text_maps_inside_the_tiny_encoders(tiny_pipe):
    """Every token id the embedded tokenizers produce has an embedding (hyphens, digits, unknown words)."""
    prompt = "a full-body shot of a hand-painted robot, 3/4 view! x-ray ÜBER naïve 1234567890?"
    for tokenizer, encoder in ((tiny_pipe.tokenizer, tiny_pipe.text_encoder), (tiny_pipe.tokenizer_2, tiny_pipe.text_encoder_2)):
        assert max(tokenizer(prompt).input_ids) < encoder.config.vocab_size


def test_a_folder_saved_before_the_method_moved_into_generation_still_loads(tiny_base, tmp_path):
    """Pipeline folders written before the layout change name the transformer's module `pipeline.model`
    in their model_index.json; `DSDPipeline.from_pretrained` loads them, in a fresh process."""
    folder = tmp_path / "old"
    shutil.copytree(tiny_base, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"], index["transformer"] = "DSDPipeline", ["pipeline.model", "DSDTransformer2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    script = ("import sys; from pipeline.generation.pipeline import DSDPipeline; "
              "pipe = DSDPipeline.from_pretrained(sys.argv[1]); print(type(pipe.transformer).__name__)")
    loaded = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-1] == "DSDTransformer2DModel"
