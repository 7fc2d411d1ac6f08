"""Teacher grids: cut a generated grid into panels, check the panels, compose them into pairs.

Generated grids are messy (gutters of any width and color, outer borders, uneven splits, panels
that abut with no gutter), so cuts are found from per-line profiles, not assumed to be even.
"""

import itertools
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.errors import UserInputError

LAYOUTS = ("2x2", "1x2", "2x3", "3x3")
MAX_PER_AXIS = 4
# A gutter line: at least this share of its pixels within LINE_TOL (any channel) of its median color.
LINE_UNIFORM, LINE_TOL = 0.9, 16
LINE_SAMPLES = 256  # pixels looked at per line: plenty for the statistics, and fast
# An abutting panel edge: a jump between adjacent lines this large, and this many times the local norm.
EDGE_MIN, EDGE_RATIO = 10.0, 3.0
# How a cut was found, weakest last: a panel reports the weakest of its cuts.
METHODS = ("gutter", "edge", "even")


@dataclass(frozen=True)
class Layout:
    """A grid of `rows` x `cols` panels, written "RxC"."""

    rows: int
    cols: int

    @classmethod
    def parse(cls, text: str) -> "Layout":
        """"2x2", "1x2", "2x3" or "3x3" as a Layout; anything else is a UserInputError."""
        match = re.fullmatch(r"\s*(\d)\s*[xX×]\s*(\d)\s*", str(text))
        if not match or f"{match[1]}x{match[2]}" not in LAYOUTS:
            raise UserInputError(f"Unknown grid layout {text!r}: use one of {', '.join(LAYOUTS)} (rows x columns).")
        return cls(int(match[1]), int(match[2]))

    @property
    def panels(self) -> int:
        return self.rows * self.cols

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"


@dataclass(frozen=True)
class AxisCuts:
    """Panels along one axis: their (start, end) spans and how each interior cut was found."""

    spans: tuple[tuple[int, int], ...]
    methods: tuple[str, ...]

    def method_of(self, index: int) -> str | None:
        """The weakest method among the cuts bounding panel `index` (None when it has none)."""
        own = self.methods[max(index - 1, 0): index + 1]
        return max(own, key=METHODS.index) if own else None


@dataclass(frozen=True)
class Panel:
    """One panel cut from a grid: its pixels, its box (x0, y0, x1, y1) in the grid and its place."""

    image: Image.Image
    box: tuple[int, int, int, int]
    row: int
    col: int
    method: str


def find_cuts(image: Image.Image, layout: Layout | None = None) -> tuple[AxisCuts, AxisCuts]:
    """Panel spans along x (columns) and y (rows); counts come from `layout` or from the gutters."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    cols = _axis_cuts(pixels.transpose(1, 0, 2), layout.cols if layout else None)
    rows = _axis_cuts(pixels, layout.rows if layout else None)
    return cols, rows


def split_grid(image: Image.Image, layout: Layout | None = None) -> list[Panel]:
    """The grid's panels in reading order, outer borders and gutters cut away."""
    image = image.convert("RGB")
    cols, rows = find_cuts(image, layout)
    panels = []
    for r, (y0, y1) in enumerate(rows.spans):
        for c, (x0, x1) in enumerate(cols.spans):
            found = [m for m in (cols.method_of(c), rows.method_of(r)) if m]
            method = max(found, key=METHODS.index) if found else "even"
            box = (x0, y0, x1, y1)
            panels.append(Panel(image.crop(box), box, r, c, method))
    return panels


