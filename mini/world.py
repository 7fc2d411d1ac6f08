"""The world of the miniature: procedural pictures of subjects whose identity is known exactly.

A subject's identity is a set of attributes (shape, body colour, pattern, accent colour, accessory);
a context places it in a scene with a position, scale, rotation and lighting. `render` draws one
panel with PIL and numpy only, deterministically, so teacher, judge and evaluation can all be
measured against the attributes that made the picture. Captions are built from a fixed vocabulary
so a word-level tokenizer can be built in code, and a seeded share of identities is held out of
every training set for zero-shot tests.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import astuple, dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
BODY_COLOURS = {"red": (214, 48, 49), "orange": (240, 140, 30), "yellow": (245, 215, 40), "green": (60, 170, 70),
                "blue": (45, 100, 220), "purple": (135, 70, 190), "pink": (245, 130, 190), "brown": (130, 85, 50)}
PATTERNS = ("plain", "stripes", "dots", "checks")
# Accent names differ from body colour names, so every caption word belongs to exactly one attribute.
ACCENT_COLOURS = {"white": (250, 250, 250), "black": (25, 25, 30), "gold": (225, 180, 40),
                  "silver": (170, 175, 185), "cyan": (40, 215, 225), "magenta": (220, 30, 160)}
ACCESSORIES = ("none", "hat", "bow", "antenna", "crown")
SCENES = ("studio", "grass", "sea", "night", "city", "desert")
LIGHTS = ("left", "right", "top", "front")
WARMTHS = ("warm", "neutral", "cool")

SHAPE_WORDS = {shape: shape for shape in SHAPES}
PATTERN_WORDS = {"plain": "plain", "stripes": "striped", "dots": "dotted", "checks": "checked"}
ACCESSORY_PHRASES = {"none": "with a bare head", "hat": "wearing a hat", "bow": "with a bow",
                     "antenna": "with an antenna", "crown": "wearing a crown"}
SCENE_PHRASES = {"studio": "in a studio", "grass": "on grass", "sea": "at sea",
                 "night": "under a night sky", "city": "in a city", "desert": "in a desert"}
LIGHT_PHRASES = {"left": "lit from the left", "right": "lit from the right",
                 "top": "lit from above", "front": "lit from the front"}
ACCESSORY_WORDS = {"none": "bare", "hat": "hat", "bow": "bow", "antenna": "antenna", "crown": "crown"}
UNNAMED_SHAPE = "creature"
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Identity:
    """What makes a subject the same subject, whatever the context."""
    shape: str = "circle"
    body: str = "red"
    pattern: str = "plain"
    accent: str = "white"
    accessory: str = "none"


@dataclass(frozen=True)
class Context:
    """Where and how a subject is shown: x, y are the subject's centre as a share of the panel,
    scale its body's width as a share of the panel, rotation in degrees (counter-clockwise)."""
    scene: str = "studio"
    x: float = 0.5
    y: float = 0.55
    scale: float = 0.5
    rotation: float = 0.0
    light: str = "front"
    warmth: str = "neutral"


ATTRIBUTE_VALUES = {"shape": SHAPES, "body": tuple(BODY_COLOURS), "pattern": PATTERNS,
                    "accent": tuple(ACCENT_COLOURS), "accessory": ACCESSORIES}
ATTRIBUTES = tuple(f.name for f in fields(Identity))
# The one caption word that names each attribute value; no word names two values or appears in context phrases.
ATTRIBUTE_WORDS = {"shape": SHAPE_WORDS, "body": {c: c for c in BODY_COLOURS}, "pattern": PATTERN_WORDS,
                   "accent": {c: c for c in ACCENT_COLOURS}, "accessory": ACCESSORY_WORDS}


