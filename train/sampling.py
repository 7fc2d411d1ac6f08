"""Samples during training: fixed references and prompts at fixed seeds, so steps can be compared.

The references and prompts are the config's `samples`, or the first `sample_count` training
pairs. Their prompt embeddings are computed with the data cache, before the text encoders are
let go; rank 0 draws them with the generator pipeline itself (the LoRA'd transformer, in eval
mode) and writes `samples/step-<step>/<i>.png`.
"""

from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch

from pipeline.images import load_image
from train.config import TrainConfig


@dataclass
class SampleSpec:
    reference: PIL.Image.Image
    prompt: str
    seed: int
    prompt_embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


def sample_specs(config: TrainConfig, training_rows: list[tuple[PIL.Image.Image, str]]) -> list[SampleSpec]:
    if config.samples:
        chosen = [(load_image(sample["image"]), sample["prompt"]) for sample in config.samples]
    else:
        chosen = training_rows[:config.sample_count]
    return [SampleSpec(reference, prompt, config.seed + index) for index, (reference, prompt) in enumerate(chosen)]


@torch.no_grad()
def draw_samples(pipe, specs: list[SampleSpec], config: TrainConfig, folder: Path, step: int) -> list[dict]:
    """Draw every sample; returns the `run_samples` rows (without the run id)."""
    out = Path(folder) / f"step-{step:08d}"
    out.mkdir(parents=True, exist_ok=True)
    transformer, was_training = pipe.transformer, pipe.transformer.training
    transformer.eval()
    rows = []
    try:
        for index, spec in enumerate(specs):
            image = pipe(spec.reference, spec.prompt, height=config.resolution, width=config.resolution,
                         num_inference_steps=config.sample_steps, guidance_scale=config.guidance,
                         generator=torch.Generator().manual_seed(spec.seed),
                         prompt_embeds=spec.prompt_embeds, pooled_prompt_embeds=spec.pooled).images[0]
            path = out / f"{index}.png"
            image.save(path)
            rows.append({"step": step, "idx": index, "prompt": spec.prompt, "seed": spec.seed, "path": str(path)})
    finally:
        transformer.train(was_training)
    return rows
