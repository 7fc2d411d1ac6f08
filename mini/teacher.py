"""The miniature's teacher: a tiny FLUX-architecture text-to-image model of the world.

The components are those of `pipeline.generation.tiny_flux` (FLUX's classes, narrow), with the world's vocabulary
for the word-level T5 tokenizer and prompts padded to `TEXT_TOKENS`. Training has two parts:

1. the VAE learns to reconstruct rendered panels, its loss weighted on the subject (8x compression,
   16 channels, as FLUX's), then its `shift_factor` / `scaling_factor` are set from the latents' statistics;
2. the transformer learns rectified flow on single panels (captions naming most attributes) and
   2x2 grids whose prompts are the data wheel's own (`mini.prompts.world_grid_prompt`) and name only
   some attributes. A share of training grids changes an unnamed attribute in one panel, so the
   teacher's grids are imperfect the way FLUX's are and curation has work to do.

FLUX's text encoders come pretrained and stay frozen. The miniature's have no pretraining to come
from, so the teacher's training is their pretraining: they learn with the transformer (CLIP's pooled
vector steers every block, T5's tokens are attended to), and are frozen from then on, in the wheel
and in the student's training, as FLUX's are. Every random draw is seeded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from mini import GUTTER, PANEL, TEACHER, world
from mini.prompts import world_grid_prompt
from pipeline.errors import UserInputError
from pipeline.flow import add_noise, schedule_shift
from pipeline.generation.tiny_flux import TinyConfig, build_tiny_components
from pipeline.generation.weights import SAMPLING_FILE
from pipeline.images import compose_grid
from pipeline.wheel.grids import Layout

TEXT_TOKENS = 104  # the longest grid prompt of the world is 103 tokens with </s>
TEACHER_CONFIG = TinyConfig(layers=4, single_layers=4, heads=4, head_dim=32, text_dim=64,
                            vae_channels=(16, 32, 32, 64), seed=0, words=tuple(world.VOCABULARY),
                            max_text_tokens=TEXT_TOKENS, rope=(4, 14, 14))
GUIDANCE = 3.5  # the guidance embedding's input in training; the wheel samples at this scale

Log = Callable[[str], None]


@dataclass
class TeacherSettings:
    """What `train_teacher` does; the defaults made the shipped teacher."""
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 2e-3
    steps: int = 4000
    batch: int = 16
    lr: float = 1e-3
    grid_share: float = 0.5  # share of steps that train on 2x2 grids (the rest on single panels)
    canvas_share: float = 0.0  # share of steps that train on 1x2 canvases of one subject, as the student draws them
    inconsistent: float = 0.2  # share of training grids where one panel changes an unnamed attribute
    grid_named: float = 0.5  # chance that a grid prompt names each attribute
    single_named: float = 0.8  # the same for a single panel's caption
    images: int = 4000  # rendered singles and grids, each; encoded once
    spread: float = world.PORTRAIT_SPREAD  # position/scale/rotation spread of training subjects (1: the world's)
    train_text: bool = True  # the text encoders learn with the transformer (their only pretraining)
    # A trained teacher folder whose text encoders this one starts from (the world's vocabulary in both). With
    # `train_text=False` they stay frozen, as FLUX's pretrained encoders do: a transformer trained from scratch
    # beside learning encoders can flatten the subject's words (issue 14: the 4x-VAE teacher's colour words
    # collapsed, body colour read 0.10; on the shipped teacher's frozen encoders, 0.90 by step 3,000).
    text_encoders: str = ""
    caption_dropout: float = 0.1  # share of items trained with the empty prompt, so true guidance has an unconditional
    # The velocity's error weighted this much more on the subject than on the background (1: unweighted), as the
    # VAE's is: identity lives in a few dozen tokens, and an unweighted loss binds the scene and light words
    # (which move every token) long before the subject's.
    subject_weight: float = 1.0
    # 1x2 canvases: the attributes their prompts never name (each other one is named with chance `canvas_named`),
    # so that only the canvas's other half shows them; and the share whose second half keeps the first's place,
    # size and rotation (only scene, light and warmth change), the easiest copies to learn from.
    canvas_unnamed: tuple[str, ...] = ()
    canvas_named: float = 0.5
    canvas_aligned: float = 0.0
    # The in-context lesson: the share of canvases with one half clearer than the other (clean outright half the
    # time, else at a uniform fraction of the other's level), and the loss on the noisier half only. The student
    # draws its output beside a reference it is given whole; a teacher that has only drawn both halves at one
    # level copies a given half near chance (issue 14: shape 0.31, body 0.54 with the left held clean, against
    # 0.38 and 0.75 after 500 steps of this). The clearer half carries no loss: its target velocity is mostly
    # noise it cannot see, and that loss would swamp the gradient that rewards copying.
    canvas_clearer: float = 0.0
    true_cfg: float = 4.0  # the true guidance the teacher samples with (its sampling.json), when trained with dropout
    seed: int = 0
    save_every: int = 0  # steps between saves of the whole folder (0: only at the end)


# Named teachers: (settings, component sizes). `shipped` made assets/mini/teacher. `copy` is issue 14's recipe for
# a teacher whose 1x2 canvases copy a given subject, the prior the student's fine-tune starts from; its own
# student is not yet made. A VAE that compresses 4x (a 64 px panel is 8 x 8 tokens, not 4 x 4), the shipped
# teacher's text encoders frozen (the subject's words are bound from step 0), half its steps on the student's
# canvas with one half clearer, the subject's tokens weighted 5x, grids that rarely name the subject. Measured at
# step 5,000 of 10,000 (48 canvases beside crisp held-out references): shape, body, pattern, accent and accessory
# copied 0.63, 0.90, 0.73, 0.73, 0.56, all five 0.21; the shipped teacher's 0.17, 0.29, 0.31, 0.42, 0.33 and 0.
RECIPES = {
    "shipped": (TeacherSettings(), TEACHER_CONFIG),
    "copy": (TeacherSettings(vae_steps=3000, steps=10000, images=6000, grid_share=0.3, canvas_share=0.5,
                             grid_named=0.15, subject_weight=5.0, train_text=False,
                             text_encoders=str(TEACHER),
                             canvas_unnamed=("shape", "accessory"), canvas_aligned=0.5, canvas_clearer=0.7, seed=10,
                             save_every=250),
             replace(TEACHER_CONFIG, vae_channels=(16, 32, 64), seed=2)),
}


def to_tensor(images) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).float() / 127.5 - 1


def panel_prompt(identity: world.Identity, context: world.Context, named=None) -> str:
    """A single panel's prompt: the subject as named, then scene and light ("a creature, in a city, ...")."""
    return f"{world.caption(identity, None, named)}, {world.short_context(context)}"


