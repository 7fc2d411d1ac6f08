"""CLIP-I, CLIP-T and DINO on tiny random models built in code, loaded from saved folders."""

import math
from pathlib import Path

import pytest
import torch
from transformers import (
    BitImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from pipeline.errors import UserInputError
from pipeline.evaluation.features import CLIPMetrics, DINOMetric
from pipeline.generation.tiny_flux import WORDS, build_tokenizers

VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny CLIP, DINO v1 (ViT) and DINO v2 folders in the layouts `hf download` gives."""
    root = tmp_path_factory.mktemp("features")
    torch.manual_seed(0)
    folders = {name: root / name for name in ("clip", "v1", "v2")}

    tokenizer, _ = build_tokenizers(root / "vocab")
    clip = CLIPModel(CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(VISION, intermediate_size=64),
        projection_dim=16,
    ))
    clip.save_pretrained(folders["clip"])
    tokenizer.save_pretrained(folders["clip"])
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folders["clip"])

    ViTModel(ViTConfig(**VISION, intermediate_size=64), add_pooling_layer=False).save_pretrained(folders["v1"])
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folders["v1"])

    Dinov2Model(Dinov2Config(**VISION, mlp_ratio=2)).save_pretrained(folders["v2"])
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folders["v2"])
    return folders


@pytest.fixture(scope="module")
def clip(checkpoints) -> CLIPMetrics:
    return CLIPMetrics(checkpoints["clip"])


@pytest.fixture(scope="module", params=["v1", "v2"])
def dino(request, checkpoints) -> DINOMetric:
    return DINOMetric(checkpoints[request.param], version=request.param)


@pytest.fixture(scope="module")
def pairs(references) -> list:
    """Each picture against itself, then each against the next one."""
    pictures = list(references.values())
    rolled = pictures[1:] + pictures[:1]
    return [(p, p) for p in pictures] + list(zip(pictures, rolled))


def check_pair_scores(scores: list[float], count: int) -> None:
    assert len(scores) == 2 * count
    assert scores[:count] == pytest.approx([100.0] * count, abs=1e-3)
    assert all(score < 99.99 for score in scores[count:])


def test_clip_i_scores_an_image_against_itself_100_and_different_pictures_lower(clip, pairs, references):
    check_pair_scores(clip.image_scores(pairs, batch_size=4), len(references))


def test_dino_scores_an_image_against_itself_100_and_different_pictures_lower(dino, pairs, references):
    check_pair_scores(dino.pair_scores(pairs, batch_size=4), len(references))


def test_grey_and_rgba_pictures_are_converted_to_rgb(dino, clip, references):
    picture, grey = references["cat"], references["cat"].convert("L")
    for metric in (dino, clip):
        scores = metric.pair_scores([(picture.convert("RGBA"), picture), (grey, grey), (grey, picture)])
        assert scores[:2] == pytest.approx([100.0, 100.0], abs=1e-3)
        assert scores[2] < 99.99


def test_batch_size_does_not_change_scores_or_their_order(clip, dino, pairs):
    assert clip.image_scores(pairs, batch_size=1) == pytest.approx(clip.image_scores(pairs, batch_size=3), abs=1e-4)
    assert dino.pair_scores(pairs, batch_size=1) == pytest.approx(dino.pair_scores(pairs, batch_size=3), abs=1e-4)
    # Order: scoring the pairs reversed gives the scores reversed.
    assert dino.pair_scores(pairs[::-1], batch_size=3) == pytest.approx(dino.pair_scores(pairs, batch_size=3)[::-1], abs=1e-4)


def test_clip_t_truncates_long_prompts_and_batches_like_single_calls(clip, references):
    images = list(references.values())
    long_prompt = " ".join(WORDS[i % len(WORDS)] for i in range(300))
    prompts = ["a photo of a cat", long_prompt, "an astronaut riding a horse in space"][: len(images)]
    batched = clip.text_scores(prompts, images, batch_size=3)
    single = clip.text_scores(prompts, images, batch_size=1)
    assert len(batched) == len(images)
    assert all(math.isfinite(score) and -100 <= score <= 100 for score in batched)
    assert batched == pytest.approx(single, abs=1e-4)
    assert len(clip.tokenizer(long_prompt, verbose=False)["input_ids"]) > 77  # the prompt really was over the limit
    with pytest.raises(UserInputError, match="one prompt per image"):
        clip.text_scores(prompts[:1], images)


@pytest.mark.parametrize("make", [
    lambda folders, tmp: CLIPMetrics(tmp / "missing"),
    lambda folders, tmp: CLIPMetrics(tmp),
    lambda folders, tmp: CLIPMetrics(folders["v1"]),
    lambda folders, tmp: DINOMetric(folders["clip"], version="v2"),
    lambda folders, tmp: DINOMetric(folders["v2"], version="v1"),
])
def test_a_folder_that_is_not_the_checkpoint_says_what_to_download(make, checkpoints, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UserInputError) as error:
        make(checkpoints, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "hf download " in message and "--local-dir" in message


def test_damaged_weights_give_one_line_saying_to_redownload(checkpoints, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for file in checkpoints["clip"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserInputError, match="hf download openai/clip-vit-base-patch32") as error:
        CLIPMetrics(folder)
    assert "\n" not in str(error.value)


# --- Against the models' own outputs, and on real pictures ------------------------------------------


def cosine_100(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return (100 * (a / a.norm(dim=-1, keepdim=True) * (b / b.norm(dim=-1, keepdim=True))).sum(-1)).tolist()


def test_scores_are_the_cosines_of_the_models_own_embeddings(checkpoints, clip, references):
    """Each metric against the transformers model called directly on the same pixels: DINO v1 scores the CLS
    token of the last hidden state, DINO v2 its pooled output (the layer-normed CLS token), CLIP-I the
    projected image embeddings and CLIP-T the model's own image-text logits over its logit scale."""
    pictures = list(references.values())
    pairs = list(zip(pictures, pictures[1:] + pictures[:1]))
    for version, model_class, processor_class in (("v1", ViTModel, ViTImageProcessor), ("v2", Dinov2Model, BitImageProcessor)):
        folder = checkpoints[version]
        model = model_class.from_pretrained(folder, **({"add_pooling_layer": False} if version == "v1" else {})).eval()
        pixels = processor_class.from_pretrained(folder)(images=pictures, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            cls = model(pixel_values=pixels).last_hidden_state[:, 0]
        expected = cosine_100(cls, cls.roll(-1, 0))
        assert DINOMetric(folder, version=version).pair_scores(pairs) == pytest.approx(expected, abs=1e-3), version

    model = CLIPModel.from_pretrained(checkpoints["clip"]).eval()
    prompts = ["a photo of an astronaut", "a cat in a garden", "a cup of coffee"][: len(pictures)]
    tokens = clip.tokenizer(prompts, padding=True, return_tensors="pt")
    pixels = CLIPImageProcessor.from_pretrained(checkpoints["clip"])(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        output = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    assert clip.image_scores(pairs) == pytest.approx(cosine_100(output.image_embeds, output.image_embeds.roll(-1, 0)), abs=1e-3)
    text_expected = (100 * output.logits_per_image.diagonal() / model.logit_scale.exp()).tolist()
    assert clip.text_scores(prompts, pictures) == pytest.approx(text_expected, abs=1e-3)


def test_a_view_of_the_same_photo_scores_above_another_photo(clip, dino, references):
    """The ordering an untrained network keeps, being continuous: the photo against itself shifted by 4%
    (about one patch) scores above it against either other photo, for every metric and every photo. A metric
    that pairs the wrong pictures, or reads a token that does not follow the input, breaks it."""
    for name, picture in references.items():
        width, height = picture.size
        view = picture.crop((int(width * 0.04), int(height * 0.04), width, height))
        others = [other for other_name, other in references.items() if other_name != name]
        for scores in (clip.image_scores([(picture, view)] + [(picture, other) for other in others]),
                       dino.pair_scores([(picture, view)] + [(picture, other) for other in others])):
            assert scores[0] > max(scores[1:]), (name, scores)
