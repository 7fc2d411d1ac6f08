"""Memory modes: where the generator's weights live while it draws, and in what precision.

A mode is a placement (all on the GPU; one component at a time on it, `model_offload`; a block at a time,
`group_offload`; one layer at a time, `sequential_offload`; or the CPU) and the precision of the two large
models: the FLUX transformer (11.9B parameters, 22.2 GiB in bf16) and the T5-XXL text encoder (4.8B,
8.9 GiB). What each mode costs on FLUX.1-dev is computed in `pipeline.generation.memory_table`.

Quantised modes use torchao through its own API (`quantize_` with its weight configs, the ones diffusers'
and transformers' `TorchAoConfig` hand it). The transformer is quantised *after* the DSD weights are in it:
the released LoRA (and any extra LoRA) is fused in full precision and the fused weight rounded once, so the
LoRA and the condition embedder apply exactly as on the unquantised model, and one rounding is all that
separates the two. Only the linear layers of the transformer's 57 blocks are quantised (99.5% of its
weights); the embedders (the condition embedder among them) and the output layer keep the model's dtype.
"""

from dataclasses import dataclass

from pipeline.errors import UserInputError

# torch is imported where it is used: the command line reads the modes' names without loading it.


@dataclass(frozen=True)
class MemoryMode:
    name: str
    placement: str  # gpu, model_offload, group_offload, sequential_offload or cpu
    transformer: str = "bf16"  # the blocks' weights: the model's dtype, int8, fp8 or int4
    text_int8: bool = False  # T5 in int8 (weight-only)
    vae_tiling: bool = False  # the VAE encodes and decodes canvases over 1024 px in tiles
    on_cpu: bool = False  # runs on the CPU where no CUDA GPU is visible
    capability: tuple[int, int] = (0, 0)  # least CUDA compute capability
    summary: str = ""

    @property
    def quantised(self) -> bool:
        return self.transformer != "bf16"


_MODES = (
    MemoryMode("gpu", "gpu", summary="everything on the GPU in bf16"),
    MemoryMode("model_offload", "model_offload", vae_tiling=True,
               summary="bf16, one component at a time on the GPU"),
    MemoryMode("int8", "gpu", "int8", text_int8=True, on_cpu=True,
               summary="transformer and T5 in int8 (torchao weight-only), all on the GPU (or the CPU without one)"),
    MemoryMode("int8_offload", "model_offload", "int8", text_int8=True, vae_tiling=True,
               summary="int8 transformer and T5, one component at a time on the GPU"),
    MemoryMode("fp8", "gpu", "fp8", text_int8=True, capability=(8, 9),
               summary="fp8 transformer (weights and activations, fp8 matmuls; Ada/Hopper GPUs), int8 T5, all on the GPU"),
    MemoryMode("int4", "gpu", "int4", text_int8=True, capability=(8, 0),
               summary="int4 transformer (torchao, groups of 128; Ampere or newer), int8 T5, all on the GPU"),
    MemoryMode("int4_offload", "model_offload", "int4", text_int8=True, vae_tiling=True, capability=(8, 0),
               summary="int4 transformer and int8 T5, one component at a time on the GPU"),
    MemoryMode("group_offload", "group_offload", vae_tiling=True,
               summary="bf16, one block at a time on the GPU, the next one copied while this one runs (CUDA streams)"),
    MemoryMode("sequential_offload", "sequential_offload", vae_tiling=True,
               summary="bf16, one layer at a time on the GPU (least memory, slowest)"),
    MemoryMode("cpu", "cpu", on_cpu=True, summary="everything on the CPU"),
)
MODES = {mode.name: mode for mode in _MODES}
MEMORY_MODES = ("auto", *MODES)
# What `auto` tries, best first: pictures exactly bf16's while they fit, then int8 (closest to bf16 of the
# quantised), then bf16 again block by block (exact, slower: it copies the transformer to the GPU every step),
# then int4, then layer by layer.
AUTO_ORDER = ("gpu", "model_offload", "int8", "int8_offload", "group_offload", "int4_offload", "sequential_offload")


def get_memory_mode(name: str) -> MemoryMode:
    if name not in MODES:
        raise UserInputError(f"unknown memory mode {name!r}: use one of {', '.join(MEMORY_MODES)}")
    return MODES[name]


def check_runs_here(mode: MemoryMode) -> str:
    """The device `mode` runs on here; a mode this machine cannot run is one error that says what to pick."""
    import torch

    if not torch.cuda.is_available():
        if mode.on_cpu:
            return "cpu"
        raise UserInputError(f"memory mode {mode.name} needs a CUDA GPU and none is visible: use cpu, int8 (or auto)")
    if torch.cuda.get_device_capability() < mode.capability:
        major, minor = mode.capability
        raise UserInputError(
            f"memory mode {mode.name} needs a GPU of compute capability {major}.{minor} or newer; this "
            f"{torch.cuda.get_device_name()} is {'.'.join(map(str, torch.cuda.get_device_capability()))}: use int8 or int8_offload"
        )
    return "cpu" if mode.placement == "cpu" else "cuda"


