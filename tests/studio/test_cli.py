"""`dsd generate`: what scripts rely on. Real subprocesses for the contract, in-process for the many bad inputs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.images import read_png_metadata
from studio.cli import main
from tests.pictures import bad_pictures, offline_hub

ROOT = Path(__file__).resolve().parents[2]
CAT = ROOT / "assets" / "examples" / "cat.jpg"


def dsd(*args, home: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *args, "--home", str(home)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **(env or {})},
    )


def test_generate_writes_numbered_pngs_with_parameters(tmp_path):
    out = tmp_path / "out.png"
    result = dsd("generate", "--image", str(CAT), "--prompt", "the cat on a beach", "--out", str(out),
                 "--size", "128x96", "--steps", "3", "--seed", "7", "--num-images", "2", "--keep-reconstruction",
                 "--guidance-steps", "release", "--cache", "taylorseer:3", home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    paths = [out, tmp_path / "out-1.png"]
    for path, seed in zip(paths, (7, 8)):
        assert Image.open(path).size == (128, 96)
        metadata = read_png_metadata(path)
        assert metadata["seed"] == seed and metadata["prompt"] == "the cat on a beach" and metadata["steps"] == 3
        assert metadata["guidance_steps"] == "release" and metadata["cache"] == "taylorseer:3"
        assert f"{path}\tseed {seed}" in result.stdout
    assert Image.open(tmp_path / "out.reconstruction.png").size == (128, 96)
    assert (tmp_path / "home" / "dsd.sqlite").is_file()


def test_same_seed_same_picture_across_runs(tmp_path):
    for name in ("a.png", "b.png"):
        assert main(["generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(tmp_path / name),
                     "--size", "64", "--steps", "2", "--seed", "11", "--home", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()


def test_size_and_steps_default_to_the_models_own(tmp_path):
    """A model folder's sampling.json (the miniature's: 64 px, 20 steps) sets what --size/--steps leave open."""
    import shutil

    base = tmp_path / "base"
    shutil.copytree(ROOT / "assets" / "tiny-dsd", base)
    (base / "sampling.json").write_text('{"width": 80, "height": 64, "steps": 2}')
    out = tmp_path / "out.png"
    assert main(["generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(out), "--seed", "1",
                 "--base", str(base), "--home", str(tmp_path / "home")]) == 0
    assert Image.open(out).size == (80, 64) and read_png_metadata(out)["steps"] == 2
    assert main(["generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(out), "--seed", "1",
                 "--base", str(base), "--size", "64", "--steps", "1", "--home", str(tmp_path / "home")]) == 0
    assert Image.open(out).size == (64, 64) and read_png_metadata(out)["steps"] == 1


def test_a_broken_sampling_file_is_one_clear_error(tmp_path, capsys):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(ROOT / "assets" / "tiny-dsd", base)
    (base / "sampling.json").write_text("{width: 64")
    code = main(["generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(tmp_path / "o.png"),
                 "--base", str(base), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "sampling.json is not valid JSON" in err[0]


def test_bad_input_in_a_real_process_is_one_line_and_exit_2(tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")
    result = dsd("generate", "--image", str(notes), "--prompt", "x", "--out", str(tmp_path / "o.png"), home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not a picture" in result.stderr
    assert "Traceback" not in result.stderr


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra arguments, a phrase the one-line message must contain)."""
    bad = bad_pictures(tmp_path)
    (tmp_path / "partial" / "vae").mkdir(parents=True)
    (tmp_path / "weird").mkdir()
    image = ["--image", str(CAT)]
    return {
        "not an image": (["--image", str(bad["not an image"])], "not a picture"),
        "missing file": (["--image", str(tmp_path / "nope.jpg")], "check the path"),
        "truncated": (["--image", str(bad["truncated"])], "truncated or corrupt"),
        "1x1": (["--image", str(bad["1x1"])], "1x1"),
        "bomb": (["--image", str(bad["bomb"])], "100000x100000"),
        "size": (image + ["--size", "500x512"], "multiples of 16"),
        "empty prompt": (image + ["--prompt", "  "], "prompt is empty"),
        "partial base": (image + ["--base", str(tmp_path / "partial")], "lacks"),
        "not dsd weights": (image + ["--dsd", str(tmp_path / "weird")], "not a DSD weights folder"),
        "offline hub id": (image + ["--dsd", "nobody/nothing"], "hf download nobody/nothing"),
        "not a path or id": (image + ["--base", str(tmp_path / "no" / "such" / "dir")], "neither a folder nor"),
        "too many images": (image + ["--num-images", "99"], "between 1 and 16"),
        "bad output name": (image + ["--out", str(tmp_path / "o.jpg")], ".png"),
        "memory mode without GPU": (image + ["--memory", "model_offload"], "needs a CUDA GPU"),
    }


