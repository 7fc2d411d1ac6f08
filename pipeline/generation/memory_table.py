"""What each memory mode needs on the GPU, computed from the model rather than guessed.

Weights are exact: FLUX.1-dev's real configs (`flux1_dev/*.json`: the transformer with its 19 double and
38 single blocks, CLIP-L, T5-XXL, the VAE) are instantiated on the meta device, so every parameter's size
is counted without a byte of weights, and each quantised layer is sized by its storage format. The same
functions size a loaded generator, which is how `auto` chooses.

Activations are estimates, stated here and in the README:
- transformer: 24 live tensors of the hidden width per token of the canvas (image + 512 text tokens) while a
  block runs (its input, norms, q/k/v with RoPE applied, attention output, the 4x MLP's input and output),
  times the guidance passes run together; attention itself is memory-efficient (no tokens^2 matrix).
- VAE: 4 live tensors of its widest full-resolution activation (the decoder's last upsampler: 256 channels
  at canvas size); tiled (canvases over 1024 px, in modes that tile) at most a 1024x1024 tile.
- T5: 4 tensors of its feed-forward width over 512 tokens.
- 1 GiB of CUDA context, cuBLAS workspace and allocator slack.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent / "flux1_dev"
GIB = 2**30
TEXT_TOKENS = 512
BLOCK_LIVE = 24
VAE_LIVE = 4
T5_LIVE = 4
WORKSPACE = GIB
COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "vae")
# The transformer's modules that hold its weight, and what the quantised modes round: the double and single blocks.
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")
INT4_GROUP = 128


def in_blocks(module, name: str, kind: str = "int8") -> bool:
    """A linear layer of a transformer block that `kind` can store (int4's groups need 128 inputs; FLUX's
    layers all have a multiple of that)."""
    fits = kind != "int4" or getattr(module, "in_features", 0) % INT4_GROUP == 0
    return isinstance(module, torch.nn.Linear) and name.startswith(BLOCKS) and fits


def flux_on_meta() -> dict[str, torch.nn.Module]:
    """FLUX.1-dev's four models with DSD's condition embedder, on the meta device: real shapes, no memory
    (sized in bf16 by `Footprint.of`, whatever dtype the empty tensors carry)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pipeline.generation.model import DSDTransformer2DModel

    config = {name: json.loads((CONFIGS / f"{name}.json").read_text()) for name in COMPONENTS}
    with init_empty_weights():
        models = {
            "transformer": DSDTransformer2DModel.from_config(config["transformer"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**config["text_encoder"])),
            "text_encoder_2": T5EncoderModel(T5Config(**config["text_encoder_2"])),
            "vae": AutoencoderKL.from_config(config["vae"]),
        }
    # FLUX.1-dev's T5 checkpoint holds one embedding, shared with the encoder's input, as `from_pretrained` ties it.
    models["text_encoder_2"].tie_weights()
    return models


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear_bytes(linear: torch.nn.Linear, kind: str, dtype_bytes: int) -> int:
    """Storage of one linear layer's weight in a precision (torchao's formats): int8 one byte a weight plus an
    fp32 scale and an int8 zero point per output row; fp8 one byte plus an fp32 scale per row; int4 half a
    byte plus a bf16 scale and zero per group of 128 inputs (tinygemm's layout); the bias keeps its dtype."""
    out_features, in_features = linear.weight.shape
    bias = linear.bias.numel() * dtype_bytes if linear.bias is not None else 0
    if kind == "int8":
        return out_features * in_features + out_features * 5 + bias
    if kind == "fp8":
        return out_features * in_features + out_features * 4 + bias
    if kind == "int4":
        return out_features * in_features // 2 + -(-in_features // INT4_GROUP) * out_features * 4 + bias
    return linear.weight.numel() * dtype_bytes + bias


def weight_bytes(module: torch.nn.Module, kind: str = "bf16", quantised=lambda module, name: True, dtype_bytes: int = 2) -> int:
    """Bytes of a model's weights with the linear layers `quantised(module, name)` picks stored as `kind`."""
    total = 0
    counted = set()
    for name, child in module.named_modules():
        if kind != "bf16" and isinstance(child, torch.nn.Linear) and quantised(child, name):
            total += linear_bytes(child, kind, dtype_bytes)
            counted.update(id(p) for p in child.parameters(recurse=False))
    return total + sum(p.numel() * dtype_bytes for p in module.parameters() if id(p) not in counted)