def other_value(rng: np.random.Generator, attribute: str, value: str) -> str:
    choices = [v for v in world.ATTRIBUTE_VALUES[attribute] if v != value]
    return str(choices[rng.integers(len(choices))])


def compose_mask(masks, columns: int, gutter: int) -> Image.Image:
    """The subject masks of a grid's panels, laid out as `compose_grid` lays out the panels (gutters: 0)."""
    return compose_grid(masks, columns=columns, gutter=gutter, color="black").convert("L")


def training_grid(rng: np.random.Generator, settings: TeacherSettings, with_mask: bool = False):
    """(the wheel's prompt text, the grid, every panel the same subject?) for one training grid, plus the
    subjects' mask when asked."""
    identity = world.sample_identity(rng)
    named = [attribute for attribute in world.ATTRIBUTES if rng.random() < settings.grid_named]
    contexts = world.grid_contexts(rng, 4, settings.spread)
    prompt = world_grid_prompt(world.caption(identity, None, named), Layout(2, 2), contexts)
    identities = [identity] * 4
    unnamed = [attribute for attribute in world.ATTRIBUTES if attribute not in named]
    consistent = not (unnamed and rng.random() < settings.inconsistent)
    if not consistent:
        attribute = unnamed[rng.integers(len(unnamed))]
        identities[rng.integers(4)] = replace(identity, **{attribute: other_value(rng, attribute, getattr(identity, attribute))})
    panels, masks = zip(*(world.render_with_mask(i, c, PANEL) for i, c in zip(identities, contexts)))
    grid = compose_grid(panels, columns=2, gutter=GUTTER)
    return (prompt.text, grid, consistent) + ((compose_mask(masks, 2, GUTTER),) if with_mask else ())


