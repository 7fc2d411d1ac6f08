"""The miniature's table: concept preservation (CP) and prompt following (PF) of four rows on held-out
identities, in three modes (identity, relight, instruct), over several evaluation seeds.

The rows are the teacher drawing from the prompt alone, a copy of the reference, and the students
trained on uncurated and on curated pairs. The judge reads the outputs' attributes, so CP and PF are
measured against the truth the renderer holds; its own accuracy is reported beside them. The items and
their scores are `mini.benchmark`'s, which `dsd eval` reads as the world benchmark and scores with the same
judge: an evaluation of a student at seed 0 gives its row's figures at seed 0.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mini import JUDGE, PANEL, STUDENT, TEACHER, world
from mini.benchmark import MODES, attribute_scores, evaluation_items
from mini.embedded import CURATED, EXAMPLES
from mini.judge import CONTEXT, IDENTITY, AttributeReader, judge_accuracy, read_attributes
from mini.prompts import world_grid_prompt
from mini.teacher import GUIDANCE, panel_prompt
from pipeline.generation.pipeline import text_length
from pipeline.generation.weights import ModelSpec, load_generator
from pipeline.images import compose_grid
from pipeline.wheel.grids import Layout
from pipeline.wheel.teacher import load_teacher

ROWS = ("teacher_text", "copy_reference", "student_uncurated", "student_curated")
STUDENTS = {"student_uncurated": STUDENT / "uncurated", "student_curated": STUDENT / "curated"}  # the shipped ones
Log = Callable[[str], None]


def score(items: list[dict], outputs: list[Image.Image], model: AttributeReader) -> tuple[list[float], list[float]]:
    """Per item: CP = share of the reference's kept identity attributes the judge reads in the output;
    PF = share of the requested attributes (scene, light, warmth, a changed attribute) it reads."""
    scores = [attribute_scores(r, item["preserved"], item["requested"])
              for item, r in zip(items, read_attributes(model, outputs))]
    return [cp for cp, _ in scores], [pf for _, pf in scores]


@torch.no_grad()
def generate_row(row: str, items: list[dict], seed: int, teacher: str | Path, students: dict,
                 steps: int = 20) -> list[Image.Image]:
    """The outputs of one row of the table for `items`, at one evaluation seed."""
    if row == "copy_reference":
        return [item["reference"] for item in items]
    generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in range(len(items))]
    if row == "teacher_text":  # the wheel's own teacher, sampled as the wheel samples it
        return load_teacher(str(teacher)).draw([item["prompt"] for item in items], PANEL, PANEL, steps, GUIDANCE,
                                               generators)
    pipe = load_generator(ModelSpec(base=str(teacher), dsd=str(students[row])))
    pipe.set_progress_bar_config(disable=True)
    return pipe([item["reference"] for item in items], [item["prompt"] for item in items], height=PANEL, width=PANEL,
                num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generators).images


@torch.no_grad()
def teacher_fidelity(model: AttributeReader, teacher: str | Path = TEACHER, count: int = 96, seed: int = 0,
                     steps: int = 20) -> dict:
    """The teacher's prompt following on single panels whose captions name every identity attribute (held-out
    identities, drawn as the wheel draws): per attribute, the share of panels in which the judge reads what the
    caption asked for; `pf`, their mean; `identity_all`, the share with all five identity attributes right."""
    rng = np.random.default_rng(2000 + seed)
    identities = sorted(world.held_out(), key=lambda i: tuple(asdict(i).values()))
    asked = [(identities[rng.integers(len(identities))], world.sample_context(rng)) for _ in range(count)]
    generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in range(count)]
    outputs = load_teacher(str(teacher)).draw([panel_prompt(i, c, IDENTITY) for i, c in asked], PANEL, PANEL, steps,
                                              GUIDANCE, generators)
    readings = read_attributes(model, outputs)
    right = {x: [r[x] == getattr(i if x in IDENTITY else c, x) for r, (i, c) in zip(readings, asked)]
             for x in IDENTITY + CONTEXT}
    return {"panels": count, "pf": round(float(np.mean([np.mean(v) for v in right.values()])), 4),
            "identity_all": round(float(np.mean([all(right[x][k] for x in IDENTITY) for k in range(count)])), 4),
            "by_attribute": {x: round(float(np.mean(v)), 4) for x, v in right.items()}}


def halves_agreement(left: list[dict], right: list[dict]) -> dict:
    """How often two lists of readings (the halves of the same canvases) agree, per identity attribute, beside
    `chance`: the agreement expected if each half were drawn on its own with the same habits (the sum over values
    of how often the judge reads it on the left times on the right), so a teacher that draws one pink blob in
    both halves scores its habit, not a copy; `all_five`: the share alike in every identity attribute."""
    count = len(left)
    agree, chance = {}, {}
    for x in IDENTITY:
        a, b = [r[x] for r in left], [r[x] for r in right]
        agree[x] = round(float(np.mean([u == v for u, v in zip(a, b)])), 4)
        chance[x] = round(float(sum(a.count(v) * b.count(v) for v in set(a))) / count**2, 4)
    alike = [all(u[x] == v[x] for x in IDENTITY) for u, v in zip(left, right)]
    return {"agree": agree, "chance": chance, "all_five": round(float(np.mean(alike)), 4)}


@torch.no_grad()
def teacher_consistency(model: AttributeReader, teacher: str | Path = TEACHER, count: int = 48, seed: int = 0,
                        steps: int = 20) -> dict:
    """The teacher's in-context prior, which the student's fine-tune builds on (the paper takes it from FLUX):
    1x2 canvases with no gutter, the layout the student draws `[reference | output]` in, whose prompt names no
    identity attribute, only each half's scene and light. Only the teacher's own sense that the two halves show
    one subject makes them agree; `halves_agreement` of the judge's readings."""
    rng = np.random.default_rng(3000 + seed)
    prompts = [world_grid_prompt(world.caption(world.sample_identity(rng), None, []), Layout(1, 2),
                                 world.grid_contexts(rng, 2)).text for _ in range(count)]
    generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in range(count)]
    canvases = load_teacher(str(teacher)).draw(prompts, 2 * PANEL, PANEL, steps, GUIDANCE, generators)
    left = read_attributes(model, [canvas.crop((0, 0, PANEL, PANEL)) for canvas in canvases])
    right = read_attributes(model, [canvas.crop((PANEL, 0, 2 * PANEL, PANEL)) for canvas in canvases])
    return {"canvases": count} | halves_agreement(left, right)