def blocks_of(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    return [module for name, module in transformer.named_children() if isinstance(module, torch.nn.ModuleList) for module in module]


@dataclass
class Footprint:
    """What one generator's models weigh, by component and precision, and the sizes activations scale with."""

    bytes: dict[str, dict[str, int]]  # component -> precision -> bytes
    parameters: dict[str, int]
    largest_block: int  # bf16 bytes of the transformer's largest block (what group offloading holds, twice)
    transformer_rest: int  # bf16 bytes outside its blocks
    largest_leaf: int  # bf16 bytes of the largest single layer of any model (what sequential offloading holds)
    inner_dim: int
    t5_ff: int
    vae_width: int  # channels of the VAE's widest full-resolution activation
    vae_tile: int  # pixels of a VAE tile side

    @classmethod
    def of(cls, models: dict[str, torch.nn.Module], dtype_bytes: int = 2) -> "Footprint":
        sizes = {name: {"bf16": weight_bytes(model, dtype_bytes=dtype_bytes)} for name, model in models.items()}
        for kind in ("int8", "fp8", "int4"):  # the layers `memory.quantise` rounds
            rounds = lambda module, name, kind=kind: in_blocks(module, name, kind)  # noqa: E731
            sizes["transformer"][kind] = weight_bytes(models["transformer"], kind, rounds, dtype_bytes)
        sizes["text_encoder_2"]["int8"] = weight_bytes(models["text_encoder_2"], "int8", dtype_bytes=dtype_bytes)
        transformer, t5, vae = models["transformer"], models["text_encoder_2"], models["vae"]
        blocks = [weight_bytes(block, dtype_bytes=dtype_bytes) for block in blocks_of(transformer)]
        leaves = [sum(p.numel() for p in m.parameters(recurse=False)) * dtype_bytes
                  for model in models.values() for m in model.modules()]
        channels = vae.config.block_out_channels
        return cls(
            bytes=sizes, parameters={name: parameter_count(model) for name, model in models.items()},
            largest_block=max(blocks), transformer_rest=sizes["transformer"]["bf16"] - sum(blocks),
            largest_leaf=max(leaves), inner_dim=transformer.inner_dim, t5_ff=t5.config.d_ff,
            vae_width=channels[1] if len(channels) > 1 else channels[0], vae_tile=vae.config.sample_size,
        )

    def weights(self, component: str, mode) -> int:
        if component == "transformer":
            return self.bytes["transformer"][mode.transformer]
        if component == "text_encoder_2" and mode.text_int8:
            return self.bytes["text_encoder_2"]["int8"]
        return self.bytes[component]["bf16"]

    def activations(self, height: int, width: int, passes: int = 1, tiled: bool = False) -> dict[str, int]:
        """Peak activation bytes (bf16) of each phase for one picture of a `height` x `width` panel."""
        canvas = (height, 2 * width)
        tokens = (canvas[0] // 16) * (canvas[1] // 16) + TEXT_TOKENS
        pixels = canvas[0] * canvas[1]
        if tiled and max(canvas) > self.vae_tile:
            pixels = min(canvas[0], self.vae_tile) * min(canvas[1], self.vae_tile)
        return {
            "transformer": BLOCK_LIVE * tokens * self.inner_dim * 2 * passes,
            "vae": VAE_LIVE * self.vae_width * pixels * 2,
            "text_encoder_2": T5_LIVE * TEXT_TOKENS * self.t5_ff * 2,
        }

    def peak(self, mode, height: int, width: int, passes: int = 1) -> int:
        """Expected peak GPU bytes of a generation in `mode` (a `memory.MemoryMode`): resident weights plus the
        phase that needs most."""
        if mode.placement == "cpu":
            return 0
        act = self.activations(height, width, passes, tiled=mode.vae_tiling)
        w = {name: self.weights(name, mode) for name in COMPONENTS}
        if mode.placement == "gpu":
            resident = sum(w.values())
            phases = act.values()
        elif mode.placement == "model_offload":
            # diffusers moves a model to the GPU when it is called and the previous one off it: T5 is still there
            # while the VAE encodes the reference, the VAE while the transformer denoises.
            resident = 0
            phases = (w["text_encoder_2"] + act["text_encoder_2"], w["text_encoder_2"] + w["vae"] + act["vae"],
                      w["transformer"] + w["vae"] + act["transformer"], w["vae"] + act["vae"])
        elif mode.placement == "group_offload":
            resident = w["vae"]
            phases = (self.transformer_rest + 2 * self.largest_block + act["transformer"],
                      2 * self.largest_leaf + act["text_encoder_2"], act["vae"])
        else:  # sequential_offload: one layer at a time
            resident = 0
            phases = (2 * self.largest_leaf + a for a in act.values())
        return resident + max(phases) + WORKSPACE


def memory_rows(footprint: Footprint, modes, sizes=(512, 1024), passes: int = 1) -> list[dict]:
    """One row per GPU mode of `modes`: the expected peak at each panel size."""
    rows = []
    for mode in modes:
        if mode.placement == "cpu":
            continue
        rows.append({"mode": mode.name, **{size: footprint.peak(mode, size, size, passes) for size in sizes}})
    return rows


def flux_footprint() -> Footprint:
    return Footprint.of(flux_on_meta())
