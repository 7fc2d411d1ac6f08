"""Step caching: diffusers' own cache hooks on the DSD transformer, by name, `NAME[:VALUE]`.

Neighbouring denoising steps compute nearly the same thing; a cache reuses part of the last step's work.
The hooks come from the pinned diffusers (`diffusers.hooks`), applied with `transformer.enable_cache`
for one generation and removed after it, so a generation without a cache is untouched by one before.

- `fbc[:threshold]`: First Block Cache. The first block always runs; when its residual changed by less
  than `threshold` (relative mean difference) since the last full forward, the other blocks' residual
  is reused. Higher is faster and coarser.
- `taylorseer[:interval]`: TaylorSeer. Attention outputs are computed every `interval` steps and
  extrapolated (first-order Taylor) in between; the first three steps are always computed.
- `mag[:threshold]`: MagCache with FLUX.1-dev's magnitude ratios (diffusers' `FLUX_MAG_RATIOS`, measured
  on FLUX text-to-image): blocks are skipped while the accumulated error estimate stays under `threshold`.
  The ratios belong to FLUX.1-dev: on another model (the miniature) they are a rough guess.
- `pab[:range]`: Pyramid Attention Broadcast. Between timesteps 100 and 800 each attention output is
  computed once every `range` forwards and reused in between. It keeps one state for every forward, so
  it needs the guidance passes batched (the default).

Not offered: FasterCache (its unconditional-batch skipping assumes classifier-free guidance laid out as
diffusers' video pipelines do; on FLUX it fails inside its hook) and SeaCache (it needs the scheduler's
sigma for every forward; not measured here).

A cache keeps its state per guidance pass (diffusers' `cache_context`), named by the passes that run
together, so passes run one at a time never read each other's cache. When the passes change between
steps (at the ends of a guidance range) the batch changes shape, and the hooks start afresh.
"""

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from diffusers.hooks import (
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from pipeline.errors import UserInputError

# name: (default value, whole number, lowest, highest, what the value is)
CACHES = {
    "fbc": (0.08, False, 0.0, 10.0, "threshold"),
    "taylorseer": (3, True, 2, 50, "interval"),
    "mag": (0.06, False, 0.0, 10.0, "threshold"),
    "pab": (2, True, 2, 50, "range"),
}
HELP = "none, or NAME[:VALUE] with NAME one of " + ", ".join(
    f"{name} ({what}, default {default:g})" for name, (default, _, _, _, what) in CACHES.items())
CACHE_CHOICES = ("none", *(f"{name}:{default:g}" for name, (default, *_) in CACHES.items()))
PER_PASS = ("fbc", "taylorseer", "mag")  # caches whose state follows diffusers' cache_context


@dataclass(frozen=True)
class StepCache:
    name: str
    value: float

    @classmethod
    def parse(cls, text: "str | StepCache | None") -> "StepCache | None":
        """`none` (or blank) is no cache; a bad name or value is one `UserInputError` that says what to write."""
        if text is None or isinstance(text, StepCache):
            return text
        text = text.strip().lower()
        if text in ("", "none", "off"):
            return None
        name, _, value = text.partition(":")
        if name not in CACHES:
            raise UserInputError(f"unknown step cache {name!r}: use {HELP}")
        default, whole, low, high, what = CACHES[name]
        if not value:
            return cls(name, default)
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        in_range = low <= number <= high if whole else low < number <= high
        if not (math.isfinite(number) and in_range and (not whole or number == int(number))):
            allowed = f"a whole number from {low:g} to {high:g}" if whole else f"a number above {low:g}, at most {high:g}"
            raise UserInputError(f"the {name} cache's {what} must be {allowed}, got {value!r}")
        return cls(name, int(number) if whole else number)

    def __str__(self) -> str:
        return f"{self.name}:{self.value:g}"

    def config(self, steps: int, timestep, dtype: torch.dtype):
        """The diffusers config for a generation of `steps` steps; `timestep()` reads the current timestep."""
        if self.name == "fbc":
            return FirstBlockCacheConfig(threshold=self.value)
        if self.name == "taylorseer":
            # Taylor factors in the model's precision: bfloat16 factors on a float32 model add their own error.
            return TaylorSeerCacheConfig(cache_interval=int(self.value), disable_cache_before_step=3,
                                         taylor_factors_dtype=dtype)
        if self.name == "mag":
            return MagCacheConfig(threshold=self.value, num_inference_steps=steps, mag_ratios=FLUX_MAG_RATIOS.clone())
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=int(self.value),
                                               spatial_attention_timestep_skip_range=(100, 800),
                                               current_timestep_callback=timestep)


class CacheRun:
    """One generation's cache on `transformer`: `context(passes)` around each forward, `restart()` when the
    passes change, `close()` at the end (also after an error or a stop)."""

    def __init__(self, transformer, cache: StepCache | None, steps: int, timestep, batched: bool):
        self.transformer, self.cache, self.config = transformer, cache, None
        if cache is None:
            return
        if cache.name not in PER_PASS and not batched:
            raise UserInputError(f"the {cache.name} cache keeps one state for all passes: run the guidance passes "
                                 f"batched, or pick {', '.join(PER_PASS)}")
        self.config = cache.config(steps, timestep, transformer.dtype)
        transformer.enable_cache(self.config)

    def context(self, passes: tuple[str, ...], step: int):
        if self.config is None:
            return nullcontext()
        return self.transformer.cache_context("+".join(passes), step_index=step)

    def restart(self) -> None:
        if self.config is not None:
            self.transformer.disable_cache()
            self.transformer.enable_cache(self.config)

    def close(self) -> None:
        if self.config is not None:
            self.transformer.disable_cache()
            self.config = None


@contextmanager
def step_cache(transformer, cache: StepCache | None, steps: int, timestep, batched: bool = True):
    run = CacheRun(transformer, cache, steps, timestep, batched)
    try:
        yield run
    finally:
        run.close()
