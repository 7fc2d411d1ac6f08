"""The trainer on tiny models and a few real pairs: it learns, resumes exactly, and writes weights the generator loads."""

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pipeline.generation.weights import ModelSpec, load_generator
from train.config import RELEASED_TARGETS, TrainConfig
from train.trainer import Canvas, canvas_halves, flow_matching_loss, train

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
# The embedded default's base: the miniature's teacher, as the cpu-smoke preset names it.
MINI_TEACHER = Path(__file__).resolve().parents[2] / "assets" / "mini" / "teacher"
# The tiny bases are untrained, so the LoRA also adapts the MLPs and the output projections.
TINY_TARGETS = list(RELEASED_TARGETS) + ["proj_out", "norm_out.linear", "transformer_blocks.*.ff.net.0.proj",
                                         "transformer_blocks.*.ff.net.2", "single_transformer_blocks.*.proj_mlp",
                                         "single_transformer_blocks.*.proj_out"]


@pytest.fixture(scope="module")
def pairs() -> Path:
    """Three real pairs (crops of the example photos; assets/examples/README.md says how they were made)."""
    return Path(__file__).resolve().parents[2] / "assets" / "pairs" / "examples.parquet"


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    """A tiny base as wide as a packed latent token (64), trained on the three pairs until it fits them.
    (The embedded default is 32 wide: its patch embedding sees half of each token's 64 channels, so
    half of the velocity is out of its reach whatever is trained; its loss cannot fall below ~1/3.)"""
    from pipeline.generation.tiny_flux import TinyConfig, save_tiny_model

    folder = tmp_path_factory.mktemp("run")
    base = save_tiny_model(folder / "wide-base", TinyConfig(heads=4, head_dim=16))
    config = TrainConfig(data=str(pairs), base=str(base), out=str(folder / "run"), resolution=64, rank=64,
                         learning_rate=1e-2, steps=600, batch_size=3, condition_dropout=0, caption_dropout=0,
                         target_modules=TINY_TARGETS, sample_every=0, checkpoint_every=10_000)
    metrics = []
    weights = train(config, folder / "home", on_metrics=metrics.append).weights
    return config, weights, metrics, folder / "home"