BAD_INPUTS = [
    "not an image", "missing file", "truncated", "1x1", "bomb", "size", "empty prompt", "partial base",
    "not dsd weights", "offline hub id", "not a path or id", "too many images", "bad output name",
    "memory mode without GPU",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exit_2_with_one_clear_line(case, tmp_path, capsys, monkeypatch):
    offline_hub(monkeypatch, tmp_path)
    extra, phrase = bad_inputs(tmp_path)[case]
    args = {"--prompt": "the cat", "--out": str(tmp_path / "o.png"), "--size": "64", "--steps": "1"}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    argv = ["generate", "--home", str(tmp_path / "home")] + [item for pair in args.items() for item in pair]
    if case == "memory mode without GPU" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsd: error:") and "\n" not in err and phrase in err, err
    assert not (tmp_path / "o.png").exists()


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--image" in err


BAD_NUMBERS = [
    pytest.param(["--guidance", "nan"], "guidance must be a number from 0 to 30, got nan", id="nan guidance"),
    pytest.param(["--image-guidance", "inf"], "image guidance must be a number from 0 to 30, got inf", id="inf image guidance"),
    pytest.param(["--text-guidance=-1e30"], "text guidance must be a number from 0 to 30", id="negative text guidance"),
    pytest.param(["--guidance", "1e300"], "guidance must be a number from 0 to 30, got 1e+300", id="absurd guidance"),
    pytest.param(["--steps", "1.5"], "--steps: invalid int value: '1.5'", id="fractional steps"),
    pytest.param(["--seed", "1.5"], "--seed: invalid int value: '1.5'", id="fractional seed"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_NUMBERS)
def test_a_number_out_of_range_is_refused_before_a_picture_is_drawn(extra, expected, tmp_path):
    """Before this, nan or inf guidance wrote a black picture recorded as ok, and 1e300 was a traceback."""
    out = tmp_path / "o.png"
    result = dsd("generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(out), "--size", "64",
                 "--steps", "1", *extra, home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "home" / "outputs").exists()


def unusable_database(home: Path, kind: str, read_only) -> Path:
    """A data folder with one generation recorded, whose database is then made read-only, cut short, or replaced."""
    from pipeline.store import DB_FILENAME, Store

    Store(home).record_generation(mode="identity", prompt="an old picture", status="ok")
    database = home / DB_FILENAME
    for leftover in (home / f"{DB_FILENAME}-wal", home / f"{DB_FILENAME}-shm"):
        leftover.unlink(missing_ok=True)  # closed cleanly: the database is the one file
    if kind == "read-only":
        read_only(database)
    elif kind == "truncated":
        database.write_bytes(database.read_bytes()[: database.stat().st_size // 3])
    else:
        database.write_text("name,prompt\nnot,a database\n")
    return database


DATA_FOLDER_COMMANDS = [["wheel", "stats"], ["wheel", "captions", "--limit", "2"], ["train", "status"],
                        ["eval", "report", "first"], ["studio", "--port", "9"]]


@pytest.mark.parametrize(("kind", "expected"), [("read-only", "is read-only: make it writable"),
                                                ("truncated", "is not a usable database"),
                                                ("not a database", "is not a usable database")])
def test_a_database_that_cannot_be_used_is_one_line_naming_it_from_every_command(kind, expected, tmp_path, read_only):
    home = tmp_path / "home"
    database = unusable_database(home, kind, read_only)
    out = tmp_path / "o.png"
    generated = dsd("generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(out), "--size", "64",
                    "--steps", "1", home=home)
    for result in [generated] + [dsd(*command, home=home) for command in DATA_FOLDER_COMMANDS]:
        assert result.returncode == 2, (result.args, result.stderr)
        assert result.stderr.count("\n") == 1 and f"{database} {expected}" in result.stderr, result.stderr
    assert not out.exists() and not (home / "references").exists()


def test_out_that_cannot_be_written_is_refused_before_generating(tmp_path, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    (tmp_path / "folder.png").mkdir()
    for out, expected in ((locked / "o.png", f"cannot write into {locked}"),
                          (tmp_path / "folder.png", f"{tmp_path / 'folder.png'} is a folder: name a .png file")):
        result = dsd("generate", "--image", str(CAT), "--prompt", "the cat", "--out", str(out), "--size", "64",
                     "--steps", "1", home=tmp_path / "home")
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    from pipeline.store import Store

    assert Store(tmp_path / "home").list_generations() == [] and list(locked.iterdir()) == []
