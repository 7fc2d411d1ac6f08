"""The DSD fine-tune (paper sections 3.2 and 4), read top to bottom: build, load data, loop, save.

The canvas is exactly what the generator infers on: target `[reference | target]`, condition
`[reference | black]` through the condition embedder (trained in full), FLUX's flow-matching loss
over both halves with per-half weights. Dropping the condition (all zeros) and the caption (empty)
now and then is what makes image and text guidance work at inference. The LoRA goes on the
released target modules. Runs as one process or under `accelerate launch` (DDP or FSDP).

Resuming is exact: the data order and the noise of every step are functions of (seed, step,
rank), the learning rate a function of the step, and the rest (optimizer, trainable weights)
comes back from the newest whole checkpoint. So the step count and the schedule are right after
any number of stops, kills and resumes.
"""

import gc
import hashlib
import io
import math
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from peft import LoraConfig

from pipeline.errors import UserInputError
from pipeline.flow import add_noise, schedule_shift
from pipeline.generation.weights import ModelSpec, load_generator, save_dsd_weights
from pipeline.store import Store
from pipeline.wheel.dataset import read_pairs
from train import checkpoints
from train.config import TrainConfig, config_values
from train.sampling import draw_samples, sample_specs
from train.tracking import RunControl, SQLiteTracker


@dataclass
class Example:
    """One training pair, precomputed: packed latents and text embeddings."""

    target: torch.Tensor  # [reference | target] canvas, (L, C)
    condition: torch.Tensor  # [reference | black] canvas, (L, C)
    prompt: torch.Tensor  # T5 embeddings of the caption
    pooled: torch.Tensor  # CLIP pooled embedding of the caption


@dataclass
class TrainResult:
    weights: Path  # the final weights, in the format the generator loads
    step: int
    stopped: bool  # stopped on request before the last step


def cache_folder(config: TrainConfig, home: Path) -> Path:
    """Latents and embeddings depend on the data, the base model and the resolution, nothing else."""
    key = f"{Path(config.data).resolve()}:{Path(config.data).stat().st_mtime_ns}:{config.base}:{config.resolution}"
    return home / "cache" / hashlib.sha256(key.encode()).hexdigest()[:16]


def training_rows(config: TrainConfig) -> list[tuple[PIL.Image.Image, PIL.Image.Image, str]]:
    """(reference, target, caption) of every pair in the data file."""
    rows = []
    for row in read_pairs(config.data).to_pylist():
        reference, target = (PIL.Image.open(io.BytesIO(row[k]["bytes"] if isinstance(row[k], dict) else row[k])).convert("RGB")
                             for k in ("conditioning", "image"))
        rows.append((reference, target, row["caption"]))
    return rows


@torch.no_grad()
def encode_example(pipe, row, index: int, size: int) -> Example:
    reference, target, caption = row
    generator = torch.Generator().manual_seed(index)  # the VAE posterior sample of an item is fixed
    prompt, pooled, _ = pipe.encode_prompt(prompt=[caption], prompt_2=None, device=pipe.device)
    return Example(pipe.encode_canvas([reference], [target], size, size, generator=generator)[0],
                   pipe.encode_canvas([reference], None, size, size, generator=generator)[0], prompt[0], pooled[0])