def copy_canvases(teacher, references: list[Image.Image], prompts: list[str], steps: int,
                  generators: list[torch.Generator]) -> list[Image.Image]:
    """1x2 canvases whose left half is held to `references`, clean, while the teacher draws the right half at
    each step's level: the right half is drawn beside a subject already fixed and known, as the student's output
    is drawn beside the reference its condition gives whole. (Held noised to each step's level instead, as
    inpainting holds what it keeps, the left half tells the right less: issue 14's round 5 teacher copied shape
    0.25 and body 0.35 that way, 0.31 and 0.54 beside the clean half.) Sampled as `Teacher.draw` samples (its
    true guidance)."""
    pipe = teacher.pipe
    pixels = torch.stack([torch.from_numpy(np.concatenate([np.asarray(r.convert("RGB"))] * 2, axis=1))
                          for r in references]).permute(0, 3, 1, 2).float() / 127.5 - 1
    latents = pipe.vae.encode(pixels).latent_dist.mode()
    latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    held = pipe._pack_latents(latents, *latents.shape)
    columns = latents.shape[3] // 2  # packed tokens per canvas row, row-major
    left = ((torch.arange(held.shape[1]) % columns) < columns // 2)[None, :, None]
    noise = torch.stack([torch.randn(held.shape[1:], generator=g) for g in generators])

    def hold_left(pipe, step, timestep, tensors):
        tensors["latents"] = torch.where(left, held, tensors["latents"])
        return tensors

    extra = {"max_sequence_length": text_length(pipe)}
    if teacher.true_cfg != 1:
        extra |= {"true_cfg_scale": teacher.true_cfg, "negative_prompt": [""] * len(prompts)}
    width, height = references[0].width, references[0].height
    return pipe(prompts, width=2 * width, height=height, num_inference_steps=steps, guidance_scale=GUIDANCE,
                latents=torch.where(left, held, noise), callback_on_step_end=hold_left,
                callback_on_step_end_tensor_inputs=["latents"], **extra).images


@torch.no_grad()
def teacher_copy(model: AttributeReader, teacher: str | Path = TEACHER, count: int = 48, seed: int = 0,
                 steps: int = 20) -> dict:
    """The teacher's copy prior, what the student's fine-tune starts from: the right halves of `copy_canvases`
    beside crisp renders of held-out subjects (centred and upright, `world.PORTRAIT_SPREAD`), from prompts that
    name no identity attribute. Per attribute, the share of right halves the judge reads as the reference's
    value, beside chance from its habits on the right halves against the subjects' values (`halves_agreement`
    with the truth as the left). Unlike `teacher_consistency`, both halves cannot drift to one default together."""
    rng = np.random.default_rng(4000 + seed)
    subjects = sorted(world.held_out(), key=lambda i: tuple(vars(i).values()))
    identities = [subjects[k] for k in rng.choice(len(subjects), count, replace=count > len(subjects))]
    references, prompts = [], []
    for identity in identities:
        contexts = world.grid_contexts(rng, 2, world.PORTRAIT_SPREAD)
        references.append(world.render(identity, contexts[0], PANEL))
        prompts.append(world_grid_prompt(world.caption(identity, None, []), Layout(1, 2), contexts).text)
    generators = [torch.Generator().manual_seed(seed * 10_000 + k) for k in range(count)]
    canvases = copy_canvases(load_teacher(str(teacher)), references, prompts, steps, generators)
    right = read_attributes(model, [canvas.crop((PANEL, 0, 2 * PANEL, PANEL)) for canvas in canvases])
    truth = [{x: getattr(identity, x) for x in IDENTITY} for identity in identities]
    result = halves_agreement(truth, right)
    return {"canvases": count, "copied": result["agree"], "chance": result["chance"], "all_five": result["all_five"]}


def example_fidelity(model: AttributeReader, teacher: str | Path = TEACHER, curated: str | Path = CURATED,
                     seeds: int = 4) -> dict:
    """What the Generate tab's three examples give on the miniature at the tab's defaults: per example, how
    many of the reference's five identity attributes the judge reads in each of `seeds` pictures (seeds 0,
    1, ...), and their mean. Generated through `generate`, the function the tab and `dsd generate` call."""
    from pipeline.generation.generate import GenerateRequest, Settings, generate

    found = {}
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), model=ModelSpec(base=str(teacher), dsd=str(curated)))
        for example in EXAMPLES:
            request = GenerateRequest(image=example.path, prompt=example.prompt, mode=example.mode, seed=0,
                                      num_images=seeds)
            readings = read_attributes(model, generate(request, settings).images)
            found[example.file] = [sum(r[x] == getattr(example.identity, x) for x in IDENTITY) for r in readings]
    return {"seeds": seeds, "found": found, "mean": {name: float(np.mean(v)) for name, v in found.items()}}