def held_out_loss(transformer, config, home) -> tuple[float, float]:
    """The loss at fixed timesteps and noise (seeded), so before and after are comparable; and the loss of the
    best prediction that ignores the transformer's input on the same draws: the mean velocity target."""
    from train.trainer import cache_folder

    folder = cache_folder(config, home)
    examples = [torch.load(folder / f"{i}.pt") for i in range(3)]
    batch = {key: torch.stack([example[key] for example in examples]) for key in examples[0]}
    pipe_ids = load_generator(ModelSpec(base=config.base))
    with torch.no_grad():
        prompt, pooled, _ = pipe_ids.encode_prompt(prompt=[""], prompt_2=None, device="cpu")
    empty = {"prompt": prompt[0], "pooled": pooled[0]}
    latent = config.resolution // pipe_ids.vae_scale_factor
    ids = {"image": pipe_ids._prepare_latent_image_ids(1, latent // 2, latent, "cpu", torch.float32),
           "text": torch.zeros(empty["prompt"].shape[0], 3)}
    canvas = Canvas(canvas_halves(config.resolution, pipe_ids.vae_scale_factor), None, ids, mu=0.5)
    draws = []
    handle = transformer.register_forward_hook(
        lambda module, args, kwargs, output: draws.append((kwargs["hidden_states"], kwargs["timestep"])), with_kwargs=True)
    torch.manual_seed(1234)
    with torch.no_grad():
        losses = [flow_matching_loss(transformer, batch, empty, config, canvas)[0].item() for _ in range(20)]
    handle.remove()
    # x_t = (1 - s) x0 + s noise, so the velocity target noise - x0 is (x_t - x0) / s.
    targets = torch.stack([(noisy - batch["target"]) / sigma[:, None, None] for noisy, sigma in draws])
    blind = ((targets - targets.mean(dim=(0, 1), keepdim=True)) ** 2).mean().item()
    return sum(losses) / len(losses), blind


def test_loss_falls_on_the_training_pairs(trained):
    config, weights, metrics, home = trained
    assert [m["step"] for m in metrics] == list(range(1, config.steps + 1))
    after, blind = held_out_loss(load_generator(ModelSpec(base=config.base, dsd=str(weights))).transformer, config, home)
    # "Learnt nothing" is `blind`, the loss of the best prediction that ignores the input (about 1.09). The
    # untrained model is worse than that (1.52: its output is noise of its own), so the ratio before/after,
    # once the test, measured that noise too and moved with the machine (5.2x, 3.2x: the threshold went from
    # 4x to 2.5x). Half of the input-blind error gone is a margin of 2 from learning nothing; measured 0.27 of
    # it (the 5.2x machine); the 3.2x machine's run comes to about 0.44.
    assert after < blind / 2, (after, blind)


def test_trained_output_is_closer_to_the_target(trained, pairs):
    config, weights, _, _ = trained
    row = pq.read_table(pairs).to_pylist()[0]
    reference, target = (Image.open(io.BytesIO(row[key]["bytes"])) for key in ("conditioning", "image"))

    def distance(spec: ModelSpec) -> float:
        pipe = load_generator(spec)
        target_latents = pipe._unpack_latents(pipe.encode_canvas([reference], [target], 64, 64,
                                                                  generator=torch.Generator().manual_seed(0)), 64, 128, 8)
        out = pipe(reference, row["caption"], height=64, width=64, num_inference_steps=8, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
        return torch.mean((out - target_latents[..., 8:]) ** 2).item()

    trained_distance, base_distance = distance(ModelSpec(base=config.base, dsd=str(weights))), distance(ModelSpec(base=config.base))
    assert trained_distance < 0.7 * base_distance, (trained_distance, base_distance)


def test_unknown_target_modules_are_refused(pairs, tmp_path):
    from pipeline.errors import UserInputError

    config = TrainConfig(data=str(pairs), base=str(MINI_TEACHER), out=str(tmp_path / "run"), resolution=64, rank=4,
                         steps=1, target_modules=["no_such_layer"])
    with pytest.raises(UserInputError, match="match no layer"):
        train(config, tmp_path / "home")


def test_dsd_train_preset_runs_in_the_foreground_and_dsd_generate_uses_the_run(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    dsd = [sys.executable, "-m", "studio.cli"]
    home = str(tmp_path / "home")
    result = subprocess.run([*dsd, "train", "--preset", "cpu-smoke", "--home", home],
                            capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("run 1") and "step 40/40" in result.stdout and "weights written to" in result.stdout
    samples = sorted((tmp_path / "home" / "runs" / "1" / "samples").glob("step-*/*.png"))
    assert len(samples) == 4 and Image.open(samples[0]).size == (64, 64)  # 2 prompts at steps 20 and 40
    out = tmp_path / "out.png"
    result = subprocess.run([*dsd, "generate", "--image", str(EXAMPLES / "cat.jpg"), "--prompt", "the cat",
                             "--run", "1", "--size", "64", "--steps", "2", "--out", str(out), "--home", home],
                            capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(out).size == (64, 64)


def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, pairs):
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(f"data: {pairs}\nrank: 0\n")
    result = subprocess.run([sys.executable, "-m", "studio.cli", "train", "--config", str(tmp_path / "bad.yaml")],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 2 and "rank must be at least 1" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


class Crash(Exception):
    pass


def crash_after(step: int):
    def on_metrics(metrics: dict) -> None:
        if metrics["step"] > step:
            raise Crash(f"killed at step {metrics['step']}")

    return on_metrics


def test_a_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one(pairs, tmp_path):
    """Data order, noise, dropout, masking and the learning rate are functions of the step: cut a run
    after its step-3 checkpoint, resume it, and it ends bit for bit where the uninterrupted run does."""
    from dataclasses import replace

    from train.checkpoints import checkpoints

    config = TrainConfig(data=str(pairs), base=str(MINI_TEACHER), resolution=64, rank=4, learning_rate=1e-3, steps=6, batch_size=2,
                         warmup_steps=3, schedule="cosine", checkpoint_every=3, sample_every=0, condition_mask=0.5,
                         gradient_accumulation=2)
    straight = train(replace(config, out=str(tmp_path / "straight")), tmp_path / "home")
    cut = replace(config, out=str(tmp_path / "cut"))
    with pytest.raises(Crash):
        train(cut, tmp_path / "home", on_metrics=crash_after(4))
    assert [step for step, _ in checkpoints(tmp_path / "cut")] == [3]
    resumed = train(cut, tmp_path / "home")
    assert (resumed.step, straight.step) == (6, 6)
    for name in ("pytorch_lora_weights.safetensors", "condition_embedder.safetensors"):
        ours, theirs = load_file(resumed.weights / name), load_file(straight.weights / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours), name


def test_data_order_is_a_permutation_per_epoch_split_across_ranks(pairs):
    from train.trainer import DataOrder

    config = TrainConfig(data=str(pairs), batch_size=2, seed=5)
    ranks = [DataOrder(8, config, world=2, rank=r) for r in range(2)]
    # 2 ranks x batch 2 = 4 examples per micro-step: micro-steps 0-1 are the first epoch, 2-3 the second.
    epochs = [[index for micro in micros for order in ranks for index in order(micro)] for micros in ((0, 1), (2, 3))]
    assert all(sorted(epoch) == list(range(8)) for epoch in epochs) and epochs[0] != epochs[1]
    assert ranks[0](7) == DataOrder(8, config, world=2, rank=0)(7)  # a function of the step alone


def test_quadrant_masks_cover_the_reference_half_in_four_disjoint_parts():
    from train.trainer import quadrant_masks

    masks = quadrant_masks(64, 8)  # 4 x 8 tokens: the left panel is the first 4 columns of each row
    left = canvas_halves(64, 8)
    assert masks.shape == (4, left.numel())
    assert torch.equal(masks.sum(0).bool(), left) and int(masks.sum()) == int(left.sum())
    assert all(int(mask.sum()) == int(left.sum()) // 4 for mask in masks)
