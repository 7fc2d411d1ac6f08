"""The data wheel (paper section 3.1): captions -> grid prompts -> grids -> panels -> pairs -> verdicts.

Each stage is a plain function that reads the previous stage's rows from the store, writes its
own, and skips what is already done, so a rerun after a crash continues where it stopped. The
CLI (`dsd wheel STAGE`), the Data wheel tab (through a job) and the tests call these functions.
Stages take ready objects (a prompt writer, a teacher folder, a curator); without a writer or a
curator they run offline (templates, the image-similarity stand-in). The studio's defaults (its
embedded miniature as teacher) are filled in by the CLI and the tabs (`studio/resolve.py`).
"""

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import PIL.Image

from pipeline.errors import UserInputError
from pipeline.jobs import JobReporter, process_alive
from pipeline.providers import make_provider
from pipeline.store import REVIEW_DECISIONS, Store, utc_now
from pipeline.wheel.captions import builtin_captions, filter_captions, read_captions
from pipeline.wheel.curation import CurationFailure, Curator, SimilarityCurator, curate
from pipeline.wheel.grids import Layout, compose_pairs, panel_problem, split_grid
from pipeline.wheel.prompts import PROMPT_VERSION, Writer, duplicate_sources, make_prompt_writer

PROMPT_BATCH = 32  # prompts written per store transaction: a crash loses at most this many LLM calls


@dataclass
class StageResult:
    stage: str
    added: int = 0
    skipped: int = 0
    failed: int = 0
    stopped: bool = False
    details: dict = field(default_factory=dict)
    row_id: int | None = None  # its `stage_runs` row, once written

    def summary(self) -> str:
        parts = [f"{self.stage}: {self.added} added"]
        parts += [f"{self.skipped} already done"] if self.skipped else []
        parts += [f"{self.failed} failed"] if self.failed else []
        parts += [f"{key} {value}" for key, value in self.details.items()]
        return ", ".join(parts) + (" (stopped by the user)" if self.stopped else "")


def record_run(store: Store, result: StageResult, job_id: int | None = None, finished: bool = True) -> None:
    """The run's `stage_runs` row. A stage whose calls are paid (curation) writes it as it goes, `finished`
    False and so marked stopped until the end: a run killed midway keeps what it did and spent."""
    row = run_row(result, job_id, finished)
    if result.row_id is None:
        result.row_id = store.insert("stage_runs", row)
    else:
        store.update("stage_runs", result.row_id, row)


def run_row(result: StageResult, job_id: int | None, finished: bool = True) -> dict:
    return {"stage": result.stage, "job_id": job_id, "added": result.added, "skipped": result.skipped,
            "failed": result.failed, "stopped": int(result.stopped or not finished), "details": result.details}


def wheel_folder(store: Store, kind: str) -> Path:
    folder = store.home / "wheel" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_captions(store: Store, source: str | None = None, limit: int | None = None, column: str | None = None,
                 filter_with: str | None = None, default: tuple[str, list[str]] | None = None) -> StageResult:
    """Load reference captions from a file, or else the `default` set (its name, its captions; the built-in
    photo captions unless the caller gives another); optionally keep only those an LLM finds a subject in."""
    if source:
        captions = read_captions(source, column=column, limit=limit)
    else:
        source, captions = default or ("builtin", builtin_captions())
        captions = captions[:limit]
    verdicts = filter_captions(make_provider(filter_with), captions) if filter_with else [(c, None, None) for c in captions]
    rows = [{"text": text, "source": source, "keep": None if keep is None else int(keep),
             "filter_reason": reason} for text, keep, reason in verdicts]
    added = store.add("captions", rows)
    kept = sum(1 for _, keep, _ in verdicts if keep is not False)
    return StageResult("captions", added=added, skipped=len(rows) - added, details={"kept": kept})


def run_prompts(store: Store, write: Writer | None = None, layout: str = "2x2", limit: int | None = None,
                dedupe: float = 0.8, reporter: JobReporter | None = None) -> StageResult:
    """A prompt writer (an LLM's, or the offline templates without one) turns each caption into a grid
    prompt; near-duplicates are marked."""
    Layout.parse(layout)
    write = write or make_prompt_writer()
    todo = store.captions_to_prompt(limit)
    result = StageResult("prompts")
    for start in range(0, len(todo), PROMPT_BATCH):
        if reporter and reporter.should_stop():
            result.stopped = True
            break
        rows = []
        for caption in todo[start:start + PROMPT_BATCH]:
            prompt = write(caption["text"], layout)
            rows.append({"caption_id": caption["id"], "layout": prompt.layout, "subject": prompt.subject,
                         "panels": prompt.panels, "text": prompt.text, "writer": prompt.writer,
                         "prompt_version": PROMPT_VERSION})
        result.added += store.add("grid_prompts", rows)
        if reporter:
            reporter.progress(start + len(rows), len(todo))
    result.details["duplicates"] = mark_duplicates(store, dedupe)
    return result


