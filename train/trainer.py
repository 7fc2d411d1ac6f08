"""The DSD fine-tune (paper sections 3.2 and 4), read top to bottom: build, load data, loop, save.

The canvas is exactly what the generator infers on: target `[reference | target]`, condition
`[reference | black]` through the condition embedder (trained in full), FLUX's flow-matching loss
over both halves with per-half weights. Dropping the condition (all zeros) and the caption (empty)
now and then is what makes image and text guidance work at inference. The LoRA goes on the
released target modules. Runs as one process or under `accelerate launch`.
"""

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
from accelerate import Accelerator
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from peft import LoraConfig

from pipeline.dataset import read_pairs
from pipeline.errors import UserInputError
from pipeline.weights import ModelSpec, load_generator, save_dsd_weights
from train.config import TrainConfig


@dataclass
class Example:
    """One training pair, precomputed: packed latents and text embeddings."""

    target: torch.Tensor  # [reference | target] canvas, (L, C)
    condition: torch.Tensor  # [reference | black] canvas, (L, C)
    prompt: torch.Tensor  # T5 embeddings of the caption
    pooled: torch.Tensor  # CLIP pooled embedding of the caption


def cache_folder(config: TrainConfig, home: Path) -> Path:
    """Latents and embeddings depend on the data, the base model and the resolution, nothing else."""
    key = f"{Path(config.data).resolve()}:{Path(config.data).stat().st_mtime_ns}:{config.base}:{config.resolution}"
    return home / "cache" / hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def precompute(pipe, config: TrainConfig, folder: Path, accelerator: Accelerator) -> list[Example]:
    """VAE latents and text embeddings, computed once and kept on disk; each rank computes its share."""
    table = read_pairs(config.data).to_pylist()
    folder.mkdir(parents=True, exist_ok=True)
    size = config.resolution
    for index in range(accelerator.process_index, len(table), accelerator.num_processes):
        path = folder / f"{index}.pt"
        if path.exists():
            continue
        row = table[index]
        reference, target = (PIL.Image.open(io.BytesIO(row[k]["bytes"] if isinstance(row[k], dict) else row[k])).convert("RGB")
                             for k in ("conditioning", "image"))
        generator = torch.Generator().manual_seed(index)
        prompt, pooled, _ = pipe.encode_prompt(prompt=[row["caption"]], prompt_2=None, device=pipe.device)
        example = Example(pipe.encode_canvas([reference], [target], size, size, generator=generator)[0],
                          pipe.encode_canvas([reference], None, size, size, generator=generator)[0],
                          prompt[0], pooled[0])
        torch.save(example.__dict__, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)  # whole or absent
    empty, empty_pooled, _ = pipe.encode_prompt(prompt=[""], prompt_2=None, device=pipe.device)
    torch.save({"prompt": empty[0], "pooled": empty_pooled[0]}, folder / f"empty.{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    return [Example(**torch.load(folder / f"{i}.pt")) for i in range(len(table))]


def canvas_halves(resolution: int, vae_scale: int) -> torch.Tensor:
    """True for the tokens of the left (reference) half of the packed canvas (row-major patches)."""
    rows, cols = resolution // (vae_scale * 2), 2 * resolution // (vae_scale * 2)
    return (torch.arange(cols) < cols // 2).repeat(rows)


def flow_matching_loss(transformer, batch: dict, empty: dict, config: TrainConfig, ids: dict, mu: float,
                       left: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FLUX's rectified-flow loss on the canvas; returns (weighted loss, loss of left, loss of right)."""
    x0, condition = batch["target"], batch["condition"]
    size = x0.shape[0]
    drop_condition = torch.rand(size, device=x0.device) < config.condition_dropout
    condition = torch.where(drop_condition[:, None, None], torch.zeros_like(condition), condition)
    drop_caption = (torch.rand(size, device=x0.device) < config.caption_dropout)[:, None]
    prompt = torch.where(drop_caption[:, :, None], empty["prompt"].to(x0.device), batch["prompt"])
    pooled = torch.where(drop_caption, empty["pooled"].to(x0.device), batch["pooled"])
    # Logit-normal timesteps, shifted for the canvas' token count as the sampler's schedule is.
    u = torch.sigmoid(torch.randn(size, device=x0.device))
    sigma = math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    noise = torch.randn_like(x0)
    noisy = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
    prediction = transformer(
        hidden_states=noisy, cond_hidden_states=condition, encoder_hidden_states=prompt,
        pooled_projections=pooled, timestep=sigma, guidance=torch.full_like(sigma, config.guidance),
        txt_ids=ids["text"], img_ids=ids["image"], return_dict=False,
    )[0]
    error = ((prediction.float() - (noise - x0).float()) ** 2).mean(dim=-1)
    left_loss, right_loss = error[:, left].mean(), error[:, ~left].mean()
    w_left, w_right = config.half_weights
    return (w_left * left_loss + w_right * right_loss) / (w_left + w_right), left_loss, right_loss


def add_lora(transformer, config: TrainConfig) -> None:
    """The LoRA on the target modules; the condition embedder is trained in full."""
    transformer.requires_grad_(False)
    names = {name for name, _ in transformer.named_modules()}
    patterns = [p.replace(".", r"\.").replace("*", r"\d+") for p in config.target_modules]
    try:
        transformer.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha or config.rank,
                                           init_lora_weights="gaussian", target_modules=f"^({'|'.join(patterns)})$"))
    except ValueError:
        raise UserInputError(
            f"target_modules {config.target_modules} match no layer of this transformer "
            f"(examples: {', '.join(sorted(names)[:3])})"
        ) from None
    transformer.c_embedder.requires_grad_(True)


def learning_rate_factor(config: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(1.0, step / config.steps)
    decay = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
    return warm * decay[config.schedule]


def train(config: TrainConfig, home: Path, on_metrics=None) -> Path:
    """Run the fine-tune; returns the folder of the final weights (the format the generator loads)."""
    config.validate()
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation,
                              mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed + accelerator.process_index)

    # Build: the base model as the generator loads it, then the LoRA.
    pipe = load_generator(ModelSpec(base=config.base), device=accelerator.device.type)
    pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    folder = cache_folder(config, home)
    examples = precompute(pipe, config, folder, accelerator)
    empty = torch.load(folder / f"empty.{accelerator.process_index}.pt")
    transformer = pipe.transformer
    add_lora(transformer, config)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()

    # Data: every example, shuffled per epoch by the sampler, batched.
    data = [example.__dict__ for example in examples]
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True, drop_last=False)
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(config, step))
    transformer, optimizer, loader, scheduler = accelerator.prepare(transformer, optimizer, loader, scheduler)

    vae_scale = pipe.vae_scale_factor
    left = canvas_halves(config.resolution, vae_scale).to(accelerator.device)
    latent = config.resolution // vae_scale
    ids = {"image": pipe._prepare_latent_image_ids(1, latent // 2, latent, accelerator.device, torch.float32),
           "text": torch.zeros(empty["prompt"].shape[0], 3, device=accelerator.device)}
    scheduler_config = pipe.scheduler.config
    mu = calculate_shift(len(left), scheduler_config.get("base_image_seq_len", 256), scheduler_config.get("max_image_seq_len", 4096),
                         scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15))

    # Loop.
    step, batches = 0, iter(loader)
    transformer.train()
    while step < config.steps:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        with accelerator.accumulate(transformer):
            loss, left_loss, right_loss = flow_matching_loss(transformer, batch, empty, config, ids, mu, left)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(transformer.parameters(), 1.0) if accelerator.sync_gradients else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if accelerator.sync_gradients:
            step += 1
            if on_metrics and accelerator.is_main_process:
                on_metrics({"step": step, "loss": loss.item(), "loss_reference": left_loss.item(),
                            "loss_target": right_loss.item(), "lr": scheduler.get_last_lr()[0],
                            "grad_norm": float(grad_norm) if grad_norm is not None else None})

    # Save: the LoRA and the condition embedder, the format the generator loads.
    accelerator.wait_for_everyone()
    out = Path(config.out) / "weights"
    if accelerator.is_main_process:
        save_dsd_weights(accelerator.unwrap_model(transformer), out)
    accelerator.wait_for_everyone()
    return out
