"""FLUX's flow matching: the one definition the generator, the trainer and the miniature's teacher share.

A clean latent `x0` is noised along a straight line, `x_t = (1 - sigma) * x0 + sigma * noise`, and the
transformer learns the velocity `noise - x0`. FLUX shifts its noise levels towards noise on larger
canvases: `mu` grows linearly with the canvas' token count (its scheduler's dynamic shifting), in
sampling (the schedule) and in training (the noise levels drawn), so both see the same levels.
"""

import math

import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift


def schedule_shift(scheduler_config, tokens: int) -> float:
    """FLUX's `mu` for a canvas of `tokens` packed latent tokens, from its scheduler's config."""
    return calculate_shift(
        tokens,
        scheduler_config.get("base_image_seq_len", 256),
        scheduler_config.get("max_image_seq_len", 4096),
        scheduler_config.get("base_shift", 0.5),
        scheduler_config.get("max_shift", 1.15),
    )


def add_noise(x0: torch.Tensor, mu: float, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`x0` (batch, tokens, channels) noised at logit-normal levels shifted by `mu`: returns the noisy
    latents, each item's level `sigma` (the timestep the transformer is given) and the velocity target.
    Both draws, the levels then the noise, come from `generator` on the CPU, so a step repeats exactly
    on any device."""
    u = torch.sigmoid(torch.randn(x0.shape[0], generator=generator)).to(x0.device)
    sigma = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    noisy = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
    return noisy, sigma, noise - x0
