"""Finding and loading weights: FLUX.1-dev base folders, the released DSD weights, our own format.

Three kinds of folder, all local paths or Hugging Face Hub ids:

- a **base** folder in FLUX.1-dev's diffusers layout (`vae/`, `text_encoder/`, `tokenizer/`,
  `text_encoder_2/`, `tokenizer_2/`, `scheduler/`, `transformer/`).
- the **released DSD** layout (`primecai/dsd_model`): `transformer/` with the full fine-tuned
  transformer, `c_embedder.*` included, saved from a PEFT-wrapped model so it also carries
  `lora_A`/`lora_B` copies, plus `pytorch_lora_weights.safetensors` (diffusers LoRA format, keys
  `transformer.<module>.lora_A.weight`). The LoRA file is what applies; the copies are ignored.
- **our** format, what training writes: `pytorch_lora_weights.safetensors` (same LoRA format)
  plus `condition_embedder.safetensors`, on top of the base transformer.

Every key is accounted for: loaded, ignored for a stated reason, or zero-initialised for a stated
reason. Anything else is an error that names the keys.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.errors import UserInputError
from pipeline.generation.model import DSDTransformer2DModel

SAMPLING_FILE = "sampling.json"  # a model folder's own generation defaults: {"width", "height", "steps"}
SAMPLING = {"width": 512, "height": 512, "steps": 28}  # FLUX.1-dev's, and the released DSD weights'
LORA_FILE = "pytorch_lora_weights.safetensors"
CONDITION_FILE = "condition_embedder.safetensors"
BASE_COMPONENTS = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
# What to fetch of a base repo on the Hub: the diffusers folders, not the 23 GB single-file checkpoint.
BASE_PATTERNS = ["model_index.json", *(f"{name}/*" for name in (*BASE_COMPONENTS, "transformer"))]
PEFT_COPY = re.compile(r"\.lora_(A|B|magnitude_vector)\.|\.lora_embedding_(A|B)\.")
LORA_KEY = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<half>A|B)\.weight$")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadReport:
    """What happened to every key of a checkpoint, for the user and for tests."""

    loaded: int = 0
    ignored: dict[str, str] = field(default_factory=dict)  # key pattern -> reason
    zero_initialised: dict[str, str] = field(default_factory=dict)
    lora_modules: int = 0

    def summary(self) -> str:
        parts = [f"{self.loaded} tensors loaded"]
        parts += [f"{reason} ({pattern})" for pattern, reason in self.ignored.items()]
        parts += [f"{name}: {reason}" for name, reason in self.zero_initialised.items()]
        if self.lora_modules:
            parts.append(f"LoRA applied to {self.lora_modules} layers")
        return "; ".join(parts)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """`auto` is bf16 on a GPU and fp32 on the CPU (bf16 matmuls are slow there)."""
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserInputError(f"unknown dtype {name!r}: use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_folder(path_or_id: str, what: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder as is; `owner/name` fetched from the Hub into its cache (or found there)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", path_or_id):
        raise UserInputError(f"{what} {path_or_id!r} is neither a folder nor a Hugging Face Hub id (owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(path_or_id, allow_patterns=allow_patterns))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0].rstrip(".")
        raise UserInputError(
            f"cannot fetch {what} {path_or_id!r} from the Hugging Face Hub ({reason}): on a machine with "
            f"network run `hf download {path_or_id} --local-dir DIR`, then pass DIR"
        ) from None


def read_safetensors(folder: Path, stem: str = "diffusion_pytorch_model") -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint in `folder`."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = [folder / f"{stem}.safetensors"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserInputError(f"weights missing in {folder}: {', '.join(missing)}; re-download the folder")
    tensors = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
        except Exception as error:  # safetensors raises its own types for truncated files
            raise UserInputError(f"cannot read {file}: {error}; the file is damaged, re-download it") from None
    return tensors


def _name_keys(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


def load_transformer(folder: Path, dtype: torch.dtype) -> tuple[DSDTransformer2DModel, LoadReport]:
    """A DSD transformer from a transformer folder: FLUX's (no condition embedder) or DSD's."""
    if not (folder / "config.json").is_file():
        raise UserInputError(f"{folder} is not a transformer folder: config.json is missing")
    config = DSDTransformer2DModel.load_config(folder)
    with init_empty_weights():
        model = DSDTransformer2DModel.from_config(config)
    expected = set(model.state_dict())
    report, state = LoadReport(), {}
    for key, tensor in read_safetensors(folder).items():
        if PEFT_COPY.search(key):
            report.ignored["*.lora_A/B.*"] = "PEFT adapter copies in the transformer file, ignored: the LoRA file applies"
            continue
        state[key.replace(".base_layer.", ".")] = tensor.to(dtype)
    missing, unexpected = expected - set(state), set(state) - expected
    if missing and missing <= {"c_embedder.weight", "c_embedder.bias"}:
        report.zero_initialised["c_embedder"] = "not in this checkpoint (plain FLUX): starts at zero"
        inner = model.inner_dim
        state["c_embedder.weight"] = torch.zeros(inner, model.config.in_channels, dtype=dtype)
        state["c_embedder.bias"] = torch.zeros(inner, dtype=dtype)
        missing = set()
    if missing or unexpected:
        problems = [f"missing {_name_keys(missing)}" if missing else "", f"unexpected {_name_keys(unexpected)}" if unexpected else ""]
        raise UserInputError(
            f"{folder} does not match a FLUX/DSD transformer of its config: {'; '.join(p for p in problems if p)}. "
            "Is it a partial download or another model's weights?"
        )
    model.load_state_dict(state, assign=True)
    report.loaded = len(state) - len(report.zero_initialised) * 2
    return model.eval(), report


def check_lora_state(transformer: DSDTransformer2DModel, state: dict[str, torch.Tensor], source: Path) -> int:
    """Every key must be a `transformer.<linear>.lora_A/B.weight` pair of matching shapes."""
    linears = {name: module for name, module in transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    halves, stray = {}, []
    for key, tensor in state.items():
        match = LORA_KEY.match(key)
        if not match or match["module"] not in linears:
            stray.append(key)
            continue
        halves.setdefault(match["module"], {})[match["half"]] = tensor
    if stray:
        raise UserInputError(
            f"{source} has LoRA keys that match no layer of this transformer: {_name_keys(stray)}; "
            "is it a LoRA for another model?"
        )
    for module, pair in halves.items():
        linear = linears[module]
        if set(pair) != {"A", "B"} or pair["A"].shape[1] != linear.in_features or pair["B"].shape[0] != linear.out_features:
            raise UserInputError(f"{source}: the LoRA for {module} is incomplete or has the wrong shape")
    return len(halves)


def apply_lora(transformer: DSDTransformer2DModel, lora_file: Path, report: LoadReport, name: str) -> None:
    """Load a diffusers-format LoRA, check every key landed, and fuse it into the weights."""
    if not lora_file.is_file():
        raise UserInputError(f"LoRA file {lora_file} does not exist")
    state = read_safetensors(lora_file.parent, lora_file.name.removesuffix(".safetensors"))
    report.lora_modules += check_lora_state(transformer, state, lora_file)
    with safe_open(lora_file, framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get("lora_adapter_metadata", "null"))
    try:
        transformer.load_lora_adapter(
            {key: value.to(transformer.dtype) for key, value in state.items()},
            prefix="transformer", adapter_name=name, metadata=metadata,
        )
    except (KeyError, ValueError, TypeError) as error:
        raise UserInputError(f"cannot apply the LoRA in {lora_file}: {error}; is it a FLUX LoRA in diffusers format?") from None
    # Fusing removes the LoRA's extra matmuls from every step; unloading keeps the fused weights.
    transformer.fuse_lora(adapter_names=[name])
    transformer.unload_lora()


def load_condition_embedder(transformer: DSDTransformer2DModel, folder: Path) -> None:
    state = read_safetensors(folder, CONDITION_FILE.removesuffix(".safetensors"))
    expected = {"c_embedder.weight", "c_embedder.bias"}
    if set(state) != expected:
        raise UserInputError(f"{folder / CONDITION_FILE} should hold exactly {sorted(expected)}, found {_name_keys(state)}")
    current = transformer.c_embedder
    for key, tensor in state.items():
        target = getattr(current, key.split(".")[1])
        if tensor.shape != target.shape:
            raise UserInputError(f"{key} in {folder} has shape {tuple(tensor.shape)}; this base model needs {tuple(target.shape)}")
        target.data.copy_(tensor.to(target.dtype))


def save_dsd_weights(transformer: DSDTransformer2DModel, folder: str | Path, adapter_name: str = "default",
                     state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write our format: the LoRA (diffusers format, with its config as metadata) + the condition embedder.
    `state_dict`: the transformer's full state when its parameters are sharded (FSDP gathers it)."""
    from diffusers import FluxPipeline
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    # The pipeline-level saver prefixes keys and metadata with `transformer.`, the released layout.
    FluxPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=get_peft_model_state_dict(transformer, state_dict=state_dict, adapter_name=adapter_name),
        transformer_lora_adapter_metadata=transformer.peft_config[adapter_name].to_dict(),
        weight_name=LORA_FILE,
    )
    if state_dict is None:
        state_dict = {f"c_embedder.{name}": p for name, p in transformer.c_embedder.named_parameters()}
    state = {key: state_dict[key].detach().contiguous().cpu() for key in ("c_embedder.weight", "c_embedder.bias")}
    save_file(state, folder / CONDITION_FILE, metadata={"format": "pt"})
    return folder


