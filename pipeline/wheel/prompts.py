"""Grid prompts (paper section 3.1.2): a reference caption becomes a prompt for a grid of panels
that all show the identical subject, each panel with its own pose, expression, lighting, setting
and camera. An LLM writes them with structured output; without one, templates do.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserInputError
from pipeline.providers import OfflineProvider, Provider, ask_json
from pipeline.wheel.grids import Layout

DEFAULT_LAYOUT = "2x2"
PROMPT_VERSION = "grid-prompt-1"  # change it when the instruction or the templates change
OFFLINE_WRITER = "offline-templates"

GRID_PROMPT_SCHEMA = {
    "title": "Grid prompt",
    "type": "object",
    "properties": {
        "subject": {
            "type": "string",
            "description": "The one subject shown in every panel, with its distinctive features.",
        },
        "panels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "One sentence per panel, in reading order.",
        },
    },
    "required": ["subject", "panels"],
    "additionalProperties": False,
}
GRID_PROMPT_INSTRUCTION = (
    "You plan image grids for a text-to-image model that draws several panels showing the same "
    "subject. From the reference caption, pick its main subject and describe it in a short noun "
    "phrase with its distinctive features (kind, colors, materials, markings, clothing), so the "
    "model draws it identically in every panel. Then write one sentence per panel, in reading "
    "order. The subject stays identical in every panel; what changes from panel to panel is the "
    "pose or placement, the expression or state, the lighting, the setting and the camera angle "
    "or distance. Make every panel clearly different from the others, never repeat a sentence, "
    "and do not number the sentences or mention the grid."
)

Writer = Callable[..., "GridPrompt"]


@dataclass
class GridPrompt:
    """What the teacher is asked to draw: `subject` in every panel, `panels` one per cell."""

    caption: str
    layout: str
    subject: str
    panels: list[str]
    writer: str

    @property
    def text(self) -> str:
        """The prompt for the teacher, in the paper's "a grid of N panels ... identical <subject>" form."""
        layout = Layout.parse(self.layout)
        rows = f"{layout.rows} row{'s' * (layout.rows != 1)}"
        cols = f"{layout.cols} column{'s' * (layout.cols != 1)}"
        head = (f"A grid of {layout.panels} panels ({rows}, {cols}) separated by thin white gutters, "
                f"showing the identical {self.subject} in every panel.")
        return " ".join([head] + [f"Panel {i}: {_sentence(p)}" for i, p in enumerate(self.panels, 1)])

    def to_dict(self) -> dict:
        return {"caption": self.caption, "layout": self.layout, "subject": self.subject,
                "panels": list(self.panels), "writer": self.writer}

    @classmethod
    def from_dict(cls, data: dict) -> "GridPrompt":
        return cls(caption=data["caption"], layout=data["layout"], subject=data["subject"],
                   panels=list(data["panels"]), writer=data["writer"])


def write_grid_prompt(provider: Provider, caption: str, layout: str = DEFAULT_LAYOUT,
                      attempts: int = 3) -> GridPrompt:
    """An LLM turns `caption` into a grid prompt; replies with the wrong panel count, an empty
    subject or repeated panels are asked again, `attempts` requests in all, then ProviderError."""
    grid = Layout.parse(layout)
    _check_caption(caption)
    request = (
        f"Reference caption: {' '.join(caption.split())}\n"
        f"Grid: {grid.panels} panels ({grid.rows} rows x {grid.cols} columns). "
        f"Write exactly {grid.panels} panel sentences."
    )
    subject, panels = ask_json(
        provider, request, system=GRID_PROMPT_INSTRUCTION, schema=GRID_PROMPT_SCHEMA,
        parse=lambda reply: _parse_grid_reply(reply, grid.panels), what="grid prompts",
        attempts=attempts,
    ).value
    return GridPrompt(caption, str(grid), subject, panels, f"{provider.name}:{provider.model}")


def make_prompt_writer(provider: Provider | None = None) -> Writer:
    """`write(caption, layout="2x2") -> GridPrompt`: the LLM when given one, else the templates."""
    if provider is None or isinstance(provider, OfflineProvider):
        return OfflinePromptWriter().write
    return functools.partial(write_grid_prompt, provider)


def _check_caption(caption: str) -> None:
    if not caption.strip():
        raise UserInputError("The caption is empty: give a short description of the subject to draw.")