def caption(identity: Identity, context: Context | None = None, named=None) -> str:
    """A caption naming only the attributes in `named` (all of them when None), then the context."""
    named = set(ATTRIBUTES if named is None else named)
    unknown = named - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; choose from {list(ATTRIBUTES)}")
    words = []
    if "body" in named:
        words.append(identity.body)
    if "pattern" in named:
        words.append(PATTERN_WORDS[identity.pattern])
    words.append(SHAPE_WORDS[identity.shape] if "shape" in named else UNNAMED_SHAPE)
    if "accent" in named:
        words.append(f"with {identity.accent} trim")
    if "accessory" in named:
        words.append(ACCESSORY_PHRASES[identity.accessory])
    text = ("a " + " ".join(words)).replace("a orange", "an orange")
    return text if context is None else f"{text}, {describe_context(context)}"


def describe_context(context: Context) -> str:
    """The context in words: scene, place in the panel, size, tilt, light."""
    row = "top" if context.y < 0.43 else "bottom" if context.y > 0.57 else ""
    column = "left" if context.x < 0.43 else "right" if context.x > 0.57 else ""
    place = f"at the {row} {column}".replace("  ", " ").strip() if row or column else "in the centre"
    size = "small" if context.scale < 0.42 else "large" if context.scale > 0.55 else "medium"
    tilt = "tilted left" if context.rotation > 10 else "tilted right" if context.rotation < -10 else "upright"
    return (f"{SCENE_PHRASES[context.scene]}, {place}, {size}, {tilt}, "
            f"{LIGHT_PHRASES[context.light]}, in {context.warmth} light")


def short_context(context: Context) -> str:
    """What prompts ask of a context: scene and light (place, size and tilt are left to the model)."""
    return f"{SCENE_PHRASES[context.scene]}, {LIGHT_PHRASES[context.light]}, in {context.warmth} light"


def parse_context(text: str) -> dict[str, str]:
    """The scene, light and warmth a prompt asks for in `short_context`'s words (those it names)."""
    phrases = {"scene": SCENE_PHRASES, "light": LIGHT_PHRASES, "warmth": {w: f"in {w} light" for w in WARMTHS}}
    return {name: value for name, values in phrases.items() for value, phrase in values.items()
            if phrase in text.lower()}


def subject_caption(identity: Identity, named=None) -> str:
    """The subject alone, as a grid prompt names it: "red striped star with gold trim" (no article)."""
    return caption(identity, None, named).split(" ", 1)[1]


def parse_subject(text: str) -> dict[str, str] | None:
    """The attribute values a world caption names, or None when `text` is not a world caption."""
    words = caption_words(text.lower())
    if not words or not set(words) <= set(VOCABULARY) or not ({UNNAMED_SHAPE, *SHAPES} & set(words)):
        return None
    return {attribute: value for attribute, values in ATTRIBUTE_WORDS.items()
            for value, word in values.items() if word in words}


def grid_contexts(rng: np.random.Generator, count: int, spread: float = 1.0) -> list[Context]:
    """Contexts for the panels of one grid, no two with the same scene, light and warmth."""
    contexts, seen = [], set()
    while len(contexts) < count:
        context = sample_context(rng, spread)
        if (key := (context.scene, context.light, context.warmth)) not in seen:
            seen.add(key)
            contexts.append(context)
    return contexts


GRID_WORDS = "a grid of panels rows columns separated by thin white gutters showing the identical every panel".split()


def _vocabulary() -> list[str]:
    phrases = ["a an the with trim at in centre top bottom left right small medium large tilted upright light",
               " ".join(GRID_WORDS), ": ( ) . , 1 2 3 4 5 6 7 8 9",
               UNNAMED_SHAPE, *SHAPES, *BODY_COLOURS, *PATTERN_WORDS.values(), *ACCENT_COLOURS,
               *ACCESSORY_PHRASES.values(), *SCENE_PHRASES.values(), *LIGHT_PHRASES.values(), *WARMTHS]
    return sorted({word for phrase in phrases for word in phrase.split()})


VOCABULARY = _vocabulary()


def caption_words(text: str) -> list[str]:
    """A caption split into vocabulary words (commas dropped)."""
    return text.replace(",", " ").split()


def all_identities() -> list[Identity]:
    """Every combination of attribute values, in a fixed order."""
    return [Identity(*values) for values in itertools.product(*ATTRIBUTE_VALUES.values())]


