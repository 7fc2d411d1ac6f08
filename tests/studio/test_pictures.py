"""The training samples' grid: a row per prompt, a column per step, drawn again only when new samples came."""

from pathlib import Path

import PIL.Image

from studio.pictures import sample_grid, sample_grid_file, shown_steps

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def test_the_samples_grid_has_a_row_per_prompt_and_a_column_per_step():
    cat, coffee = (PIL.Image.open(EXAMPLES / name) for name in ("cat.jpg", "coffee.jpg"))
    cells = {(0, 10): cat, (1, 10): coffee, (0, 20): cat}  # (1, 20) is missing: drawn blank

    grid = sample_grid(cells, {0: "the cat", 1: "the cup of coffee"}, [10, 20], cell=64)
    narrow = sample_grid(cells, {0: "the cat", 1: "the cup of coffee"}, [10], cell=64)

    column = grid.width - narrow.width
    assert column >= 64 and grid.height == narrow.height > 2 * 64
    right, bottom = grid.width - column + 32, grid.height - 32  # the middle of the last cell
    assert grid.getpixel((right, bottom)) == (255, 255, 255), "a missing sample is a blank cell"
    assert grid.getpixel((right, bottom - 64 - 4)) != (255, 255, 255), "the cat at step 20 is drawn"
    assert shown_steps(list(range(100, 2100, 100)), 5) == [100, 600, 1100, 1500, 2000]


def test_the_grid_file_is_drawn_again_only_for_new_samples(tmp_path):
    sample = lambda step, idx: {"step": step, "idx": idx, "prompt": f"prompt {idx}",  # noqa: E731
                                "path": str(EXAMPLES / "cat.jpg")}
    folder = tmp_path / "sample-grids"

    assert sample_grid_file([], folder, 1) is None
    first = sample_grid_file([sample(10, 0), sample(10, 1)], folder, 1)
    drawn, one_column = Path(first).stat().st_mtime_ns, PIL.Image.open(first).width
    again = sample_grid_file([sample(10, 0), sample(10, 1)], folder, 1)
    assert again == first and Path(first).stat().st_mtime_ns == drawn, "no new samples: the same file"

    later = sample_grid_file([sample(10, 0), sample(10, 1), sample(20, 0)], folder, 1)
    assert later != first and PIL.Image.open(later).width > one_column  # a column more
    assert [path.name for path in folder.iterdir()] == [Path(later).name], "the older grid is replaced"
