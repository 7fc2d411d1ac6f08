"""Pictures: load any upload as a safe RGB image, fit it to a panel, compose panels into a grid, size and
PNG metadata."""

import io
import json
import math
import os
import struct
import warnings
from collections.abc import Sequence
from typing import IO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from pipeline.errors import UserInputError

MAX_MEGAPIXELS = 120
PANEL_MIN, PANEL_MAX, PANEL_STEP = 64, 2048, 16

# What PIL raises when a file is cut short or its data does not decode.
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def load_image(source, max_side: int = 2048, min_side: int = 16) -> Image.Image:
    """Any picture (path, bytes, file object or PIL image) as an upright RGB image, long side <= max_side."""
    if isinstance(source, Image.Image):
        return _normalize(source, max_side, min_side)
    fp = _as_file(source)
    try:
        return _normalize(_open(fp), max_side, min_side)
    finally:
        if fp is not source:
            fp.close()


def _as_file(source) -> IO[bytes]:
    """A seekable binary file for a path, bytes or file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb")
        except OSError as exc:
            raise UserInputError(f"cannot open {os.fspath(source)}: {exc.strerror}; check the path") from None
    if hasattr(source, "read"):
        seekable = getattr(source, "seekable", None)
        return source if seekable and seekable() else io.BytesIO(source.read())
    raise UserInputError(f"expected an image file, got {type(source).__name__}: pass a path, bytes or a picture")


def _open(fp: IO[bytes]) -> Image.Image:
    """Read the header only; refuse non-images and decompression bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # PIL warns from 89 MP on; our own limit below is the one that decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError:
        raise UserInputError(_too_many_pixels(_declared_size(fp))) from None
    except _DECODE_ERRORS:
        raise UserInputError("this file is not a picture PIL can read: upload a JPEG, PNG, WebP or GIF") from None
    if img.width * img.height > MAX_MEGAPIXELS * 1_000_000:
        raise UserInputError(_too_many_pixels(img.size))
    return img


def _declared_size(fp: IO[bytes]) -> tuple[int, int]:
    """Header size of a file PIL refused as a bomb, read by its format plugin, which skips that check."""
    fp.seek(0)
    prefix = fp.read(16)
    for factory, accept in (Image.OPEN[name] for name in Image.ID):
        found = accept is None or accept(prefix)
        if found and not isinstance(found, str):
            fp.seek(0)
            try:
                return factory(fp, "").size
            except _DECODE_ERRORS:
                continue
    raise UserInputError(f"image declares too many pixels; the limit is {MAX_MEGAPIXELS} megapixels: resize it first")


def _too_many_pixels(size: tuple[int, int]) -> str:
    w, h = size
    return (
        f"image declares {w}x{h} pixels ({w * h // 1_000_000} megapixels); "
        f"the limit is {MAX_MEGAPIXELS} megapixels: resize it first"
    )