@lru_cache(maxsize=16)
def held_out(fraction: float = 0.1, seed: int = 0) -> frozenset[Identity]:
    """A fixed, seeded share of identities kept out of every training set."""
    identities = all_identities()
    order = np.random.default_rng(seed).permutation(len(identities))
    return frozenset(identities[i] for i in order[: round(fraction * len(identities))])


def sample_identity(rng: np.random.Generator, exclude_held_out: bool = True) -> Identity:
    """A random identity; by default never one of `held_out()`."""
    while True:
        identity = Identity(*(str(values[rng.integers(len(values))]) for values in ATTRIBUTE_VALUES.values()))
        if not (exclude_held_out and identity in held_out()):
            return identity


# The spread of the pictures a subject is shown whole in: the teacher's training pictures and the references the
# benchmark gives (a centred, upright, fairly large subject, as the Generate tab's examples and DreamBench's
# reference photos show theirs). Outputs are drawn where the model likes; their pose is never asked.
PORTRAIT_SPREAD = 0.2


def sample_context(rng: np.random.Generator, spread: float = 1.0) -> Context:
    """A random context with the subject kept well inside the panel.

    `spread` < 1 narrows position, scale and rotation around a centred, upright, fairly large subject
    (the teacher's training pictures); the same draws are made whatever the spread."""
    scene = str(rng.choice(SCENES))
    x, y, scale = float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.4, 0.65)), float(rng.uniform(0.35, 0.62))
    rotation = float(rng.uniform(-30, 30))
    if spread != 1:
        x, y = 0.5 + (x - 0.5) * spread, 0.55 + (y - 0.525) * spread
        scale, rotation = 0.52 + (scale - 0.485) * spread, rotation * spread
    return Context(scene=scene, x=round(x, 3), y=round(y, 3), scale=round(scale, 3), rotation=round(rotation, 1),
                   light=str(rng.choice(LIGHTS)), warmth=str(rng.choice(WARMTHS)))


def render(identity: Identity, context: Context = Context(), size: int = 64) -> Image.Image:
    """One RGB panel of `identity` in `context`; the same inputs always give the same bytes."""
    return _render(identity, context, size)[0]


def render_with_mask(identity: Identity, context: Context = Context(), size: int = 64) -> tuple[Image.Image, Image.Image]:
    """The panel and the subject's coverage (L mode, 255 where the subject is): where identity lives."""
    return _render(identity, context, size)


def _render(identity: Identity, context: Context, size: int) -> tuple[Image.Image, Image.Image]:
    if not 8 <= size <= 64:
        raise ValueError(f"panel size must be between 8 and 64 pixels, got {size}")
    big = size * SUPERSAMPLE
    canvas = _background(context, big)
    subject = _subject(identity, round(context.scale * big))
    subject = subject.rotate(context.rotation, resample=Image.BICUBIC)
    corner = (round(context.x * big - subject.width / 2), round(context.y * big - subject.height / 2))
    canvas.paste(subject, corner, subject)
    mask = Image.new("L", (big, big), 0)
    mask.paste(subject.getchannel("A"), corner)
    return _light(canvas.resize((size, size), Image.LANCZOS), context), mask.resize((size, size), Image.BILINEAR)


def _seed(*parts) -> int:
    # crc32 of the values, not hash(): string hashes change between Python processes.
    return zlib.crc32(repr(parts).encode())


