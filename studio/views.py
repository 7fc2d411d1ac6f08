"""What the tabs show, as plain data: the store's rows turned into table rows, texts, frames and picture
files. No Gradio here: each tab lays these out and wires them to its events, and tests call them as they are.
"""

import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipeline.errors import UserInputError
from pipeline.evaluation import stages as evaluation
from pipeline.generation.generate import LICENCE_NOTE, GenerateResult, Settings, reconstruction_path
from pipeline.images import load_image
from pipeline.jobs import log_tail
from pipeline.store import REVIEW_DECISIONS, Store
from studio.pictures import sample_grid_file
from studio.public import NOTE as PUBLIC_NOTE
from studio.resolve import resolve_model
from train import launcher

JOBS_SHOWN, LOG_BYTES = 20, 6000
RUNS_SHOWN, PLOT_POINTS = 20, 1000
JOB_HEADERS = ["id", "stage", "status", "progress", "started", "error"]
HISTORY_HEADERS = ["id", "time", "mode", "prompt", "seed", "size", "total s"]
HISTORY_LIMIT = 200
DETAIL_FIELDS = ("id", "created_at", "status", "error", "mode", "prompt", "prompt_used", "model",
                 "seed", "num_images", "params", "timings", "notices", "reference_path")
FIGURE_HEADERS = ["figure", "mean", "std"]
SCORE_HEADERS = ["run", "judge", "CP", "PF", "CP reasoning", "PF reasoning"]
NO_JUDGEMENTS = "has no judgements yet: run **Judge** first (after **Sample**)."
NO_EVALUATIONS = "No evaluations yet: run **Sample**, then **Judge**, in **Run**; the figures show here."
RUN_HEADERS = ["id", "name", "status", "step", "loss", "ETA", "devices", "error"]
LOSSES = ("loss", "loss_reference", "loss_target")
PAIR_HEADERS = ["pair", "grid", "verdict", "confidence", "review"]


# the studio's header


def header(settings: Settings, public: bool = False) -> str:
    """What the studio is, the model it runs (which the Generate tab's Model panel can change) and the licence."""
    model = resolve_model(settings.model)
    shown = model.label or " + ".join(Path(part).name for part in (model.base, model.dsd, model.lora) if part) \
        if public else model.describe()  # a public studio names no server path
    advice = "" if public or any((settings.model.base, settings.model.dsd, settings.model.lora)) else (
        " (set DSD_BASE and DSD_WEIGHTS, or open *Model* below, to run FLUX.1-dev with DSD)"
    )
    return (
        "# DSD Studio\n"
        "Diffusion Self-Distillation on FLUX: give a reference picture and a prompt, "
        "get new pictures of the same subject.\n\n"
        f"**Model:** {shown}{advice}\n\n"
        + (f"{PUBLIC_NOTE}\n\n" if public else "")
        + f"<small>{LICENCE_NOTE}</small>"
    )


# every tab's background jobs


