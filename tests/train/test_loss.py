"""The training objective against hand computations: the flow-matching loss over both halves with their
weights, the noise levels the generator's schedule uses, and condition and caption dropout producing the
"no image" and "no text" inputs that the generator's guidance passes give the transformer.

The transformer is the tests' tiny model (`assets/tiny-dsd`), loaded as the trainer loads it; its
inputs and outputs are read with forward hooks, and the hand computations use only those and the batch."""

import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from pipeline.generation.weights import ModelSpec, load_generator
from pipeline.images import load_image
from train.config import TrainConfig
from train.trainer import build_pipeline, flow_matching_loss, prepare_data, train

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "assets" / "tiny-dsd"
PAIRS = ROOT / "assets" / "pairs" / "examples.parquet"
RESOLUTION = 64  # a 64x128 canvas: 4 rows of 8 packed tokens (8x VAE, 2x2 patches)
ROWS, COLUMNS = 4, 8


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


class Captured(Exception):
    """Raised by a pre-hook once the transformer's inputs are read: the forward itself is not needed."""


def capture_inputs(transformer, into: list, stop: bool = True):
    def hook(module, args, kwargs):
        into.append({key: value for key, value in kwargs.items() if isinstance(value, torch.Tensor)})
        if stop:
            raise Captured

    return transformer.register_forward_pre_hook(hook, with_kwargs=True)


def binomial_ok(count: int, draws: int, p: float) -> bool:
    """Within 4 binomial standard deviations of the expected count: a correct rate fails about 1 run in
    16,000; a rate off by 0.1 over 1,200 draws lies 7 deviations or more away."""
    return abs(count - draws * p) <= 4 * math.sqrt(draws * p * (1 - p))


@pytest.fixture(scope="module")
def trainer_side(tmp_path_factory):
    """The trainer's own pipeline (LoRA added) and training data on the three example pairs."""
    config = TrainConfig(data=str(PAIRS), base=str(TINY), resolution=RESOLUTION, rank=4, batch_size=3,
                         condition_dropout=0.3, caption_dropout=0.2, sample_count=0)
    accelerator = Accelerator(cpu=True)
    pipe = build_pipeline(config, accelerator)
    data = prepare_data(pipe, config, tmp_path_factory.mktemp("home"), accelerator)
    return config, pipe, data


def test_the_loss_is_the_weighted_flow_matching_error_of_both_halves(trainer_side):
    """By hand from the transformer's own input and output: the noisy input lies on the straight line from
    the clean latents to fresh Gaussian noise at the level the transformer is told, the target is
    noise - clean, and the loss weighs the mean squared error of the left (reference) and right (target)
    halves of the canvas 3:1, as configured."""
    config, pipe, data = trainer_side
    config = TrainConfig(**{**config.__dict__, "condition_dropout": 0.0, "caption_dropout": 0.0,
                            "half_weights": (3.0, 1.0)})
    draw = torch.Generator().manual_seed(0)
    batch = {key: value.clone() for key, value in data.batch(0, "cpu").items()}
    batch["target"] = 2 * torch.randn(batch["target"].shape, generator=draw)  # far from unit noise, on purpose
    seen = []

    def keep(module, args, kwargs, output):
        seen.append((kwargs["hidden_states"], kwargs["timestep"], output[0]))

    handle = pipe.transformer.register_forward_hook(keep, with_kwargs=True)
    try:
        loss, left, right = flow_matching_loss(pipe.transformer, batch, data.empty, config, data.canvas,
                                               torch.Generator().manual_seed(1))
    finally:
        handle.remove()
    ((noisy, sigma, prediction),) = seen
    x0 = batch["target"]
    s = sigma[:, None, None]
    noise = (noisy - (1 - s) * x0) / s
    # Each item's noise is unit Gaussian and unrelated to its latents: its mean, standard deviation and correlation
    # with the latents within 5 standard errors (1/sqrt(n), 1/sqrt(2n), 1/sqrt(n)) of 0, 1 and 0.
    for item in range(x0.shape[0]):
        n = noise[item].flatten()
        assert abs(n.mean().item()) < 5 / math.sqrt(n.numel()) and abs(n.std().item() - 1) < 5 / math.sqrt(2 * n.numel())
        assert abs(torch.corrcoef(torch.stack([n, x0[item].flatten()]))[0, 1].item()) < 5 / math.sqrt(n.numel())
    error = ((prediction - (noise - x0)) ** 2).mean(dim=-1)  # per token
    on_left = torch.arange(ROWS * COLUMNS) % COLUMNS < COLUMNS // 2  # row-major tokens: left half of each row
    hand_left, hand_right = error[:, on_left].mean(), error[:, ~on_left].mean()
    torch.testing.assert_close((left, right), (hand_left, hand_right), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss, (3 * hand_left + hand_right) / 4, rtol=1e-4, atol=1e-6)
    assert abs(hand_left - hand_right) > 0.01 * hand_right, "halves that differ, so their weights matter"