@torch.no_grad()
def precompute(pipe, rows, config: TrainConfig, folder: Path, accelerator: Accelerator) -> list[Example]:
    """Every item's latents and embeddings on disk; each rank computes its own share, then all read all."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(accelerator.process_index, len(rows), accelerator.num_processes):
        path = folder / f"{index}.pt"
        if not path.exists():
            torch.save(encode_example(pipe, rows[index], index, config.resolution).__dict__, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)  # whole or absent
    accelerator.wait_for_everyone()
    return [Example(**torch.load(folder / f"{i}.pt")) for i in range(len(rows))]


def canvas_halves(resolution: int, vae_scale: int) -> torch.Tensor:
    """True for the tokens of the left (reference) half of the packed canvas (row-major patches)."""
    rows, cols = resolution // (vae_scale * 2), 2 * resolution // (vae_scale * 2)
    return (torch.arange(cols) < cols // 2).repeat(rows)


def quadrant_masks(resolution: int, vae_scale: int) -> torch.Tensor:
    """(4, tokens): True on the tokens of each quadrant of the left (reference) panel."""
    rows, cols = resolution // (vae_scale * 2), 2 * resolution // (vae_scale * 2)
    r, c = torch.arange(rows)[:, None], torch.arange(cols)[None, :]
    half_r, half_c = rows // 2, cols // 4
    return torch.stack([((r < half_r) == top) & (c < 2 * half_c) & ((c < half_c) == left)
                        for top in (True, False) for left in (True, False)]).reshape(4, -1)


@dataclass
class Canvas:
    """The training canvas' geometry: the left-half tokens, the reference's quadrants, position ids and
    the schedule shift for its token count."""

    left: torch.Tensor
    quadrants: torch.Tensor | None
    ids: dict
    mu: float


def flow_matching_loss(transformer, batch: dict, empty: dict, config: TrainConfig, canvas: Canvas,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FLUX's rectified-flow loss on the canvas; returns (weighted loss, loss of left, loss of right).
    Every random draw comes from `generator` (on the CPU), so a step can be repeated exactly."""
    x0, condition = batch["target"], batch["condition"]
    size, device = x0.shape[0], x0.device
    draw = lambda *shape: torch.rand(*shape, generator=generator).to(device)  # noqa: E731
    drop_condition = draw(size) < config.condition_dropout
    condition = torch.where(drop_condition[:, None, None], torch.zeros_like(condition), condition)
    if canvas.quadrants is not None and config.condition_mask > 0:
        masked = draw(size) < config.condition_mask
        which = canvas.quadrants.to(device)[torch.randint(0, 4, (size,), generator=generator).to(device)]
        condition = torch.where((masked[:, None] & which)[:, :, None], torch.zeros_like(condition), condition)
    drop_caption = (draw(size) < config.caption_dropout)[:, None]
    prompt = torch.where(drop_caption[:, :, None], empty["prompt"].to(device), batch["prompt"])
    pooled = torch.where(drop_caption, empty["pooled"].to(device), batch["pooled"])
    # Noise levels shifted for the canvas' token count, as the sampler's schedule is.
    noisy, sigma, velocity = add_noise(x0, canvas.mu, generator)
    prediction = transformer(
        hidden_states=noisy, cond_hidden_states=condition, encoder_hidden_states=prompt,
        pooled_projections=pooled, timestep=sigma, guidance=torch.full_like(sigma, config.guidance),
        txt_ids=canvas.ids["text"], img_ids=canvas.ids["image"], return_dict=False,
    )[0]
    error = ((prediction.float() - velocity.float()) ** 2).mean(dim=-1)
    left_loss, right_loss = error[:, canvas.left].mean(), error[:, ~canvas.left].mean()
    w_left, w_right = config.half_weights
    return (w_left * left_loss + w_right * right_loss) / (w_left + w_right), left_loss, right_loss


def lora_config(config: TrainConfig) -> LoraConfig:
    patterns = [p.replace(".", r"\.").replace("*", r"\d+") for p in config.target_modules]
    return LoraConfig(r=config.rank, lora_alpha=config.alpha or config.rank, init_lora_weights="gaussian",
                      target_modules=f"^({'|'.join(patterns)})$")


def check_target_modules(patterns: list[str], module_names: set[str]) -> None:
    """Every pattern must match a layer: a typo would otherwise silently train less than asked."""
    unmatched = [p for p in patterns if not any(_matches(p, name) for name in module_names)]
    if unmatched:
        examples = ", ".join(sorted(n for n in module_names if n.count(".") >= 3)[:3])
        raise UserInputError(f"target_modules {', '.join(unmatched)} match no layer of this transformer "
                             f"(layer names look like {examples}; '*' stands for a block number)")


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(pattern.replace(".", r"\.").replace("*", r"\d+"), name) is not None