def _background(context: Context, side: int) -> Image.Image:
    rng = np.random.default_rng(_seed(astuple(context)))
    sky, ground, horizon = {"studio": ((222, 222, 215), (222, 222, 215), 1.0),
                            "grass": ((150, 200, 240), (75, 150, 55), 0.45),
                            "sea": ((165, 205, 235), (35, 95, 165), 0.45),
                            "night": ((14, 18, 48), (14, 18, 48), 1.0), "city": ((195, 205, 222), (95, 95, 105), 0.9),
                            "desert": ((245, 222, 170), (222, 180, 110), 0.5)}[context.scene]
    image = Image.new("RGB", (side, side), sky)
    draw = ImageDraw.Draw(image)
    top = round(horizon * side)
    draw.rectangle((0, top, side, side), fill=ground)
    unit = side / 64
    if context.scene == "grass":
        for _ in range(60):
            x, y = rng.uniform(0, side), rng.uniform(top, side)
            draw.line((x, y, x + rng.uniform(-2, 2) * unit, y - 3 * unit), fill=(45, 115, 35), width=round(unit))
    elif context.scene == "sea":
        for _ in range(14):
            x, y = rng.uniform(-8, side), rng.uniform(top + 2 * unit, side)
            draw.arc((x, y, x + 10 * unit, y + 4 * unit), 200, 340, fill=(160, 205, 240), width=round(unit))
    elif context.scene == "night":
        for _ in range(25):
            x, y = rng.uniform(0, side), rng.uniform(0, side)
            draw.ellipse((x, y, x + unit, y + unit), fill=(255, 255, 220))
        draw.ellipse((side - 16 * unit, 4 * unit, side - 6 * unit, 14 * unit), fill=(240, 235, 200))
    elif context.scene == "city":
        x = 0.0
        while x < side:
            width, height = rng.uniform(8, 16) * unit, rng.uniform(18, 44) * unit
            draw.rectangle((x, top - height, x + width, side), fill=(120, 120, 135))
            for wy in np.arange(top - height + 3 * unit, top, 5 * unit):
                draw.rectangle((x + 2 * unit, wy, x + 4 * unit, wy + 2 * unit), fill=(250, 230, 140))
            x += width + 2 * unit
    elif context.scene == "desert":
        draw.ellipse((4 * unit, 4 * unit, 14 * unit, 14 * unit), fill=(250, 180, 60))
        draw.pieslice((-20 * unit, top - 6 * unit, 40 * unit, top + 18 * unit), 180, 360, fill=(210, 165, 95))
    return image


def _body_outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The body's polygon (a circle is a 48-gon); `r` is the half-width."""
    def ring(count, radius, turn):
        return [(cx + radius * math.cos(turn + 2 * math.pi * k / count),
                 cy + radius * math.sin(turn + 2 * math.pi * k / count)) for k in range(count)]
    if shape == "circle":
        return ring(48, r, 0)
    if shape == "square":
        return ring(4, r * 1.3, math.pi / 4)
    if shape == "triangle":
        return [(cx, cy - r * 1.05), (cx + r * 1.1, cy + r * 0.85), (cx - r * 1.1, cy + r * 0.85)]
    if shape == "star":
        outer, inner = ring(5, r * 1.15, -math.pi / 2), ring(5, r * 0.58, -math.pi / 2 + math.pi / 5)
        return [point for pair in zip(outer, inner) for point in pair]
    if shape == "hexagon":
        return ring(6, r * 1.05, 0)
    if shape == "diamond":
        return [(cx, cy - r * 1.25), (cx + r * 0.8, cy), (cx, cy + r * 1.25), (cx - r * 0.8, cy)]
    raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")


def _pattern_mask(pattern: str, side: int, r: float) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    period = max(2.0, r / 2.2)
    steps = np.arange(0, side + period, period)
    if pattern == "stripes":
        for y in steps:
            draw.rectangle((0, y, side, y + period / 2), fill=255)
    elif pattern == "dots":
        for y, x in itertools.product(steps, steps):
            draw.ellipse((x + period * 0.2, y + period * 0.2, x + period * 0.75, y + period * 0.75), fill=255)
    elif pattern == "checks":
        for (i, y), (j, x) in itertools.product(enumerate(steps), enumerate(steps)):
            if (i + j) % 2 == 0:
                draw.rectangle((x, y, x + period, y + period), fill=255)
    elif pattern != "plain":
        raise ValueError(f"unknown pattern {pattern!r}; choose from {list(PATTERNS)}")
    return mask


