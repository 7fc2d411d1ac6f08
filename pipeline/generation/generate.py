"""`generate`: the one function behind the Generate tab, the `dsd generate` command and the tests.

It validates the request, loads (and caches) the model, runs the generator, writes PNGs that carry
their parameters, and records the generation in the store.
"""

import hashlib
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import PIL.Image
import torch

from pipeline.errors import UserInputError
from pipeline.generation.caching import StepCache
from pipeline.generation.memory import load_in_mode
from pipeline.generation.modes import get_mode
from pipeline.generation.schedule import GuidanceSteps
from pipeline.generation.weights import ModelSpec, sampling_defaults
from pipeline.images import check_panel_size, load_image, png_with_metadata
from pipeline.store import DEFAULT_HOME, Store, data_home

log = logging.getLogger(__name__)
MAX_IMAGES = 16
MAX_STEPS = 200
# Guidance scales a request may ask for, each (low, high), inclusive. FLUX.1-dev's distilled guidance is an
# embedding of a scale it was distilled on at about 1-10 (3.5 is its default); nan or inf drew an all-black
# picture and 1e300 overflowed. True guidance (image, text): 1 is off, 0 drops that condition, and
# classifier-free guidance far past ~20 only saturates. 0-30 keeps every scale that draws something, with
# room above the trained range to experiment, and refuses typos, negatives and nan.
GUIDANCE_RANGES = {"guidance": (0.0, 30.0), "image guidance": (0.0, 30.0), "text guidance": (0.0, 30.0)}
LICENCE_NOTE = (
    "FLUX.1-dev and the DSD weights are under the FLUX.1 [dev] Non-Commercial License: "
    "outputs are for non-commercial use unless you hold a commercial licence."
)


@dataclass
class Settings:
    """Where state lives and which model runs; flags override the environment, which overrides defaults."""

    home: Path = Path(DEFAULT_HOME)
    model: ModelSpec = ModelSpec()
    memory: str = "auto"
    enhancer: str | None = None  # provider spec, e.g. "openai:gpt-4o-mini"; None: enhancement off
    mode_loras: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        env = os.environ.get
        settings = cls(
            home=data_home(),
            model=ModelSpec(base=env("DSD_BASE"), dsd=env("DSD_WEIGHTS"), lora=env("DSD_LORA"), dtype=env("DSD_DTYPE") or "auto"),
            memory=env("DSD_MEMORY") or "auto",
            enhancer=env("DSD_ENHANCER"),
            mode_loras={mode: env(f"DSD_LORA_{mode.upper()}") for mode in ("identity", "relight", "instruct") if env(f"DSD_LORA_{mode.upper()}")},
        )
        return replace(settings, **{key: value for key, value in overrides.items() if value is not None})


@dataclass
class GenerateRequest:
    image: str | Path | bytes | PIL.Image.Image
    prompt: str
    mode: str = "identity"
    width: int | None = None  # None: the model's own (`weights.sampling_defaults`: 512 for FLUX, 64 for the miniature)
    height: int | None = None
    steps: int | None = None
    seed: int | None = None  # None: a random seed, recorded
    num_images: int = 1
    guidance: float = 3.5
    image_guidance: float | None = None  # None: the mode's default
    text_guidance: float | None = None
    fit: str = "crop"
    keep_reconstruction: bool = False
    enhance: bool = False
    guidance_steps: str | None = None  # the steps that run true guidance (`schedule`): None is every step
    cache: str | None = None  # a step cache such as "fbc:0.08" (`caching`): None is none


@dataclass
class GenerateResult:
    id: int
    images: list[PIL.Image.Image]
    paths: list[Path]
    seeds: list[int]
    prompt_used: str
    reconstructions: list[PIL.Image.Image]
    timings: dict[str, float]
    notices: list[str]


