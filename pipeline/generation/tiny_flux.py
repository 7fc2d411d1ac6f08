"""Tiny FLUX-architecture components built in code: the tests' models and the miniature's teacher.

Nothing here downloads anything. The components have FLUX's real classes and layout (a VAE with
8x compression and 16 latent channels, CLIP-L and T5 encoders, the DSD transformer), only narrow,
so a saved folder loads through the same `from_pretrained` code as FLUX.1-dev. `python -m
pipeline.generation.tiny_flux assets/tiny-dsd` writes the tests' untrained tiny model.
"""

import json
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from pipeline.generation.model import DSDTransformer2DModel

# A small English vocabulary: enough for prompts to map to distinct tokens.
WORDS = """a an the of in on at to with and or by from for as is are this that it its his her their
photo picture image portrait painting drawing sketch render illustration poster sticker logo
same subject character person man woman girl boy child baby face smile hair eyes hat glasses
dog cat bird horse fox bear rabbit duck fish lion tiger owl frog monkey panda robot toy doll
car bike boat plane train house tree flower cup mug bottle chair table lamp book bag shoe watch
red orange yellow green blue purple pink brown black white gray golden silver dark bright
small big tall short old young happy sad cute new wooden metal glass plastic stone soft
light lighting lit sunlight sunset sunrise moonlight neon candle shadow warm cold studio
left right top bottom front back side above below behind under near inside outside center
forest beach city street park mountain river sea snow rain desert room kitchen garden space
sitting standing running walking jumping flying sleeping eating reading holding wearing
make turn change put add remove give it into like style anime cartoon watercolor oil pixel
grid panel panels showing different pose poses view angle close up wide shot camera scene
background foreground sky clouds night day morning evening winter summer autumn spring
""".split()


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of a tiny FLUX. The defaults are the tests' model in `assets/tiny-dsd`."""

    layers: int = 2
    single_layers: int = 2
    heads: int = 2
    head_dim: int = 16
    text_dim: int = 32
    vae_channels: tuple[int, ...] = (8, 8, 16, 16)
    seed: int = 0
    words: tuple[str, ...] = ()  # the T5 tokenizer's words; empty: `WORDS`
    max_text_tokens: int = 512  # the T5 tokenizer's length, which the pipelines pad prompts to
    rope: tuple[int, ...] = ()  # rotary dims per axis (frame, row, column); empty: half to the frame, a quarter to each side

    @property
    def rope_axes(self) -> tuple[int, ...]:
        if self.rope:
            return tuple(self.rope)
        quarter = self.head_dim // 4
        return (self.head_dim - 2 * quarter, quarter, quarter)


def build_tokenizers(folder: Path, words=(), max_text_tokens: int = 512) -> tuple[CLIPTokenizer, PreTrainedTokenizerFast]:
    """A CLIP BPE tokenizer and a T5-style word tokenizer over `words` (default `WORDS`, plus letters and digits)."""
    words = list(words or WORDS)
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    special = ["<|startoftext|>", "<|endoftext|>"]
    # dict.fromkeys: a token listed twice must not leave a gap in the ids (every id < vocab size).
    clip_tokens = dict.fromkeys(special + letters + [w + "</w>" for w in words + letters])
    clip_vocab = {token: i for i, token in enumerate(clip_tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    clip = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)

    t5_vocab = {token: i for i, token in enumerate(dict.fromkeys(["<pad>", "</s>", "<unk>"] + words + letters))}
    word_level = Tokenizer(models.WordLevel(t5_vocab, unk_token="<unk>"))
    word_level.normalizer = normalizers.Lowercase()
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    t5 = PreTrainedTokenizerFast(
        tokenizer_object=word_level, model_max_length=max_text_tokens, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    return clip, t5


def build_tiny_components(config: TinyConfig = TinyConfig()) -> dict:
    """Every component `DSDPipeline` needs, randomly initialised from `config.seed`."""
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as scratch:
        clip_tokenizer, t5_tokenizer = build_tokenizers(Path(scratch), config.words, config.max_text_tokens)
    transformer = DSDTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=config.layers, num_single_layers=config.single_layers,
        attention_head_dim=config.head_dim, num_attention_heads=config.heads,
        joint_attention_dim=config.text_dim, pooled_projection_dim=config.text_dim,
        guidance_embeds=True, axes_dims_rope=config.rope_axes,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=["DownEncoderBlock2D"] * len(config.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(config.vae_channels),
        block_out_channels=config.vae_channels, layers_per_block=1, norm_num_groups=4,
        mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.1159, scaling_factor=0.3611,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=config.text_dim, intermediate_size=2 * config.text_dim,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=config.text_dim, max_position_embeddings=77,
        bos_token_id=clip_tokenizer.bos_token_id, eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id,
    ))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=config.text_dim, d_ff=2 * config.text_dim, d_kv=8,
        num_layers=2, num_heads=max(1, config.text_dim // 8), relative_attention_num_buckets=8,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    ))
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    )
    return {
        "transformer": transformer, "vae": vae, "text_encoder": text_encoder, "tokenizer": clip_tokenizer,
        "text_encoder_2": text_encoder_2, "tokenizer_2": t5_tokenizer, "scheduler": scheduler,
    }


def save_tiny_model(folder: str | Path, config: TinyConfig = TinyConfig()) -> Path:
    """Write a FLUX.1-dev-layout folder (one subfolder per component) of a tiny DSD model."""
    from pipeline.generation.pipeline import DSDPipeline

    folder = Path(folder)
    DSDPipeline(**build_tiny_components(config)).save_pretrained(folder)
    (folder / "tiny_config.json").write_text(json.dumps(asdict(config), indent=1))
    return folder


if __name__ == "__main__":
    print(save_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "assets/tiny-dsd"))
