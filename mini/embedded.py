"""The studio's embedded default: the miniature, when a user names no model.

The method's code never picks a model by itself; the studio and the command line (the edge) fill in
what a user left blank with these, and hand the result down: the teacher as the base of generation,
training and grid drawing, the curated student as the DSD weights, the teacher's own grid size. What
the miniature can draw is said here too: prompts in its world's words, and notices for a reference
that is not of its world, a word it does not know and a size that is not its own.
"""

import functools
import json
import re
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from mini import EXAMPLES_DIR, GRID, PANEL, STUDENT, TEACHER, world
from pipeline.errors import UserInputError
from pipeline.generation.weights import ModelSpec
from pipeline.images import fit_to_panel

LABEL = "embedded miniature (64 px world creatures: teacher + curated student)"
TEACHER_NAME = "embedded miniature teacher"
CURATED = STUDENT / "curated"
GRID_SIZE = (GRID, GRID)


def with_embedded(spec: ModelSpec) -> ModelSpec:
    """`spec` with its blanks filled: no base is the miniature's teacher, and nothing named at all is the
    teacher with the curated student."""
    if not (spec.base or spec.dsd or spec.lora):
        return replace(spec, base=str(TEACHER), dsd=str(CURATED), label=spec.label or LABEL)
    return spec if spec.base else replace(spec, base=str(TEACHER))


def is_embedded(spec: ModelSpec) -> bool:
    return spec == with_embedded(ModelSpec(dtype=spec.dtype))


def is_miniature(spec: ModelSpec) -> bool:
    """Whether `spec` draws the miniature's world: its teacher is the base (with any DSD weights)."""
    return spec.base == str(TEACHER)


# what the miniature understands

@dataclass(frozen=True)
class Example:
    """One of the Generate tab's examples on the miniature: a rendered reference of a held-out creature
    (so what the student makes of it is zero-shot), a mode and a prompt in the world's words."""
    file: str
    mode: str
    prompt: str
    identity: world.Identity
    context: world.Context

    @property
    def path(self):
        return EXAMPLES_DIR / self.file


EXAMPLES = (
    Example("mini-star.png", "identity", "a creature, in a desert, lit from the left, in warm light",
            world.Identity("star", "purple", "plain", "white", "hat"), world.Context(scene="studio")),
    Example("mini-circle.png", "relight", "lit from the right, in cool light",
            world.Identity("circle", "blue", "stripes", "black", "bow"), world.Context(scene="grass", light="left")),
    Example("mini-triangle.png", "instruct", "a creature wearing a hat, at sea, lit from above, in neutral light",
            world.Identity("triangle", "red", "plain", "magenta", "crown"),
            world.Context(scene="night", light="top", warmth="cool")),
)

# The instruct mode's one-attribute changes, as (what the prompt will say, "attribute:value").
CHANGES = [(world.caption(replace(world.Identity(), **{a: v}), None, [a]), f"{a}:{v}")
           for a in world.ATTRIBUTES for v in world.ATTRIBUTE_VALUES[a]]


def world_prompt(scene: str, light: str, warmth: str, change: str | None = None) -> str:
    """A prompt in the world's words: "a creature" (or the one attribute `change`, "accessory:hat", asks
    for), then the scene and the light; the reference gives the rest of the subject."""
    for name, value, values in (("scene", scene, world.SCENES), ("light", light, world.LIGHTS),
                                ("warmth", warmth, world.WARMTHS)):
        if value not in values:
            raise UserInputError(f"{name} {value!r} is not a word of the miniature's world: use one of {', '.join(values)}")
    if change and change not in {value for _, value in CHANGES}:
        raise UserInputError(f"change {change!r}: use attribute:value, such as accessory:hat")
    subject = "a creature"
    if change:
        attribute, value = change.split(":")
        subject = world.caption(replace(world.Identity(), **{attribute: value}), None, [attribute])
    return f"{subject}, {world.short_context(world.Context(scene=scene, light=light, warmth=warmth))}"


