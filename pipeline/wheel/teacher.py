"""The teacher of the data wheel: a text-to-image pipeline that draws grids.

FLUX-layout folders (FLUX.1-dev, or a small model of that layout) load through the same checked loader as the
generator and run as diffusers' stock `FluxPipeline`; any other diffusers text-to-image folder or
hub id loads with `AutoPipelineForText2Image`.
"""

import json
import os
from dataclasses import dataclass

import PIL.Image
import torch

from pipeline.errors import UserInputError
from pipeline.generation.pipeline import text_length
from pipeline.generation.weights import BASE_PATTERNS, ModelSpec, load_generator, resolve_folder

FLUX_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")


@dataclass
class Teacher:
    pipe: object
    name: str
    true_cfg: float = 1.0  # true guidance against the empty prompt (FLUX's `true_cfg_scale`); 1: off, as for FLUX.1-dev

    def __post_init__(self):
        self.pipe.set_progress_bar_config(disable=True)  # progress goes to the job row instead

    def __call__(self, prompt: str, width: int, height: int, steps: int, guidance: float, seed: int) -> PIL.Image.Image:
        return self.draw([prompt], width, height, steps, guidance, [torch.Generator().manual_seed(seed)])[0]

    def draw(self, prompts: list[str], width: int, height: int, steps: int, guidance: float,
             generators: list[torch.Generator]) -> list[PIL.Image.Image]:
        """One picture per prompt, each from its own generator (so a seed gives the same picture in any batch)."""
        extra = {"max_sequence_length": text_length(self.pipe)} if getattr(self.pipe, "tokenizer_2", None) else {}
        if self.true_cfg != 1:
            extra |= {"true_cfg_scale": self.true_cfg, "negative_prompt": [""] * len(prompts)}
        return self.pipe(prompts, width=width, height=height, num_inference_steps=steps, guidance_scale=guidance,
                         generator=generators, **extra).images


def process_share() -> tuple[int, int, str]:
    """(rank, world size, device) of this process, from the variables `accelerate launch` (torchrun) sets.

    Grid drawing needs no process group, only a fair split of the work; (0, 1, ...) when run plainly.
    """
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    return rank, world, device


def teacher_guidance(folder) -> float:
    """The true guidance a teacher folder asks for in its `sampling.json` ("true_cfg"; the miniature's
    teacher, trained with caption dropout, samples with it), else 1 (FLUX.1-dev is guidance-distilled)."""
    from pipeline.generation.weights import read_sampling

    return read_sampling(folder).get("true_cfg", 1.0)


def load_teacher(path_or_id: str, device: str = "cpu", name: str | None = None) -> Teacher:
    """A teacher from a folder or hub id; `name` is how grids record it (default: the path or id)."""
    from diffusers import AutoPipelineForText2Image, FluxPipeline

    folder = resolve_folder(str(path_or_id), "teacher", BASE_PATTERNS)
    name = name or str(path_or_id)
    index = folder / "model_index.json"
    kind = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
    device_type = torch.device(device).type
    if kind.startswith("Flux") or kind == "DSDPipeline" or (folder / "transformer").is_dir() and not kind:
        generator = load_generator(ModelSpec(base=str(folder)), device=device_type)
        components = {key: value for key, value in generator.components.items() if key in FLUX_COMPONENTS}
        return Teacher(FluxPipeline(**components).to(device), name, teacher_guidance(folder))
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(folder, torch_dtype=torch.bfloat16 if device_type == "cuda" else torch.float32)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(f"cannot load the teacher {name!r} as a text-to-image pipeline: {reason}") from None
    return Teacher(pipe.to(device), name)
