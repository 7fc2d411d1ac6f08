from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, features

from pipeline.errors import UserInputError
from pipeline.images import (
    check_panel_size,
    compose_grid,
    fit_to_panel,
    load_image,
    parse_size,
    png_with_metadata,
    read_png_metadata,
)
from tests.pictures import png_declaring

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
RED, WHITE = (255, 0, 0), (255, 255, 255)


@pytest.fixture(scope="module")
def photo():
    """The coffee cup photo, 512x341: landscape, so rotations and fits show."""
    return Image.open(EXAMPLES / "coffee.jpg").convert("RGB")


def mean_diff(a, b):
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


def test_examples_are_small_real_photos():
    for path in sorted(EXAMPLES.glob("*.jpg")):
        img = load_image(path)
        assert path.stat().st_size < 300_000
        assert max(img.size) <= 512 and min(img.size) >= 256
        assert np.asarray(img).std() > 30, f"{path.name} looks flat, not a photo"
    assert len(list(EXAMPLES.glob("*.jpg"))) == 3


def test_path_bytes_file_and_pil_sources_give_the_same_picture(photo):
    path = EXAMPLES / "coffee.jpg"
    with open(path, "rb") as f:
        from_file = load_image(f)
    for img in (load_image(str(path)), load_image(path.read_bytes()), from_file, load_image(photo)):
        assert img.mode == "RGB" and img.size == (512, 341)
        assert mean_diff(img, photo) < 1


def test_cmyk_jpeg_keeps_its_colours(tmp_path, photo):
    path = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(path, quality=95)
    img = load_image(path)
    assert img.mode == "RGB"
    assert mean_diff(img, photo) < 6


def test_16_bit_png_gradient_stays_a_gradient(tmp_path):
    path = tmp_path / "gradient16.png"
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    row = np.asarray(load_image(path))[32, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 2
    assert (np.diff(row) >= 0).all() and len(set(row)) > 200


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path, photo, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    path = tmp_path / f"animated.{fmt.lower()}"
    second = ImageOps.invert(photo)
    photo.save(path, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    img = load_image(path)
    assert mean_diff(img, photo) < 12
    assert mean_diff(img, second) > 60


def test_transparent_png_is_white_where_transparent(tmp_path, photo):
    path = tmp_path / "cutout.png"
    rgba = photo.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 256, 341))
    rgba.save(path)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :256] == 255).all()
    assert mean_diff(pixels[:, 256:], np.asarray(photo)[:, 256:]) < 1


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_grey_alpha_and_palette_transparency_are_white(tmp_path, photo, mode):
    path = tmp_path / f"cutout_{mode}.png"
    if mode == "LA":
        img = photo.convert("LA")
        img.paste((0, 0), (0, 0, 256, 341))
        img.save(path)
    else:
        img = photo.quantize(colors=255)
        img.putpalette(img.getpalette() + [0, 0, 0])  # index 255: black, marked transparent
        img.paste(255, (0, 0, 256, 341))
        img.save(path, transparency=255)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :256] == 255).all()
    assert pixels[:, 256:].mean() < 200


def test_exif_rotated_jpeg_comes_upright(tmp_path, photo):
    path = tmp_path / "phone.jpg"
    stored = photo.copy()
    stored.paste(RED, (0, 0, 60, 60))  # top-left as stored; orientation 6 shows it top-right
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (341, 512)
    top_right = np.asarray(img)[5:55, -55:-5].mean(axis=(0, 1))
    top_left = np.asarray(img)[5:55, 5:55].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[1:].max() < 60
    assert not (top_left[0] > 200 and top_left[1:].max() < 60)


def test_large_jpeg_is_downscaled_keeping_aspect(tmp_path, photo):
    path = tmp_path / "camera.jpg"
    photo.resize((5000, 3000), Image.BILINEAR).save(path, quality=85)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (2048, 1229)
    assert mean_diff(img.resize(photo.size), photo) < 12
    assert load_image(path, max_side=1024).size == (1024, 614)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a picture\n")
    with pytest.raises(UserInputError, match="not a picture"):
        load_image(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="check the path"):
        load_image(tmp_path / "nowhere.png")


