"""Memory modes on the tiny model: quantised weights with the DSD weights in them, offloading, `auto`, and the
memory table of FLUX.1-dev computed on the meta device.

Pictures are compared by PSNR against the full-precision (fp32, CPU) picture of the same seed, pixels in 0..1.
"""

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import UserInputError
from pipeline.generation.memory import MODES, check_runs_here, load_in_mode, pick_auto, place
from pipeline.generation.memory_table import GIB, Footprint, flux_on_meta, memory_rows, weight_bytes
from pipeline.generation.weights import ModelSpec, load_generator, save_dsd_weights
from tests.pipeline.generation.test_weights import as_if_trained, finetuned, write_released  # noqa: F401 (a fixture)

# int8 weight-only rounds each weight to 1/254 of its row's largest: on the tiny model the picture moves by
# 65-80 dB PSNR, where leaving out the DSD weights (LoRA and condition embedder) gives 21-25 dB. 40 dB (an RMS
# error of 1% of the range, invisible) sits between, so it passes rounding and fails a weight that did not apply.
CLOSE_DB = {"int8": 40.0, "fp8": 30.0, "int4": 25.0, "int8_offload": 40.0, "int4_offload": 25.0}
EXACT = ("model_offload", "group_offload", "sequential_offload", "gpu")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / max(np.mean((a - b) ** 2), 1e-20)))


def draw(pipe, reference, **options) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(reference, "a photo of the same cat on a beach", height=64, width=64, num_inference_steps=3,
                generator=torch.Generator().manual_seed(0), output_type="np", **options).images[0]


@pytest.fixture(scope="module")
def dsd_weights(tiny_base, finetuned, tmp_path_factory) -> dict[str, ModelSpec]:  # noqa: F811
    """The released layout (fine-tuned transformer + LoRA) and our training format (LoRA + condition embedder)."""
    root = tmp_path_factory.mktemp("weights")
    trained = as_if_trained(tiny_base)
    return {
        "released": ModelSpec(base=str(tiny_base), dsd=str(write_released(root / "released", finetuned))),
        "ours": ModelSpec(base=str(tiny_base), dsd=str(save_dsd_weights(trained, root / "ours"))),
    }


@pytest.mark.parametrize("layout", ["released", "ours"])
def test_int8_carries_the_dsd_weights_and_draws_close_to_full_precision(layout, dsd_weights, references):
    spec = dsd_weights[layout]
    full = load_generator(spec)
    quantised, used, note = load_in_mode(spec, "int8")
    assert (used, note) == ("int8", None)
    blocks = quantised.transformer.transformer_blocks[0].attn
    assert type(blocks.to_q.weight).__name__ == "Int8Tensor", "the fused block weights are stored in int8"
    assert type(quantised.text_encoder_2.encoder.block[0].layer[0].SelfAttention.q.weight).__name__ == "Int8Tensor"
    # The condition embedder is not rounded: it is exactly what was loaded.
    assert torch.equal(quantised.transformer.c_embedder.weight, full.transformer.c_embedder.weight)
    assert full.transformer.c_embedder.weight.any()

    cat = references["cat"]
    expected, got = draw(full, cat), draw(quantised, cat)
    without_dsd = draw(load_generator(ModelSpec(base=spec.base)), cat)
    print(f"{layout}: int8 {psnr(got, expected):.1f} dB, without the DSD weights {psnr(without_dsd, expected):.1f} dB")
    assert psnr(got, expected) > CLOSE_DB["int8"]
    assert psnr(without_dsd, expected) < 30, "the DSD weights change the picture, so closeness means they applied"


@pytest.mark.parametrize("name", [name for name in MODES if name not in ("cpu", "int8")])
def test_gpu_modes_draw_close_to_bf16(name, dsd_weights, references):
    """Runs where CUDA is (the GPU benchmark's machine); here each says why it cannot run."""
    mode = MODES[name]
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="needs a CUDA GPU"):
            check_runs_here(mode)
        pytest.skip(f"{name} needs a CUDA GPU ({mode.summary})")
    if torch.cuda.get_device_capability() < mode.capability:
        pytest.skip(f"{name} needs compute capability {mode.capability}")
    spec = replace(dsd_weights["released"], dtype="bf16")
    reference, _, _ = load_in_mode(spec, "gpu")
    if mode.vae_tiling:  # the tiny VAE tiles even 64 px canvases (its own size is 32 px)
        reference.vae.enable_tiling()
    expected = draw(reference, references["cat"])
    pipe, _, _ = load_in_mode(spec, name)
    got = draw(pipe, references["cat"])
    assert psnr(got, expected) > CLOSE_DB.get(name, 45.0)


def test_group_offloading_hooks_leave_the_picture_unchanged(dsd_weights, references):
    """diffusers' group offloading (transformer by blocks, encoders by layers) run on the CPU: the hooks wrap
    DSD's transformer and both encoders without changing a pixel (the VAE tiles in this mode, so both do),
    also under a step cache's hooks with true guidance's passes."""
    spec = dsd_weights["released"]
    plain = load_generator(spec)
    plain.vae.enable_tiling()
    grouped = load_generator(spec)
    place(grouped, MODES["group_offload"], "cpu")
    assert np.array_equal(draw(grouped, references["cat"]), draw(plain, references["cat"]))
    options = {"cache": "fbc:0.08", "image_guidance_scale": 1.5}
    assert np.array_equal(draw(grouped, references["cat"], **options), draw(plain, references["cat"], **options))