def mark_duplicates(store: Store, threshold: float) -> int:
    """Mark prompts that repeat an earlier one (the paper found LLMs repeat themselves); grids skip them.
    One pass over all unmarked prompts, oldest first, so it is the same whether the stage ran once or crashed."""
    prompts = store.grid_prompts()
    sources = duplicate_sources([prompt["text"] for prompt in prompts], threshold)
    for later, earlier in sources.items():
        store.update("grid_prompts", prompts[later]["id"], {"duplicate_of": prompts[earlier]["id"]})
    return len(sources)


def grid_seed(prompt_id: int, k: int) -> int:
    """A recorded, reproducible seed per (prompt, k), independent of which process draws it."""
    return int.from_bytes(hashlib.sha256(f"{prompt_id}:{k}".encode()).digest()[:4], "big")


def run_grids(store: Store, teacher: str, per_prompt: int = 1, size: tuple[int, int] = (1024, 1024),
              steps: int = 28, guidance: float = 3.5, limit: int | None = None,
              reporter: JobReporter | None = None, teacher_name: str | None = None) -> StageResult:
    """The teacher (a folder or hub id; recorded as `teacher_name`) samples grids at recorded seeds.
    Under `accelerate launch` each process takes its share."""
    from pipeline.wheel.teacher import load_teacher, process_share

    rank, world, device = process_share()
    pipe = load_teacher(teacher, device, teacher_name)
    width, height = size
    # A prompt belongs to one process by its id, not by its place in a list that other processes shrink.
    todo = [prompt for prompt in store.prompts_to_draw(per_prompt) if prompt["id"] % world == rank][:limit]
    folder = wheel_folder(store, "grids")
    result = StageResult("grids", details={"process": f"{rank + 1}/{world}"})
    for done, prompt in enumerate(todo):
        if reporter and reporter.should_stop():
            result.stopped = True
            break
        for k in range(per_prompt):
            seed = grid_seed(prompt["id"], k)
            if store.has_grid(prompt["id"], seed):
                result.skipped += 1
                continue
            started = time.perf_counter()
            image = pipe(prompt["text"], width=width, height=height, steps=steps, guidance=guidance, seed=seed)
            path = folder / f"{prompt['id']}-{seed}.png"
            _write_atomically(path, image)
            result.added += store.add("grids", [{"prompt_id": prompt["id"], "seed": seed, "path": str(path),
                                                 "teacher": pipe.name, "width": width, "height": height,
                                                 "seconds": time.perf_counter() - started}])
        if reporter:
            reporter.progress(done + 1, len(todo))
    return result


def _write_atomically(path: Path, image: PIL.Image.Image) -> None:
    """A grid file is whole or absent: written aside, then renamed."""
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, path)


def run_pairs(store: Store, limit: int | None = None, reporter: JobReporter | None = None) -> StageResult:
    """Cut each grid at its real panel boundaries, drop unusable panels, compose ordered pairs."""
    folder = wheel_folder(store, "panels")
    todo = store.grids_to_split(limit)
    result = StageResult("pairs", details={"panels": 0, "dropped": 0})
    for done, grid in enumerate(todo):
        if reporter and reporter.should_stop():
            result.stopped = True
            break
        prompt = store.get("grid_prompts", grid["prompt_id"]) if grid["prompt_id"] else None
        layout = Layout.parse(prompt["layout"]) if prompt else None
        with PIL.Image.open(grid["path"]) as picture:
            panels = split_grid(picture.convert("RGB"), layout)
        rows, usable = [], []
        for index, panel in enumerate(panels):
            path = folder / f"{grid['id']}-{index}.png"
            panel.image.save(path)
            problem = panel_problem(panel.image)
            rows.append({"idx": index, "row": panel.row, "col": panel.col, "box": list(panel.box),
                         "path": str(path), "method": panel.method, "problem": problem})
            usable += [] if problem else [index]
        result.added += store.add_grid_split(grid["id"], rows, compose_pairs(usable))
        result.details["panels"] += len(rows)
        result.details["dropped"] += len(rows) - len(usable)
        if reporter:
            reporter.progress(done + 1, len(todo))
    return result


