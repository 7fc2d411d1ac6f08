"""The miniature's held-out items, which `dsd mini report` scores and `dsd eval` reads as a benchmark, and the
attribute judge that scores them in both.

`evaluation_items(seed)` draws the items: held-out identities, each rendered crisp as a reference (centred and
upright, as the teacher learned to draw its subjects and as the Generate tab's examples show theirs), with a
prompt in the world's words, in three modes (identity: a new scene; relight: new light and warmth, same
scene; instruct: one attribute changed). `write_benchmark` writes them in DreamBench++'s layout, a category
per mode (listed in order in `benchmark.json`), one subject per item: its reference, a subject line naming
all five of its attributes, and its one prompt. In that order an evaluation's seeds (its seed plus each
item's place) are the report's (`seed * 10_000` plus the item's index): `dsd eval sample --seed 0` draws the
pictures of the report's seed 0.

`AttributeJudge` is an evaluation's judge (`pipeline.evaluation.stages.Judge`) that measures what the report
measures: CP, the share of the subject's attributes the prompt keeps that the judge reads in the output; PF,
the share of what the prompt asks for (scene, light, warmth, a changed attribute). It takes both from the
benchmark's words, as a VLM reads them, so it scores any benchmark written in the world's words.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from PIL import Image

from mini import PANEL, world
from mini.judge import CONTEXT, IDENTITY, AttributeCurator, AttributeReader, read_attributes
from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import MANIFEST, load_benchmark
from pipeline.evaluation.judge import MAX_SCORE, Judgement

MODES = ("identity", "relight", "instruct")
METHOD = "attribute readings"  # how the attribute judge is named in a report, where a VLM's templates are


def evaluation_items(seed: int, per_mode: int = 16) -> list[dict]:
    """Held-out identities, each rendered as a reference, with a prompt and what it asks for."""
    rng = np.random.default_rng(1000 + seed)
    identities = sorted(world.held_out(), key=lambda i: tuple(asdict(i).values()))
    items = []
    for mode in MODES:
        for _ in range(per_mode):
            identity = identities[rng.integers(len(identities))]
            reference = world.sample_context(rng, world.PORTRAIT_SPREAD)
            target = world.sample_context(rng)
            if mode == "identity":
                while target.scene == reference.scene:
                    target = world.sample_context(rng)
            if mode == "relight":
                target = replace(reference, light=target.light, warmth=target.warmth)
                while (target.light, target.warmth) == (reference.light, reference.warmth):
                    target = replace(target, light=str(rng.choice(world.LIGHTS)), warmth=str(rng.choice(world.WARMTHS)))
            wanted, named = identity, []
            if mode == "instruct":
                attribute = IDENTITY[rng.integers(len(IDENTITY))]
                values = [v for v in world.ATTRIBUTE_VALUES[attribute] if v != getattr(identity, attribute)]
                wanted, named = replace(identity, **{attribute: values[rng.integers(len(values))]}), [attribute]
            prompt = f"{world.caption(wanted, None, named)}, {world.short_context(target)}"
            requested = {**{x: getattr(target, x) for x in CONTEXT}, **{x: getattr(wanted, x) for x in named}}
            preserved = {x: getattr(identity, x) for x in IDENTITY if x not in named}
            items.append({"mode": mode, "prompt": prompt, "reference": world.render(identity, reference, PANEL),
                          "requested": requested, "preserved": preserved, "identity": identity, "context": reference})
    return items


def attribute_scores(reading: dict, preserved: dict, requested: dict) -> tuple[float, float]:
    """(CP, PF) of one output's attribute reading: the shares of the kept and of the requested attributes it
    shows."""
    return (float(np.mean([reading[x] == v for x, v in preserved.items()])),
            float(np.mean([reading[x] == v for x, v in requested.items()])))


# the items as a benchmark folder


def write_benchmark(folder: str | Path, seed: int = 0, per_mode: int = 16) -> Path:
    """The items of `seed` as a benchmark folder in DreamBench++'s layout (kept when it exists). It is written
    beside and renamed into place, so no reader sees half of one."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    items = evaluation_items(seed, per_mode)
    digits = max(2, len(str(len(items) - 1)))  # names sort in the items' order
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for index, item in enumerate(items):
        image = partial / "images" / item["mode"] / f"{index:0{digits}d}.png"
        caption = partial / "captions" / item["mode"] / f"{index:0{digits}d}.txt"
        image.parent.mkdir(parents=True, exist_ok=True)
        caption.parent.mkdir(parents=True, exist_ok=True)
        item["reference"].save(image)
        caption.write_text(f"{world.subject_caption(item['identity'])}\n{item['prompt']}\n", encoding="utf-8")
    (partial / MANIFEST).write_text(json.dumps({"categories": list(MODES)}) + "\n", encoding="utf-8")
    (partial / "README.md").write_text(
        f"The miniature's world benchmark: the {len(items)} held-out items `dsd mini report` scores at seed {seed} "
        f"({per_mode} per mode), written by mini.benchmark.write_benchmark. Judge it with the miniature's "
        "attribute judge (the Evaluate tab's and `dsd eval judge`'s default for it).\n", encoding="utf-8")
    try:
        partial.rename(folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(partial, ignore_errors=True)
        if not folder.is_dir():
            raise
    return folder


def asked_of(subject: str, prompt: str) -> tuple[dict, dict]:
    """What an item of the world asks, from its words: the subject's attributes the prompt keeps (CP's), and
    what the prompt asks for (PF's)."""
    identity, named, context = world.parse_subject(subject), world.parse_subject(prompt), world.parse_context(prompt)
    if identity is None or set(identity) != set(IDENTITY) or named is None or set(context) != set(CONTEXT):
        raise UserInputError(f"the miniature's attribute judge scores only its world's benchmark (a subject line "
                             f"naming all five attributes, a prompt in the world's words), not subject {subject!r} "
                             f"with prompt {prompt!r}: choose a VLM judge for this benchmark")
    return {x: v for x, v in identity.items() if x not in named}, {**context, **named}


def is_world_benchmark(folder: str | Path) -> bool:
    """Whether every item of the benchmark in `folder` is written in the world's words."""
    try:
        for item in load_benchmark(folder).items():
            asked_of(item.subject_name, item.prompt)
    except UserInputError:
        return False
    return True


class AttributeJudge:
    """The attribute judge as an evaluation's judge: scores on DreamBench++'s 0..4 scale, 4 x the shares
    `attribute_scores` gives, with what it read as its reasoning. No de-biased CP."""

    method = METHOD
    method_hash = hashlib.sha256(b"cp: share of the kept attributes read; pf: share of the requested").hexdigest()

    def __init__(self, model: AttributeReader, name: str, endpoint: str):
        self.model, self.name, self.endpoint = model, name, endpoint

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "AttributeJudge":
        curator = AttributeCurator.from_pretrained(folder)  # one clear error for a missing or damaged judge
        return cls(curator.model, curator.name, str(Path(folder).resolve()))

    def __repr__(self) -> str:
        return f"AttributeJudge({self.name!r})"

    def score(self, *, reference: Image.Image, generated: Image.Image, prompt: str, category: str,
              subject: str) -> Judgement:
        preserved, requested = asked_of(subject, prompt)
        reading = read_attributes(self.model, [generated])[0]
        cp, pf = attribute_scores(reading, preserved, requested)

        def said(asked: dict) -> str:
            right = sum(reading[x] == v for x, v in asked.items())
            return f"{right} of {len(asked)} read as asked: " + ", ".join(
                f"{x} {reading[x]}" + ("" if reading[x] == v else f" (not {v})") for x, v in asked.items())

        return Judgement(cp=MAX_SCORE * cp, pf=MAX_SCORE * pf, cp_debiased=None,
                         replies={"cp": [said(preserved)], "pf": [said(requested)]})