def _normalize(img: Image.Image, max_side: int, min_side: int) -> Image.Image:
    """Check the size, decode (JPEG at a reduced scale when it is big), rotate upright, RGB, shrink."""
    w, h = img.size
    if min(w, h) < min_side:
        raise UserInputError(f"image is {w}x{h} pixels; use a picture at least {min_side} px on each side")
    scale = max_side / max(w, h)
    if scale < 1:
        # JPEG decodes straight at 1/2, 1/4 or 1/8 scale, never below the target size; no-op otherwise.
        img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
    try:
        img.load()
    except _DECODE_ERRORS:
        raise UserInputError("the image file is truncated or corrupt: export or download it again") from None
    img = _to_rgb(ImageOps.exif_transpose(img))
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy: 16-bit grey scaled to 8 bit, transparency composited on white."""
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257
        img = Image.fromarray(np.round(grey).astype(np.uint8))
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        white = Image.new("RGBA", img.size, "white")
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def fit_to_panel(image: Image.Image, width: int, height: int, mode: str = "crop") -> Image.Image:
    """Exactly width x height: "crop" covers the panel and centre-crops, "pad" fits inside on white."""
    if mode == "crop":
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(image, (width, height), Image.LANCZOS, color="white")
    raise UserInputError(f"unknown fit mode {mode!r}: use 'crop' or 'pad'")


def compose_grid(panels: Sequence[Image.Image], columns: int, gutter: int = 0, border: int = 0,
                 color="white") -> Image.Image:
    """Panels in reading order, `columns` to a row, `gutter` px apart inside a `border`, on `color`.
    A column is as wide as its widest panel and a row as tall as its tallest; a panel sits at the top
    left of its cell."""
    if not panels or columns < 1 or len(panels) % columns:
        raise ValueError(f"{len(panels)} panels do not fill rows of {columns}")
    rows = [panels[start:start + columns] for start in range(0, len(panels), columns)]
    widths = [max(row[c].width for row in rows) for c in range(columns)]
    heights = [max(panel.height for panel in row) for row in rows]
    xs = np.cumsum([border] + [width + gutter for width in widths]).tolist()
    ys = np.cumsum([border] + [height + gutter for height in heights]).tolist()
    grid = Image.new("RGB", (xs[-1] - gutter + border, ys[-1] - gutter + border), color)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            grid.paste(panel.convert("RGB"), (xs[c], ys[r]))
    return grid


def parse_size(text: str | int) -> tuple[int, int]:
    """'512' or '512x768' (width x height) or an int, as a checked (width, height)."""
    if isinstance(text, int):
        sides = [text]
    else:
        try:
            sides = [int(part) for part in str(text).lower().split("x")]
        except ValueError:
            sides = []
    if len(sides) not in (1, 2):
        raise UserInputError(f"size {text!r}: write it as WIDTHxHEIGHT, e.g. 512x768, or one number for a square")
    width, height = sides[0], sides[-1]
    check_panel_size(width, height)
    return width, height


def check_panel_size(width: int, height: int) -> None:
    """Refuse a panel size the model cannot take: each side a multiple of 16 in [64, 2048]."""
    sides = (width, height)
    if not all(PANEL_MIN <= side <= PANEL_MAX for side in sides):
        near = _size_text(min(max(side, PANEL_MIN), PANEL_MAX) for side in sides)
        raise UserInputError(
            f"size {width}x{height}: each side must be between {PANEL_MIN} and {PANEL_MAX} pixels (try {near})"
        )
    if width % PANEL_STEP or height % PANEL_STEP:
        down = _size_text(side // PANEL_STEP * PANEL_STEP for side in sides)
        up = _size_text(-(-side // PANEL_STEP) * PANEL_STEP for side in sides)
        raise UserInputError(f"size {width}x{height}: both sides must be multiples of 16 (try {down} or {up})")


def _size_text(sides) -> str:
    return "x".join(str(side) for side in sides)


def png_with_metadata(image: Image.Image, metadata: dict) -> bytes:
    """PNG bytes carrying metadata as JSON ("dsd") and as A1111-style "parameters" text."""
    info = PngImagePlugin.PngInfo()
    info.add_text("dsd", json.dumps(metadata))
    info.add_text("parameters", _parameters_text(metadata))
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def _parameters_text(metadata: dict) -> str:
    """Prompt on the first line, then "Steps: 28, Seed: 1, ..." as image viewers and A1111 show it."""
    fields = []
    for key, value in metadata.items():
        if key != "prompt":
            text = str(value)
            if any(c in text for c in ",:\n"):
                text = json.dumps(text)
            fields.append(f"{key.replace('_', ' ').capitalize()}: {text}")
    return f"{metadata.get('prompt', '')}\n{', '.join(fields)}"


def read_png_metadata(path_or_bytes) -> dict:
    """The metadata png_with_metadata stored, or {} for a picture without it."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        with Image.open(source) as img:
            text = img.info.get("dsd")
    except (OSError, SyntaxError, Image.DecompressionBombError):
        raise UserInputError("this file is not a picture PIL can read: pick a PNG saved by the studio") from None
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UserInputError("the picture's 'dsd' metadata is not valid JSON: pick a PNG saved by the studio") from None
