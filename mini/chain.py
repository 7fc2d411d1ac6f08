"""The whole method in miniature: teacher -> judge -> data wheel -> student -> evaluation.

Each stage is a plain function the CLI (`dsd mini ...`) and the tests call. The wheel, trainer and
generator are the project's own, unchanged: only the models are the miniature's. Identity is known
exactly, so every stage is measured against the truth the renderer holds:

- the judge's same/different accuracy on rendered pairs of held-out identities;
- the wheel's grid hit rate, the curator's acceptance rate, and its precision against a stricter
  check (`strict_check`);
- concept preservation (CP) and prompt following (PF) of four rows on held-out identities, in
  three modes (identity, relight, instruction), over three evaluation seeds.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mini import GRID, JUDGE, PANEL, STUDENT, TEACHER, world
from mini.judge import (CONTEXT, IDENTITY, AttributeJudge, held_out_pairs, pair_accuracy,
                                 read_attributes, train_judge)
from mini.teacher import GUIDANCE, TeacherSettings, train_teacher

STRICT_P = 0.5  # the strict check's confidence floor on every identity reading of both panels (more likely than not)
ROWS = ("teacher_text", "copy_reference", "student_uncurated", "student_curated")
STUDENTS = {"student_uncurated": STUDENT / "uncurated", "student_curated": STUDENT / "curated"}  # the shipped ones
MODES = ("identity", "relight", "instruction")
Log = Callable[[str], None]

__all__ = ["train_teacher", "TeacherSettings", "train_judge_stage", "run_wheel", "train_student", "report"]


def _write_json(path: Path, data: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return data


# --- judge ------------------------------------------------------------------------------------

def train_judge_stage(teacher: str | Path, out: str | Path, count: int = 24000, steps: int = 8000, seed: int = 0,
                      log: Log = print) -> dict:
    """Train the judge on rendered panels (some through the teacher's VAE), save it, measure it."""
    from diffusers import AutoencoderKL

    started = time.perf_counter()
    out = Path(out)
    vae = AutoencoderKL.from_pretrained(str(Path(teacher) / "vae")).eval()
    previous = AttributeJudge.from_pretrained(str(out)) if (out / "config.json").is_file() else None
    if previous is not None:
        log(f"judge: continuing from the judge in {out}, on new panels (seed {seed})")
    model = train_judge(count=count, steps=steps, seed=seed, vae=vae, log=log, model=previous,
                        lr=1e-3 if previous is not None else 2e-3)
    model.save_pretrained(str(out))
    measured = judge_accuracy(model)
    log(f"judge: same/different accuracy {measured['accuracy']} on {measured['pairs']} held-out pairs")
    return _write_json(out / "report.json", {**measured, "seconds": round(time.perf_counter() - started),
                                             "count": count, "steps": steps, "seed": seed})


def judge_accuracy(model: AttributeJudge, pairs: int = 1000) -> dict:
    """Same/different accuracy on rendered pairs of held-out identities (half differ in one attribute)."""
    return pair_accuracy(model, held_out_pairs(pairs))


# --- wheel ------------------------------------------------------------------------------------

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
              steps: int = 20, seed: int = 0, log: Log = print, captions: list[str] | None = None) -> dict:
    """The project's data wheel with the miniature's teacher and judge: captions (`grids` of them drawn
    with `seed`, or the given ones), prompts, grids, pairs, verdicts, then two exports of equal size:
    curated (the judge's "same") and uncurated (judged pairs drawn at random, whatever the verdict)."""
    from mini.judge import MiniJudge
    from mini.prompts import WorldPromptWriter
    from pipeline.store import Store
    from pipeline.wheel.dataset import export_pairs
    from pipeline.wheel.stages import (record_run, run_captions, run_curate, run_grids, run_pairs, run_prompts,
                                wheel_stats)

    home = Path(home)
    store = Store(home)
    started = time.perf_counter()
    caption_file = home / "captions.txt"
    caption_file.write_text("\n".join(captions or wheel_captions(grids, seed)) + "\n")
    stages = [lambda: run_captions(store, str(caption_file)),
              lambda: run_prompts(store, WorldPromptWriter(), dedupe=1.0),  # world prompts share most words: only exact repeats go
              lambda: run_grids(store, teacher=str(teacher), size=(GRID, GRID), steps=steps, guidance=GUIDANCE),
              lambda: run_pairs(store),
              lambda: run_curate(store, judge=MiniJudge.from_pretrained(judge), concurrency=1)]
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