def training_canvas(rng: np.random.Generator, settings: TeacherSettings, with_mask: bool = False):
    """(a two-panel prompt, a 64x128 canvas): one subject in two contexts, side by side with no gutter, the
    canvas `[reference | output]` the student is fine-tuned to draw; plus the subjects' mask when asked."""
    identity = world.sample_identity(rng)
    named = [attribute for attribute in world.ATTRIBUTES
             if attribute not in settings.canvas_unnamed and rng.random() < settings.canvas_named]
    contexts = world.grid_contexts(rng, 2, settings.spread)
    if rng.random() < settings.canvas_aligned:
        contexts[1] = replace(contexts[0], scene=contexts[1].scene, light=contexts[1].light, warmth=contexts[1].warmth)
    prompt = world_grid_prompt(world.caption(identity, None, named), Layout(1, 2), contexts)
    panels, masks = zip(*(world.render_with_mask(identity, c, PANEL) for c in contexts))
    canvas = compose_grid(panels, columns=2, gutter=0)
    return (prompt.text, canvas) + ((compose_mask(masks, 2, 0),) if with_mask else ())


def training_single(rng: np.random.Generator, settings: TeacherSettings, with_mask: bool = False):
    """(caption, panel), plus the subject's mask when asked."""
    identity, context = world.sample_identity(rng), world.sample_context(rng, settings.spread)
    named = [attribute for attribute in world.ATTRIBUTES if rng.random() < settings.single_named]
    panel, mask = world.render_with_mask(identity, context, PANEL)
    return (panel_prompt(identity, context, named), panel) + ((mask,) if with_mask else ())


def train_vae(vae, settings: TeacherSettings, log: Log = print) -> dict:
    """Fit the VAE to rendered panels; returns its final losses.

    The error is weighted 5x on the subject (the renderer knows where it is): identity lives in small
    details (pattern, trim, accessory) that an unweighted loss gives up for the background. The
    encoder's log-variance starts at -10, so the posterior is near its mean from the first step."""
    rng = np.random.default_rng(settings.seed)
    count = max(settings.vae_batch * 50, settings.images // 2)
    samples = [training_single(rng, settings, with_mask=True) for _ in range(count)]
    singles = to_tensor([panel for _, panel, _ in samples])
    weights = 1 + 4 * torch.from_numpy(np.stack([np.asarray(mask) for _, _, mask in samples])).float()[:, None] / 255
    del samples
    torch.manual_seed(settings.seed)
    with torch.no_grad():
        vae.encoder.conv_out.bias[vae.config.latent_channels:] = -10.0
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    vae.train()
    started, recent = time.perf_counter(), []
    for step in range(settings.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.vae_lr * cosine(step, settings.vae_steps, warmup=50)
        index = torch.from_numpy(rng.integers(len(singles), size=settings.vae_batch))
        batch, weight = singles[index], weights[index]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        difference = reconstruction - batch
        error = ((difference.abs() + 0.5 * difference ** 2) * weight).mean() / weight.mean()
        loss = error + 1e-4 * (posterior.mean ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [error.item()])[-50:]
        if step % 100 == 0 or step == settings.vae_steps - 1:
            log(f"vae step {step + 1}/{settings.vae_steps}: reconstruction {np.mean(recent):.4f} "
                f"({time.perf_counter() - started:.0f} s)")
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(singles[i:i + 64]).latent_dist.mean for i in range(0, min(len(singles), 1024), 64)])
        mse = float(((vae.decode(latents[:64]).sample - singles[:64]) ** 2).mean())
    shift, scale = float(latents.mean()), float(1 / latents.std())
    vae.register_to_config(shift_factor=round(shift, 4), scaling_factor=round(scale, 4))
    log(f"vae: shift {shift:.4f}, scale {scale:.4f}, held-in reconstruction MSE {mse:.4f}")
    return {"vae_reconstruction_mse": round(mse, 5), "vae_shift": shift, "vae_scale": scale}


