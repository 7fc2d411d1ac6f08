"""A DreamBench++ folder (or any folder in its layout) as subjects and prompt items.

Layout, as in DreamBench++'s `data.zip`:

    images/live_subject/animal/NN.jpg    captions/live_subject/animal/NN.txt
    images/live_subject/human/NN.jpg     captions/live_subject/human/NN.txt
    images/object/NN.jpg                 captions/object/NN.txt
    images/style/NN.jpg                  captions/style/NN.txt

A caption file holds the subject name on line 1 and up to 9 prompts on the lines after it.
The prompt's index says its kind: 0-3 photorealistic, 4-6 style change, 7-8 imaginative.

Ids are paths, never split on '-' (subject names like "spider-man" hold hyphens):
a subject id is the image path under `images/` without its suffix (`live_subject/animal/03`),
an item id is the subject id, '#', and the prompt index (`live_subject/animal/03#4`).

A benchmark of other subjects names its own categories, in order, in `benchmark.json`
(`{"categories": ["identity", "relight", "instruct"]}`): each is a folder under `images/` and `captions/`
in the same layout, and its prompts' kind is the category's name (DreamBench++'s prompt kinds are its
own). The miniature's world benchmark is one (`mini.benchmark`).
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserInputError

BUILTIN = Path(__file__).resolve().parents[2] / "assets" / "dreambench-mini"

CATEGORY_FOLDERS = {
    "animal": "live_subject/animal",
    "human": "live_subject/human",
    "object": "object",
    "style": "style",
}
CATEGORIES = tuple(CATEGORY_FOLDERS)
PROMPT_KINDS = ("photorealistic",) * 4 + ("style change",) * 3 + ("imaginative",) * 2
KINDS = ("photorealistic", "style change", "imaginative")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST = "benchmark.json"
LAYOUT = (
    "expected DreamBench++'s layout: images/live_subject/{animal,human}/NN.jpg and "
    "images/{object,style}/NN.jpg, each with captions/<same path>/NN.txt holding the subject name "
    "on line 1 and 1 to 9 prompts on the lines after it"
)


@dataclass(frozen=True)
class Subject:
    id: str
    category: str
    name: str
    reference: Path
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    subject_id: str
    category: str
    subject_name: str
    reference: Path
    prompt_index: int
    prompt: str
    kind: str

    @property
    def id(self) -> str:
        return item_id(self.subject_id, self.prompt_index)


def item_id(subject_id: str, prompt_index: int) -> str:
    return f"{subject_id}#{prompt_index}"


@dataclass(frozen=True)
class Benchmark:
    folder: Path
    subjects: tuple[Subject, ...]
    fingerprint: str

    def items(self) -> list[Item]:
        """Every prompt of every subject, in the benchmark's order (its categories', then file names')."""
        return [
            Item(subject.id, subject.category, subject.name, subject.reference, index, prompt,
                 PROMPT_KINDS[index] if subject.category in CATEGORY_FOLDERS else subject.category)
            for subject in self.subjects
            for index, prompt in enumerate(subject.prompts)
        ]


def _read_caption(path: Path, folder: Path) -> tuple[str, tuple[str, ...]]:
    where = path.relative_to(folder)
    try:
        lines = path.read_text(encoding="utf-8").rstrip().splitlines()
    except UnicodeDecodeError:
        raise UserInputError(f"benchmark folder {folder}: {where} is not UTF-8 text; {LAYOUT}") from None
    lines = [line.strip() for line in lines]
    if len(lines) < 2 or not lines[0]:
        raise UserInputError(f"benchmark folder {folder}: {where} needs a subject name and at least one prompt; {LAYOUT}")
    if len(lines) > 1 + len(PROMPT_KINDS):
        raise UserInputError(f"benchmark folder {folder}: {where} has {len(lines) - 1} prompts; {LAYOUT}")
    if not all(lines[1:]):
        raise UserInputError(f"benchmark folder {folder}: {where} has an empty prompt line; {LAYOUT}")
    return lines[0], tuple(lines[1:])


def _fingerprint(folder: Path, files: list[Path]) -> str:
    """sha256 over every file's path and bytes, so a changed picture or prompt changes it."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _categories(folder: Path) -> tuple[dict[str, str], list[Path]]:
    """Category name -> folder under images/: DreamBench++'s four, or those `benchmark.json` lists (and the
    manifest's path, for the fingerprint)."""
    path = folder / MANIFEST
    if not path.is_file():
        return CATEGORY_FOLDERS, []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["categories"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        names = None
    if not (isinstance(names, list) and names and all(isinstance(name, str) and name.strip() and "/" not in name
                                                      and name not in (".", "..") for name in names)):
        raise UserInputError(f"benchmark folder {folder}: {MANIFEST} must be JSON like "
                             '{"categories": ["identity", "relight"]}, naming folders under images/ and captions/')
    return {name: name for name in names}, [path]


def load_benchmark(folder: str | Path) -> Benchmark:
    """Read a folder in DreamBench++'s layout; raises UserInputError naming what is wrong."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise UserInputError(f"benchmark folder {folder} does not exist; {LAYOUT}")
    categories, files = _categories(folder)
    subjects = []
    for category, sub in categories.items():
        images = sorted(
            path for path in (folder / "images" / sub).glob("*")
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        )
        for image in images:
            subject_id = f"{sub}/{image.stem}"
            caption = folder / "captions" / sub / f"{image.stem}.txt"
            if not caption.is_file():
                raise UserInputError(
                    f"benchmark folder {folder}: images/{sub}/{image.name} has no captions/{sub}/{image.stem}.txt; {LAYOUT}"
                )
            name, prompts = _read_caption(caption, folder)
            subjects.append(Subject(subject_id, category, name, image, prompts))
            files += [image, caption]
    if not subjects:
        raise UserInputError(f"benchmark folder {folder} has no reference images; {LAYOUT}")
    return Benchmark(folder, tuple(subjects), _fingerprint(folder, files))