SWITCH = ("run FLUX.1-dev with the DSD weights: Base model and DSD weights in the Model panel, or --base and --dsd "
          "(DSD_BASE, DSD_WEIGHTS)")
# Most of a picture of the world is flat colour that the miniature's own VAE reproduces almost exactly;
# a photo has texture everywhere. So the measure is the lower quartile of the per-pixel error, over the
# VAE's mean error on its training pictures. Over 400 random renders of the world it is at most 0.15 with
# the shipped 8x VAE (0.28 with a 4x one), and the 7 example and benchmark photos give at least 0.93
# (1.06): 0.5 sits about 2x from both. (The mean error, used before, separated them by only 1.15x with
# the 8x VAE and not at all with the 4x: a large, rotated, checked creature is as hard as a photo.)
NOT_OF_THE_WORLD = 0.5
NOTICE = ("this reference does not look like a creature of the embedded miniature's world (its own VAE cannot "
          f"reproduce it): the miniature draws only its 64 px creatures, so expect one of them. For photos, {SWITCH}")
# The teacher's word-level tokenizer is built from the world's vocabulary: any other word is read as <unk>.
KNOWN_WORDS = frozenset(world.VOCABULARY)
WORDS_NAMED = 8


def unknown_words(prompt: str) -> list[str]:
    """The words of `prompt` the miniature does not know, once each, in order. Words are split as its
    tokenizer splits them (lower case, runs of letters and digits); punctuation is never a word."""
    return list(dict.fromkeys(word for word in re.findall(r"\w+", prompt.lower()) if word not in KNOWN_WORDS))


def prompt_notice(prompt: str) -> str | None:
    """A notice naming the prompt's words outside the miniature's world, else None."""
    unknown = unknown_words(prompt)
    if not unknown:
        return None
    named = ", ".join(f"'{word}'" for word in unknown[:WORDS_NAMED])
    more = f" and {len(unknown) - WORDS_NAMED} more" if len(unknown) > WORDS_NAMED else ""
    words, ask = ("words", "they ask") if len(unknown) > 1 else ("word", "it asks")
    return (f"the embedded miniature does not know the {words} {named}{more}, and cannot draw what {ask} for: "
            "it knows only its world's words (a creature's shape, colours, pattern, trim and accessory; "
            f"a scene: {', '.join(world.SCENES)}; light from the left, right, above or front, warm, neutral or "
            "cool), which 'Words the miniature knows' in the Generate tab writes for you. For any other prompt, "
            f"{SWITCH}")


def size_notice(size: tuple[int, int], own: tuple[int, int]) -> str | None:
    """A notice when the size asked for is not the one the miniature learnt to draw (`own`), else None."""
    if tuple(size) == tuple(own):
        return None
    return (f"the embedded miniature learnt to draw at {own[0]}x{own[1]} only: at {size[0]}x{size[1]} expect "
            f"smeared or repeated creatures, not a larger picture. Use {own[0]}x{own[1]}; for other sizes, {SWITCH}")


@functools.cache
def _teacher_vae():
    from diffusers import AutoencoderKL

    trained = json.loads((TEACHER / "vae" / "vae.json").read_text())["vae_reconstruction_mse"]
    return AutoencoderKL.from_pretrained(str(TEACHER / "vae")).eval(), trained


@torch.no_grad()
def reference_error(image: Image.Image) -> float:
    """The lower quartile of the teacher's VAE's per-pixel error on `image` (fit to a panel), over its mean
    error on its training pictures."""
    vae, trained = _teacher_vae()
    pixels = torch.from_numpy(np.array(fit_to_panel(image, PANEL, PANEL))).permute(2, 0, 1)[None].float() / 127.5 - 1
    again = vae.decode(vae.encode(pixels).latent_dist.mean).sample
    return float(((again - pixels) ** 2).mean(1).flatten().quantile(0.25)) / trained


def reference_notice(image: Image.Image) -> str | None:
    """A notice when the reference is not of the miniature's world (a photo, say), else None."""
    return NOTICE if reference_error(image) > NOT_OF_THE_WORLD else None