def local_time(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S") if iso else ""


def job_rows(store: Store, prefix: str) -> list[list]:
    """The newest jobs of kind `prefix*`, as the jobs table shows them."""
    return [[job["id"], job["kind"].removeprefix(prefix), job["status"],
             f"{job['done'] or 0}/{job['total']}" if job["total"] else "",
             local_time(job["started_at"]), job["error"] or ""] for job in store.jobs(prefix, limit=JOBS_SHOWN)]


def job_log(store: Store, prefix: str, job_id) -> str:
    """The end of the log of job `job_id`, or of the newest job of kind `prefix*` when none is given."""
    jobs = store.jobs(prefix, job_id=int(job_id) if job_id else None, limit=1)
    return log_tail(jobs[0]["log_path"], LOG_BYTES) if jobs else ""


# Generate: a generation's pictures and the history


def gallery_items(result: GenerateResult) -> list[tuple[str, str]]:
    items = [(str(path), f"seed {seed}") for path, seed in zip(result.paths, result.seeds)]
    for path, seed in zip(result.paths, result.seeds):
        recon = reconstruction_path(path)
        if recon.is_file():
            items.append((str(recon), f"reconstruction, seed {seed}"))
    return items


def timings_text(timings: dict[str, float]) -> str:
    parts = [f"total {timings['total_s']:.1f} s"]
    parts += [f"{name} {timings[key]:.1f} s" for name, key in
              (("load", "load_s"), ("encode", "encode_s"), ("denoise", "denoise_s"), ("decode", "decode_s"))
              if key in timings]
    if "per_step_s" in timings:
        parts.append(f"{timings['per_step_s']:.2f} s/step")
    return " · ".join(parts)


def history_rows(store: Store, search: str = "", only: set[int] | None = None) -> list[list]:
    """Recent generations, newest first, whose prompt holds `search`; only those in `only` when given (a
    public studio's visitor sees their own)."""
    search = (search or "").strip() or None
    if only is None:
        rows = store.list_generations(limit=HISTORY_LIMIT, search=search)
    else:
        rows = [store.get_generation(i) for i in sorted(only, reverse=True)]
        rows = [row for row in rows if not search or search.lower() in row["prompt"].lower()][:HISTORY_LIMIT]
    return [history_row(row) for row in rows]


def history_row(row: dict) -> list:
    params, timings = row.get("params") or {}, row.get("timings") or {}
    when = local_time(row["created_at"])
    size = f"{params['width']}x{params['height']}" if "width" in params else ""
    total = round(timings["total_s"], 1) if "total_s" in timings else None
    prompt = row["prompt"] if row["status"] == "ok" else f"[{row['status']}] {row['prompt']}"
    return [row["id"], when, row["mode"], prompt, row["seed"], size, total]


def generation_details(store: Store, generation_id, only: set[int] | None = None) -> tuple[list, dict]:
    """The output pictures still on disk and the recorded parameters of one generation (one of `only`, when
    given). Paths inside the data folder are shown relative to it; in a public studio (`only`) the pictures
    are returned as pictures, never as server paths."""
    try:
        if only is not None and int(generation_id) not in only:
            raise KeyError(generation_id)
        row = store.get_generation(int(generation_id))
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"no generation {generation_id!r} in the history: refresh it") from None
    seeds = (row.get("params") or {}).get("seeds") or []
    paths = row.get("output_paths") or []
    pictures = [(path, f"seed {seed}") for path, seed in zip(paths, seeds) if Path(path).is_file()]
    if only is not None:
        pictures = [(load_image(path), label) for path, label in pictures]
    details = {key: row.get(key) for key in DETAIL_FIELDS if row.get(key) not in (None, [], "")}
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        details["missing_files"] = missing
    return pictures, shown_paths(details, store.home, public=only is not None)


def shown_paths(value, home: Path, public: bool = False):
    """`value` with every absolute path inside the data folder written relative to it; in public mode a
    path elsewhere (a model folder) is shown by its last part only."""
    if isinstance(value, dict):
        return {key: shown_paths(item, home, public) for key, item in value.items()}
    if isinstance(value, list):
        return [shown_paths(item, home, public) for item in value]
    if isinstance(value, str) and " + " in value:  # a model: base + DSD weights + LoRA
        return " + ".join(shown_paths(part, home, public) for part in value.split(" + "))
    if isinstance(value, str) and Path(value).is_absolute():
        try:
            return str(Path(value).resolve().relative_to(home.resolve()))
        except (ValueError, OSError):
            return Path(value).name if public else value
    return value


# Data wheel: a pair under review


def verdict_label(pair: dict) -> str:
    if pair["verdict_status"] is None:
        return ""
    return "failed" if pair["verdict_status"] != "ok" else "same" if pair["same"] else "not same"


def pair_rows(pairs: list[dict]) -> list[list]:
    return [[p["pair_id"], p["grid_id"], verdict_label(p), p["confidence"], p["decision"] or ""] for p in pairs]


