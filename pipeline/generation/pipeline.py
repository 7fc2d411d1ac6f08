"""The DSD generator: reference picture + prompt -> a new picture of the same subject.

A diffusers pipeline built from FLUX's components with `DSDTransformer2DModel` as transformer.
`__call__` is the method of the paper (section 3.2): the reference is the first frame of a
two-frame canvas `[reference | output]`; both halves are denoised together, the clean reference
steers every step through the condition embedder, and the right half is the result.

Differences from the authors' release, on purpose:
- any panel size that is a multiple of 16, square or not, and batches of references and seeds;
- true guidance `uncond + i*(img - uncond) + t*(full - img)` is applied whenever either scale is
  not 1, on every step or on a range of steps (`schedule.GuidanceSteps`). The release only turns it
  on when the image scale is above 1, and only from the third step (index 2), so a text scale above 1
  alone did nothing there; `guidance_steps="release"` is that schedule, for the release's pictures;
- the guidance passes run as one batched forward (or one at a time to save memory), and passes
  whose weight is zero are skipped: with image scale 1 the unconditional pass cancels out;
- an optional step cache (diffusers' hooks, `caching.StepCache`) reuses work between steps.
"""

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps
from diffusers.utils import BaseOutput

from pipeline.errors import UserInputError
from pipeline.flow import schedule_shift
from pipeline.generation.caching import StepCache, step_cache
from pipeline.generation.schedule import GuidanceSteps
from pipeline.images import check_panel_size, fit_to_panel, load_image

# The passes of true guidance, by what the transformer sees: (text, condition image).
UNCOND, IMAGE_ONLY, FULL = "uncond", "image", "full"


def guidance_passes(image_scale: float, text_scale: float) -> tuple[str, ...]:
    """The forward passes a step needs for these true-guidance scales."""
    if image_scale == 1 and text_scale == 1:
        return (FULL,)
    if image_scale == 1:
        return (IMAGE_ONLY, FULL)
    return (UNCOND, IMAGE_ONLY, FULL)


def combine_guidance(preds: dict[str, torch.Tensor], image_scale: float, text_scale: float) -> torch.Tensor:
    """`uncond + i*(img - uncond) + t*(full - img)`; with i == 1 the uncond terms cancel."""
    full = preds[FULL]
    if len(preds) == 1:
        return full
    image = preds[IMAGE_ONLY]
    base = image if UNCOND not in preds else preds[UNCOND] + image_scale * (image - preds[UNCOND])
    return base + text_scale * (full - image)


def text_length(pipe) -> int:
    """The T5 length prompts are padded to: 512 (FLUX.1-dev's) unless the model's tokenizer is shorter.
    A model trained on short prompts (the miniature) must see them padded as in training."""
    tokenizer = getattr(pipe, "tokenizer_2", None)
    return min(512, getattr(tokenizer, "model_max_length", 512) or 512)


@dataclass
class DSDPipelineOutput(BaseOutput):
    """`images`: the outputs (right halves); `reconstructions`: left halves, when asked for."""

    images: list[PIL.Image.Image] | np.ndarray
    reconstructions: list[PIL.Image.Image] | np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    steps_done: int = 0  # fewer than asked when `interrupt()` stopped the run