def _parse_grid_reply(reply: object, count: int) -> tuple[str, list[str]]:
    if not isinstance(reply, dict):
        raise ValueError("the reply is not an object")
    subject, panels = reply.get("subject"), reply.get("panels")
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError("the subject is empty")
    if not isinstance(panels, list) or not all(isinstance(p, str) and p.strip() for p in panels):
        raise ValueError("'panels' is not a list of sentences")
    if len(panels) != count:
        raise ValueError(f"{len(panels)} panels instead of {count}")
    panels = [re.sub(r"^\s*panel\s*\d+\s*[:.)-]\s*", "", " ".join(p.split()), flags=re.I) for p in panels]
    if len({p.casefold().rstrip(".") for p in panels}) != count:
        raise ValueError("some panels repeat each other")
    return " ".join(subject.split()).rstrip("."), panels


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# Offline templates. Each pool has at least 9 entries so a 3x3 grid never repeats one.
CHARACTER_POSES = (
    "standing tall facing the viewer", "sitting cross-legged", "walking toward the camera",
    "turning to look over one shoulder", "crouching low", "leaning against a wall",
    "jumping in mid-air", "lying down on the ground", "reaching up with one arm",
    "seen in profile", "running forward", "resting the chin on one hand", "stretching",
    "waving at the viewer",
)
CHARACTER_STATES = (
    "smiling warmly", "laughing", "looking curious", "with a calm neutral expression",
    "looking surprised", "looking sleepy", "frowning in concentration", "looking proud",
    "grinning playfully", "looking thoughtful", "with eyes closed", "looking determined",
)
OBJECT_POSES = (
    "standing upright", "turned to a three-quarter view", "lying on its side",
    "seen straight from the front", "seen from behind", "tilted at a slight angle",
    "placed at the edge of a table", "seen from directly above", "held in two hands",
    "set on a small pedestal", "half in shadow", "seen from a low angle",
)
OBJECT_STATES = (
    "spotless and new", "catching a bright highlight", "beside a small potted plant",
    "with a soft reflection below it", "next to a folded linen cloth", "in sharp focus",
    "with a few props around it", "with water droplets on it", "casting a long shadow",
    "among a few scattered leaves", "against a blurred background", "next to an open book",
)
SETTINGS = (
    "in a sunlit meadow", "in a cozy living room", "on a city street", "on a sandy beach",
    "in a snowy forest", "in a minimalist white studio", "in a busy kitchen",
    "on a wooden porch", "in a neon-lit alley", "in a library", "on a mountain ridge",
    "in a flower garden", "on a rooftop terrace", "in a rainy park",
)
LIGHTING = (
    "soft morning light", "golden hour sunlight", "overcast diffuse light", "dramatic side light",
    "warm lamplight", "cool blue twilight", "bright studio lighting", "neon glow",
    "dappled shade", "candlelight", "harsh midday sun", "rim light from behind",
)
CAMERAS = (
    "full-body shot at eye level", "close-up", "medium shot", "wide shot", "low-angle shot",
    "high-angle shot", "three-quarter view", "shot from a distance with a telephoto lens",
    "shallow depth of field", "overhead view", "slightly tilted dutch angle", "macro detail shot",
)
PLACE_VIEWS = (
    "seen from across the street", "seen from a hilltop", "in a wide establishing shot",
    "framed by tree branches", "seen from a low angle", "reflected in a puddle",
    "seen from the air", "in a close view of its entrance", "seen from a side angle",
    "seen through a window", "seen from the far bank of a river", "seen from a winding path",
)
PLACE_STATES = (
    "in spring with blossoms around it", "in deep winter snow", "in autumn with orange leaves",
    "on a rainy day", "under a clear summer sky", "with a few people passing by",
    "after a storm", "on a misty day", "with flags fluttering in the wind", "in a heat haze",
    "with birds flying over it", "with puddles all around",
)
PLACE_LIGHT = (
    "in soft morning light", "at golden hour", "under flat grey light", "at blue hour",
    "at night with its windows glowing", "backlit by the setting sun", "in harsh noon sun",
    "under a starry night sky", "lit by streetlamps", "in dappled cloud shadow",
    "under a pink dawn sky", "in the last light of dusk",
)

