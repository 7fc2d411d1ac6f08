"""What the generator feeds its transformer and makes of its answers. True guidance end to end: the pictures
are the guidance formula applied to the predictions of its own passes, integrated along its own schedule
(the passes and their predictions are read from the transformer with a forward hook, so a change anywhere
between the passes and the pictures shows); and the condition is the reference beside a black panel."""

import pytest
import torch

PROMPT = "a photo of the same subject on a beach"


def passes_by_role(inputs: dict, output: torch.Tensor, empty: torch.Tensor, batch: int) -> dict:
    """The forward's chunks by what the transformer saw: no image and no text, the image alone, both."""
    count = inputs["cond_hidden_states"].shape[0] // batch
    roles = {}
    for condition, prompt, prediction in zip(inputs["cond_hidden_states"].chunk(count),
                                             inputs["encoder_hidden_states"].chunk(count), output.chunk(count)):
        no_image = bool((condition == 0).all())
        no_text = torch.allclose(prompt, empty.expand_as(prompt), atol=1e-6)
        roles[{(True, True): "uncond", (False, True): "image", (False, False): "full"}[(no_image, no_text)]] = prediction
    return roles


@pytest.mark.parametrize("image_scale, text_scale, roles", [
    (1.5, 3.0, {"uncond", "image", "full"}),
    (1.0, 3.0, {"image", "full"}),
])
def test_pictures_are_the_formula_applied_to_the_passes_predictions(tiny_pipe, references, image_scale, text_scale, roles):
    steps, seen = 3, []

    def keep(module, args, kwargs, output):
        seen.append(({key: kwargs[key] for key in ("hidden_states", "cond_hidden_states", "encoder_hidden_states")},
                     output[0]))

    handle = tiny_pipe.transformer.register_forward_hook(keep, with_kwargs=True)
    try:
        out = tiny_pipe(references["cat"], PROMPT, height=64, width=64, num_inference_steps=steps, output_type="latent",
                        image_guidance_scale=image_scale, text_guidance_scale=text_scale,
                        generator=torch.Generator().manual_seed(0)).images
    finally:
        handle.remove()
    with torch.no_grad():
        empty = tiny_pipe.encode_prompt(prompt=[""], prompt_2=None, device="cpu")[0]
    sigmas = tiny_pipe.scheduler.sigmas
    assert len(seen) == steps, "one batched forward a step"

    latents = seen[0][0]["hidden_states"][:1]
    for step, (inputs, output) in enumerate(seen):
        torch.testing.assert_close(inputs["hidden_states"][:1], latents, rtol=1e-4, atol=1e-5)  # where the pipeline is
        preds = passes_by_role(inputs, output, empty, batch=1)
        assert set(preds) == roles
        uncond = preds.get("uncond", preds["image"])  # with image scale 1 the unconditional pass cancels
        velocity = uncond + image_scale * (preds["image"] - uncond) + text_scale * (preds["full"] - preds["image"])
        latents = latents + (sigmas[step + 1] - sigmas[step]) * velocity  # FLUX's Euler step

    canvas = tiny_pipe._unpack_latents(latents, 64, 128, tiny_pipe.vae_scale_factor)
    torch.testing.assert_close(out, canvas[..., 8:], rtol=1e-4, atol=1e-5)
    plain = tiny_pipe(references["cat"], PROMPT, height=64, width=64, num_inference_steps=steps, output_type="latent",
                      generator=torch.Generator().manual_seed(0)).images
    assert (out - plain).abs().mean() > 0.01 * plain.abs().mean(), "guidance moved the picture, so the check means something"


def test_the_condition_is_the_reference_beside_a_black_panel(tiny_pipe, references):
    """What the generator encodes as its condition is what a user would draw: the reference, and a black
    picture to its right (the release's `[reference | black]`), through the same VAE sample."""
    from PIL import Image

    cat = references["cat"]
    black = Image.new("RGB", cat.size, (0, 0, 0))
    with torch.no_grad():
        condition = tiny_pipe.encode_condition([cat], 64, 64, 1, "crop", torch.Generator().manual_seed(0))
        drawn = tiny_pipe.encode_canvas([cat], [black], 64, 64, "crop", torch.Generator().manual_seed(0))
    torch.testing.assert_close(condition, drawn)