class DSDPipeline(FluxPipeline):
    """FLUX components with a DSD transformer; see the module docstring for the method."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """A saved DSD pipeline folder. diffusers finds the transformer's module by the name its
        `model_index.json` records, among the modules already imported: `pipeline.generation.model`,
        or `pipeline.model` in folders saved by earlier versions."""
        from pipeline.generation import model

        sys.modules.setdefault("pipeline.model", model)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def encode_prompt(self, *args, max_sequence_length: int | None = None, **kwargs):
        """FLUX's `encode_prompt`; prompts are padded to the model's own text length (see `text_length`)."""
        return super().encode_prompt(*args, max_sequence_length=max_sequence_length or text_length(self), **kwargs)

    # One function on purpose, as diffusers' pipelines are: its numbered steps read as section 3.2.
    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | Sequence[PIL.Image.Image],
        prompt: str | Sequence[str],
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        image_guidance_scale: float = 1.0,
        text_guidance_scale: float = 1.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        fit: str = "crop",
        max_sequence_length: int | None = None,
        batch_guidance: bool = True,
        return_reconstruction: bool = False,
        output_type: str = "pil",
        callback_on_step_end: Callable[[int, int], None] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        guidance_steps: GuidanceSteps | str | None = None,
        cache: StepCache | str | None = None,
    ) -> DSDPipelineOutput:
        """Generate `num_images_per_prompt` pictures per (reference, prompt) pair.

        `height` x `width` is the size of one panel (the canvas is twice as wide). `generator`
        may be a list with one generator per output picture, so a seed gives the same picture
        alone or in a batch. `callback_on_step_end(step, total)` reports progress. Precomputed
        `prompt_embeds` / `pooled_prompt_embeds` (one per prompt) skip the text encoders, as in FLUX.
        `guidance_steps`: the steps that run true guidance (`all`, `release` or `START:END`, see
        `schedule`); `cache`: a step cache such as `fbc:0.08` (see `caching`), removed when the call ends.
        """
        references, prompts = self.check_dsd_inputs(
            image, prompt, height, width, num_inference_steps, generator, num_images_per_prompt
        )
        device, timings = self._execution_device, {}
        batch = len(references) * num_images_per_prompt
        passes = guidance_passes(image_guidance_scale, text_guidance_scale)
        guidance_steps, cache = GuidanceSteps.parse(guidance_steps), StepCache.parse(cache)
        # The release runs its passes one forward each; so does its setting, for the same float32 sums.
        batch_guidance = batch_guidance and not guidance_steps.release
        self._interrupt = False

        # 1. Encode the prompt (and the empty prompt when a pass drops the text).
        started = time.perf_counter()
        text = self.encode_prompt(
            prompt=prompts, prompt_2=None, device=device,
            num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length,
            prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
        )
        empty = None
        if UNCOND in passes or IMAGE_ONLY in passes:
            empty = self.encode_prompt(
                prompt=[""], prompt_2=None, device=device,
                num_images_per_prompt=batch, max_sequence_length=max_sequence_length,
            )

        # 2. The condition: `[reference | black]`, VAE-encoded once, packed like the latents.
        condition = self.encode_condition(references, height, width, num_images_per_prompt, fit, generator)
        timings["encode_s"] = _elapsed(started, device)

        # 3. Noise for the whole canvas: both halves start from noise.
        channels = self.transformer.config.in_channels // 4
        latents, image_ids = self.prepare_latents(
            batch, channels, height, 2 * width, text[0].dtype, device, generator
        )

        # 4. FLUX's flow-matching schedule, shifted for the canvas' token count.
        timesteps = self.schedule(num_inference_steps, latents.shape[1], device)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), guidance_scale, device=device, dtype=torch.float32)

        # 5. Denoise the canvas: true guidance on the guided steps, one pass on the others.
        guided = guidance_steps.guided(len(timesteps), image_guidance_scale)
        started, steps_done, current = time.perf_counter(), 0, {"passes": None}
        with step_cache(self.transformer, cache, len(timesteps), lambda: current["t"], batch_guidance) as cached:
            for step, t in enumerate(timesteps):
                if self.interrupt:
                    break
                step_passes = passes if step in guided else (FULL,)
                if current["passes"] not in (None, step_passes):
                    cached.restart()  # other passes, another batch: the cache's earlier steps no longer apply
                current.update(t=t, passes=step_passes)
                preds = self.predict_passes(
                    latents, condition, text, empty, image_ids, t, guidance, step_passes, batch_guidance,
                    lambda group: cached.context(group, step),
                )
                velocity = combine_guidance(preds, image_guidance_scale, text_guidance_scale)
                latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
                steps_done = step + 1
                if callback_on_step_end is not None:
                    callback_on_step_end(step + 1, len(timesteps))
        timings["denoise_s"] = _elapsed(started, device)
        timings["per_step_s"] = timings["denoise_s"] / max(1, steps_done)

        # 6. Decode the canvas; the right half is the output, the left the reconstruction.
        started = time.perf_counter()
        images, reconstructions = self.split_canvas(latents, height, width, output_type, return_reconstruction)
        timings["decode_s"] = _elapsed(started, device)
        self.maybe_free_model_hooks()
        return DSDPipelineOutput(images, reconstructions, timings, steps_done)

    def interrupt_run(self) -> None:
        """Stop the running `__call__` after its current step; it returns what it has."""
        self._interrupt = True

    def check_dsd_inputs(self, image, prompt, height, width, steps, generator, per_reference) -> tuple[list, list[str]]:
        check_panel_size(width, height)
        references = [image] if isinstance(image, (PIL.Image.Image, str, Path)) else list(image)
        references = [load_image(r) if isinstance(r, (str, Path)) else r for r in references]
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if len(prompts) == 1 and len(references) > 1:
            prompts = prompts * len(references)
        if len(references) == 1 and len(prompts) > 1:
            references = references * len(prompts)
        if not references or len(references) != len(prompts):
            raise UserInputError(
                f"got {len(references)} reference pictures and {len(prompts)} prompts: give one prompt, "
                "or one prompt per picture"
            )
        if steps < 1:
            raise UserInputError(f"steps must be at least 1, got {steps}")
        if isinstance(generator, list) and len(generator) != len(references) * per_reference:
            raise UserInputError(
                f"got {len(generator)} generators for {len(references) * per_reference} pictures: give one per picture"
            )
        return references, prompts

    def encode_condition(self, references, height, width, per_reference, fit, generator) -> torch.Tensor:
        """VAE latents of `[reference | black]` (black = -1 in VAE input space), packed."""
        return self.encode_canvas(references, None, height, width, fit, generator, per_reference)

    def encode_canvas(self, left, right, height, width, fit="crop", generator=None, repeat: int = 1) -> torch.Tensor:
        """Packed VAE latents of the two-panel canvas `[left | right]`; `right=None` is black.
        Training encodes `[reference | target]` with this, the generator `[reference | black]`."""
        def pixels(images):
            panels = [fit_to_panel(image, width, height, fit) for image in images]
            return self.image_processor.preprocess(panels, height=height, width=width).repeat_interleave(repeat, dim=0)

        left_pixels = pixels(left)
        right_pixels = torch.full_like(left_pixels, -1.0) if right is None else pixels(right)
        canvas = torch.cat([left_pixels, right_pixels], dim=-1).to(device=self._execution_device, dtype=self.vae.dtype)
        latents = self.vae.encode(canvas).latent_dist.sample(generator)
        latents = (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        batch, channels, latent_height, latent_width = latents.shape
        packed = self._pack_latents(latents, batch, channels, latent_height, latent_width)
        return packed.to(self.transformer.dtype)

    def schedule(self, num_inference_steps: int, image_seq_len: int, device) -> torch.Tensor:
        config = self.scheduler.config
        sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        mu = schedule_shift(config, image_seq_len)
        timesteps, _ = retrieve_timesteps(self.scheduler, num_inference_steps, device, sigmas=sigmas, mu=mu)
        return timesteps

    def predict_passes(self, latents, condition, text, empty, image_ids, t, guidance, passes, batched,
                       context=lambda group: contextlib.nullcontext()):
        """Velocity predictions for each guidance pass: one batched forward, or one per pass. `context(group)`
        wraps each forward (the step cache's state for those passes)."""
        prompt_embeds, pooled, text_ids = text
        inputs = {
            UNCOND: (torch.zeros_like(condition), empty),
            IMAGE_ONLY: (condition, empty),
            FULL: (condition, (prompt_embeds, pooled, text_ids)),
        }
        groups = [passes] if batched else [(name,) for name in passes]
        preds = {}
        for group in groups:
            n = len(group)
            with context(group):
                output = self.transformer(
                    hidden_states=latents.repeat(n, 1, 1),
                    cond_hidden_states=torch.cat([inputs[name][0] for name in group]),
                    encoder_hidden_states=torch.cat([inputs[name][1][0] for name in group]),
                    pooled_projections=torch.cat([inputs[name][1][1] for name in group]),
                    timestep=(t / 1000).expand(n * latents.shape[0]).to(latents.dtype),
                    guidance=None if guidance is None else guidance.repeat(n),
                    txt_ids=text_ids,
                    img_ids=image_ids,
                    return_dict=False,
                )[0]
            preds.update(zip(group, output.chunk(n)))
        return preds

    def split_canvas(self, latents, height, width, output_type, with_reconstruction):
        """The right half (the output) and, when asked, the left half (the reference reconstructed)."""
        if output_type == "latent":
            canvas = self._unpack_latents(latents, height, 2 * width, self.vae_scale_factor)
            split = width // self.vae_scale_factor
            left, right = canvas[..., :split], canvas[..., split:]
            return right, left if with_reconstruction else None
        canvas = self.decode_canvas(latents, height, 2 * width)
        images = self.image_processor.postprocess(canvas[..., width:], output_type=output_type)
        if not with_reconstruction:
            return images, None
        return images, self.image_processor.postprocess(canvas[..., :width], output_type=output_type)

    def decode_canvas(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        latents = self._unpack_latents(latents, height, width, self.vae_scale_factor)
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]


def _elapsed(started: float, device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started