_PREFIXES = re.compile(
    r"^(?:(?:stock\s+)?(?:photo|photograph|picture|image|illustration|painting|drawing|render|"
    r"rendering|portrait|close-?up|closeup|shot|clipart|vector\s+illustration|3d\s+render)"
    r"(?:\s+of)?|buy|a|an|the)\b[\s:-]*",
    re.I,
)
_CUTS = re.compile(
    r",|;|:|\(|\s[-|–]\s|\s(?:with|for|isolated|size)\b|\son\s+(?:a\s+)?white\s+background"
    r"|\s\d+\s*(?:cm|mm|in|oz|ml)\b",
    re.I,
)
_ACTIONS = re.compile(
    r"\s(?:sitting|standing|lying|walking|running|floating|swimming|parked|resting|perched|"
    r"hanging|playing|eating|reading|selling|galloping|catching|waving|looking|dancing|"
    r"smiling|sleeping|stirring|plating|knitting|holding|carrying|displaying|puffing|going)\b",
    re.I,
)
_DANGLING = frozenset("a an the in on of and or at to by from".split())
_OBJECT_WORDS = frozenset(
    "plush teddy toy toys figure figurine statue doll ornament keychain sculpture sticker decal pin "
    "patch logo emblem badge mug cup print poster model minifigure bobblehead amigurumi "
    "pillow teapot t-shirt tee".split()
)
_PLACE_WORDS = frozenset(
    "house cabin castle lighthouse cathedral church bridge shop barn greenhouse pagoda windmill "
    "village hut booth fountain stall market oasis treehouse carousel storefront cottage "
    "tower temple street building".split()
)
_CHARACTER_WORDS = frozenset(
    "man woman girl boy person child toddler baby chef firefighter worker dancer hiker surfer "
    "bride farmer nurse scientist musician astronaut knight grandfather grandmother businessman "
    "character mascot hero robot alien ghost monster wizard elf dwarf orc ninja pirate "
    "viking dog puppy cat kitten fox bear penguin owl dragon cow horse frog rabbit bunny "
    "parrot hamster sloth elephant lion tiger panda raccoon hedgehog bee octopus snail turtle "
    "dinosaur corgi pug husky retriever labrador poodle samoyed dachshund bulldog collie "
    "leopard alpaca chameleon ladybug koi peacock otter unicorn sheep doctor idol maid "
    "swordsman archer inventor professor thief snowman catgirl".split()
)


class OfflinePromptWriter:
    """Grid prompts from templates, no network: the same (caption, layout, seed) always gives the
    same prompt, and different captions draw different panels."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def write(self, caption: str, layout: str = DEFAULT_LAYOUT) -> GridPrompt:
        grid = Layout.parse(layout)
        _check_caption(caption)
        subject = subject_of(caption)
        rng = random.Random(self.caption_seed(caption, grid))
        kind = _kind_of(subject)
        if kind == "place":
            pools = (PLACE_VIEWS, PLACE_STATES, PLACE_LIGHT)
        else:
            states = CHARACTER_STATES if kind == "character" else OBJECT_STATES
            pools = (CHARACTER_POSES if kind == "character" else OBJECT_POSES, states, SETTINGS,
                     LIGHTING, CAMERAS)
        columns = [rng.sample(pool, grid.panels) for pool in pools]
        panels = [f"the {subject} " + ", ".join(parts) for parts in zip(*columns)]
        return GridPrompt(caption, str(grid), subject, panels, OFFLINE_WRITER)

    def caption_seed(self, caption: str, grid: Layout) -> int:
        """The seed of a caption's panels: the same caption, layout and writer seed give the same prompt."""
        key = f"{self.seed}\0{' '.join(caption.split())}\0{grid}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def subject_of(caption: str) -> str:
    """A short noun phrase for the caption's subject: framing words ("a photo of") dropped, cut at
    the first comma, "with", dash or action ("sitting ..."), title-cased listings lowered."""
    text = " ".join(caption.split())
    while (shorter := _PREFIXES.sub("", text, count=1)) != text:
        text = shorter
    text = _CUTS.split(text, maxsplit=1)[0]
    words = text.split()
    if len(words) > 1:  # an action cuts only after the subject's own first word
        text = words[0] + _ACTIONS.split(" " + " ".join(words[1:]), maxsplit=1)[0]
    words = text.split()[:12]
    while len(words) > 1 and words[-1].lower() in _DANGLING:
        words.pop()
    if len(words) > 2 and sum(w[:1].isupper() for w in words) >= 0.6 * len(words):
        words = [w.lower() for w in words]
    subject = " ".join(words).strip(" .!?-")
    if not subject:
        return "subject"
    return subject[:1].lower() + subject[1:] if not subject[1:2].isupper() else subject


def _kind_of(subject: str) -> str:
    words = set(re.findall(r"[\w'-]+", subject.lower()))
    if words & _OBJECT_WORDS:
        return "object"
    if words & _PLACE_WORDS:
        return "place"
    return "character" if words & _CHARACTER_WORDS else "object"


# Near-duplicate search: MinHash over word 3-shingles, LSH bands to find candidates, exact
# Jaccard to decide. The work grows with the number of prompts, not with its square.
SHINGLE = 3
PERMUTATIONS = 64
_SALTS = np.random.default_rng(3112).integers(1, 2**63, size=(2, PERMUTATIONS), dtype=np.uint64)
_A, _B = _SALTS[0] | np.uint64(1), _SALTS[1]
_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—…"})


def near_duplicates(prompts: list[str], threshold: float = 0.8) -> list[int]:
    """Indices of prompts whose word-shingle Jaccard similarity to an earlier kept prompt is at
    least `threshold`; dropping them leaves no such pair. Case and punctuation are ignored."""
    return sorted(duplicate_sources(prompts, threshold))