def test_a_mode_this_machine_cannot_run_says_what_to_pick(tiny_base):
    with pytest.raises(UserInputError, match="unknown memory mode 'int3'.*auto, gpu"):
        load_in_mode(ModelSpec(base=str(tiny_base)), "int3")
    if not torch.cuda.is_available():
        assert check_runs_here(MODES["int8"]) == "cpu"
        with pytest.raises(UserInputError, match="group_offload needs a CUDA GPU .*use cpu, int8"):
            load_in_mode(ModelSpec(base=str(tiny_base)), "group_offload")


# --- What each mode needs, computed ----------------------------------------------------------------


@pytest.fixture(scope="module")
def flux() -> Footprint:
    return Footprint.of(flux_on_meta())


def test_flux_parameters_are_the_real_models(flux):
    # FLUX.1-dev's transformer (11,901,408,320) plus DSD's condition embedder (64 x 3072 + 3072).
    assert flux.parameters == {"transformer": 11_901_408_320 + 199_680, "text_encoder": 123_060_480,
                               "text_encoder_2": 4_762_310_656, "vae": 83_819_683}
    assert flux.bytes["transformer"]["bf16"] == 2 * flux.parameters["transformer"]


def test_the_targets_are_met_by_modes_that_stay_close_to_bf16(flux):
    rows = {row["mode"]: row for row in memory_rows(flux, MODES.values())}
    close = ("model_offload", "group_offload", "sequential_offload", "int8", "int8_offload")
    assert [m for m in close if rows[m][1024] <= 16 * GIB] == ["group_offload", "sequential_offload", "int8_offload"]
    assert [m for m in close if rows[m][512] <= 12 * GIB] == ["group_offload", "sequential_offload"]
    assert rows["gpu"][1024] > rows["int8"][1024] > rows["int8_offload"][1024] > rows["int4_offload"][1024]


def test_auto_picks_the_best_mode_that_fits(flux):
    needs = {name: flux.peak(MODES[name], 512, 512) for name in MODES if name != "cpu"}
    assert pick_auto(needs, 80 * GIB, "H100")[0] == "gpu"
    assert pick_auto(needs, 23 * GIB, "RTX 4090")[0] == "int8"
    assert pick_auto(needs, 15.5 * GIB, "RTX 4080")[0] == "int8_offload"
    name, note = pick_auto(needs, 11.5 * GIB, "RTX 3060")
    assert name == "group_offload" and "11.5 GiB free on RTX 3060" in note and "group_offload" in note


def test_int8_storage_rule_matches_torchao(tiny_base):
    """The table sizes int8 layers by rule; the rule is what torchao really stores."""
    pipe = load_generator(ModelSpec(base=str(tiny_base)))
    rule = Footprint.of({n: getattr(pipe, n) for n in ("transformer", "text_encoder", "text_encoder_2", "vae")},
                        dtype_bytes=4).bytes
    place(pipe, MODES["int8"], "cpu")

    def stored(tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            return sum(stored(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)
        return tensor.numel() * tensor.element_size()

    assert sum(stored(p) for p in pipe.transformer.parameters()) == rule["transformer"]["int8"]
    assert sum(stored(p) for p in pipe.text_encoder_2.parameters()) == rule["text_encoder_2"]["int8"]
    assert weight_bytes(pipe.vae, dtype_bytes=4) == rule["vae"]["bf16"]


def bench(name: str):
    """A script of bench/ as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[3] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_memory_table_names_what_reaches_the_targets(flux):
    text = bench("bench_memory").tables(flux)
    assert text in (Path(__file__).resolve().parents[3] / "README.md").read_text(), "the README shows this table"
    assert "| T5-XXL encoder | 4,762,310,656 | 8.87 | 4.56 |" in text
    assert "| group_offload | same as bf16 | 2.9 | 3.7 | 512 px in 12 GB, 1024 px in 16 GB |" in text
    assert "| int8_offload | int8 weights: close to bf16 | 12.7 | 13.5 | 1024 px in 16 GB |" in text


def test_the_gpu_benchmark_runs_its_matrix_on_the_tiny_model(tmp_path):
    """On a CPU the GPU benchmark runs the modes this machine has on the tiny model: every mode and setting
    is a row, and the default setting sits beside stock FluxPipeline at the same size."""
    out = tmp_path / "table.md"
    bench("bench_gpu").main(["--in-process", "--modes", "cpu", "int8", "--settings", "none|all", "fbc:0.08|all",
                             "--steps", "1", "--out", str(out)])
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith(("| cpu", "| int8"))]
    assert [(row[0], row[2]) for row in rows] == [("| cpu", "none, all"), ("| cpu", "fbc:0.08, all"),
                                                  ("| int8", "none, all"), ("| int8", "fbc:0.08, all")]
    for row in rows:
        assert float(row[3]) > 0 and float(row[4]) > 0
        assert (row[5] != "") == (row[2] == "none, all"), "stock FLUX beside the default setting"


def test_auto_says_what_it_picked(tiny_base):
    pipe, used, note = load_in_mode(ModelSpec(base=str(tiny_base)), "auto")
    if not torch.cuda.is_available():
        assert (used, note) == ("cpu", None)
        return
    assert used == "gpu" and note.startswith("memory mode auto picked gpu"), "the tiny model fits anywhere"
    assert pipe.transformer.device.type == "cuda"
