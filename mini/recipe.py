"""The recipe that makes the miniature's shipped weights: teacher, judge, data wheel, students.

Each stage is a plain function the CLI (`dsd mini ...`) and the tests call, and each writes a folder
with a `report.json` (the wheel: `wheel.json`) beside what it made. The teacher is trained by
`mini.teacher.train_teacher`; the wheel, the trainer and the generator are the project's own,
unchanged: only the models are the miniature's. The wheel is measured as it runs: its grid hit rate,
the curator's acceptance rate, and the curator's precision against a stricter check that only a world
with known identities allows (`strict_check`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from diffusers import AutoencoderKL
from PIL import Image

from mini import GRID, JUDGE, PANEL, TEACHER, world
from mini.judge import IDENTITY, AttributeCurator, AttributeReader, judge_accuracy, read_attributes, train_judge
from mini.prompts import WorldPromptWriter
from mini.teacher import GUIDANCE
from pipeline.store import Store
from pipeline.wheel.dataset import export_pairs
from pipeline.wheel.stages import record_run, run_captions, run_curate, run_grids, run_pairs, run_prompts, wheel_stats
from train.config import TrainConfig
from train.trainer import train

STRICT_P = 0.5  # the strict check's confidence floor on every identity reading of both panels (more likely than not)
# The shipped students' wheel: 240 captions drawn with seed 0, then 720 with seed 1 on the same home.
SHIPPED_WHEEL = ((240, 0), (720, 1))
Log = Callable[[str], None]


def _write_json(path: Path, data: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return data


def train_judge_stage(teacher: str | Path, out: str | Path, count: int = 24000, steps: int = 8000, seed: int = 0,
                      log: Log = print) -> dict:
    """Train the judge on rendered panels (some through the teacher's VAE), save it, measure it."""
    started = time.perf_counter()
    out = Path(out)
    vae = AutoencoderKL.from_pretrained(str(Path(teacher) / "vae")).eval()
    previous = AttributeReader.from_pretrained(str(out)) if (out / "config.json").is_file() else None
    if previous is not None:
        log(f"judge: continuing from the judge in {out}, on new panels (seed {seed})")
    model = train_judge(count=count, steps=steps, seed=seed, vae=vae, log=log, model=previous,
                        lr=1e-3 if previous is not None else 2e-3)
    model.save_pretrained(str(out))
    measured = judge_accuracy(model)
    log(f"judge: same/different accuracy {measured['accuracy']} on {measured['pairs']} held-out pairs")
    return _write_json(out / "report.json", {**measured, "seconds": round(time.perf_counter() - started),
                                             "count": count, "steps": steps, "seed": seed})


def wheel_captions(count: int, seed: int = 0) -> list[str]:
    """Captions of training identities naming each attribute with chance 1/2, as reference captions
    name a subject in a few words and leave the rest to the teacher."""
    rng, captions = np.random.default_rng(seed), []
    while len(captions) < count:
        identity = world.sample_identity(rng)
        text = world.caption(identity, None, [a for a in world.ATTRIBUTES if rng.random() < 0.5])
        if text not in captions:
            captions.append(text)
    return captions


def run_wheel(home: str | Path, teacher: str | Path = TEACHER, judge: str | Path = JUDGE, grids: int = 240,
              steps: int = 20, seed: int = 0, log: Log = print, captions: list[str] | None = None,
              processes: int = 1) -> dict:
    """The project's data wheel with the miniature's teacher and judge: captions (`grids` of them drawn
    with `seed`, or the given ones), prompts, grids, pairs, verdicts, then two exports of equal size:
    curated (the judge's "same") and uncurated (judged pairs drawn at random, whatever the verdict).
    `processes` draw the grids side by side, each its share of the prompts, as under `accelerate launch`."""
    home = Path(home)
    store = Store(home)
    started = time.perf_counter()
    caption_file = home / "captions.txt"
    caption_file.write_text("\n".join(captions or wheel_captions(grids, seed)) + "\n")
    stages = [lambda: run_captions(store, str(caption_file)),
              lambda: run_prompts(store, WorldPromptWriter(), dedupe=1.0),  # world prompts share most words: only exact repeats go
              lambda: draw_grids(home, teacher, steps, processes),
              lambda: run_pairs(store),
              lambda: run_curate(store, AttributeCurator.from_pretrained(judge), concurrency=1)]
    for stage in stages:
        result = stage()
        record_run(store, result)
        log(result.summary())
    # The uncurated control is as many judged pairs as curation kept, drawn at random whatever the verdict:
    # the two students then differ only in which pairs they saw, not in how many or for how long.
    curated = export_pairs(store, home / "curated.parquet")
    exported = {"curated": curated,
                "uncurated": export_pairs(store, home / "uncurated.parquet", uncurated=True, sample=curated, seed=seed)}
    stats = wheel_stats(store)
    strict = strict_check(store, judge)
    report = {"grids": stats["grids"], "pairs": stats["pairs"], "usable_panels": stats["usable_panels"],
              "panels": stats["panels"], "hit_rate": stats["hit_rate"], "acceptance_rate": stats["acceptance_rate"],
              **strict, "exported": exported, "seconds": round(time.perf_counter() - started)}
    log(json.dumps(report))
    return _write_json(home / "wheel.json", report)


def draw_grids(home: Path, teacher: str | Path, steps: int, processes: int = 1):
    """The wheel's grid stage; with `processes` > 1, that many processes of one torch thread each draw their
    shares (`RANK`/`WORLD_SIZE`, the split `run_grids` makes under `accelerate launch`): on a small CPU,
    one-thread processes side by side draw nearly `processes` times as fast as one process with that many
    threads. The result is one `StageResult` over all shares."""
    if processes <= 1:
        return run_grids(Store(home), teacher=str(teacher), size=(GRID, GRID), steps=steps, guidance=GUIDANCE)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        shares = pool.starmap(_draw_share, [(str(home), str(teacher), steps, rank, processes)
                                            for rank in range(processes)])
    result = shares[0]
    for field in ("added", "skipped", "failed"):
        setattr(result, field, sum(getattr(share, field) for share in shares))
    result.details["process"] = f"{processes} processes"
    return result


def _draw_share(home: str, teacher: str, steps: int, rank: int, world_size: int):
    import torch

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    return run_grids(Store(home), teacher=teacher, size=(GRID, GRID), steps=steps, guidance=GUIDANCE)


def strict_check(store, judge: str | Path) -> dict:
    """The curator's precision against a stricter check that only a world with known identities allows.

    The curator (like the paper's VLM) sees two panels and says whether they show the same subject.
    The strict check also knows part of the truth: the attributes the grid's prompt named (world
    captions name attributes exactly). A pair passes when both panels show every named attribute and
    all five identity readings agree, each at probability >= STRICT_P. Precision is the share of
    accepted pairs that pass. Because the curator is the same judge, no rejected pair can pass; what
    curation threw away is measured by the named attributes alone, among accepted and rejected pairs.
    """
    model = AttributeReader.from_pretrained(str(judge)).eval()
    pairs = store.judged_pairs()
    paths = sorted({pair[key] for pair in pairs for key in ("reference_path", "target_path")})
    images = []
    for path in paths:
        with Image.open(path) as picture:
            images.append(picture.convert("RGB"))
    readings = dict(zip(paths, read_attributes(model, images)))
    passed, named_kept, totals = {True: 0, False: 0}, {True: 0, False: 0}, {True: 0, False: 0}
    for pair in pairs:
        named = world.parse_subject(pair["prompt_subject"] or "") or {}
        a, b = readings[pair["reference_path"]], readings[pair["target_path"]]
        kept = all(a[x] == value and b[x] == value for x, value in named.items())
        agree = all(a[x] == b[x] and min(a[f"{x}_p"], b[f"{x}_p"]) >= STRICT_P for x in IDENTITY)
        accepted = bool(pair["same"])
        totals[accepted] += 1
        named_kept[accepted] += int(kept)
        passed[accepted] += int(kept and agree)
    rate = lambda part, whole: round(part / whole, 3) if whole else None  # noqa: E731
    return {"curator_precision": rate(passed[True], totals[True]),
            "named_kept_accepted": rate(named_kept[True], totals[True]),
            "named_kept_rejected": rate(named_kept[False], totals[False]),
            "strict_pass_overall": rate(passed[True] + passed[False], totals[True] + totals[False])}


STUDENT_TARGETS = ["transformer_blocks.*.attn.to_q", "transformer_blocks.*.attn.to_k", "transformer_blocks.*.attn.to_v",
                   "transformer_blocks.*.attn.to_out.0", "transformer_blocks.*.attn.add_q_proj",
                   "transformer_blocks.*.attn.add_k_proj", "transformer_blocks.*.attn.add_v_proj",
                   "transformer_blocks.*.attn.to_add_out", "transformer_blocks.*.ff.net.0.proj",
                   "transformer_blocks.*.ff.net.2", "single_transformer_blocks.*.attn.to_q",
                   "single_transformer_blocks.*.attn.to_k", "single_transformer_blocks.*.attn.to_v",
                   "single_transformer_blocks.*.proj_mlp", "single_transformer_blocks.*.proj_out"]


STUDENT_CHECKPOINTS = 250  # steps between the students' checkpoints


def student_config(teacher: str | Path, data: str | Path, out: str | Path, steps: int = 1500,
                   seed: int = 0) -> TrainConfig:
    """The shipped students' training: LoRA rank 32 plus the condition embedder, 1,500 steps of batch 16,
    checkpointed every 250 steps (the trainer resumes from the newest one when run again: a stop loses at most
    250 steps)."""
    return TrainConfig(data=str(data), base=str(teacher), out=str(Path(out) / "run"), resolution=PANEL, rank=32,
                       target_modules=STUDENT_TARGETS, learning_rate=1e-3, warmup_steps=50, schedule="cosine",
                       steps=steps, batch_size=16, guidance=GUIDANCE, condition_dropout=0.1, caption_dropout=0.1,
                       seed=seed, log_every=100, checkpoint_every=min(STUDENT_CHECKPOINTS, steps), sample_every=0, sample_count=2,
                       sample_steps=20)


def train_student(teacher: str | Path, data: str | Path, out: str | Path, steps: int = 1500, seed: int = 0,
                  log: Log = print) -> dict:
    """The project's trainer, unchanged, fine-tunes the teacher into a DSD generator on `data`."""
    out = Path(out)
    started = time.perf_counter()
    config = student_config(teacher, data, out, steps, seed)
    result = train(config, out / "home")
    for path in result.weights.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)
    return _write_json(out / "report.json", {"data": str(data), "steps": result.step, "seed": seed,
                                             "seconds": round(time.perf_counter() - started)})