def dsd_folder_kind(folder: Path) -> str:
    if (folder / "transformer" / "config.json").is_file():
        return "released"
    if (folder / CONDITION_FILE).is_file():
        return "ours"
    raise UserInputError(
        f"{folder} is not a DSD weights folder: expected transformer/ and {LORA_FILE} (the released "
        f"primecai/dsd_model layout) or {CONDITION_FILE} and {LORA_FILE} (a DSD Studio training run)"
    )


def check_base_folder(folder: Path, needs_transformer: bool) -> None:
    needed = BASE_COMPONENTS + (("transformer",) if needs_transformer else ())
    missing = [name for name in needed if not (folder / name).is_dir()]
    if missing:
        raise UserInputError(
            f"base model folder {folder} lacks {', '.join(missing)}/: point it at a FLUX.1-dev folder in "
            "diffusers layout (black-forest-labs/FLUX.1-dev)"
        )


def load_dsd_transformer(base: Path, dsd: Path | None, lora: Path | None, dtype) -> tuple[DSDTransformer2DModel, LoadReport]:
    """The transformer a generator runs: base or released weights, plus every LoRA, fused."""
    kind = dsd_folder_kind(dsd) if dsd else None
    transformer, report = load_transformer((dsd if kind == "released" else base) / "transformer", dtype)
    if kind == "ours":
        load_condition_embedder(transformer, dsd)
        report.zero_initialised.pop("c_embedder", None)
    if dsd and (dsd / LORA_FILE).is_file():
        apply_lora(transformer, dsd / LORA_FILE, report, "dsd")
    elif kind == "released":
        raise UserInputError(f"{dsd} lacks {LORA_FILE}: the released DSD weights need it; re-download the folder")
    if lora:
        apply_lora(transformer, lora, report, "extra")
    return transformer, report


