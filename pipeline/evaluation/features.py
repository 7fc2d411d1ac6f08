"""Feature metrics of the DSD paper's Table 1: CLIP-I, CLIP-T and DINO (v1 and v2).

Every score is 100 x the cosine similarity of two embeddings, one float per pair:
- CLIP-I: CLIP image embeddings of the reference and the generated image;
- CLIP-T: CLIP image embedding of the generated image and text embedding of its prompt (prompts
  longer than CLIP's 77 tokens are truncated, as every CLIP-T implementation does);
- DINO v1: CLS token of `ViTModel`'s last hidden state (facebook/dino-vits8);
- DINO v2: `Dinov2Model`'s pooled output, its normalised CLS token (facebook/dinov2-small).

Models load from local checkpoint folders only, through the same `from_pretrained` a Hub download uses.
"""

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, Dinov2Model, ViTModel

from pipeline.errors import UserInputError

CLIP_ID = "openai/clip-vit-base-patch32"
DINO_IDS = {"v1": "facebook/dino-vits8", "v2": "facebook/dinov2-small"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

Pair = tuple[Image.Image, Image.Image]


def check_checkpoint(folder: str | Path, model_type: str, hub_id: str, what: str) -> Path:
    """`folder` as a Path if it holds a `model_type` checkpoint; otherwise say what to download."""
    folder = Path(folder).expanduser()
    hint = f"download it with `hf download {hub_id} --local-dir {folder}` and pass that folder"
    if not folder.is_dir():
        raise UserInputError(f"{what} folder {folder} does not exist: {hint}")
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        raise UserInputError(f"{folder} is not a {what} checkpoint (no readable config.json): {hint}") from None
    if found != model_type:
        raise UserInputError(f"{folder} holds a {found!r} model, not a {what} checkpoint ({model_type}): {hint}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise UserInputError(f"{folder} has no model weights: {hint}")
    if not (folder / "preprocessor_config.json").is_file():
        raise UserInputError(f"{folder} has no preprocessor_config.json (the image processor): {hint}")
    return folder


def load_pretrained(loader, folder: Path, hub_id: str, **kwargs):
    """`loader(folder)`, with a failure to read the folder as one line that says what to do."""
    try:
        return loader(folder, **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserInputError(
            f"cannot load {folder} ({reason}): re-download it with `hf download {hub_id} --local-dir {folder}`"
        ) from None


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    if size < 1:
        raise UserInputError(f"batch size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def cosine_scores(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return (100 * torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)).tolist()


class ImageEmbedder:
    """A model that maps a batch of PIL images to one embedding each, through its own image processor."""

    def __init__(self, model: torch.nn.Module, processor, device: str):
        self.model, self.processor, self.device = model.eval().to(device), processor, device

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        # Processors without `do_convert_rgb` (ViT's, DINOv2's) choke on grey or RGBA pictures.
        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        return inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def pair_scores(self, pairs: Sequence[Pair], batch_size: int = 32) -> list[float]:
        """100 x cosine of the embeddings of each (reference, generated) pair."""
        scores = []
        for batch in batches(pairs, batch_size):
            embeddings = self.embed([image for pair in batch for image in pair])
            scores += cosine_scores(embeddings[0::2], embeddings[1::2])
        return scores


class CLIPMetrics(ImageEmbedder):
    """CLIP-I (`image_scores`) and CLIP-T (`text_scores`) from a CLIP checkpoint folder."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        folder = check_checkpoint(folder, "clip", CLIP_ID, "CLIP")
        super().__init__(
            load_pretrained(CLIPModel.from_pretrained, folder, CLIP_ID),
            load_pretrained(AutoImageProcessor.from_pretrained, folder, CLIP_ID),
            device,
        )
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, folder, CLIP_ID)
        self.max_tokens = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.model.get_image_features(pixel_values=self.pixels(images)).pooler_output

    def image_scores(self, pairs: Sequence[Pair], batch_size: int = 32) -> list[float]:
        """CLIP-I: one score per (reference, generated) pair."""
        return self.pair_scores(pairs, batch_size)

    @torch.inference_mode()
    def text_scores(self, prompts: Sequence[str], images: Sequence[Image.Image], batch_size: int = 32) -> list[float]:
        """CLIP-T: one score per (prompt, generated image)."""
        if len(prompts) != len(images):
            raise UserInputError(f"CLIP-T needs one prompt per image: got {len(prompts)} prompts, {len(images)} images")
        scores = []
        for batch in batches(list(zip(prompts, images)), batch_size):
            tokens = self.tokenizer(
                [prompt for prompt, _ in batch], padding=True, truncation=True,
                max_length=self.max_tokens, return_tensors="pt",
            ).to(self.device)
            texts = self.model.get_text_features(**tokens).pooler_output
            scores += cosine_scores(self.embed([image for _, image in batch]), texts)
        return scores


class DINOMetric(ImageEmbedder):
    """DINO v1 or v2 image similarity (`pair_scores`) from a checkpoint folder."""

    def __init__(self, folder: str | Path, version: str = "v1", device: str = "cpu"):
        if version not in DINO_IDS:
            raise UserInputError(f"unknown DINO version {version!r}: use v1 or v2")
        hub_id = DINO_IDS[version]
        model_type, loader, kwargs = {
            # DINO v1 checkpoints carry no pooler: the CLS token is the embedding.
            "v1": ("vit", ViTModel.from_pretrained, {"add_pooling_layer": False}),
            "v2": ("dinov2", Dinov2Model.from_pretrained, {}),
        }[version]
        folder = check_checkpoint(folder, model_type, hub_id, f"DINO {version}")
        self.version = version
        super().__init__(
            load_pretrained(loader, folder, hub_id, **kwargs),
            load_pretrained(AutoImageProcessor.from_pretrained, folder, hub_id),
            device,
        )

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        output = self.model(pixel_values=self.pixels(images))
        return output.last_hidden_state[:, 0] if self.version == "v1" else output.pooler_output
