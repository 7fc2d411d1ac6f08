"""Fixtures for the model tests: a tiny FLUX.1-dev-layout folder, real reference pictures, a generator."""

from pathlib import Path

import pytest
import torch

from pipeline.generation.tiny_flux import TinyConfig, save_tiny_model
from pipeline.generation.weights import ModelSpec, load_generator
from pipeline.images import load_image

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny model saved in FLUX.1-dev's diffusers layout, so `from_pretrained` is what loads it."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "base", TinyConfig(seed=0))


@pytest.fixture(scope="session")
def references() -> dict:
    """The example pictures, loaded the way the studio loads an upload."""
    return {path.stem: load_image(path) for path in sorted(EXAMPLES.glob("*.jpg"))}


@pytest.fixture(scope="session")
def tiny_pipe(tiny_base):
    """A generator on the tiny base whose condition embedder is not zero, so the reference matters."""
    pipe = load_generator(ModelSpec(base=str(tiny_base)))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        weights = torch.Generator().manual_seed(7)
        for parameter in pipe.transformer.c_embedder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=weights) * 0.2)
    return pipe


@pytest.fixture(scope="session")
def forward_inputs():
    """`make(transformer, seed)`: random inputs for one transformer forward, condition included."""

    def make(transformer, seed: int = 0, tokens: int = 32, text_tokens: int = 8) -> dict:
        config = transformer.config
        noise = torch.Generator().manual_seed(seed)
        image_ids = torch.zeros(tokens, 3)
        image_ids[:, 1] = torch.arange(tokens) // 8
        image_ids[:, 2] = torch.arange(tokens) % 8
        return dict(
            hidden_states=torch.randn(1, tokens, config.in_channels, generator=noise),
            cond_hidden_states=torch.randn(1, tokens, config.in_channels, generator=noise),
            encoder_hidden_states=torch.randn(1, text_tokens, config.joint_attention_dim, generator=noise),
            pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=noise),
            timestep=torch.tensor([0.6]),
            guidance=torch.tensor([3.5]) if config.guidance_embeds else None,
            img_ids=image_ids,
            txt_ids=torch.zeros(text_tokens, 3),
            return_dict=False,
        )

    return make
