from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import BUILTIN, KINDS, load_benchmark

PROMPTS = [f"prompt {index}" for index in range(9)]


def add_subject(root: Path, path: str, name: str, prompts=PROMPTS, color=(200, 30, 30)) -> None:
    """One reference image and its caption file at `images/PATH.jpg` and `captions/PATH.txt`."""
    image = root / "images" / f"{path}.jpg"
    caption = root / "captions" / f"{path}.txt"
    image.parent.mkdir(parents=True, exist_ok=True)
    caption.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), color).save(image)
    caption.write_text("\n".join([name, *prompts]) + "\n", encoding="utf-8")


@pytest.fixture
def dreambench(tmp_path) -> Path:
    """A DreamBench++-shaped folder: hyphenated names, one subject with only 5 prompts."""
    root = tmp_path / "data"
    add_subject(root, "live_subject/animal/00", "corgi-dog")
    add_subject(root, "live_subject/animal/01", "grey-cat", PROMPTS[:5])
    add_subject(root, "live_subject/human/00", "spider-man")
    add_subject(root, "object/00", "red-backpack")
    add_subject(root, "object/01", "teapot")
    add_subject(root, "style/00", "ink-wash painting")
    return root


def test_subjects_keep_whole_ids_names_and_categories(dreambench):
    benchmark = load_benchmark(dreambench)
    by_id = {subject.id: subject for subject in benchmark.subjects}
    assert sorted(by_id) == [
        "live_subject/animal/00", "live_subject/animal/01", "live_subject/human/00",
        "object/00", "object/01", "style/00",
    ]
    spider = by_id["live_subject/human/00"]
    assert (spider.category, spider.name) == ("human", "spider-man")
    assert spider.reference == dreambench / "images" / "live_subject" / "human" / "00.jpg"
    assert spider.prompts == tuple(PROMPTS)
    assert by_id["style/00"].category == "style"


def test_items_take_their_kind_from_the_prompt_index(dreambench):
    items = load_benchmark(dreambench).items()
    spider = [item for item in items if item.subject_name == "spider-man"]
    assert [item.kind for item in spider] == ["photorealistic"] * 4 + ["style change"] * 3 + ["imaginative"] * 2
    assert [item.id for item in spider][:2] == ["live_subject/human/00#0", "live_subject/human/00#1"]
    assert spider[4].prompt == "prompt 4" and spider[4].prompt_index == 4
    assert len({item.id for item in items}) == len(items)
    short = [item for item in items if item.subject_id == "live_subject/animal/01"]
    assert [item.kind for item in short] == ["photorealistic"] * 4 + ["style change"]
    assert {item.kind for item in items} == set(KINDS)


def test_counts_per_category(dreambench):
    benchmark = load_benchmark(dreambench)
    assert Counter(subject.category for subject in benchmark.subjects) == {"animal": 2, "human": 1, "object": 2, "style": 1}
    assert Counter(item.category for item in benchmark.items()) == {"animal": 14, "human": 9, "object": 18, "style": 9}
    assert len(benchmark.items()) == 50


def test_fingerprint_is_stable_and_follows_the_files(dreambench):
    first = load_benchmark(dreambench).fingerprint
    assert load_benchmark(dreambench).fingerprint == first
    caption = dreambench / "captions" / "object" / "01.txt"
    caption.write_text(caption.read_text().replace("prompt 8", "a teapot on the moon"))
    changed = load_benchmark(dreambench).fingerprint
    assert changed != first
    Image.new("RGB", (32, 24), (0, 0, 255)).save(dreambench / "images" / "object" / "01.jpg")
    assert load_benchmark(dreambench).fingerprint not in (first, changed)


def test_builtin_set_loads_four_subjects_and_36_items():
    benchmark = load_benchmark(BUILTIN)
    assert Counter(subject.category for subject in benchmark.subjects) == {"animal": 1, "human": 1, "object": 1, "style": 1}
    items = benchmark.items()
    assert len(items) == 36
    assert all(Image.open(item.reference).size[0] <= 256 for item in items)
    assert [item.kind for item in items].count("imaginative") == 8


def one_line_error(folder) -> str:
    with pytest.raises(UserInputError) as caught:
        load_benchmark(folder)
    message = str(caught.value)
    assert "\n" not in message and "captions/<same path>/NN.txt" in message
    return message


def test_missing_caption_file_is_named(dreambench):
    (dreambench / "captions" / "object" / "01.txt").unlink()
    assert "images/object/01.jpg has no captions/object/01.txt" in one_line_error(dreambench)


def test_caption_without_prompts_is_refused(dreambench):
    (dreambench / "captions" / "style" / "00.txt").write_text("ink-wash painting\n")
    assert "captions/style/00.txt needs a subject name and at least one prompt" in one_line_error(dreambench)


def test_caption_with_too_many_prompts_is_refused(dreambench):
    add_subject(dreambench, "object/02", "lamp", PROMPTS + ["prompt 9"])
    assert "captions/object/02.txt has 10 prompts" in one_line_error(dreambench)


def test_empty_or_missing_folder_is_refused(tmp_path):
    assert "has no reference images" in one_line_error(tmp_path)
    assert "does not exist" in one_line_error(tmp_path / "nowhere")


def test_a_benchmark_of_other_subjects_names_its_categories_in_order(tmp_path):
    """`benchmark.json` lists the category folders; items follow that order (an evaluation's seeds are their
    places), and a prompt's kind is its category's name."""
    root = tmp_path / "world"
    add_subject(root, "relight/01", "blue star", ["lit from the left"])
    add_subject(root, "identity/00", "red circle", ["at sea"])
    add_subject(root, "relight/02", "green square", ["lit from above"])
    (root / "benchmark.json").write_text('{"categories": ["identity", "relight"]}')
    benchmark = load_benchmark(root)
    assert [(item.id, item.category, item.kind) for item in benchmark.items()] == [
        ("identity/00#0", "identity", "identity"), ("relight/01#0", "relight", "relight"),
        ("relight/02#0", "relight", "relight")]
    first = benchmark.fingerprint
    (root / "benchmark.json").write_text('{"categories": ["relight", "identity"]}')
    assert [s.id for s in load_benchmark(root).subjects] == ["relight/01", "relight/02", "identity/00"]
    assert load_benchmark(root).fingerprint != first  # the order is part of the benchmark


@pytest.mark.parametrize("manifest", ['{"categories": []}', '["identity"]', "not json", '{"categories": ["../up"]}'])
def test_a_bad_category_list_is_one_line(tmp_path, manifest):
    add_subject(tmp_path, "identity/00", "red circle", ["at sea"])
    (tmp_path / "benchmark.json").write_text(manifest)
    with pytest.raises(UserInputError) as caught:
        load_benchmark(tmp_path)
    assert "benchmark.json must be JSON like" in str(caught.value) and "\n" not in str(caught.value)