def test_truncated_jpeg_is_refused():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = (EXAMPLES / "coffee.jpg").read_bytes()
    with pytest.raises(UserInputError, match="truncated or corrupt") as err:
        load_image(data[: len(data) // 2])
    assert "\n" not in str(err.value)


def test_tiny_image_is_refused(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), RED).save(path)
    with pytest.raises(UserInputError, match=r"1x1 pixels.*at least 16 px"):
        load_image(path)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("side, megapixels", [(100_000, 10_000), (12_000, 144)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, side, megapixels):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(side, side))
    assert path.stat().st_size < 200
    with pytest.raises(UserInputError) as err:
        load_image(path)
    message = str(err.value)
    assert f"{side}x{side} pixels ({megapixels} megapixels)" in message
    assert "limit is 120 megapixels: resize it first" in message


@pytest.mark.parametrize("size", [(512, 512), (512, 768), (768, 512), (1024, 576)])
def test_crop_fills_the_panel_exactly(photo, size):
    panel = fit_to_panel(photo, *size, mode="crop")
    assert panel.size == size
    edges = np.concatenate([np.asarray(panel)[[0, -1]].reshape(-1, 3), np.asarray(panel)[:, [0, -1]].reshape(-1, 3)])
    assert (edges < 250).any(axis=1).mean() > 0.9, "crop left white borders"


@pytest.mark.parametrize("size", [(512, 512), (512, 768), (1024, 512)])
def test_pad_fits_inside_on_white(photo, size):
    panel = fit_to_panel(photo, *size, mode="pad")
    assert panel.size == size
    pixels = np.asarray(panel)
    w, h = size
    assert (pixels[h // 2, w // 2] < 250).any(), "the photo is in the middle"
    if w / h < photo.width / photo.height:  # taller panel: white bands above and below
        assert (pixels[0] == 255).all() and (pixels[-1] == 255).all()
    else:  # wider panel: white bands left and right
        assert (pixels[:, 0] == 255).all() and (pixels[:, -1] == 255).all()


def test_unknown_fit_mode_is_refused(photo):
    with pytest.raises(UserInputError, match="use 'crop' or 'pad'"):
        fit_to_panel(photo, 512, 512, mode="stretch")


def test_compose_grid_places_each_panel_unchanged_between_gutters(photo):
    panels = [fit_to_panel(photo, 40, 30), ImageOps.mirror(fit_to_panel(photo, 24, 30)),
              ImageOps.flip(fit_to_panel(photo, 40, 20)), fit_to_panel(photo, 24, 20, mode="pad")]
    grid = np.asarray(compose_grid(panels, columns=2, gutter=4, border=2, color=(0, 0, 0)))
    assert grid.shape == (2 + 30 + 4 + 20 + 2, 2 + 40 + 4 + 24 + 2, 3)  # columns 40 and 24 wide, rows 30 and 20 tall
    for panel, (x, y) in zip(panels, [(2, 2), (46, 2), (2, 36), (46, 36)]):
        assert (grid[y:y + panel.height, x:x + panel.width] == np.asarray(panel)).all()
    assert (grid[:, 42:46] == 0).all() and (grid[32:36] == 0).all() and (grid[:2] == 0).all()
    assert compose_grid(panels[:2], columns=2).size == (64, 30)  # no gutter, no border: panels abut


def test_compose_grid_needs_whole_rows(photo):
    with pytest.raises(ValueError, match="do not fill rows of 2"):
        compose_grid([photo] * 3, columns=2)


@pytest.mark.parametrize("text, size", [
    ("512", (512, 512)), ("512x768", (512, 768)), ("512X768", (512, 768)),
    (" 768 x 512 ", (768, 512)), (1024, (1024, 1024)), ("64x2048", (64, 2048)),
])
def test_parse_size_accepts(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text, message", [
    ("500x512", "size 500x512: both sides must be multiples of 16 (try 496x512 or 512x512)"),
    ("1000", "size 1000x1000: both sides must be multiples of 16 (try 992x992 or 1008x1008)"),
    ("32x512", "size 32x512: each side must be between 64 and 2048 pixels (try 64x512)"),
    (4096, "size 4096x4096: each side must be between 64 and 2048 pixels (try 2048x2048)"),
    ("0", "between 64 and 2048"),
    ("-512", "between 64 and 2048"),
    ("big", "write it as WIDTHxHEIGHT"),
    ("512x", "write it as WIDTHxHEIGHT"),
    ("512x512x512", "write it as WIDTHxHEIGHT"),
    ("", "write it as WIDTHxHEIGHT"),
])
def test_parse_size_refuses(text, message):
    with pytest.raises(UserInputError) as err:
        parse_size(text)
    assert message in str(err.value)


def test_check_panel_size():
    check_panel_size(512, 768)
    with pytest.raises(UserInputError, match="multiples of 16"):
        check_panel_size(512, 770)


def test_png_metadata_round_trip(tmp_path, photo):
    metadata = {"prompt": "a photo of the cup on a beach, at dusk", "steps": 28, "seed": 1,
                "guidance_scale": 3.5, "size": [512, 768], "reference": "猫.png"}
    data = png_with_metadata(photo, metadata)
    path = tmp_path / "out.png"
    path.write_bytes(data)
    assert read_png_metadata(data) == metadata
    assert read_png_metadata(path) == metadata
    with Image.open(path) as img:
        assert mean_diff(img.convert("RGB"), photo) == 0
        prompt, fields = img.info["parameters"].split("\n")
    assert prompt == metadata["prompt"]
    assert fields.startswith("Steps: 28, Seed: 1, Guidance scale: 3.5, Size: ")


def test_png_without_metadata_reads_empty(tmp_path, photo):
    path = tmp_path / "plain.png"
    photo.save(path)
    assert read_png_metadata(path) == {}