class ModelCache:
    """Keeps the last loaded generator; loading FLUX takes minutes, so it is reused across requests."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key, self._pipe = None, None
        self.memory_note = None  # what `auto` chose, said with every generation of this model

    def get(self, spec: ModelSpec, memory: str):
        with self._lock:
            if self._key != (spec, memory):
                # Forget the old model before loading the next: frees its memory, and a failed load
                # must not leave the old key pointing at no model.
                self._key, self._pipe, self.memory_note = None, None, None
                pipe, used, note = load_in_mode(spec, memory)
                log.info("loaded %s in memory mode %s: %s", spec.describe(), used, pipe.load_report.summary())
                self._key, self._pipe, self.memory_note = (spec, memory), pipe, note
            return self._pipe

    def stop(self) -> bool:
        """Ask the running generation to stop after its current step. False when no model is loaded."""
        pipe = self._pipe
        if pipe is not None:
            pipe.interrupt_run()
        return pipe is not None


MODELS = ModelCache()


def with_model_defaults(request: GenerateRequest, spec: ModelSpec) -> GenerateRequest:
    """The request with the size and steps it leaves open filled in from the model's defaults."""
    defaults = sampling_defaults(spec)
    return replace(request, **{key: defaults[key] for key in ("width", "height", "steps") if getattr(request, key) is None})


