"""Guidance steps: ranges, and the release's schedule reproduced on the tiny released-layout checkpoint.

The authors' sampling loop is restated here (`release_sampling`, from their `pipeline.py`): the full pass
on every step; when the image scale is above 1, and from step index 2 on (`no_cfg_until_timestep = 2`),
an unconditional pass (empty prompt, zero condition) and an image-only pass (empty prompt, condition),
each its own forward, combined as `uncond + i*(img - uncond) + t*(full - img)`. Both loops get the same
noise and condition latents (the release draws its condition from the global RNG: matching that draw is
the caller's part), so what is compared is the schedule, the passes, the formula and the decoding.
"""

import numpy as np
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.generation.schedule import GuidanceSteps
from tests.pipeline.generation.test_weights import finetuned, load_released, write_released  # noqa: F401 (fixture)

PROMPT = "a photo of the same cat on a beach"
SIZE, STEPS = 64, 5


@pytest.fixture(scope="module")
def release_pipe(finetuned, tiny_base, tmp_path_factory):  # noqa: F811 (the imported fixture)
    pipe = load_released(tiny_base, write_released(tmp_path_factory.mktemp("released") / "dsd", finetuned))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def start_latents(pipe, reference, seed: int):
    """The condition and the noise our generator draws for `seed`, in its order (condition first)."""
    generator = torch.Generator().manual_seed(seed)
    condition = pipe.encode_condition([reference], SIZE, SIZE, 1, "crop", generator)
    channels = pipe.transformer.config.in_channels // 4
    latents, image_ids = pipe.prepare_latents(1, channels, SIZE, 2 * SIZE, torch.float32, "cpu", generator)
    return condition, latents, image_ids


@torch.no_grad()
def release_sampling(pipe, reference, seed, image_scale, text_scale, guidance_scale=3.5) -> np.ndarray:
    condition, latents, image_ids = start_latents(pipe, reference, seed)
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(prompt=[PROMPT], prompt_2=None)
    if image_scale > 1.0:
        empty_embeds, empty_pooled, _ = pipe.encode_prompt(prompt=[""], prompt_2=None)
    config = pipe.scheduler.config
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    mu = latents.shape[1] * slope + config.base_shift - slope * config.base_image_seq_len
    pipe.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
    guidance = torch.tensor([guidance_scale]).expand(1)

    def forward(t, embeds, pooled_embeds, cond):
        return pipe.transformer(hidden_states=latents, timestep=t.expand(1) / 1000, guidance=guidance,
                                pooled_projections=pooled_embeds, encoder_hidden_states=embeds, txt_ids=text_ids,
                                img_ids=image_ids, cond_hidden_states=cond, return_dict=False)[0]

    for i, t in enumerate(pipe.scheduler.timesteps):
        prediction = forward(t, prompt_embeds, pooled, condition)
        if image_scale > 1.0 and i >= 2:
            uncond = forward(t, empty_embeds, empty_pooled, torch.zeros_like(condition))
            image_only = forward(t, empty_embeds, empty_pooled, condition)
            prediction = uncond + image_scale * (image_only - uncond) + text_scale * (prediction - image_only)
        latents = pipe.scheduler.step(prediction, t, latents, return_dict=False)[0]
    canvas = pipe._unpack_latents(latents, SIZE, 2 * SIZE, pipe.vae_scale_factor)
    canvas = canvas / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    pixels = pipe.vae.decode(canvas, return_dict=False)[0][..., SIZE:]
    return pipe.image_processor.postprocess(pixels, output_type="np")[0]


def ours(pipe, reference, seed, image_scale, text_scale, **kwargs) -> np.ndarray:
    return pipe(reference, PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS,
                image_guidance_scale=image_scale, text_guidance_scale=text_scale,
                generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images[0]


@pytest.mark.parametrize("image_scale, text_scale", [(1.5, 1.3), (1.0, 1.5)])
def test_release_setting_reproduces_the_released_sampling(release_pipe, references, image_scale, text_scale):
    cat = references["cat"]
    expected = release_sampling(release_pipe, cat, 3, image_scale, text_scale)
    release = ours(release_pipe, cat, 3, image_scale, text_scale, guidance_steps="release")
    assert np.array_equal(release, expected), "the release's pictures, bit for bit"
    # Our default guides every step, and also guides a text scale alone: another picture.
    assert np.abs(ours(release_pipe, cat, 3, image_scale, text_scale) - expected).mean() > 1e-3


def passes_per_step(pipe, reference, image_scale, text_scale, **kwargs) -> list[list[int]]:
    """The batch sizes of the transformer's forwards, step by step (the batch is one picture)."""
    steps, current = [], []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kw: current.append(kw["hidden_states"].shape[0]), with_kwargs=True)

    def step_done(step, total):
        steps.append(list(current))
        current.clear()

    try:
        pipe(reference, PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, image_guidance_scale=image_scale,
             text_guidance_scale=text_scale, generator=torch.Generator().manual_seed(0), output_type="latent",
             callback_on_step_end=step_done, **kwargs)
    finally:
        handle.remove()
    return steps


def test_transformer_calls_per_step(release_pipe, references):
    cat = references["cat"]
    # The release: one pass on steps 0 and 1, then the three passes, each its own forward as there.
    assert passes_per_step(release_pipe, cat, 1.5, 1.0, guidance_steps="release") == \
        [[1], [1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    # The same steps from a range, with the passes batched as our default runs them.
    assert passes_per_step(release_pipe, cat, 1.5, 1.0, guidance_steps="2:") == [[1], [1], [3], [3], [3]]
    # ... and no guidance at all unless the image scale is above 1.
    assert passes_per_step(release_pipe, cat, 1.0, 1.5, guidance_steps="release") == [[1]] * STEPS
    # Our default guides every step; a text scale alone needs two passes (the unconditional one cancels).
    assert passes_per_step(release_pipe, cat, 1.0, 1.5) == [[2]] * STEPS
    # A range: as shares of the 5 steps, or as step numbers, the end excluded.
    for text in ("0.2:0.6", "1:3"):
        assert passes_per_step(release_pipe, cat, 1.0, 1.5, guidance_steps=text) == [[1], [2], [2], [1], [1]]


@pytest.mark.parametrize("text, steps, expected", [
    (None, 28, range(0, 28)), ("all", 28, range(0, 28)), ("release", 28, range(2, 28)),
    ("0.1:0.8", 28, range(3, 22)), ("2:28", 28, range(2, 28)), ("2:", 20, range(2, 20)), (":0.5", 20, range(0, 10)),
    ("5:40", 28, range(5, 28)), ("30:40", 28, range(28, 28)), ("0.0:1.0", 10, range(0, 10)),
])
def test_guided_steps(text, steps, expected):
    assert GuidanceSteps.parse(text).guided(steps, 1.5) == expected
    assert GuidanceSteps.parse(str(GuidanceSteps.parse(text))) == GuidanceSteps.parse(text), "round trip"


@pytest.mark.parametrize("text, message", [
    ("first", "all, release, or START:END"), ("1:2:3", "START:END"), ("0.2:1.5", "from 0 to 1"),
    ("8:2", "end before they start"), ("-1:5", "START:END"), ("nan:1", "START:END"),
])
def test_bad_guidance_steps_are_one_clear_error(text, message):
    with pytest.raises(UserInputError, match=message):
        GuidanceSteps.parse(text)
