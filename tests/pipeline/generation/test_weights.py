"""Loading weights: the released DSD layout, our training format, plain FLUX, and every way it can go wrong.

The released checkpoint is rebuilt here in its real layout at tiny size: a fine-tuned transformer
(condition embedder included) that also carries PEFT's stray adapter copies, and a diffusers-format
LoRA file whose keys start with `transformer.`.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from pipeline.errors import UserInputError
from pipeline.generation.model import DSDTransformer2DModel
from pipeline.generation.pipeline import DSDPipeline
from pipeline.generation.weights import LORA_FILE, ModelSpec, load_generator, load_transformer, save_dsd_weights

DOUBLE_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
SINGLE_TARGETS = ("to_q", "to_k", "to_v")
RANK = 4
CONDITION_KEYS = ("c_embedder.weight", "c_embedder.bias")


def lora_targets(config) -> list[str]:
    """The modules the released LoRA adapts, for a transformer of this config."""
    return [f"transformer_blocks.{b}.attn.{m}" for b in range(config.num_layers) for m in DOUBLE_TARGETS] + [
        f"single_transformer_blocks.{b}.attn.{m}" for b in range(config.num_single_layers) for m in SINGLE_TARGETS
    ]


@dataclass
class FineTuned:
    """What the released files hold: every transformer tensor and the LoRA, by their canonical names."""

    config: dict
    state: dict[str, torch.Tensor]
    lora: dict[str, torch.Tensor]  # transformer.<module>.lora_A/B.weight
    targets: list[str]


@pytest.fixture(scope="module")
def finetuned(tiny_base) -> FineTuned:
    """The tiny base transformer with every tensor moved and a non-zero condition embedder."""
    base = DSDTransformer2DModel.from_pretrained(tiny_base / "transformer")
    noise = torch.Generator().manual_seed(1)
    state = {key: value + 0.05 * torch.randn(value.shape, generator=noise) for key, value in base.state_dict().items()}
    for key in CONDITION_KEYS:
        assert not base.state_dict()[key].any(), "a fresh DSD transformer starts with a zero condition embedder"
        state[key] = 0.1 * torch.randn(state[key].shape, generator=noise)
    targets = lora_targets(base.config)
    lora = {}
    for module in targets:
        linear = base.get_submodule(module)
        # About as large as the weights themselves: a LoRA that was trained for a while.
        lora[f"transformer.{module}.lora_A.weight"] = 0.3 * torch.randn(RANK, linear.in_features, generator=noise)
        lora[f"transformer.{module}.lora_B.weight"] = 0.3 * torch.randn(linear.out_features, RANK, generator=noise)
    config = {**json.loads((tiny_base / "transformer" / "config.json").read_text()), "_class_name": "FluxTransformer2DModel"}
    return FineTuned(config, state, lora, targets)


def write_released(folder: Path, weights: FineTuned, naming: str = "plain", shards: int = 1,
                   state: dict | None = None, lora: dict | None = None) -> Path:
    """The `primecai/dsd_model` layout. `naming`: how PEFT's copies appear in the transformer file,
    "plain" (`to_q.weight`, `to_q.lora_A.weight`) or "peft" (`to_q.base_layer.weight`, `to_q.lora_A.default.weight`)."""
    tensors = dict(weights.state if state is None else state)
    lora = weights.lora if lora is None else lora
    for module in weights.targets:
        copies = {half: lora[f"transformer.{module}.lora_{half}.weight"] for half in "AB"}
        if naming == "plain":
            tensors.update({f"{module}.lora_{half}.weight": copy for half, copy in copies.items()})
        else:
            for kind in ("weight", "bias"):
                if f"{module}.{kind}" in tensors:
                    tensors[f"{module}.base_layer.{kind}"] = tensors.pop(f"{module}.{kind}")
            tensors.update({f"{module}.lora_{half}.default.weight": copy for half, copy in copies.items()})
    transformer = folder / "transformer"
    transformer.mkdir(parents=True)
    (transformer / "config.json").write_text(json.dumps(weights.config))
    keys = sorted(tensors)
    if shards == 1:
        save_file({k: tensors[k].contiguous() for k in keys}, transformer / "diffusion_pytorch_model.safetensors")
    else:
        weight_map = {}
        for i, chunk in enumerate(np.array_split(np.array(keys), shards), start=1):
            name = f"diffusion_pytorch_model-{i:05d}-of-{shards:05d}.safetensors"
            save_file({k: tensors[k].contiguous() for k in chunk}, transformer / name, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(chunk.tolist(), name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (transformer / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    save_file({k: v.contiguous() for k, v in lora.items()}, folder / LORA_FILE, metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def released(finetuned, tmp_path_factory) -> dict[str, Path]:
    """Two released folders: one file with plain PEFT copies; three shards with `base_layer` naming."""
    root = tmp_path_factory.mktemp("released")
    return {
        "plain": write_released(root / "plain", finetuned, "plain", shards=1),
        "peft-sharded": write_released(root / "peft", finetuned, "peft", shards=3),
    }


@pytest.fixture(scope="module")
def plain_flux_base(tiny_base, tmp_path_factory) -> Path:
    """The tiny base with a stock `FluxTransformer2DModel` (no condition embedder), like FLUX.1-dev itself."""
    folder = tmp_path_factory.mktemp("plain-flux") / "base"
    shutil.copytree(tiny_base, folder, ignore=shutil.ignore_patterns("transformer"))
    dsd = DSDTransformer2DModel.from_pretrained(tiny_base / "transformer")
    flux = FluxTransformer2DModel.from_config(dsd.config)
    state = {k: v for k, v in dsd.state_dict().items() if not k.startswith("c_embedder.")}
    flux.load_state_dict(state, strict=True)
    flux.save_pretrained(folder / "transformer")
    return folder


def load_released(tiny_base, folder):
    return load_generator(ModelSpec(base=str(tiny_base), dsd=str(folder)))


def generate(pipe, reference, seed: int = 0) -> np.ndarray:
    output = pipe(reference, "a photo of the same cat on a beach", height=64, width=64, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(seed), output_type="np")
    return output.images[0]


# --- The released layout --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "peft-sharded"])
def test_released_layout_loads_every_tensor(variant, released, finetuned, tiny_base, forward_inputs):
    folder = released[variant]
    pipe = load_released(tiny_base, folder)
    loaded = pipe.transformer.state_dict()

    # What should be there, computed from the files: saved tensors, LoRA targets with W + B @ A fused.
    lora = load_file(folder / LORA_FILE)
    expected = dict(finetuned.state)
    for module in finetuned.targets:
        delta = lora[f"transformer.{module}.lora_B.weight"] @ lora[f"transformer.{module}.lora_A.weight"]
        expected[f"{module}.weight"] = expected[f"{module}.weight"] + delta
    assert set(loaded) == set(expected), "no adapter leftovers, nothing missing"
    fused = {f"{module}.weight" for module in finetuned.targets}
    for key, value in expected.items():
        if key in fused:
            torch.testing.assert_close(loaded[key], value, rtol=1e-6, atol=1e-6, msg=f"{key}: W + B @ A")
        else:
            assert torch.equal(loaded[key], value), f"{key} is not the saved tensor"

    # One module spelled out: the fused weight really moved by the LoRA, by B @ A at scale 1.
    module = "transformer_blocks.1.attn.add_k_proj"
    moved = loaded[f"{module}.weight"] - finetuned.state[f"{module}.weight"]
    assert moved.abs().max() > 1e-3
    torch.testing.assert_close(moved, lora[f"transformer.{module}.lora_B.weight"] @ lora[f"transformer.{module}.lora_A.weight"])

    for key in CONDITION_KEYS:
        assert loaded[key].any() and torch.equal(loaded[key], finetuned.state[key])

    # And the loaded model computes what a model built from those tensors computes, condition included.
    reference = DSDTransformer2DModel.from_config(pipe.transformer.config).eval()
    reference.load_state_dict(expected)
    inputs = forward_inputs(reference, seed=8)
    with torch.no_grad():
        output = pipe.transformer(**inputs)[0]
        torch.testing.assert_close(output, reference(**inputs)[0], rtol=1e-5, atol=1e-5)
        no_image = pipe.transformer(**{**inputs, "cond_hidden_states": torch.zeros_like(inputs["cond_hidden_states"])})[0]
    assert (output - no_image).abs().mean() > 1e-3, "the released condition embedder reads the reference"

    report = pipe.load_report
    assert any("lora" in pattern.lower() for pattern in report.ignored), report.ignored
    assert "ignored" in report.summary()
    assert report.zero_initialised == {}
    assert report.loaded == len(expected)
    assert report.lora_modules == len(finetuned.targets) == 22


def test_a_mode_lora_stacks_on_the_released_one(released, finetuned, tiny_base, tmp_path):
    module = "single_transformer_blocks.1.attn.to_v"
    noise = torch.Generator().manual_seed(9)
    extra = {f"transformer.{module}.lora_A.weight": torch.randn(2, 32, generator=noise),
             f"transformer.{module}.lora_B.weight": torch.randn(32, 2, generator=noise)}
    save_file(extra, tmp_path / "relight.safetensors")
    pipe = load_generator(ModelSpec(base=str(tiny_base), dsd=str(released["plain"]), lora=str(tmp_path / "relight.safetensors")))
    lora = finetuned.lora
    expected = (finetuned.state[f"{module}.weight"]
                + lora[f"transformer.{module}.lora_B.weight"] @ lora[f"transformer.{module}.lora_A.weight"]
                + extra[f"transformer.{module}.lora_B.weight"] @ extra[f"transformer.{module}.lora_A.weight"])
    torch.testing.assert_close(pipe.transformer.state_dict()[f"{module}.weight"], expected, rtol=1e-5, atol=1e-5)
    assert pipe.load_report.lora_modules == len(finetuned.targets) + 1


def test_lora_changes_the_generator_output(released, references, tiny_base):
    folder = released["plain"]
    pipe = load_released(tiny_base, folder)
    without_lora, _ = load_transformer(folder / "transformer", torch.float32)
    plain = DSDPipeline(**{**pipe.components, "transformer": without_lora})
    plain.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    cat = references["cat"]
    assert np.array_equal(generate(plain, cat), generate(plain, cat)), "same seed, same picture"
    assert np.abs(generate(pipe, cat) - generate(plain, cat)).mean() > 0.01


# --- Our format: what training writes -------------------------------------------------------------


def as_if_trained(tiny_base: Path) -> DSDTransformer2DModel:
    """The tiny base's transformer with a LoRA and condition embedder set to seeded random values, as training
    leaves them. lora_alpha != r, so a file must carry the scale as well as the matrices."""
    trained = DSDTransformer2DModel.from_pretrained(tiny_base / "transformer")
    trained.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "add_k_proj"]))
    noise = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in trained.named_parameters():
            if "lora_" in name or name.startswith("c_embedder."):
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=noise))
    return trained


def test_our_format_reproduces_the_trained_model(tiny_base, tmp_path, forward_inputs):
    trained = as_if_trained(tiny_base)
    save_dsd_weights(trained, tmp_path / "run")

    pipe = load_generator(ModelSpec(base=str(tiny_base), dsd=str(tmp_path / "run")))
    inputs = forward_inputs(trained, seed=3)
    with torch.no_grad():
        expected = trained(**inputs)[0]
        loaded = pipe.transformer(**inputs)[0]
        trained.disable_adapters()
        without_lora = trained(**inputs)[0]
    torch.testing.assert_close(loaded, expected, rtol=1e-4, atol=1e-5)
    assert (expected - without_lora).abs().mean() > 1e-3, "the LoRA matters, so the comparison means something"
    assert pipe.load_report.zero_initialised == {}
    assert torch.equal(pipe.transformer.c_embedder.weight, trained.c_embedder.weight)


# --- The condition embedder at zero is plain FLUX -------------------------------------------------


def test_zero_condition_embedder_leaves_flux_unchanged(tiny_base, forward_inputs):
    dsd = DSDTransformer2DModel.from_pretrained(tiny_base / "transformer").eval()
    flux = FluxTransformer2DModel.from_config(dsd.config).eval()
    flux.load_state_dict({k: v for k, v in dsd.state_dict().items() if not k.startswith("c_embedder.")})
    inputs = forward_inputs(dsd, seed=4)
    condition = inputs.pop("cond_hidden_states")
    assert condition.abs().mean() > 0.5
    with torch.no_grad():
        stock = flux(**inputs)[0]
        torch.testing.assert_close(dsd(**inputs, cond_hidden_states=condition)[0], stock, rtol=0, atol=1e-6)
        torch.testing.assert_close(dsd(**inputs)[0], stock, rtol=0, atol=0)
        dsd.c_embedder.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(5))
        assert (dsd(**inputs, cond_hidden_states=condition)[0] - stock).abs().mean() > 1e-3


def test_plain_flux_folder_starts_with_zero_condition_embedder(plain_flux_base, forward_inputs):
    pipe = load_generator(ModelSpec(base=str(plain_flux_base)))
    report = pipe.load_report
    assert "c_embedder" in report.zero_initialised and "c_embedder" in report.summary()
    assert not pipe.transformer.c_embedder.weight.any() and not pipe.transformer.c_embedder.bias.any()
    assert report.loaded == len(load_file(plain_flux_base / "transformer" / "diffusion_pytorch_model.safetensors"))

    flux = FluxTransformer2DModel.from_pretrained(plain_flux_base / "transformer").eval()
    inputs = forward_inputs(flux, seed=6)
    condition = inputs.pop("cond_hidden_states")
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(**inputs, cond_hidden_states=condition)[0], flux(**inputs)[0],
                                   rtol=0, atol=1e-6)


# --- Errors a user can cause: one message that names the problem ----------------------------------


def test_missing_keys_are_named(tiny_base, finetuned, tmp_path):
    gone = ("norm_out.linear.weight", "transformer_blocks.1.ff.net.2.bias")
    state = {k: v for k, v in finetuned.state.items() if k not in gone}
    folder = write_released(tmp_path / "dsd", finetuned, state=state)
    with pytest.raises(UserInputError, match="missing") as error:
        load_released(tiny_base, folder)
    assert all(key in str(error.value) for key in gone)


def test_unexpected_keys_are_named(tiny_base, finetuned, tmp_path):
    extra = {"transformer_blocks.7.attn.to_q.weight": torch.zeros(2, 2), "ip_adapter.proj.weight": torch.zeros(2, 2)}
    folder = write_released(tmp_path / "dsd", finetuned, state={**finetuned.state, **extra})
    with pytest.raises(UserInputError, match="unexpected") as error:
        load_released(tiny_base, folder)
    assert all(key in str(error.value) for key in extra)


def test_truncated_checkpoint_says_it_is_damaged(tiny_base, finetuned, tmp_path):
    folder = write_released(tmp_path / "dsd", finetuned)
    file = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size * 2 // 3])
    with pytest.raises(UserInputError, match="damaged, re-download") as error:
        load_released(tiny_base, folder)
    assert str(file) in str(error.value)


def test_missing_shard_is_named(tiny_base, finetuned, tmp_path):
    folder = write_released(tmp_path / "dsd", finetuned, "peft", shards=3)
    shard = folder / "transformer" / "diffusion_pytorch_model-00002-of-00003.safetensors"
    shard.unlink()
    with pytest.raises(UserInputError, match="re-download") as error:
        load_released(tiny_base, folder)
    assert shard.name in str(error.value)


def test_lora_for_layers_that_do_not_exist(tiny_base, finetuned, tmp_path):
    extra = {"transformer.transformer_blocks.9.attn.to_q.lora_A.weight": torch.zeros(RANK, 32),
             "transformer.transformer_blocks.9.attn.to_q.lora_B.weight": torch.zeros(32, RANK)}
    folder = write_released(tmp_path / "dsd", finetuned, lora={**finetuned.lora, **extra})
    with pytest.raises(UserInputError, match="match no layer") as error:
        load_released(tiny_base, folder)
    assert "transformer_blocks.9.attn.to_q.lora_A.weight" in str(error.value)


def test_lora_of_the_wrong_shape(tiny_base, finetuned, tmp_path):
    key = "transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight"
    folder = write_released(tmp_path / "dsd", finetuned, lora={**finetuned.lora, key: torch.zeros(RANK, 48)})
    with pytest.raises(UserInputError, match="single_transformer_blocks.0.attn.to_k.*wrong shape"):
        load_released(tiny_base, folder)


def test_released_folder_without_lora_file(tiny_base, finetuned, tmp_path):
    folder = write_released(tmp_path / "dsd", finetuned)
    (folder / LORA_FILE).unlink()
    with pytest.raises(UserInputError, match=f"lacks {LORA_FILE}"):
        load_released(tiny_base, folder)


def test_base_folder_without_vae(tiny_base, tmp_path):
    folder = tmp_path / "base"
    shutil.copytree(tiny_base, folder, ignore=shutil.ignore_patterns("vae"))
    with pytest.raises(UserInputError, match=r"lacks vae/.*FLUX\.1-dev"):
        load_generator(ModelSpec(base=str(folder)))


def test_dsd_folder_of_neither_layout(tiny_base, tmp_path):
    (tmp_path / "notes.txt").write_text("my weights")
    with pytest.raises(UserInputError, match="is not a DSD weights folder.*primecai/dsd_model"):
        load_released(tiny_base, tmp_path)


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An empty Hub cache and no token. huggingface_hub reads its environment once, at import (a user sets it
    before starting), so the module's constants are set along with the variables."""
    import huggingface_hub.constants as hub

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(hub, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    return hub


def test_hub_id_offline(no_network, monkeypatch, tiny_base):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(no_network, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError, match=r"cannot fetch DSD weights 'primecai/dsd_model'.*hf download primecai/dsd_model"):
        load_released(tiny_base, "primecai/dsd_model")
    with pytest.raises(UserInputError, match="cannot fetch base model 'black-forest-labs/FLUX.1-dev'"):
        load_generator(ModelSpec(base="black-forest-labs/FLUX.1-dev"))


def test_hub_id_with_unreachable_endpoint(no_network, monkeypatch, tiny_base):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(no_network, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(no_network, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(UserInputError, match=r"cannot fetch DSD weights 'primecai/dsd_model'.*hf download"):
        load_released(tiny_base, "primecai/dsd_model")


def test_path_that_is_neither_folder_nor_hub_id(tiny_base, tmp_path):
    with pytest.raises(UserInputError, match="neither a folder nor a Hugging Face Hub id"):
        load_generator(ModelSpec(base=str(tmp_path / "no" / "such" / "folder")))
    file = tmp_path / "dsd.safetensors"
    file.write_bytes(b"not a folder")
    with pytest.raises(UserInputError, match="neither a folder nor a Hugging Face Hub id"):
        load_released(tiny_base, file)