def test_noise_levels_follow_the_generators_schedule(trainer_side):
    """Levels are logit-normal, then shifted as the generator's scheduler shifts its schedule for this
    canvas: the share of training levels below the generator's shifted level for an unshifted level p is
    P(sigmoid(N(0,1)) <= p) = Phi(logit p). (No weight per level follows: the test above holds the loss to the
    plain mean over items and tokens.)"""
    config, _, data = trainer_side
    config = TrainConfig(**{**config.__dict__, "condition_dropout": 0.0, "caption_dropout": 0.0})
    generator_pipe = load_generator(ModelSpec(base=str(TINY)))
    generator_pipe.schedule(4, ROWS * COLUMNS, "cpu")  # unshifted levels 1, 0.75, 0.5, 0.25
    shifted = generator_pipe.scheduler.sigmas[1:4].tolist()
    # The shift itself, exactly: FLUX's shift maps p to p' with 1/p' - 1 = exp(-mu) (1/p - 1), so the
    # generator's schedule names its mu, and training must draw with the same one (on a canvas this small
    # the shift is near its base value, which the counts below could not tell from the right one).
    for p, level in zip((0.75, 0.5, 0.25), shifted):
        assert math.log((1 / p - 1) / (1 / level - 1)) == pytest.approx(data.canvas.mu, abs=1e-5), (p, level)
    draws = 2000
    x0 = torch.zeros(draws, ROWS * COLUMNS, 64)
    batch = {"target": x0, "condition": x0, "prompt": data.empty["prompt"].expand(draws, -1, -1),
             "pooled": data.empty["pooled"].expand(draws, -1)}
    seen = []
    handle = capture_inputs(generator_pipe.transformer, seen)
    with pytest.raises(Captured):
        flow_matching_loss(generator_pipe.transformer, batch, data.empty, config, data.canvas,
                           torch.Generator().manual_seed(2))
    handle.remove()
    levels = seen[0]["timestep"]
    for p, level in zip((0.75, 0.5, 0.25), shifted):
        expected = normal_cdf(math.log(p / (1 - p)))
        assert binomial_ok(int((levels <= level).sum()), draws, expected), (p, level, float((levels <= level).float().mean()))


def test_dropout_rates_and_the_inputs_they_give_are_the_generators_unconditional_ones(trainer_side):
    """Over 1,200 items the condition is dropped at 0.3 and the caption at 0.2 (binomial tolerance). A
    dropped condition is all zeros and a dropped caption is the empty prompt's embedding: exactly what the
    generator feeds its "no image" and "no text" guidance passes, which is what makes those passes mean
    anything at inference."""
    config, pipe, data = trainer_side
    batch = data.batch(0, "cpu")
    copies = 400
    big = {key: value.repeat(copies, *([1] * (value.dim() - 1))) for key, value in batch.items()}
    draws = 3 * copies
    seen = []
    handle = capture_inputs(pipe.transformer, seen)
    with pytest.raises(Captured):
        flow_matching_loss(pipe.transformer, big, data.empty, config, data.canvas, torch.Generator().manual_seed(3))
    handle.remove()
    condition, prompt = seen[0]["cond_hidden_states"], seen[0]["encoder_hidden_states"]
    zero = (condition == 0).flatten(1).all(1)
    kept_condition = (condition == big["condition"]).flatten(1).all(1)
    assert bool((zero | kept_condition).all()), "a condition is either whole or all zeros"
    empty_prompt = (prompt == data.empty["prompt"]).flatten(1).all(1)
    assert bool((empty_prompt | (prompt == big["prompt"]).flatten(1).all(1)).all())
    assert binomial_ok(int(zero.sum()), draws, config.condition_dropout), int(zero.sum())
    assert binomial_ok(int(empty_prompt.sum()), draws, config.caption_dropout), int(empty_prompt.sum())

    # The generator's three guidance passes on a real picture: (no text, no image), (no text, image), (text, image).
    generator_pipe = load_generator(ModelSpec(base=str(TINY)))
    generator_pipe.set_progress_bar_config(disable=True)
    passes = []
    handle = capture_inputs(generator_pipe.transformer, passes, stop=False)
    generator_pipe(load_image(ROOT / "assets" / "examples" / "cat.jpg"), "a cat in the snow", height=RESOLUTION, width=RESOLUTION, num_inference_steps=1,
                   image_guidance_scale=1.5, text_guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    handle.remove()
    chunks = [{key: passes[0][key].chunk(3)[k] for key in ("cond_hidden_states", "encoder_hidden_states")} for k in range(3)]
    without_image = [c for c in chunks if bool((c["cond_hidden_states"] == 0).all())]
    without_text = [c for c in chunks if torch.allclose(c["encoder_hidden_states"][0], data.empty["prompt"], atol=1e-6)]
    assert len(without_image) == 1 and len(without_text) == 2, "one pass without the image, two without the text"
    assert any(c is without_image[0] for c in without_text), "the pass without the image has no text either"


def test_the_trainer_learns_from_the_halves_it_is_configured_to(tmp_path):
    """One step of `train` with half weights (1, 0) and (0, 1) from the same start, data and noise: the
    reported loss is the weighted mean of the reported halves, and the weights it learns differ."""
    runs = {}
    for weights in ((1.0, 0.0), (0.0, 1.0)):
        config = TrainConfig(data=str(PAIRS), base=str(TINY), out=str(tmp_path / str(weights)), resolution=RESOLUTION,
                             rank=4, learning_rate=1e-3, steps=1, batch_size=3, half_weights=weights, sample_count=0,
                             condition_dropout=0, caption_dropout=0)
        metrics = []
        result = train(config, tmp_path / "home", on_metrics=metrics.append)
        (step,) = metrics
        assert step["loss"] == pytest.approx(weights[0] * step["loss_reference"] + weights[1] * step["loss_target"])
        runs[weights] = (step, load_file(result.weights / "pytorch_lora_weights.safetensors"))
    (first, first_lora), (second, second_lora) = runs.values()
    assert (first["loss_reference"], first["loss_target"]) == (second["loss_reference"], second["loss_target"])
    assert first_lora.keys() == second_lora.keys()
    assert any(not torch.equal(first_lora[key], second_lora[key]) for key in first_lora), "the same step whatever the weights"