def add_lora(transformer, config: TrainConfig) -> None:
    """The LoRA on the target modules; the condition embedder is trained in full, trainables in fp32."""
    check_target_modules(config.target_modules, {name for name, _ in transformer.named_modules()})
    transformer.requires_grad_(False)
    transformer.add_adapter(lora_config(config))
    transformer.c_embedder.requires_grad_(True)
    for parameter in transformer.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()


def learning_rate_factor(config: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(1.0, step / config.steps)
    decay = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
    return warm * decay[config.schedule]


class DataOrder:
    """Which examples a rank trains on at a micro-step: each epoch a permutation seeded by (seed, epoch),
    the global batch split across ranks. A function of the step, so resuming continues the same order."""

    def __init__(self, count: int, config: TrainConfig, world: int, rank: int):
        self.count, self.seed, self.batch, self.world, self.rank = count, config.seed, config.batch_size, world, rank
        self.permutations: dict[int, list[int]] = {}

    def __call__(self, micro_step: int) -> list[int]:
        start = micro_step * self.batch * self.world + self.rank * self.batch
        return [self.at(position) for position in range(start, start + self.batch)]

    def at(self, position: int) -> int:
        epoch, offset = divmod(position, self.count)
        if epoch not in self.permutations:
            self.permutations = {epoch: torch.randperm(self.count, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch)).tolist()}
        return self.permutations[epoch][offset]


def weights_digest(transformer) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoints.trainable_state(transformer).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_pipeline(config: TrainConfig, accelerator: Accelerator):
    """The base model as the generator loads it, then the LoRA (initialised the same on every rank)."""
    dtype = {"bf16": "bf16", "fp16": "fp16"}.get(config.mixed_precision, "fp32")
    pipe = load_generator(ModelSpec(base=config.base, dtype=dtype), device=accelerator.device.type)
    pipe.to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(config.seed)
    add_lora(pipe.transformer, config)
    if config.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    return pipe


@dataclass
class TrainingData:
    """What the loop draws from: the examples (by index), the empty caption's embeddings, the data
    order, the canvas' geometry, and the specs of the samples drawn along the way."""

    example: Callable[[int], Example]
    empty: dict
    order: DataOrder
    canvas: Canvas
    specs: list

    def batch(self, micro_step: int, device) -> dict:
        """This rank's micro-batch at `micro_step`, stacked on `device`."""
        indices = self.order(micro_step)
        return {key: torch.stack([getattr(self.example(i), key) for i in indices]).to(device)
                for key in ("target", "condition", "prompt", "pooled")}


def prepare_data(pipe, config: TrainConfig, home: Path, accelerator: Accelerator) -> TrainingData:
    """The training data. With the cache, latents and embeddings are computed once and the text encoders
    let go; without it, encoded at every step."""
    rows = training_rows(config)
    if not rows:
        raise UserInputError(f"{config.data} has no pairs: export some with `dsd wheel export`")
    specs = sample_specs(config, [(reference, caption) for reference, _, caption in rows])
    with torch.no_grad():
        empty_prompt, empty_pooled, _ = pipe.encode_prompt(prompt=[""], prompt_2=None, device=accelerator.device)
        for spec in specs:
            spec.prompt_embeds, spec.pooled, _ = pipe.encode_prompt(prompt=[spec.prompt], prompt_2=None,
                                                                    device=accelerator.device)
    empty = {"prompt": empty_prompt[0], "pooled": empty_pooled[0]}
    if config.cache:
        example = precompute(pipe, rows, config, cache_folder(config, home), accelerator).__getitem__
        pipe.register_modules(text_encoder=None, text_encoder_2=None)
        gc.collect()
    else:
        example = lambda i: encode_example(pipe, rows[i], i, config.resolution)  # noqa: E731
    order = DataOrder(len(rows), config, accelerator.num_processes, accelerator.process_index)
    return TrainingData(example, empty, order, canvas_geometry(pipe, config, empty, accelerator.device), specs)