def duplicate_sources(prompts: list[str], threshold: float = 0.8) -> dict[int, int]:
    """For each near-duplicate (as in `near_duplicates`), the index of the earlier kept prompt it repeats."""
    if not 0 < threshold <= 1:
        raise UserInputError(
            f"The near-duplicate threshold {threshold} must be above 0 and at most 1 (default 0.8)."
        )
    if not prompts:
        return {}
    shingles, starts = _shingle_hashes(prompts)
    signatures = _minhash(shingles, starts)
    earlier, later = _likely_pairs(signatures, threshold)
    shingle_set = functools.lru_cache(maxsize=4096)(
        lambda i: frozenset(shingles[starts[i]:starts[i + 1]].tolist())
    )
    duplicates: dict[int, int] = {}
    for j, i in zip(earlier.tolist(), later.tolist()):  # sorted by i, so j's fate is settled
        if i in duplicates or j in duplicates:
            continue
        mine, theirs = shingle_set(i), shingle_set(j)
        if len(mine & theirs) >= threshold * len(mine | theirs):
            duplicates[i] = j
    return duplicates


def _likely_pairs(signatures: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (j < i) that share an LSH band and whose signatures agree nearly as often as the
    threshold asks (agreement estimates Jaccard with standard error <= 0.0625), sorted by i."""
    count = len(signatures)
    pairs = []
    for keys in _band_keys(signatures, _band_rows(threshold)).T:
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        for gap in range(1, count):  # neighbours `gap` apart in sorted order with equal keys
            same = np.flatnonzero(ordered[gap:] == ordered[:-gap])
            if not same.size:
                break
            first, second = order[same], order[same + gap]
            pairs.append(np.minimum(first, second) * count + np.maximum(first, second))
    if not pairs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    codes = np.sort(np.concatenate(pairs))  # by (j, i); re-sorted by i below
    codes = codes[np.concatenate([[True], codes[1:] != codes[:-1]])]
    earlier, later = codes // count, codes % count
    compact = (signatures >> np.uint64(32)).astype(np.uint32)  # half the memory traffic
    needed = (threshold - 0.3) * PERMUTATIONS
    keep = np.concatenate([
        (compact[earlier[s:s + 65536]] == compact[later[s:s + 65536]]).sum(axis=1) >= needed
        for s in range(0, len(codes), 65536)
    ])
    earlier, later = earlier[keep], later[keep]
    order = np.lexsort((earlier, later))
    return earlier[order], later[order]


def _band_rows(threshold: float) -> int:
    """Rows per LSH band: the most selective split that still finds a pair at the threshold
    with probability >= 99.9%."""
    for rows in (8, 4, 2):
        if 1 - (1 - threshold**rows) ** (PERMUTATIONS // rows) >= 0.999:
            return rows
    return 1


def _band_keys(signatures: np.ndarray, rows: int) -> np.ndarray:
    """One hash per (prompt, band) of the band's `rows` signature values."""
    bands = signatures.reshape(len(signatures), PERMUTATIONS // rows, rows)
    keys = np.zeros(bands.shape[:2], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = _mix(keys * np.uint64(0x9E3779B97F4A7C15) + bands[:, :, r])
    return keys


def _shingle_hashes(prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All prompts' shingle hashes in one array; prompt i owns [starts[i], starts[i + 1])."""
    words: list[str] = []
    lengths = np.empty(len(prompts), dtype=np.int64)
    for i, prompt in enumerate(prompts):
        own = prompt.lower().translate(_PUNCTUATION).split()
        own += [""] * (SHINGLE - len(own))  # a short prompt still makes one shingle
        words += own
        lengths[i] = len(own)
    vocabulary = {word: n for n, word in enumerate(dict.fromkeys(words), 1)}
    ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))
    count = len(ids) - SHINGLE + 1
    with np.errstate(over="ignore"):
        mixed = np.zeros(count, dtype=np.uint64)
        for offset in range(SHINGLE):
            mixed = mixed * np.uint64(0x9E3779B97F4A7C15) + ids[offset:offset + count]
        mixed = _mix(mixed)
    owner = np.repeat(np.arange(len(prompts)), lengths)
    same_prompt = owner[:count] == owner[SHINGLE - 1:]  # drop shingles across two prompts
    starts = np.concatenate([[0], np.cumsum(lengths - SHINGLE + 1)])
    return mixed[same_prompt], starts


def _mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: every input bit moves every output bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _minhash(shingles: np.ndarray, starts: np.ndarray) -> np.ndarray:
    signatures = np.empty((len(starts) - 1, PERMUTATIONS), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for p in range(PERMUTATIONS):
            signatures[:, p] = np.minimum.reduceat(shingles * _A[p] + _B[p], starts[:-1])
    return signatures