def _axis_cuts(lines: np.ndarray, count: int | None) -> AxisCuts:
    """Cuts along the first axis of `lines` (N lines x L pixels x 3)."""
    n = len(lines)
    sample = np.ascontiguousarray(lines[:, :: max(1, lines.shape[1] // LINE_SAMPLES)])
    bands = _bands(_uniform_share(sample) >= LINE_UNIFORM)
    lo = next((b for a, b in bands if a == 0), 0)
    hi = next((a for a, b in bands if b == n), n)
    if lo >= hi:  # one flat picture: nothing to cut
        lo, hi = 0, n
    interior = [(a, b) for a, b in bands if a > 0 and b < n]
    if count is None:
        cuts = [(a, b, "gutter") for a, b in _infer_gutters(interior, lo, hi)]
    else:
        cuts = _match_cuts(sample, interior, lo, hi, count)
    starts = [lo] + [b for _, b, _ in cuts]
    ends = [a for a, _, _ in cuts] + [hi]
    return AxisCuts(tuple(zip(starts, ends)), tuple(m for _, _, m in cuts))


def _uniform_share(sample: np.ndarray) -> np.ndarray:
    """Per line, the share of pixels close to the line's median color (1.0 for a flat band)."""
    median = np.median(sample, axis=1, keepdims=True)
    return (np.abs(sample - median).max(axis=2) <= LINE_TOL).mean(axis=1)


def _bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True as half-open (start, end) pairs."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _infer_gutters(bands: list, lo: int, hi: int) -> list[tuple[int, int]]:
    """Up to MAX_PER_AXIS - 1 gutters, widest first, that leave no panel under a tenth of the span."""
    smallest = max(16, (hi - lo) // 10)
    chosen: list[tuple[int, int]] = []
    for band in sorted(bands, key=lambda ab: ab[0] - ab[1]):
        trial = sorted(chosen + [band])
        starts, ends = [lo] + [b for _, b in trial], [a for a, _ in trial] + [hi]
        if len(trial) < MAX_PER_AXIS and all(e - s >= smallest for s, e in zip(starts, ends)):
            chosen = trial
    return chosen


def _match_cuts(sample: np.ndarray, bands: list, lo: int, hi: int, count: int) -> list[tuple[int, int, str]]:
    """The `count - 1` cuts nearest the even split: a gutter band if one is near, else an edge, else even."""
    step = (hi - lo) / count
    expected = [lo + k * step for k in range(1, count)]
    def near(e: float) -> list:  # the few bands within half a panel of e, nearest first
        by_distance = sorted(bands, key=lambda b: abs((b[0] + b[1]) / 2 - e))
        return [b for b in by_distance[:8] if abs((b[0] + b[1]) / 2 - e) < step / 2]

    options = [near(e) + [None] for e in expected]

    def cost(choice) -> float:
        picked = [(b[0] + b[1]) / 2 for b in choice if b]
        if any(p >= q for p, q in zip(picked, picked[1:])):
            return float("inf")
        return sum(abs((b[0] + b[1]) / 2 - e) / step if b else 1.0 for b, e in zip(choice, expected))

    best = min(itertools.product(*options), key=cost)
    cuts, previous = [], lo
    for k, (band, e) in enumerate(zip(best, expected)):
        following = next((b[0] for b in best[k + 1:] if b), hi)
        if band:
            cuts.append((*band, "gutter"))
        else:
            window = (max(previous + 1, int(e - step / 2)), min(following - 1, int(e + step / 2)))
            at = _edge_at(sample, *window)
            even = min(max(round(e), previous), following)
            cuts.append((at, at, "edge") if at is not None else (even, even, "even"))
        previous = cuts[-1][1]
    return cuts


def _edge_at(sample: np.ndarray, a: int, b: int) -> int | None:
    """The position in [a, b) where adjacent lines jump the most, if the jump stands out."""
    if b - a < 3:
        return None
    jumps = np.abs(sample[a:b] - sample[a - 1: b - 1]).mean(axis=(1, 2))
    peak = int(np.argmax(jumps))
    if jumps[peak] >= max(EDGE_MIN, EDGE_RATIO * float(np.median(jumps))):
        return a + peak
    return None


def panel_problem(image: Image.Image, min_side: int = 64) -> str | None:
    """Why a panel is unusable as a training image, or None when it is fine."""
    w, h = image.size
    if min(w, h) < min_side:
        return f"too small ({w}x{h}, needs {min_side} px per side)"
    if max(w, h) > 3 * min(w, h):
        return f"extreme aspect ratio ({w}x{h}, over 3:1)"
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    if pixels.std() < 4:
        return "blank (near-uniform)"
    median = np.median(pixels.reshape(-1, 3), axis=0)
    if (np.abs(pixels - median).max(axis=2) <= 24).mean() >= 0.9:
        return "mostly one flat color"
    black, white = (pixels.max(axis=2) <= 8).mean(), (pixels.min(axis=2) >= 247).mean()
    if max(black, white) >= 0.6:
        return f"broken (mostly pure {'black' if black > white else 'white'})"
    return None


def compose_pairs(panels: list[int]) -> list[tuple[int, int]]:
    """Every ordered (reference, target) pair of distinct panel indices."""
    return list(itertools.permutations(panels, 2))