VERDICT_FIELDS = (("Subject", "subject"), ("Reference", "description_a"), ("Target", "description_b"),
                  ("Reasoning", "reasoning"), ("Target caption", "caption_target"),
                  ("Instruction caption", "caption_instruction"), ("Grid prompt", "grid_prompt"))


def verdict_text(pair: dict) -> str:
    status = verdict_label(pair)
    if not status:
        head = "**No verdict yet**: run the *curate* stage."
    elif status == "failed":
        head = f"**The judge failed** ({pair['judge']}): {pair['verdict_error']}"
    else:
        head = (f"**{'Same subject' if pair['same'] else 'Not the same subject'}**, "
                f"confidence {pair['confidence']} · judge: {pair['judge']}")
    shown = VERDICT_FIELDS if status in ("same", "not same") else VERDICT_FIELDS[-1:]
    return "\n\n".join([head] + [f"**{label}:** {pair[key]}" for label, key in shown if pair[key]])


def review_text(pair: dict) -> str:
    if not pair["decision"]:
        return "**Not reviewed yet**"
    return f"**{REVIEW_DECISIONS.get(pair['decision'], pair['decision']).capitalize()}**" + (
        f": {pair['note']}" if pair["note"] else "")


def pair_view(store: Store, ids: list[int], index: int) -> tuple:
    """(index, reference, target, grid, position, verdict, review, note, pair id) for pair `index` of `ids`."""
    if not ids:
        return 0, None, None, None, "No pairs match the filters.", "", "", "", None
    index = min(max(int(index or 0), 0), len(ids) - 1)
    found = store.pairs_by_id([ids[index]])
    if not found:
        return index, None, None, None, f"Pair {ids[index]} is gone: refresh the list.", "", "", "", None
    pair = found[0]
    position = f"**{index + 1} of {len(ids)}** · pair {pair['pair_id']} from grid {pair['grid_id']}"
    return (index, pair["reference_path"], pair["target_path"], pair["grid_path"], position,
            verdict_text(pair), review_text(pair), pair["note"] or "", pair["pair_id"])


# Train: runs, losses and samples


def run_rows(store: Store) -> list[list]:
    rows = []
    for run in store.runs(limit=RUNS_SHOWN):
        s = launcher.run_summary(store, run)
        loss = "" if s["loss"] is None else f"{s['loss']:.4f}"
        rows.append([s["id"], s["name"], s["status"], f"{s['step']}/{s['steps']}", loss, s["eta"], s["devices"],
                     s["error"]])
    return rows


def loss_frame(store: Store, run_id: int) -> pd.DataFrame | None:
    """The run's losses, one row per (step, series), thinned to about PLOT_POINTS steps; None before the first."""
    count = store.count_metrics(run_id)
    stride = max(1, math.ceil(count / PLOT_POINTS))
    rows = store.run_metrics(run_id, stride)
    newest = store.last_metric(run_id)
    if newest and (not rows or rows[-1]["step"] != newest["step"]):
        rows.append(newest)
    if not rows:
        return None
    return pd.DataFrame([(row["step"], row[series], series) for row in rows for series in LOSSES
                         if row[series] is not None], columns=["step", "loss", "series"])


def samples_picture(store: Store, run_id: int) -> str | None:
    """The run's samples grid as a PNG in the data folder (None before its first samples)."""
    samples = store.run_samples(run_id)
    return sample_grid_file(samples, store.home / "sample-grids", run_id)


def run_view(store: Store, run_id) -> tuple:
    """(log tail, loss frame, samples grid, command) of run `run_id`, or of the newest run when blank or 0."""
    found = store.runs(int(run_id)) if run_id else store.runs(limit=1)
    if not found:
        note = f"no training run {int(run_id)}" if run_id else ""
        return note, None, None, ""
    run = found[0]
    return (log_tail(run["log_path"], LOG_BYTES), loss_frame(store, run["id"]), samples_picture(store, run["id"]),
            launcher.command_line(run))


# Evaluate: figures and samples