class StoreCache:
    """The curation cache in the store's `api_cache` table, so a rerun repeats no paid call."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, key: str):
        return self.store.cache_get(key)

    def put(self, key: str, value) -> None:
        self.store.cache_put(key, value)


# A judge call takes seconds and a claim is held only while its pair is in flight: a claim older than this
# belongs to a curation that died (on this machine a dead process is seen at once; this covers other machines
# sharing the data folder, and a process id reused since).
CLAIM_LEASE_S = 3600


def release_stale_claims(store: Store) -> None:
    """Free the pairs claimed by curations that are no longer running, so a rerun after a kill judges them."""
    for claim in store.claim_owners():
        age = time.time() - datetime.fromisoformat(claim["claimed_at"]).timestamp()
        dead_here = claim["host"] == socket.gethostname() and not process_alive(claim["pid"])
        if dead_here or age > CLAIM_LEASE_S:
            store.release_claims(claim["owner"])


def run_curate(store: Store, curator: Curator | None = None, concurrency: int = 4, limit: int | None = None,
               reporter: JobReporter | None = None, usd_per_mtok: tuple[float, float] | None = None) -> StageResult:
    """A curator (a VLM, or the offline similarity stand-in without one) judges each pair and captions it.
    `usd_per_mtok` (input, output prices per million tokens) adds the run's cost to its accounting."""
    judge_impl = curator or SimilarityCurator()
    release_stale_claims(store)
    todo = store.pairs_to_judge(limit)
    result = StageResult("curate", details={"same": 0, "cached": 0, "input_tokens": 0, "output_tokens": 0})
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    job_id = reporter.job_id if reporter else None
    record_run(store, result, job_id, finished=False)

    def items() -> Iterator:
        for pair in todo:
            if reporter and reporter.should_stop():
                result.stopped = True
                return
            # Another curation of this data folder may be judging it, or have judged it since `todo` was read.
            if not store.claim_pair(pair["pair_id"], owner, socket.gethostname(), os.getpid()):
                result.skipped += 1
                continue
            with PIL.Image.open(pair["reference_path"]) as a, PIL.Image.open(pair["target_path"]) as b:
                yield pair["pair_id"], a.convert("RGB"), b.convert("RGB")

    def record(pair_id, outcome, cached: bool) -> None:
        if not cached:
            result.details["input_tokens"] += outcome.input_tokens
            result.details["output_tokens"] += outcome.output_tokens
        if isinstance(outcome, CurationFailure):
            verdict = {"pair_id": pair_id, "status": "failed", "error": str(outcome), "judge": judge_impl.name}
            result.failed += 1
        else:
            verdict = {"pair_id": pair_id, "status": "ok", "cached": int(cached), "error": None, **outcome.to_dict()}
            result.added += 1
            result.details["same"] += int(outcome.same)
            result.details["cached"] += int(cached)
        price(result.details, usd_per_mtok)
        store.record_verdict(verdict, owner, result.row_id, run_row(result, job_id, finished=False))
        if reporter:
            reporter.progress(result.added + result.failed + result.skipped, len(todo))

    try:
        stats = curate(items(), judge_impl, concurrency=concurrency, cache=StoreCache(store), on_result=record)
    finally:
        store.release_claims(owner)
    result.details.update(input_tokens=stats.input_tokens, output_tokens=stats.output_tokens,
                          seconds=round(stats.seconds, 1))
    price(result.details, usd_per_mtok)
    record_run(store, result, job_id)
    if reporter:
        reporter.progress(result.added + result.failed + result.skipped, len(todo))
    return result


def price(details: dict, usd_per_mtok: tuple[float, float] | None) -> None:
    """The run's cost so far, when its prices per million (input, output) tokens are known."""
    if usd_per_mtok:
        details["usd"] = round((details["input_tokens"] * usd_per_mtok[0] + details["output_tokens"] * usd_per_mtok[1]) / 1e6, 4)


def review_pair(store: Store, pair_id, decision: str, note: str = "") -> dict:
    """Record a person's decision (accept, reject or flag) and note on a pair; returns the stored review."""
    if decision not in REVIEW_DECISIONS:
        raise UserInputError(f"unknown decision {decision!r}: use one of {', '.join(REVIEW_DECISIONS)}")
    try:
        pair_id = int(pair_id)
        store.get("pairs", pair_id)
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"no pair {pair_id!r} in the store: refresh the list") from None
    store.put("reviews", {"pair_id": pair_id, "decision": decision, "note": (note or "").strip() or None,
                          "updated_at": utc_now()})
    return store.get("reviews", pair_id)


def review_queue(store: Store, verdict: str = "all", min_confidence: float = 0, review: str = "all",
                 disagreement: bool = False, limit: int | None = None) -> list[dict]:
    """The pairs that pass the review filters (see `Store.review_queue`), oldest first."""
    try:
        return store.review_queue(verdict, min_confidence, review, disagreement, limit)
    except ValueError as error:
        raise UserInputError(str(error)) from None


def wheel_stats(store: Store) -> dict:
    """Counts per stage, hit rate, VLM acceptance rate, and agreement between the VLM and people."""
    counts = store.wheel_counts()
    rate = lambda part, whole: round(part / whole, 3) if whole else None  # noqa: E731
    return {
        **counts,
        "hit_rate": rate(counts["grids_with_accepted_pair"], counts["grids"]),
        "acceptance_rate": rate(counts["same"], counts["verdicts"]),
        "review_agreement": rate(counts["review_agrees"], counts["reviewed_with_verdict"]),
    }


def describe_stats(stats: dict) -> str:
    return json.dumps(stats, indent=1)
