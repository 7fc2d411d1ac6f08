"""Grid splitting on grids built from the example photographs, with known panel boxes."""

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.errors import UserInputError
from pipeline.images import compose_grid
from pipeline.wheel.grids import Layout, compose_pairs, panel_problem, split_grid

EXAMPLES = Path(__file__).resolve().parents[3] / "assets" / "examples"
TURNS = (lambda im: im, ImageOps.mirror, ImageOps.flip, lambda im: im.rotate(180))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """Distinct pictures: each example photo, then turned, so neighbouring panels differ."""
    sources = [Image.open(path).convert("RGB") for path in sorted(EXAMPLES.glob("*.jpg"))]
    return [turn(photo) for turn in TURNS for photo in sources]


def build(photos, layout, widths, heights, gutter=8, border=0, color=(255, 255, 255)):
    """A grid from photos fitted to the cells, with each panel's true box and pixels."""
    panels = [ImageOps.fit(photos[i], (widths[i % layout.cols], heights[i // layout.cols]))
              for i in range(layout.panels)]
    grid = compose_grid(panels, layout.cols, gutter, border, color)
    xs = np.cumsum([border] + [w + gutter for w in widths])
    ys = np.cumsum([border] + [h + gutter for h in heights])
    boxes = [(xs[c], ys[r], xs[c] + widths[c], ys[r] + heights[r])
             for r in range(layout.rows) for c in range(layout.cols)]
    return grid, panels, boxes


def assert_split(found, panels, boxes, tolerance=3):
    """Same number of panels, boxes within `tolerance` px, and the same pixels as the sources."""
    assert len(found) == len(panels)
    for panel, source, box in zip(found, panels, boxes):
        assert np.abs(np.subtract(panel.box, box)).max() <= tolerance, (panel.box, box)
        x0, y0, x1, y1 = panel.box
        overlap = (max(x0, box[0]), max(y0, box[1]), min(x1, box[2]), min(y1, box[3]))
        ours = np.asarray(panel.image.crop(tuple(o - p for o, p in zip(overlap, (x0, y0) * 2))), float)
        theirs = np.asarray(source.crop(tuple(o - b for o, b in zip(overlap, box[:2] * 2))), float)
        assert np.abs(ours - theirs).mean() < 2


@pytest.mark.parametrize("gutter", [2, 8, 24])
@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), (40, 160, 90)])
def test_gutters_of_any_width_and_color(photos, gutter, color):
    layout = Layout.parse("2x2")
    grid, panels, boxes = build(photos, layout, [256, 256], [256, 256], gutter, color=color)
    found = split_grid(grid, layout)
    assert_split(found, panels, boxes)
    assert {p.method for p in found} == {"gutter"}
    assert [(p.row, p.col) for p in found] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_outer_border_is_cropped_away(photos):
    layout = Layout.parse("2x2")
    grid, panels, boxes = build(photos, layout, [240, 240], [240, 240], 12, border=16, color=(20, 20, 20))
    assert_split(split_grid(grid, layout), panels, boxes)


def test_uneven_columns(photos):
    layout = Layout.parse("2x2")
    grid, panels, boxes = build(photos, layout, [200, 312], [256, 256], 8)
    assert_split(split_grid(grid, layout), panels, boxes)


@pytest.mark.parametrize("text, widths, heights", [
    ("1x2", [300, 300], [280]),
    ("2x3", [200, 220, 180], [210, 190]),
    ("3x3", [160, 160, 160], [160, 150, 170]),
])
def test_other_layouts(photos, text, widths, heights):
    layout = Layout.parse(text)
    grid, panels, boxes = build(photos, layout, widths, heights, 6, border=10)
    assert_split(split_grid(grid, layout), panels, boxes)


@pytest.mark.parametrize("text", ["2x2", "1x2", "2x3"])
def test_abutting_panels_are_cut_at_their_edges(photos, text):
    layout = Layout.parse(text)
    grid, panels, boxes = build(photos, layout, [230, 282, 250][: layout.cols], [240, 272][: layout.rows], 0)
    found = split_grid(grid, layout)
    assert_split(found, panels, boxes)
    assert {p.method for p in found} == {"edge"}


def test_flat_picture_falls_back_to_even_split():
    found = split_grid(Image.new("RGB", (400, 200), (90, 90, 90)), Layout.parse("1x2"))
    assert [p.box for p in found] == [(0, 0, 200, 200), (200, 0, 400, 200)]
    assert {p.method for p in found} == {"even"}


@pytest.mark.parametrize("text", ["2x2", "1x2", "2x3", "3x3"])
def test_layout_is_inferred_from_gutters(photos, text):
    layout = Layout.parse(text)
    grid, panels, boxes = build(photos, layout, [200, 240, 210][: layout.cols], [200, 180, 220][: layout.rows], 8,
                                border=8, color=(0, 0, 0))
    found = split_grid(grid)
    assert_split(found, panels, boxes)
    assert (found[-1].row + 1, found[-1].col + 1) == (layout.rows, layout.cols)


def test_large_grid_splits_fast(photos):
    layout = Layout.parse("2x2")
    grid, panels, boxes = build(photos, layout, [508, 508], [508, 508], 8)
    assert grid.size == (1024, 1024)
    split_grid(grid, layout)
    # CPU time, not wall clock (a busy machine stretches the wall clock 5x and more). It measures about
    # 0.05 s; a Python loop over the grid's million pixels, at a microsecond or more a pixel, takes over 1 s.
    start = time.process_time()
    found = split_grid(grid, layout)
    assert time.process_time() - start < 1.0
    assert_split(found, panels, boxes)


def test_panel_problems(photos):
    photo = ImageOps.fit(photos[0], (256, 256))
    assert panel_problem(photo) is None
    assert "blank" in panel_problem(Image.new("RGB", (256, 256), (200, 200, 200)))
    flat = Image.new("RGB", (256, 256), (30, 90, 200))
    flat.paste(photo.resize((64, 64)), (96, 96))
    assert "flat" in panel_problem(flat)
    assert "small" in panel_problem(photo.resize((40, 40)))
    assert "aspect" in panel_problem(ImageOps.fit(photos[0], (600, 150)))
    broken = photo.copy()
    broken.paste((0, 0, 0), (0, 0, 256, 180))
    assert "broken" in panel_problem(broken)


def test_split_panels_of_a_real_grid_are_usable(photos):
    grid, _, _ = build(photos, Layout.parse("2x3"), [200] * 3, [200] * 2, 8)
    assert [panel_problem(p.image) for p in split_grid(grid, Layout.parse("2x3"))] == [None] * 6


@pytest.mark.parametrize("n", [0, 1, 2, 4, 9])
def test_compose_pairs_gives_every_ordered_pair(n):
    indices = list(range(3, 3 + n))
    pairs = compose_pairs(indices)
    assert len(pairs) == len(set(pairs)) == n * (n - 1)
    assert all(i != j and i in indices and j in indices for i, j in pairs)


def test_layout_parsing():
    assert [str(Layout.parse(t)) for t in ("2x2", "1x2", " 2X3 ", "3x3")] == ["2x2", "1x2", "2x3", "3x3"]
    layout = Layout.parse("2x3")
    assert (layout.rows, layout.cols, layout.panels) == (2, 3, 6)
    for bad in ("", "4", "2x", "4x4", "2x2x2", "two by two", "0x2"):
        with pytest.raises(UserInputError, match="rows x columns"):
            Layout.parse(bad)