def canvas_geometry(pipe, config: TrainConfig, empty: dict, device) -> Canvas:
    vae_scale = pipe.vae_scale_factor
    left = canvas_halves(config.resolution, vae_scale).to(device)
    latent = config.resolution // vae_scale
    ids = {"image": pipe._prepare_latent_image_ids(1, latent // 2, latent, device, torch.float32),
           "text": torch.zeros(empty["prompt"].shape[0], 3, device=device)}
    return Canvas(left, quadrant_masks(config.resolution, vae_scale), ids, schedule_shift(pipe.scheduler.config, len(left)))


def write_weights(accelerator: Accelerator, model, folder: Path, store: Store | None, run_id: int | None) -> Path:
    """The final weights in the generator's format, and each rank's digest of them: DDP ranks must agree.
    Under FSDP each rank holds a different shard by design, so the full state is gathered instead."""
    sharded = accelerator.distributed_type == DistributedType.FSDP
    digests = [] if sharded else gather_object([weights_digest(accelerator.unwrap_model(model))])
    full_state = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        save_dsd_weights(accelerator.unwrap_model(model), folder, state_dict=full_state)
        if store is not None:
            store.update("runs", run_id, {"weights": str(folder), "rank_digests": digests})
        if len(set(digests)) > 1:
            accelerator.print(f"warning: the ranks' weights differ ({', '.join(digests)}): they did not stay in sync")
    return folder


class Run:
    """A run's surroundings, shared by the parts of `train`: its config and folder, accelerate, and the
    store it reports to and takes requests from (none for a bare `train()` call)."""

    def __init__(self, config: TrainConfig, home: Path, store: Store | None, run_id: int | None):
        self.config, self.home, self.store, self.run_id = config, Path(home), store, run_id
        self.out = Path(config.out) if config.out else self.home / "runs" / str(run_id or "default")
        self.tracker = SQLiteTracker(store, run_id) if store is not None else None
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision,
                                       log_with=[self.tracker] if self.tracker else None,
                                       cpu=not torch.cuda.is_available())
        self.sharded = self.accelerator.distributed_type == DistributedType.FSDP
        if not self.sharded:  # under FSDP accelerate saves the sharded state itself
            checkpoints.keep_only_trainable(self.accelerator)
        self.control = RunControl(self.accelerator, store, run_id)
        self.say = self.accelerator.print

    def save_checkpoint(self, step: int) -> None:
        checkpoints.save_checkpoint(self.accelerator, self.out, step, self.config.keep_checkpoints,
                                    before_commit=self.tracker.flush if self.tracker else lambda: None)

    def sample(self, pipe, specs: list, step: int) -> None:
        if self.sharded:  # rank 0 alone holds only a shard of the transformer
            self.say("samples are not drawn under FSDP: generate from the run's weights instead")
            return
        if self.accelerator.is_main_process:
            drawn = draw_samples(pipe, specs, self.config, self.out / "samples", step)
            if self.store is not None:
                self.store.add("run_samples", [{"run_id": self.run_id, **row} for row in drawn])
        self.accelerator.wait_for_everyone()


def train(config: TrainConfig, home: Path, store: Store | None = None, run_id: int | None = None,
          on_metrics=None) -> TrainResult:
    """Run (or resume) the fine-tune in the run folder; metrics, flags and samples go through the
    store when a run id is given. Returns where the final weights are. The config was validated where
    it came in (the YAML file, the preset and flags, the form)."""
    run = Run(config, home, store, run_id)
    pipe, model, optimizer, data = build(run)
    step = resume(run)
    step, stopped = loop(run, pipe, model, optimizer, data, step, on_metrics)
    return save(run, pipe, model, data, step, stopped)


