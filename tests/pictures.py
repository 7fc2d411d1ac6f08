"""Bad pictures and an offline Hub, shared by the image, CLI and studio tests."""

import struct
import zlib
from pathlib import Path

import huggingface_hub.constants
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose valid IHDR claims width x height RGB pixels (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def bad_pictures(folder: Path) -> dict[str, Path]:
    """Files a user might upload that are not usable pictures, by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = (EXAMPLES / "cat.jpg").read_bytes()
    files = {
        "not an image": (folder / "notes.png", b"shopping list: milk, eggs\n" * 20),
        "truncated": (folder / "cut.jpg", jpeg[: len(jpeg) // 3]),
        "bomb": (folder / "bomb.png", png_declaring(100_000, 100_000)),
    }
    for path, data in files.values():
        path.write_bytes(data)
    Image.new("RGB", (1, 1), "red").save(folder / "dot.png")
    return {name: path for name, (path, _) in files.items()} | {"1x1": folder / "dot.png"}


def offline_hub(monkeypatch, folder: Path) -> None:
    """No network and an empty cache. huggingface_hub reads these at import: patch both places."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(folder / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder / "hf" / "hub"))