def strict_check(store, judge: str | Path) -> dict:
    """The curator's precision against a stricter check that only a world with known identities allows.

    The curator (like the paper's VLM) sees two panels and says whether they show the same subject.
    The strict check also knows part of the truth: the attributes the grid's prompt named (world
    captions name attributes exactly). A pair passes when both panels show every named attribute and
    all five identity readings agree, each at probability >= STRICT_P. Precision is the share of
    accepted pairs that pass. Because the curator is the same judge, no rejected pair can pass; what
    curation threw away is measured by the named attributes alone, among accepted and rejected pairs.
    """
    model = AttributeJudge.from_pretrained(str(judge)).eval()
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


# --- student ----------------------------------------------------------------------------------

STUDENT_TARGETS = ["transformer_blocks.*.attn.to_q", "transformer_blocks.*.attn.to_k", "transformer_blocks.*.attn.to_v",
                   "transformer_blocks.*.attn.to_out.0", "transformer_blocks.*.attn.add_q_proj",
                   "transformer_blocks.*.attn.add_k_proj", "transformer_blocks.*.attn.add_v_proj",
                   "transformer_blocks.*.attn.to_add_out", "transformer_blocks.*.ff.net.0.proj",
                   "transformer_blocks.*.ff.net.2", "single_transformer_blocks.*.attn.to_q",
                   "single_transformer_blocks.*.attn.to_k", "single_transformer_blocks.*.attn.to_v",
                   "single_transformer_blocks.*.proj_mlp", "single_transformer_blocks.*.proj_out"]


def student_config(teacher: str | Path, data: str | Path, out: str | Path, steps: int = 1500, seed: int = 0):
    from train.config import TrainConfig

    return TrainConfig(data=str(data), base=str(teacher), out=str(Path(out) / "run"), resolution=PANEL, rank=32,
                       target_modules=STUDENT_TARGETS, learning_rate=1e-3, warmup_steps=50, schedule="cosine",
                       steps=steps, batch_size=16, guidance=GUIDANCE, condition_dropout=0.1, caption_dropout=0.1,
                       seed=seed, log_every=100, checkpoint_every=steps, sample_every=0, sample_count=2,
                       sample_steps=20)


def train_student(teacher: str | Path, data: str | Path, out: str | Path, steps: int = 1500, seed: int = 0,
                  log: Log = print) -> dict:
    """The project's trainer, unchanged, fine-tunes the teacher into a DSD generator on `data`."""
    from train.trainer import train

    out = Path(out)
    started = time.perf_counter()
    config = student_config(teacher, data, out, steps, seed)
    result = train(config, out / "home")
    for path in result.weights.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)
    return _write_json(out / "report.json", {"data": str(data), "steps": result.step, "seed": seed,
                                             "seconds": round(time.perf_counter() - started)})


# --- evaluation -------------------------------------------------------------------------------

def evaluation_items(seed: int, per_mode: int = 16) -> list[dict]:
    """Held-out identities, each rendered as a reference, with a prompt and what it asks for."""
    rng = np.random.default_rng(1000 + seed)
    identities = sorted(world.held_out(), key=lambda i: tuple(asdict(i).values()))
    items = []
    for mode in MODES:
        for _ in range(per_mode):
            identity = identities[rng.integers(len(identities))]
            reference = world.sample_context(rng)
            target = world.sample_context(rng)
            if mode == "identity":
                while target.scene == reference.scene:
                    target = world.sample_context(rng)
            if mode == "relight":
                target = replace(reference, light=target.light, warmth=target.warmth)
                while (target.light, target.warmth) == (reference.light, reference.warmth):
                    target = replace(target, light=str(rng.choice(world.LIGHTS)), warmth=str(rng.choice(world.WARMTHS)))
            wanted, named = identity, []
            if mode == "instruction":
                attribute = IDENTITY[rng.integers(len(IDENTITY))]
                values = [v for v in world.ATTRIBUTE_VALUES[attribute] if v != getattr(identity, attribute)]
                wanted, named = replace(identity, **{attribute: values[rng.integers(len(values))]}), [attribute]
            prompt = f"{world.caption(wanted, None, named)}, {world.short_context(target)}"
            requested = {**{x: getattr(target, x) for x in CONTEXT}, **{x: getattr(wanted, x) for x in named}}
            preserved = {x: getattr(identity, x) for x in IDENTITY if x not in named}
            items.append({"mode": mode, "prompt": prompt, "reference": world.render(identity, reference, PANEL),
                          "requested": requested, "preserved": preserved})
    return items