def build(run: Run):
    """The pipeline with its LoRA, the data, and the optimizer, prepared for this process."""
    pipe = build_pipeline(run.config, run.accelerator)
    data = prepare_data(pipe, run.config, run.home, run.accelerator)
    trainable = [p for p in pipe.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=run.config.learning_rate)
    model, optimizer = run.accelerator.prepare(pipe.transformer, optimizer)
    return pipe, model, optimizer, data


def resume(run: Run) -> int:
    """The step to continue from: the newest whole checkpoint's (optimizer and trainable weights loaded
    back), or 0. Metric rows past it are dropped (they will be logged again), then reporting starts."""
    accelerator, store, run_id = run.accelerator, run.store, run.run_id
    step = 0
    found = checkpoints.latest_checkpoint(run.out)
    if found:
        step, path = found
        accelerator.load_state(str(path))
        run.say(f"resumed from step {step} ({path.name})")
    if store is not None and accelerator.is_main_process:
        store.drop_metrics_after(run_id, step)
        store.update("runs", run_id, {"resumed_from": step if found else None})
        accelerator.init_trackers("dsd", config=config_values(run.config))
    return step


def loop(run: Run, pipe, model, optimizer, data: TrainingData, step: int, on_metrics=None) -> tuple[int, bool]:
    """Optimizer steps until the last, with checkpoints and samples as configured or asked for; returns
    (the step reached, whether a stop request ended it early)."""
    config, accelerator = run.config, run.accelerator
    model.train()
    started, started_step = time.perf_counter(), step
    while step < config.steps:
        metrics = train_step(run, model, optimizer, data, step)
        step += 1
        elapsed = time.perf_counter() - started
        metrics |= {"steps_per_s": (step - started_step) / elapsed,
                    "samples_per_s": (step - started_step) * config.batch_size * config.gradient_accumulation
                    * accelerator.num_processes / elapsed}
        accelerator.log(metrics, step=step)
        run.control.progress(step, config.steps)
        if on_metrics and accelerator.is_main_process:
            on_metrics({"step": step, **metrics})

        asked = run.control.poll()
        if step % config.checkpoint_every == 0 or asked.save or asked.stop:
            run.save_checkpoint(step)
            run.control.done("save")
        if (config.sample_every and step % config.sample_every == 0) or asked.sample:
            run.sample(pipe, data.specs, step)
            run.control.done("sample")
        if asked.stop and step < config.steps:
            run.say(f"stopped at step {step}, as asked; resume continues from here")
            return step, True
    return step, False


def train_step(run: Run, model, optimizer, data: TrainingData, step: int) -> dict:
    """One optimizer step, its gradient accumulated over micro-batches; returns its metrics. The noise
    of every micro-step is seeded by (seed, rank, micro-step): a resumed run repeats it exactly."""
    config, accelerator = run.config, run.accelerator
    lr = config.learning_rate * learning_rate_factor(config, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    for micro in range(config.gradient_accumulation):
        micro_step = step * config.gradient_accumulation + micro
        batch = data.batch(micro_step, accelerator.device)
        generator = torch.Generator().manual_seed((config.seed * 1_000_003 + accelerator.process_index) * 1_000_003 + micro_step)
        last = micro == config.gradient_accumulation - 1
        with nullcontext() if last else accelerator.no_sync(model):
            loss, left_loss, right_loss = flow_matching_loss(model, batch, data.empty, config, data.canvas, generator)
            accelerator.backward(loss / config.gradient_accumulation)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.item(), "loss_reference": left_loss.item(), "loss_target": right_loss.item(), "lr": lr,
            "grad_norm": float(grad_norm)}


def save(run: Run, pipe, model, data: TrainingData, step: int, stopped: bool) -> TrainResult:
    """A last checkpoint and samples (a stop saved its own checkpoint), and the weights in the generator's format."""
    if not stopped:
        run.save_checkpoint(step)
        if not run.config.sample_every or step % run.config.sample_every:
            run.sample(pipe, data.specs, step)
    weights = write_weights(run.accelerator, model, run.out / "weights", run.store, run.run_id)
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()  # also ends the process group
    return TrainResult(weights, step, stopped)