def cosine(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Packed, scaled latents (B, tokens, 64) of images in [-1, 1], as FLUX's pipeline makes them."""
    vae, out = pipe.vae, []
    for start in range(0, len(images), batch):
        latents = vae.encode(images[start:start + batch]).latent_dist.mean
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        b, c, h, w = latents.shape
        out.append(pipe._pack_latents(latents, b, c, h, w))
    return torch.cat(out)


def tokenize(pipe, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP and T5 token ids, padded as `FluxPipeline.encode_prompt` pads them."""
    clip = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer_max_length, truncation=True,
                          return_tensors="pt").input_ids
    t5 = pipe.tokenizer_2(texts, padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                          return_tensors="pt").input_ids
    return clip, t5


def embed(pipe, clip_ids: torch.Tensor, t5_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 token embeddings, CLIP pooled vector): what `encode_prompt` returns, with gradients when training."""
    return pipe.text_encoder_2(t5_ids)[0], pipe.text_encoder(clip_ids).pooler_output


def make_teacher_data(pipe, settings: TeacherSettings, log: Log = print) -> dict:
    """The rendered, encoded training set: singles, grids (and canvases when trained on), latents and
    prompt embeddings."""
    rng = np.random.default_rng(settings.seed + 1)
    data = {}
    makers = [("single", lambda: training_single(rng, settings, with_mask=True)),
              ("grid", lambda: (lambda t, g, _, m: (t, g, m))(*training_grid(rng, settings, with_mask=True)))]
    makers += [("canvas", lambda: training_canvas(rng, settings, with_mask=True))] if settings.canvas_share > 0 else []
    for kind, make in makers:
        started = time.perf_counter()
        items = [make() for _ in range(settings.images)]
        latents = encode_images(pipe, to_tensor([image for _, image, _ in items]))
        clip_ids, t5_ids = tokenize(pipe, [text for text, _, _ in items])
        data[kind] = {"latents": latents, "clip_ids": clip_ids, "t5_ids": t5_ids, "size": items[0][1].size,
                      "weights": token_weights([mask for _, _, mask in items], 2 * pipe.vae_scale_factor,
                                               settings.subject_weight)}
        log(f"{kind}: {len(items)} rendered and encoded in {time.perf_counter() - started:.0f} s")
    return data


def token_weights(masks: list[Image.Image], patch: int, subject_weight: float) -> torch.Tensor:
    """(B, tokens, 1) loss weights of packed latent tokens: 1 on background, `subject_weight` where the subject
    covers a token's `patch` x `patch` pixels, in between for partly covered tokens (pack order: row-major)."""
    coverage = torch.from_numpy(np.stack([np.asarray(mask) for mask in masks])).float()[:, None] / 255
    coverage = torch.nn.functional.avg_pool2d(coverage, patch).flatten(1)[..., None]
    return 1 + (subject_weight - 1) * coverage


def rectified_flow_loss(transformer, latents, prompts, pooled, image_ids, text_ids, mu: float,
                        generator: torch.Generator, weights: torch.Tensor | None = None, clearer: float = 0.0,
                        columns: int = 0) -> torch.Tensor:
    """FLUX's training loss on single pictures (`pipeline.flow`): the velocity's mean squared error, each
    token's weighted by `weights` (B, tokens, 1) when given, normalised so the weights' mean is 1. With
    `clearer`, that share of the items (1x2 canvases `columns` tokens wide) has one half clearer, without loss
    (`clearer_half`)."""
    noisy, sigma, velocity = add_noise(latents, mu, generator)
    if clearer > 0:
        noisy, kept = clearer_half(latents, velocity + latents, sigma, columns, clearer, generator)
        weights = (torch.ones_like(kept, dtype=latents.dtype) if weights is None else weights) * kept
    prediction = transformer(hidden_states=noisy, encoder_hidden_states=prompts, pooled_projections=pooled,
                             timestep=sigma, guidance=torch.full_like(sigma, GUIDANCE), txt_ids=text_ids,
                             img_ids=image_ids, return_dict=False)[0]
    error = (prediction - velocity) ** 2
    return error.mean() if weights is None else (error * weights).mean() / weights.mean()


def clearer_half(latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, columns: int, share: float,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy latents, which tokens keep their loss (B, tokens, 1)) of 1x2 canvases `columns` tokens wide, where a
    `share` of the items has one random half clearer: clean with chance 1/2, else at a uniform fraction of
    `sigma`, the level the transformer is told. That half loses its loss, so what is learnt is to draw the other
    half beside it: the student's `[reference | output]`."""
    count = latents.shape[0]
    mixed = torch.rand(count, generator=generator) < share
    left_clearer = torch.rand(count, generator=generator) < 0.5
    fraction = torch.rand(count, generator=generator) * (torch.rand(count, generator=generator) >= 0.5)
    left = (torch.arange(latents.shape[1]) % columns) < columns // 2
    clear = torch.where(left_clearer[:, None], left[None], ~left[None]) & mixed[:, None]
    level = torch.where(clear, (sigma * fraction)[:, None], sigma[:, None])[..., None]
    return (1 - level) * latents + level * noise, ~clear[..., None]


def kind_geometry(pipe, width: int, height: int) -> tuple[torch.Tensor, float]:
    """(the packed latents' position ids, FLUX's schedule shift) of a picture of this size."""
    rows, columns = height // pipe.vae_scale_factor // 2, width // pipe.vae_scale_factor // 2
    ids = pipe._prepare_latent_image_ids(1, rows, columns, "cpu", torch.float32)
    return ids, schedule_shift(pipe.scheduler.config, rows * columns)


def pick_kind(draw: float, settings: TeacherSettings) -> str:
    """Which kind of picture a step trains on, from one uniform draw: grids, then canvases, else singles."""
    if draw < settings.grid_share:
        return "grid"
    return "canvas" if draw < settings.grid_share + settings.canvas_share else "single"


def train_transformer(pipe, data: dict, settings: TeacherSettings, log: Log = print,
                      save: Callable[[int, dict], None] | None = None, resume: dict | None = None) -> dict:
    """Rectified flow on the data's kinds of picture. `save(step, state)` is called every `save_every` steps
    with what `resume` takes to go on exactly where the saved weights stopped (optimizer, random draws, losses)."""
    transformer = pipe.transformer
    geometry = {kind: kind_geometry(pipe, *part["size"]) for kind, part in data.items()}
    columns = {kind: int(ids[:, 2].max()) + 1 for kind, (ids, _) in geometry.items()}  # packed tokens a row
    text_ids = torch.zeros(TEXT_TOKENS, 3)
    empty = tokenize(pipe, [""])
    generator = torch.Generator().manual_seed(settings.seed)
    learners = [transformer] + ([pipe.text_encoder, pipe.text_encoder_2] if settings.train_text else [])
    parameters = [p for module in learners for p in module.parameters()]
    for module in learners:
        module.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.01)
    started, recent, first = time.perf_counter(), {kind: [] for kind in data}, 0
    if resume:
        for module, weights in zip(learners, resume["weights"]):
            module.load_state_dict(weights)
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch"])  # the text encoders' dropout draws from it
        recent, first = resume["recent"], resume["step"]
        log(f"teacher: resuming at step {first}")
    for step in range(first, settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * cosine(step, settings.steps)
        kind = pick_kind(torch.rand(1, generator=generator).item(), settings)
        part = data[kind]
        index = torch.randint(len(part["latents"]), (settings.batch,), generator=generator)
        image_ids, mu = geometry[kind]
        clip_ids, t5_ids = part["clip_ids"][index], part["t5_ids"][index]
        dropped = torch.rand(settings.batch, generator=generator) < settings.caption_dropout
        clip_ids, t5_ids = (torch.where(dropped[:, None], e, ids) for e, ids in zip(empty, (clip_ids, t5_ids)))
        with torch.set_grad_enabled(settings.train_text):
            prompts, pooled = embed(pipe, clip_ids, t5_ids)
        weights = part["weights"][index] if settings.subject_weight != 1 else None
        clearer = settings.canvas_clearer if kind == "canvas" else 0.0
        loss = rectified_flow_loss(transformer, part["latents"][index], prompts, pooled, image_ids, text_ids, mu,
                                   generator, weights, clearer, columns[kind])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        recent[kind] = (recent[kind] + [loss.item()])[-100:]
        if save and settings.save_every and (step + 1) % settings.save_every == 0 and step + 1 < settings.steps:
            save(step + 1, {"step": step + 1, "weights": [module.state_dict() for module in learners],
                            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                            "torch": torch.get_rng_state(), "recent": recent})
        if step % 100 == 0 or step == settings.steps - 1:
            losses = " ".join(f"{kind} {np.mean(values or [0]):.4f}" for kind, values in recent.items())
            log(f"teacher step {step + 1}/{settings.steps}: loss {losses} ({time.perf_counter() - started:.0f} s)")
    for module in learners:
        module.requires_grad_(False).eval()
    return {f"teacher_loss_{kind}": round(float(np.mean(losses or [0])), 4) for kind, losses in recent.items()}


def pretrained_text_encoders(folder: Path, tokenizer) -> dict:
    """The CLIP and T5 encoders of a trained teacher folder, checked to read the same words as `tokenizer`."""
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    if not (folder / "text_encoder" / "config.json").is_file() or not (folder / "text_encoder_2" / "config.json").is_file():
        raise UserInputError(f"no text encoders in {folder}: give a trained teacher folder (`dsd mini train-teacher`)")
    if AutoTokenizer.from_pretrained(str(folder / "tokenizer_2")).get_vocab() != tokenizer.get_vocab():
        raise UserInputError(f"{folder}'s text encoders read another vocabulary than this teacher's; train one for it")
    return {"text_encoder": CLIPTextModel.from_pretrained(str(folder / "text_encoder")),
            "text_encoder_2": T5EncoderModel.from_pretrained(str(folder / "text_encoder_2"))}


RESUME_FILE = "resume.pt"  # in a teacher folder whose training stopped between saves; gone once it finishes


def train_teacher(folder: str | Path, settings: TeacherSettings = TeacherSettings(), log: Log = print,
                  config: TinyConfig = TEACHER_CONFIG) -> dict:
    """Build the tiny FLUX components, train VAE then transformer, save a FLUX-layout folder.

    With `save_every`, the folder is saved every so many steps with a resume file (weights, optimizer and
    random state in one file, written whole or not at all); run again with the same settings, training goes
    on from the last save exactly as if it had not stopped (the training data is rendered again from its seed)."""
    from pipeline.generation.pipeline import DSDPipeline

    folder = Path(folder)
    resume = None
    if (folder / RESUME_FILE).is_file():
        resume = torch.load(folder / RESUME_FILE, weights_only=False)
        if TeacherSettings(**resume["settings"]) != settings:  # a setting added since takes its default
            raise UserInputError(f"{folder} holds a stopped training with other settings; resume it with the same "
                             f"settings or delete {RESUME_FILE} to train on top of it")
    torch.manual_seed(settings.seed)
    components = build_tiny_components(config)
    if settings.text_encoders:
        components |= pretrained_text_encoders(Path(settings.text_encoders), components["tokenizer_2"])
    pipe = DSDPipeline(**components)
    started = time.perf_counter()
    diffusers.utils.logging.set_verbosity_error()  # CLIP truncates grid prompts at 77 tokens, by design: T5 reads them
    trained_vae = folder / "vae" / "vae.json"
    if trained_vae.is_file():  # a rerun after the VAE stage (or a transformer-only retrain) keeps the VAE
        pipe.vae = AutoencoderKL.from_pretrained(str(folder / "vae")).eval()
        report = json.loads(trained_vae.read_text())
        log(f"vae: kept the trained VAE in {folder / 'vae'}")
    else:
        report = train_vae(pipe.vae, settings, log)
        pipe.vae.save_pretrained(folder / "vae")
        trained_vae.write_text(json.dumps(report))
    if (folder / "transformer" / "config.json").is_file():  # a further round on top (or a stopped one: see resume)
        pipe = DSDPipeline.from_pretrained(str(folder))
        log(f"teacher: continuing from the transformer and text encoders in {folder}")
    for module in (pipe.vae, pipe.transformer, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)

    def save(step: int, state: dict | None = None) -> None:
        pipe.save_pretrained(folder)
        (folder / "tiny_config.json").write_text(json.dumps(asdict(config), indent=1))
        guidance = {"true_cfg": settings.true_cfg} if settings.caption_dropout > 0 else {}
        (folder / SAMPLING_FILE).write_text(json.dumps({"width": PANEL, "height": PANEL, "steps": 20} | guidance))
        if state:
            torch.save(state | {"settings": asdict(settings)}, folder / f"{RESUME_FILE}.part")
            (folder / f"{RESUME_FILE}.part").replace(folder / RESUME_FILE)
        log(f"teacher: saved at step {step}")

    report |= train_transformer(pipe, make_teacher_data(pipe, settings, log), settings, log, save, resume)
    save(settings.steps)
    (folder / RESUME_FILE).unlink(missing_ok=True)
    report |= {"seconds": round(time.perf_counter() - started), "settings": asdict(settings)}
    (folder / "training.json").write_text(json.dumps(report, indent=1))
    return report