def _subject(identity: Identity, width: int) -> Image.Image:
    """The subject on a transparent square with room above for its accessory."""
    side = max(8, round(width * 2.0))
    r, cx, cy = width / 2, side / 2, side / 2 + width * 0.2
    body_colour, accent = BODY_COLOURS[identity.body], ACCENT_COLOURS[identity.accent]
    outline = _body_outline(identity.shape, cx, cy, r)
    layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    edge = max(1, round(r * 0.12))
    draw.polygon(outline, fill=accent)
    inset = 0.87 if identity.shape == "star" else 0.82  # a star's thin arms need a thinner trim
    inner = [(cx + (x - cx) * inset, cy + (y - cy) * inset) for x, y in outline]
    body_mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(body_mask).polygon(inner, fill=255)
    layer.paste(body_colour, (0, 0), body_mask)
    pattern = Image.fromarray(np.minimum(np.asarray(body_mask), np.asarray(_pattern_mask(identity.pattern, side, r))))
    layer.paste(accent, (0, 0), pattern)
    for dx in (-0.3, 0.3):
        ex, ey, er = cx + dx * r, cy - 0.05 * r, r * 0.2
        draw.ellipse((ex - er, ey - er, ex + er, ey + er), fill=(255, 255, 255), outline=(20, 20, 20),
                     width=max(1, edge // 2))
        draw.ellipse((ex - er / 2, ey - er / 2, ex + er / 2, ey + er / 2), fill=(20, 20, 20))
    # Pointed tops would leave the accessory balancing on a tip, so it sits lower on them.
    sink = 0.3 * r if identity.shape in ("triangle", "star", "diamond") else 0.0
    _accessory(draw, identity.accessory, cx, min(y for _, y in outline) + sink, r, accent, edge)
    return layer


def _accessory(draw: ImageDraw.ImageDraw, accessory: str, cx: float, top: float, r: float, colour, edge: int) -> None:
    dark = (20, 20, 20)
    line = max(1, edge // 2)
    if accessory == "hat":
        for half_width, low, high in ((0.45, -0.65, -0.1), (0.75, -0.15, 0.05)):  # crown of the hat, then brim
            draw.rectangle((cx - r * half_width, top + r * low, cx + r * half_width, top + r * high),
                           fill=colour, outline=dark, width=line)
    elif accessory == "bow":
        for side in (-1, 1):
            draw.polygon([(cx, top), (cx + side * r * 0.7, top - r * 0.4), (cx + side * r * 0.7, top + r * 0.3)],
                         fill=colour, outline=dark, width=line)
        draw.ellipse((cx - r * 0.15, top - r * 0.15, cx + r * 0.15, top + r * 0.15), fill=dark)
    elif accessory == "antenna":
        for side in (-1, 1):
            tip = (cx + side * r * 0.5, top - r * 0.75)
            draw.line((cx, top + r * 0.05, *tip), fill=dark, width=edge)
            draw.ellipse((tip[0] - r * 0.18, tip[1] - r * 0.18, tip[0] + r * 0.18, tip[1] + r * 0.18),
                         fill=colour, outline=dark, width=line)
    elif accessory == "crown":
        w, h = r * 0.6, r * 0.6
        points = [(cx - w, top + r * 0.05), (cx - w, top - h), (cx - w / 2, top - h / 2), (cx, top - h * 1.1),
                  (cx + w / 2, top - h / 2), (cx + w, top - h), (cx + w, top + r * 0.05)]
        draw.polygon(points, fill=colour, outline=dark, width=line)
    elif accessory != "none":
        raise ValueError(f"unknown accessory {accessory!r}; choose from {list(ACCESSORIES)}")


def _light(image: Image.Image, context: Context) -> Image.Image:
    """Shade the panel brighter towards the light and tint it by the light's warmth."""
    side = image.width
    ramp = np.linspace(0.0, 1.0, side)
    across, down = np.meshgrid(ramp, ramp)
    towards_light = {"left": 1 - across, "right": across, "top": 1 - down,
                     "front": 1 - np.hypot(across - 0.5, down - 0.5) * 1.4}[context.light]
    shade = 0.72 + 0.4 * towards_light
    tint = {"warm": (1.07, 1.0, 0.88), "neutral": (1.0, 1.0, 1.0), "cool": (0.9, 0.98, 1.08)}[context.warmth]
    pixels = np.asarray(image, dtype=np.float32) * shade[..., None] * np.asarray(tint, dtype=np.float32)
    return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