def run_report(teacher: str | Path = TEACHER, judge: str | Path = JUDGE, students: dict | None = None,
           seeds: int = 3, per_mode: int = 16, steps: int = 20, picture: str | Path | None = None,
           log: Log = print) -> dict:
    """The table: for each row, CP, PF and CP*PF (mean over `seeds` evaluation seeds, and the std of
    CP*PF across them), on held-out identities; with the judge's accuracy beside it."""
    started = time.perf_counter()
    students = students or STUDENTS
    model = AttributeReader.from_pretrained(str(judge)).eval()
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
    singles = teacher_fidelity(model, teacher, count=2 * per_mode * len(MODES), steps=steps)
    log(f"teacher on single panels naming every attribute: PF {singles['pf']:.3f}, all five identity attributes "
        f"right {singles['identity_all']:.3f}")
    consistency = teacher_consistency(model, teacher, count=per_mode * len(MODES), steps=steps)
    log(f"teacher's 1x2 canvases naming no identity attribute, halves alike in all five: {consistency['all_five']:.3f}")
    copy = teacher_copy(model, teacher, count=per_mode * len(MODES), steps=steps)
    log(f"teacher's right halves beside a held reference, all five identity attributes copied: {copy['all_five']:.3f}")
    examples = example_fidelity(model, teacher, students["student_curated"])
    log("embedded default's examples, identity attributes found (of 5): "
        + ", ".join(f"{name} {mean:.2f}" for name, mean in examples["mean"].items()))
    return {"judge_accuracy": accuracy, "rows": rows, "seeds": seeds, "items_per_seed": per_mode * len(MODES),
            "teacher_singles": singles, "teacher_consistency": consistency, "teacher_copy": copy,
            "examples": examples,
            "seconds": round(time.perf_counter() - started)}