def weight_config(kind: str):
    """torchao's weight config for a precision: int8 weight-only (per output channel), fp8 weights and
    activations (per row), int4 weight-only (groups of 128, tinygemm's CUDA layout)."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig, Int4WeightOnlyConfig, Int8WeightOnlyConfig, PerRow,
    )
    from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

    from pipeline.generation.memory_table import INT4_GROUP

    if kind == "int8":
        return Int8WeightOnlyConfig()
    if kind == "fp8":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    if kind == "int4":
        return Int4WeightOnlyConfig(group_size=INT4_GROUP, int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D)
    raise ValueError(f"no weight config for {kind}")


def quantise(pipe, mode: MemoryMode, device: str) -> None:
    """Round the transformer's block weights (and T5's) to the mode's precision, on `device`."""
    import torch
    from torchao.quantization import quantize_

    from pipeline.generation.memory_table import in_blocks

    if mode.transformer in ("fp8", "int4") and pipe.transformer.dtype != torch.bfloat16:
        raise UserInputError(f"memory mode {mode.name} computes in bf16: use --dtype bf16 (or auto)")
    kind = mode.transformer
    quantize_(pipe.transformer, weight_config(kind), filter_fn=lambda m, name: in_blocks(m, name, kind), device=device)
    if mode.text_int8:
        quantize_(pipe.text_encoder_2, weight_config("int8"), device=device)


def place(pipe, mode: MemoryMode, device: str) -> None:
    """Put the generator where `mode` says, through diffusers' own offloading."""
    import torch

    if mode.quantised:
        quantise(pipe, mode, device)
    if mode.placement == "gpu":
        pipe.to(device)
    elif mode.placement == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode.placement == "group_offload":
        place_in_groups(pipe, torch.device(device))
    elif mode.placement == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    if mode.vae_tiling:
        pipe.vae.enable_tiling()


def place_in_groups(pipe, device) -> None:
    """diffusers' group offloading: the transformer a block at a time (its blocks are the ModuleLists it
    groups), the text encoders a layer at a time (their blocks sit deeper than it looks), the VAE (84M
    parameters) on the device. On CUDA the next group is copied on a side stream while this one computes."""
    from diffusers.hooks import apply_group_offloading

    streams = device.type == "cuda"
    pipe.transformer.enable_group_offload(
        onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=streams,
    )
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        apply_group_offloading(encoder, onload_device=device, offload_type="leaf_level", use_stream=streams)
    pipe.vae.to(device)


def free_gpu_bytes() -> tuple[int, str]:
    import torch

    free, _ = torch.cuda.mem_get_info()
    return free, torch.cuda.get_device_name()


def pick_auto(needs: dict[str, int], free: int, gpu: str) -> tuple[str, str]:
    """The first mode of `AUTO_ORDER` whose expected peak (`needs`, bytes by mode) fits in `free` bytes."""
    gib = 2**30
    for name in AUTO_ORDER:
        if name in needs and needs[name] <= free:
            return name, (f"memory mode auto picked {name} ({MODES[name].summary}): {free / gib:.1f} GiB free on "
                          f"{gpu}, it needs about {needs[name] / gib:.1f} GiB")
    return "sequential_offload", f"memory mode auto picked sequential_offload: only {free / gib:.1f} GiB free on {gpu}"


def load_in_mode(spec, name: str):
    """A generator loaded and placed for memory mode `name`, `auto` choosing one for the GPU it finds.
    Returns the generator, the mode that runs, and what `auto` says about its choice (or None)."""
    import torch

    from pipeline.generation.weights import load_generator, sampling_defaults

    if name not in MEMORY_MODES:
        raise UserInputError(f"unknown memory mode {name!r}: use one of {', '.join(MEMORY_MODES)}")
    if name == "auto" and not torch.cuda.is_available():
        name = "cpu"
    if name != "auto":
        mode = get_memory_mode(name)
        device = check_runs_here(mode)
        pipe = load_generator(spec, device=device)
        place(pipe, mode, device)
        return pipe, name, None

    from pipeline.generation.memory_table import COMPONENTS, Footprint

    pipe = load_generator(spec, device="cuda")
    size = sampling_defaults(spec)
    models = {component: getattr(pipe, component) for component in COMPONENTS}
    footprint = Footprint.of(models, dtype_bytes=pipe.transformer.dtype.itemsize)
    capability = torch.cuda.get_device_capability()
    needs = {n: footprint.peak(MODES[n], size["height"], size["width"]) for n in AUTO_ORDER if capability >= MODES[n].capability}
    name, note = pick_auto(needs, *free_gpu_bytes())
    place(pipe, MODES[name], "cuda")
    return pipe, name, note