def _whole(value) -> bool:
    """An int, not a float that would be truncated (1.5 steps) nor a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_request(request: GenerateRequest) -> None:
    get_mode(request.mode)
    check_panel_size(request.width, request.height)
    if not request.prompt or not request.prompt.strip():
        raise UserInputError("the prompt is empty: describe the new picture (identity), the light (relight) or the edit (instruct)")
    if not _whole(request.num_images) or not 1 <= request.num_images <= MAX_IMAGES:
        raise UserInputError(f"number of images must be a whole number between 1 and {MAX_IMAGES}, got {request.num_images}")
    if not _whole(request.steps) or not 1 <= request.steps <= MAX_STEPS:
        raise UserInputError(f"steps must be a whole number between 1 and {MAX_STEPS}, got {request.steps}")
    if request.seed is not None and (not _whole(request.seed) or not 0 <= request.seed < 2**63 - MAX_IMAGES):
        raise UserInputError(f"seed must be a whole number from 0 to below 2^63, got {request.seed}")
    scales = {"guidance": request.guidance, "image guidance": request.image_guidance,
              "text guidance": request.text_guidance}
    for name, value in scales.items():
        low, high = GUIDANCE_RANGES[name]
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise UserInputError(f"{name} must be a number from {low:g} to {high:g}, got {value}")
    for name, value in {"guidance steps": request.guidance_steps, "step cache": request.cache}.items():
        if value is not None and not isinstance(value, str):
            raise UserInputError(f"{name} must be text such as {'0.1:0.8' if name == 'guidance steps' else 'fbc:0.08'}, "
                                 f"got {value!r}")
    GuidanceSteps.parse(request.guidance_steps)
    StepCache.parse(request.cache)


def prompt_notices(pipe, prompt: str) -> list[str]:
    """Say so when the text encoder will not read the whole prompt."""
    limit = pipe.tokenizer_2.model_max_length
    tokens = len(pipe.tokenizer_2(prompt).input_ids)
    if tokens > limit:
        return [f"the prompt is {tokens} tokens; the text encoder reads the first {limit}, the rest was cut"]
    return []


def enhance(settings: Settings, request: GenerateRequest, reference, prompt: str, notices: list[str]) -> str:
    if not request.enhance:
        return prompt
    if not settings.enhancer:
        notices.append("prompt enhancement is off: set DSD_ENHANCER (e.g. openai:gpt-4o-mini) to use it")
        return prompt
    from pipeline.generation.enhance import enhance_prompt
    from pipeline.providers import make_provider

    return enhance_prompt(make_provider(settings.enhancer), prompt, image=reference, mode=request.mode)


def save_reference(store: Store, image: PIL.Image.Image) -> Path:
    """Keep the (normalised) reference once per content, so history rows can show it."""
    digest = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    path = store.home / "references" / f"{digest}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    return path


def output_paths(store: Store, out: Path | None, count: int) -> list[Path]:
    """`OUT.png, OUT-1.png, ...` when the caller names the file; dated files in the data folder otherwise.
    Checked before anything is drawn, so a generation never ends in a file it cannot write."""
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = store.home / "outputs" / time.strftime("%Y-%m-%d") / f"{stamp}-{secrets.token_hex(3)}.png"
    paths = [out if k == 0 else out.with_name(f"{out.stem}-{k}{out.suffix or '.png'}") for k in range(count)]
    for path in paths:
        if path.is_dir():
            raise UserInputError(f"{path} is a folder: name a .png file to write instead")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()  # what permissions say is not what root or an immutable folder allow
    except OSError as error:
        raise UserInputError(f"cannot write into {out.parent} ({error.strerror}): pick a folder you can write to") from None
    return paths


def reconstruction_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.reconstruction.png")


def save_pictures(output, paths: list[Path], seeds: list[int], metadata: dict, record: Callable[[], int]) -> int:
    """Each picture as a PNG carrying the parameters with its own seed, and its reconstruction beside it, then
    `record`ed; returns the record's id. Pictures and their history row are kept together or not at all."""
    written = []
    try:
        for image, path, seed in zip(output.images, paths, seeds):
            written.append(path)
            path.write_bytes(png_with_metadata(image, {**metadata, "seed": seed}))
        for reconstruction, path in zip(output.reconstructions or [], paths):
            written.append(reconstruction_path(path))
            reconstruction.save(written[-1])
        return record()
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def generate(
    request: GenerateRequest,
    settings: Settings,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    notices: Sequence[str] = (),
) -> GenerateResult:
    """Validate, generate, save and record one request. Bad input raises `UserInputError`. `notices`: what
    the caller has to say about the request (recorded and returned with the generation's own)."""
    spec = settings.model
    if request.mode in settings.mode_loras:
        spec = replace(spec, lora=settings.mode_loras[request.mode])
    request = with_model_defaults(request, spec)
    check_request(request)
    started = time.perf_counter()
    mode = get_mode(request.mode)
    reference = load_image(request.image)
    store = Store(settings.home)
    paths = output_paths(store, out, request.num_images)
    pipe = MODELS.get(spec, settings.memory)
    load_s = time.perf_counter() - started

    notices = list(notices) + ([MODELS.memory_note] if MODELS.memory_note else [])
    prompt_used = mode.prompt(enhance(settings, request, reference, request.prompt, notices))
    notices += prompt_notices(pipe, prompt_used)
    seed = secrets.randbelow(2**31) if request.seed is None else request.seed
    seeds = [seed + k for k in range(request.num_images)]
    image_guidance = mode.image_guidance if request.image_guidance is None else request.image_guidance
    text_guidance = mode.text_guidance if request.text_guidance is None else request.text_guidance
    params = {
        "mode": request.mode, "width": request.width, "height": request.height, "steps": request.steps,
        "guidance": request.guidance, "image_guidance": image_guidance, "text_guidance": text_guidance,
        "fit": request.fit, "seeds": seeds, "memory": settings.memory, "dtype": spec.dtype,
        "guidance_steps": str(GuidanceSteps.parse(request.guidance_steps)),
        "cache": str(StepCache.parse(request.cache) or "none"),
    }
    record = dict(
        mode=request.mode, prompt=request.prompt, prompt_used=prompt_used, model=spec.describe(),
        params=params, seed=seed, num_images=request.num_images,
        reference_path=str(save_reference(store, reference)), notices=notices,
    )
    try:
        output = pipe(
            reference, prompt_used, height=request.height, width=request.width,
            num_inference_steps=request.steps, guidance_scale=request.guidance,
            image_guidance_scale=image_guidance, text_guidance_scale=text_guidance,
            num_images_per_prompt=request.num_images,
            generator=[torch.Generator().manual_seed(s) for s in seeds], fit=request.fit,
            return_reconstruction=request.keep_reconstruction, callback_on_step_end=progress,
            guidance_steps=request.guidance_steps, cache=request.cache,
        )
    except torch.cuda.OutOfMemoryError:
        store.record_generation(**record, status="error", error="out of GPU memory")
        raise UserInputError("out of GPU memory: pick a memory mode that keeps less on the GPU (int8_offload, "
                             "int4_offload, group_offload), or a smaller size") from None

    if output.steps_done < request.steps:
        notices.append(f"stopped by the user after {output.steps_done} of {request.steps} steps: the pictures are unfinished")
    metadata = {"prompt": request.prompt, "prompt_used": prompt_used, "seed": seed, "model": spec.describe(), **params}
    reconstructions = output.reconstructions or []
    timings = {"load_s": load_s, **output.timings, "total_s": time.perf_counter() - started}
    record_id = save_pictures(output, paths, seeds, metadata, lambda: store.record_generation(
        **record, output_paths=[str(p) for p in paths], timings=timings, status="ok"))
    return GenerateResult(record_id, output.images, paths, seeds, prompt_used, reconstructions, timings, notices)