def save_picture(path: str | Path, items: list[dict], outputs: dict, columns: int = 8, scale: int = 2) -> Path:
    """References (top row) and each row's outputs below, for the first `columns` identity-mode items
    and a few of the other modes; labels on the left."""
    chosen = [k for k, item in enumerate(items) if item["mode"] == "identity"][:columns - 2]
    chosen += [k for k, item in enumerate(items) if item["mode"] != "identity"][:2]
    side, label, gap = PANEL * scale, 150, 4
    rows = [("reference", [item["reference"] for item in items])] + [(row, outputs[row]) for row in ROWS]
    grid = compose_grid([pictures[k].resize((side, side), Image.NEAREST) for _, pictures in rows for k in chosen],
                        columns=len(chosen), gutter=gap)
    sheet = Image.new("RGB", (label + grid.width + gap, grid.height + gap), "white")
    sheet.paste(grid, (label, 0))
    draw = ImageDraw.Draw(sheet)
    for r, (name, _) in enumerate(rows):
        draw.text((6, r * (side + gap) + side // 2 - 6), name, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _against_chance(sentence: str, shares: dict, chance: dict) -> list[str]:
    """A paragraph and a one-row table of per-attribute shares, each with its chance in brackets."""
    return ["", sentence, "", "| " + " | ".join(shares) + " |", "|" + "---:|" * len(shares),
            "| " + " | ".join(f"{shares[x]:.3f} ({chance[x]:.3f})" for x in shares) + " |"]


def markdown(result: dict) -> str:
    """The report as the README's table."""
    lines = [f"Judge same/different accuracy on held-out rendered pairs: {result['judge_accuracy']:.3f}; "
             f"{result['seeds']} evaluation seeds x {result['items_per_seed']} held-out items.", "",
             "| row | CP | PF | CP·PF | CP·PF std | CP·PF identity | relight | instruct |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        modes = [row["by_mode"][mode]["cp"] * row["by_mode"][mode]["pf"] for mode in MODES]
        lines.append(f"| {row['name']} | {row['cp']:.3f} | {row['pf']:.3f} | {row['cp_pf']:.3f} | "
                     f"{row['cp_pf_std']:.3f} | " + " | ".join(f"{m:.3f}" for m in modes) + " |")
    if "teacher_singles" in result:
        singles = result["teacher_singles"]
        lines += ["", f"The teacher on {singles['panels']} single panels whose captions name every attribute: PF "
                      f"{singles['pf']:.3f}, all five identity attributes right {singles['identity_all']:.3f}.", "",
                  "| " + " | ".join(singles["by_attribute"]) + " |", "|" + "---:|" * len(singles["by_attribute"]),
                  "| " + " | ".join(f"{v:.3f}" for v in singles["by_attribute"].values()) + " |"]
    if "teacher_consistency" in result:
        consistency = result["teacher_consistency"]
        lines += _against_chance(f"The teacher on {consistency['canvases']} 1x2 canvases (the student's layout) whose "
                                 "prompt names no identity attribute: the share whose halves the judge reads alike, then "
                                 "(in brackets) what chance would give from how often it reads each value; all five "
                                 f"alike {consistency['all_five']:.3f}.", consistency["agree"], consistency["chance"])
    if "teacher_copy" in result:
        copy = result["teacher_copy"]
        lines += _against_chance(f"The teacher drawing the right half of {copy['canvases']} 1x2 canvases beside a held "
                                 "reference (a held-out subject), from a prompt that names no identity attribute: the "
                                 "share of right halves the judge reads as the reference's value, then (in brackets) "
                                 f"chance from its habits; all five copied {copy['all_five']:.3f}.", copy["copied"],
                                 copy["chance"])
    if "examples" in result:
        lines += ["", "The Generate tab's examples on these weights, identity attributes of the reference found (of 5, "
                      f"mean over {result['examples']['seeds']} seeds): "
                      + ", ".join(f"{name} {mean:.2f}" for name, mean in result["examples"]["mean"].items()) + "."]
    return "\n".join(lines)