def score(items: list[dict], outputs: list[Image.Image], model: AttributeJudge) -> tuple[list[float], list[float]]:
    """Per item: CP = share of the reference's kept identity attributes the judge reads in the output;
    PF = share of the requested attributes (scene, light, warmth, a changed attribute) it reads."""
    readings = read_attributes(model, outputs)
    cp = [np.mean([r[x] == v for x, v in item["preserved"].items()]) for item, r in zip(items, readings)]
    pf = [np.mean([r[x] == v for x, v in item["requested"].items()]) for item, r in zip(items, readings)]
    return [float(x) for x in cp], [float(x) for x in pf]


@torch.no_grad()
def generate_row(row: str, items: list[dict], seed: int, teacher: str | Path, students: dict,
                 steps: int = 20) -> list[Image.Image]:
    """The outputs of one row of the table for `items`, at one evaluation seed."""
    if row == "copy_reference":
        return [item["reference"] for item in items]
    generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in range(len(items))]
    if row == "teacher_text":  # the wheel's own teacher, sampled as the wheel samples it
        from pipeline.wheel.teacher import load_teacher

        return load_teacher(str(teacher)).draw([item["prompt"] for item in items], PANEL, PANEL, steps, GUIDANCE,
                                               generators)
    from pipeline.generation.weights import ModelSpec, load_generator

    pipe = load_generator(ModelSpec(base=str(teacher), dsd=str(students[row])))
    pipe.set_progress_bar_config(disable=True)
    return pipe([item["reference"] for item in items], [item["prompt"] for item in items], height=PANEL, width=PANEL,
                num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generators).images


def report(teacher: str | Path = TEACHER, judge: str | Path = JUDGE, students: dict | None = None,
           seeds: int = 3, per_mode: int = 16, steps: int = 20, picture: str | Path | None = None,
           log: Log = print) -> dict:
    """The table: for each row, CP, PF and CP*PF (mean over `seeds` evaluation seeds, and the std of
    CP*PF across them), on held-out identities; with the judge's accuracy beside it."""
    started = time.perf_counter()
    students = students or STUDENTS
    model = AttributeJudge.from_pretrained(str(judge)).eval()
    per_seed = {row: [] for row in ROWS}
    shown = {}
    for seed in range(seeds):
        items = evaluation_items(seed, per_mode)
        for row in ROWS:
            outputs = generate_row(row, items, seed, teacher, students, steps)
            cp, pf = score(items, outputs, model)
            by_mode = {mode: {"cp": float(np.mean([c for c, i in zip(cp, items) if i["mode"] == mode])),
                              "pf": float(np.mean([p for p, i in zip(pf, items) if i["mode"] == mode]))} for mode in MODES}
            per_seed[row].append({"cp": float(np.mean(cp)), "pf": float(np.mean(pf)), "by_mode": by_mode})
            if seed == 0:
                shown[row] = outputs
        log(f"seed {seed}: " + ", ".join(f"{row} {per_seed[row][-1]['cp'] * per_seed[row][-1]['pf']:.3f}"
                                         for row in ROWS))
    rows = []
    for row in ROWS:
        runs = per_seed[row]
        products = [run["cp"] * run["pf"] for run in runs]
        rows.append({"name": row, "cp": round(float(np.mean([r["cp"] for r in runs])), 4),
                     "pf": round(float(np.mean([r["pf"] for r in runs])), 4),
                     "cp_pf": round(float(np.mean(products)), 4),
                     "cp_pf_std": round(float(np.std(products, ddof=1)) if len(products) > 1 else 0.0, 4),
                     "by_mode": {mode: {k: round(float(np.mean([r["by_mode"][mode][k] for r in runs])), 4)
                                        for k in ("cp", "pf")} for mode in MODES}})
    accuracy = json.loads((Path(judge) / "report.json").read_text())["accuracy"] \
        if (Path(judge) / "report.json").is_file() else judge_accuracy(model)["accuracy"]
    if picture:
        save_picture(picture, evaluation_items(0, per_mode), shown)
    return {"judge_accuracy": accuracy, "rows": rows, "seeds": seeds, "items_per_seed": per_mode * len(MODES),
            "seconds": round(time.perf_counter() - started)}