def figure_rows(result: dict) -> list[list]:
    rows = [[label, result[key]["mean"], result[key]["std"]] for label, key in
            (("CP", "cp"), ("PF", "pf"), ("CP·PF", "cp_pf")) if result.get(key)]
    if result.get("cp_debiased") is not None:
        rows.append(["de-biased CP", result["cp_debiased"], None])
    rows += [[name, value, None] for name, value in result.get("metrics", {}).items()]
    return rows


def category_frame(result: dict) -> pd.DataFrame:
    rows = [{"category": category, "cp": figures["cp"]["mean"]}
            for category, figures in sorted(result["by_category"].items())
            if figures.get("cp") and figures["cp"].get("mean") is not None]
    return pd.DataFrame(rows, columns=["category", "cp"])


def provenance_text(result: dict) -> str:
    prov, coverage = result["provenance"], result["coverage"]
    partial = "**PARTIAL** (missing or failed items)" if result["partial"] else "complete"
    return (f"**{prov['evaluation']}**: coverage {coverage['scored']}/{coverage['expected']}, {partial}; "
            f"{result['runs']} run(s) · {evaluation.describe_judge(prov)} · model {prov['model']} · "
            f"benchmark {prov['benchmark']}")


def opening_hint(store: Store) -> str:
    """What the Results view says before an evaluation is picked: how to make one, or to pick one."""
    return "Pick an evaluation." if store.eval_names() else NO_EVALUATIONS


def results_view(store: Store, name) -> tuple:
    """(figures, provenance line, Table 1 markdown, CP by category) of an evaluation, or a message instead."""
    empty = [], "", "", pd.DataFrame(columns=["category", "cp"])
    if not (name or "").strip():
        return [], opening_hint(store), *empty[2:]
    found = evaluation.get_eval(store, name)
    judgements = store.eval_judgements(found["id"])
    if not judgements:
        samples = store.count_eval_samples(found["id"])
        return [], f"Evaluation **{found['name']}** ({samples} samples) {NO_JUDGEMENTS}", *empty[2:]
    if all(row["cp"] is None or row["pf"] is None for row in judgements):
        error = next(iter((judgements[-1]["errors"] or {}).values()), "no score")
        return [], (f"Evaluation **{found['name']}**: the judge failed all {len(judgements)} judgements (last: "
                    f"{error}). Fix the judge and run **Judge** again."), *empty[2:]
    result = evaluation.report(store, found["id"], allow_partial=True)
    return figure_rows(result), provenance_text(result), evaluation.markdown_table(result), category_frame(result)


def reasoning(row: dict, criterion: str) -> str:
    """The judge's last reply for `criterion`, or why there is no score."""
    texts = (row["replies"] or {}).get(criterion) or []
    failure = (row["errors"] or {}).get(criterion)
    return f"failed: {failure}" if failure else texts[-1].strip() if texts else ""


def sample_view(store: Store, name, index) -> tuple:
    """(index, reference, output, caption, scores) for sample `index` of an evaluation, in benchmark order."""
    if not (name or "").strip():
        return 0, None, None, "Pick an evaluation.", []
    found = evaluation.get_eval(store, name)
    samples = store.eval_samples(found["id"])
    if not samples:
        return 0, None, None, f"Evaluation **{found['name']}** has no samples yet: run **Sample** first.", []
    index = min(max(int(index or 0), 0), len(samples) - 1)
    sample = samples[index]
    judged = store.eval_judgements(found["id"], sample["item_id"], sample["k"])
    scores = [[row["run"], row["judge"], row["cp"], row["pf"], reasoning(row, "cp"), reasoning(row, "pf")]
              for row in judged]
    caption = (f"**{index + 1} of {len(samples)}** · {sample['item_id']} ({sample['category']}, {sample['kind']}), "
               f"seed {sample['seed']}\n\n**Prompt:** {sample['prompt']}"
               + ("" if judged else "\n\n*Not judged yet.*"))
    return index, sample["reference"], sample["path"], caption, scores
