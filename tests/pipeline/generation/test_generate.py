"""`generate` keeps a generation whole: its pictures and its history row are written together or not at all."""

from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from pipeline.generation.generate import GenerateRequest, Settings, generate
from pipeline.generation.weights import ModelSpec
from pipeline.store import DB_FILENAME, Store

CAT = Path(__file__).resolve().parents[3] / "assets" / "examples" / "cat.jpg"


def test_a_database_that_turns_read_only_mid_generation_leaves_no_picture_without_its_row(tmp_path, tiny_base,
                                                                                          read_only):
    settings = Settings(home=tmp_path / "home", model=ModelSpec(base=str(tiny_base)), memory="cpu")
    database = settings.home / DB_FILENAME
    out = tmp_path / "pictures" / "out.png"
    request = GenerateRequest(image=str(CAT), prompt="the cat", width=64, height=64, steps=2, seed=1, num_images=2,
                              keep_reconstruction=True)
    turned = []

    def turn_read_only(step, total):
        if not turned:
            turned.append(read_only(database))

    with pytest.raises(UserInputError, match=f"the database {database} is read-only: make it writable"):
        generate(request, settings, out=out, progress=turn_read_only)

    assert list(out.parent.iterdir()) == []
    turned[0]()
    assert Store(settings.home).list_generations() == []
    assert generate(request, settings, out=out).paths == [out, out.with_name("out-1.png")]
    assert len(Store(settings.home).list_generations()) == 1