@dataclass(frozen=True)
class ModelSpec:
    """Which weights a generator runs: a base, and optionally DSD weights and one more LoRA. Which model
    runs when a user names none is the caller's choice (the studio's is its embedded miniature)."""

    base: str | None = None  # FLUX.1-dev folder or hub id
    dsd: str | None = None  # released DSD weights, or a training run's output folder
    lora: str | None = None  # one more LoRA file, e.g. a mode's
    dtype: str = "auto"
    label: str | None = None  # how the model is named to people; default: its folders

    def describe(self) -> str:
        return self.label or " + ".join(p for p in (self.base or "no base model", self.dsd, self.lora) if p)


def read_sampling(folder: Path) -> dict:
    """A model folder's `sampling.json` ({} when there is none); a broken file is one clear error."""
    path = folder / SAMPLING_FILE
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ValueError
        return {key: float(value) for key, value in values.items()}
    except (ValueError, TypeError):
        raise UserInputError(f"{path} is not valid JSON of numbers: fix or delete it") from None


def sampling_defaults(spec: ModelSpec) -> dict:
    """Size and steps a model is made for: FLUX's 512 px and 28 steps unless its folders say otherwise
    (a `sampling.json` in the base folder, then in the DSD weights folder, such as a small model's 64 px and
    20 steps). Only local folders are read: a Hub id gets FLUX's defaults without touching the network."""
    found = dict(SAMPLING)
    for folder in (Path(name).expanduser() for name in (spec.base, spec.dsd) if name):
        if folder.is_dir():
            found |= {key: int(value) for key, value in read_sampling(folder).items() if key in SAMPLING}
    return found


def load_generator(spec: ModelSpec, device: str = "cpu"):
    """Build a `DSDPipeline` from a spec: every component from its folder, checked on the way."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

    from pipeline.generation.pipeline import DSDPipeline

    if not spec.base:
        raise UserInputError("no base model named: give a FLUX.1-dev folder or hub id (--base, DSD_BASE)")
    dtype = resolve_dtype(spec.dtype, device)
    base = resolve_folder(spec.base, "base model", BASE_PATTERNS)
    dsd = resolve_folder(spec.dsd, "DSD weights") if spec.dsd else None
    lora = Path(spec.lora).expanduser() if spec.lora else None
    check_base_folder(base, needs_transformer=not (dsd and dsd_folder_kind(dsd) == "released"))
    transformer, report = load_dsd_transformer(base, dsd, lora, dtype)
    loaders = {
        "vae": lambda: AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=dtype),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(base, subfolder="text_encoder", dtype=dtype),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        "text_encoder_2": lambda: T5EncoderModel.from_pretrained(base, subfolder="text_encoder_2", dtype=dtype),
        "tokenizer_2": lambda: AutoTokenizer.from_pretrained(base, subfolder="tokenizer_2"),
        "scheduler": lambda: FlowMatchEulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler"),
    }
    components = {}
    for name, load in loaders.items():
        try:
            components[name] = load()
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0][:200]
            raise UserInputError(f"cannot load {name} from {base / name}: {reason}; re-download the base folder") from None
    pipe = DSDPipeline(transformer=transformer, **components)
    pipe.load_report = report
    return pipe
