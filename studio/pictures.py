"""Pictures the studio draws: a training run's samples as one labelled grid (a row per prompt, a column per step)."""

from pathlib import Path

import PIL.Image
from PIL import ImageDraw, ImageFont, ImageOps

GRID_COLUMNS, CELL_PX = 8, 128


def shown_steps(steps: list[int], most: int = GRID_COLUMNS) -> list[int]:
    """At most `most` of `steps`, evenly spread, always the first and the newest."""
    if len(steps) <= most:
        return steps
    return [steps[round(i * (len(steps) - 1) / (most - 1))] for i in range(most)]


def sample_grid(cells: dict[tuple[int, int], PIL.Image.Image], prompts: dict[int, str], steps: list[int],
                cell: int = CELL_PX) -> PIL.Image.Image:
    """One picture of the samples: a row per prompt, a column per step, labelled; a missing cell is blank."""
    font = ImageFont.load_default(size=13)
    label_w, head_h, pad = 180, 22, 4
    grid = PIL.Image.new("RGB", (label_w + len(steps) * (cell + pad), head_h + len(prompts) * (cell + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for column, step in enumerate(steps):
        draw.text((label_w + column * (cell + pad), 4), f"step {step}", fill="black", font=font)
    for row, idx in enumerate(sorted(prompts)):
        top = head_h + row * (cell + pad)
        lines = wrapped(prompts[idx], draw, font, label_w - 8)
        draw.multiline_text((4, top), "\n".join(lines[:cell // 16]), fill="black", font=font)
        for column, step in enumerate(steps):
            if (idx, step) in cells:
                picture = ImageOps.contain(cells[idx, step].convert("RGB"), (cell, cell))
                grid.paste(picture, (label_w + column * (cell + pad), top))
    return grid


def wrapped(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def sample_grid_file(samples: list[dict], folder: Path, run_id: int) -> str | None:
    """The grid of run `run_id`'s samples (rows of `run_samples`, by step and index) as a PNG in `folder`,
    drawn again only when new samples came; None before the first."""
    if not samples:
        return None
    path = folder / f"run-{run_id}-{len(samples)}-{samples[-1]['step']}.png"
    if not path.is_file():
        steps = shown_steps(sorted({row["step"] for row in samples}))
        cells = {(row["idx"], row["step"]): PIL.Image.open(row["path"])
                 for row in samples if row["step"] in steps and Path(row["path"]).is_file()}
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"run-{run_id}-*.png"):
            old.unlink()
        sample_grid(cells, {row["idx"]: row["prompt"] for row in samples}, steps).save(path)
    return str(path)
