"""Step caches on the tiny model: each runs, does less work, stays close to the uncached picture, and leaves
nothing behind.

Work is counted as attention and feed-forward calls in the transformer's blocks (the VAE's attention is
the same in every run). Close means: the cache moves the picture by less than a tenth of what another
seed moves it (mean absolute pixel difference), the scale on which the tiny model's pictures differ.
"""

import numpy as np
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.generation.caching import CACHES, StepCache

STEPS = 12
# Values that make each cache skip work on the tiny model in 12 steps (its first block's residual moves
# more per step than FLUX.1-dev's, so First Block Cache needs a higher threshold to act).
ON_TINY = {"fbc": "fbc:0.5", "taylorseer": "taylorseer:3", "mag": "mag:0.3", "pab": "pab:2"}


def generate(pipe, reference, seed=0, **kwargs) -> np.ndarray:
    return pipe(reference, "a photo of the same subject on a beach", height=64, width=64, num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images[0]


@pytest.fixture
def work(tiny_pipe, monkeypatch):
    """Counts of attention and feed-forward calls made by the transformer's blocks."""
    counts = {"attention": 0, "feed_forward": 0}
    blocks = [*tiny_pipe.transformer.transformer_blocks, *tiny_pipe.transformer.single_transformer_blocks]
    handles = [(block.ff if hasattr(block, "ff") else block.proj_mlp).register_forward_pre_hook(
        lambda *_: counts.__setitem__("feed_forward", counts["feed_forward"] + 1)) for block in blocks]
    attention = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        counts["attention"] += 1
        return attention(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)

    def measure(run):
        counts.update(attention=0, feed_forward=0)
        result = run()
        return result, dict(counts)

    yield measure
    for handle in handles:
        handle.remove()


def test_every_cache_runs_does_less_and_stays_close(tiny_pipe, references, work):
    cat = references["cat"]
    plain, plain_work = work(lambda: generate(tiny_pipe, cat))
    seed_scale = np.abs(generate(tiny_pipe, cat, seed=1) - plain).mean()
    ranged = {"image_guidance_scale": 1.5, "text_guidance_scale": 1.5, "guidance_steps": "0.2:0.8"}
    uncached = {"": (plain, plain_work), "ranged": work(lambda: generate(tiny_pipe, cat, **ranged))}
    assert set(ON_TINY) == set(CACHES)
    for name, setting in ON_TINY.items():
        for guidance in ({}, ranged):
            cached, cached_work = work(lambda: generate(tiny_pipe, cat, cache=setting, **guidance))
            reference, reference_work = uncached["ranged" if guidance else ""]
            assert sum(cached_work.values()) < sum(reference_work.values()), (name, guidance, cached_work)
            assert np.abs(cached - reference).mean() < seed_scale / 10, (name, guidance)
        assert not tiny_pipe.transformer.is_cache_enabled
    assert np.array_equal(generate(tiny_pipe, cat), plain), "a generation after a cached one is untouched"


def test_passes_one_at_a_time_keep_their_own_cache(tiny_pipe, references):
    cat = references["cat"]
    guidance = {"image_guidance_scale": 1.5, "text_guidance_scale": 1.5}
    plain = generate(tiny_pipe, cat, **guidance)
    seed_scale = np.abs(generate(tiny_pipe, cat, seed=1, **guidance) - plain).mean()
    for setting in ("fbc:0.5", "taylorseer:3", "mag:0.3"):
        one_at_a_time = generate(tiny_pipe, cat, cache=setting, batch_guidance=False, **guidance)
        assert np.abs(one_at_a_time - plain).mean() < seed_scale / 10, setting
        if setting != "fbc:0.5":  # these decide by step, not by the batch's content: as batched, to rounding
            batched = generate(tiny_pipe, cat, cache=setting, **guidance)
            # One state for all passes put them 7e-4 (taylorseer) and 2e-3 (mag) away from the batched run.
            assert np.abs(one_at_a_time - batched).mean() < 1e-4, setting
    with pytest.raises(UserInputError, match="pab cache keeps one state"):
        generate(tiny_pipe, cat, cache="pab", batch_guidance=False, **guidance)


@pytest.mark.parametrize("text, expected", [
    (None, None), ("none", None), ("", None), ("fbc", StepCache("fbc", 0.08)), ("FBC:0.12", StepCache("fbc", 0.12)),
    ("taylorseer:4", StepCache("taylorseer", 4)), ("pab", StepCache("pab", 2)), ("mag:0.1", StepCache("mag", 0.1)),
])
def test_cache_names(text, expected):
    assert StepCache.parse(text) == expected


@pytest.mark.parametrize("text, message", [
    ("teacache", "unknown step cache 'teacache'.*fbc"), ("fbc:0", "above 0"), ("fbc:x", "got 'x'"),
    ("taylorseer:2.5", "whole number from 2"), ("pab:1", "whole number from 2"), ("mag:nan", "above 0"),
])
def test_bad_cache_settings_are_one_clear_error(text, message):
    with pytest.raises(UserInputError, match=message):
        StepCache.parse(text)