# The shipped students' wheel: 240 captions drawn with seed 0, then 720 with seed 1 on the same home.
SHIPPED_WHEEL = ((240, 0), (720, 1))


def teacher_domain(home: str | Path, teacher: str | Path = TEACHER, judge: str | Path = JUDGE,
                   students: dict | None = None, grids: int = 100, seed: int = 3, seeds: int = 3,
                   trained_on: tuple = SHIPPED_WHEEL, steps: int = 20, log: Log = print) -> dict:
    """Identity kept on the teacher's own pictures, drawn from captions no student was trained on.

    The report's references are crisp renders; the students only ever saw the teacher's soft panels.
    This check separates the two: the wheel draws `grids` fresh grids from captions that are not among
    the students' training captions (`trained_on`, as (count, seed) of `wheel_captions`), the judge
    curates them, and each row draws the curated pairs' targets from their references and captions.
    `kept` is the share of the reference panel's five identity readings that the output's readings
    match, per evaluation seed; the pairs' own targets give the ceiling."""
    students = students or STUDENTS
    seen = {caption for count, caption_seed in trained_on for caption in wheel_captions(count, caption_seed)}
    fresh = [caption for caption in wheel_captions(4 * grids, seed) if caption not in seen][:grids]
    wheel = run_wheel(home, teacher, judge, steps=steps, log=log, captions=fresh)
    from pipeline.wheel.dataset import read_pairs
    from pipeline.images import load_image

    table = read_pairs(Path(home) / "curated.parquet").to_pylist()
    items = [{"reference": load_image(row["conditioning"]["bytes"]), "prompt": row["caption"]} for row in table]
    targets = [load_image(row["image"]["bytes"]) for row in table]
    model = AttributeJudge.from_pretrained(str(judge)).eval()
    references = read_attributes(model, [item["reference"] for item in items])

    def kept(outputs) -> float:
        readings = read_attributes(model, outputs)
        return float(np.mean([[r[x] == ref[x] for x in IDENTITY] for r, ref in zip(readings, references)]))

    rows = [{"name": "curated_target", "kept": round(kept(targets), 4), "kept_std": 0.0}]
    for row in ("teacher_text", *students):
        runs = [kept(generate_row(row, items, k, teacher, students, steps)) for k in range(seeds)]
        rows.append({"name": row, "kept": round(float(np.mean(runs)), 4),
                     "kept_std": round(float(np.std(runs, ddof=1)) if seeds > 1 else 0.0, 4)})
        log(f"teacher domain: {row} keeps {rows[-1]['kept']:.3f} of the reference's identity readings")
    return {"grids": wheel["grids"], "pairs": len(items), "seeds": seeds, "rows": rows}


def save_picture(path: str | Path, items: list[dict], outputs: dict, columns: int = 8, scale: int = 2) -> Path:
    """References (top row) and each row's outputs below, for the first `columns` identity-mode items
    and a few of the other modes; labels on the left."""
    chosen = [k for k, item in enumerate(items) if item["mode"] == "identity"][:columns - 2]
    chosen += [k for k, item in enumerate(items) if item["mode"] != "identity"][:2]
    side, label = PANEL * scale, 150
    sheet = Image.new("RGB", (label + len(chosen) * (side + 4), (len(ROWS) + 1) * (side + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, pictures) in enumerate([("reference", [item["reference"] for item in items])]
                                         + [(row, outputs[row]) for row in ROWS]):
        draw.text((6, r * (side + 4) + side // 2 - 6), name, fill=(0, 0, 0))
        for c, k in enumerate(chosen):
            sheet.paste(pictures[k].resize((side, side), Image.NEAREST), (label + c * (side + 4), r * (side + 4)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def markdown(result: dict) -> str:
    """The report as the README's table."""
    lines = [f"Judge same/different accuracy on held-out rendered pairs: {result['judge_accuracy']:.3f}; "
             f"{result['seeds']} evaluation seeds x {result['items_per_seed']} held-out items.", "",
             "| row | CP | PF | CP·PF | CP·PF std | CP·PF identity | relight | instruction |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        modes = [row["by_mode"][mode]["cp"] * row["by_mode"][mode]["pf"] for mode in MODES]
        lines.append(f"| {row['name']} | {row['cp']:.3f} | {row['pf']:.3f} | {row['cp_pf']:.3f} | "
                     f"{row['cp_pf_std']:.3f} | " + " | ".join(f"{m:.3f}" for m in modes) + " |")
    return "\n".join(lines)
