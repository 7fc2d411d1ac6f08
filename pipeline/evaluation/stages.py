"""Evaluation: the DreamBench++ protocol (paper section 4, Table 1) on any model, through the store.

An evaluation is one model on one benchmark, by name. Its stages each read the previous one's
rows and skip finished work, so any of them can be stopped and run again:

- `sample`: one (or K) picture per prompt, at recorded seeds, into `<home>/evals/<id>/samples/`;
- `judge`: a judge scores every sample for concept preservation (CP, and the de-biased CP) and
  prompt following (PF), `runs` independent times (3 by default), one row per sample and run. The
  judge is a VLM asked with DreamBench++'s protocol (`DreamBenchJudge`), or any other `Judge`;
- `metrics`: CLIP-I, CLIP-T and DINO (v1, v2) from local checkpoint folders;
- `report`: CP, PF and CP*PF overall, per category and per prompt kind (mean and sample std over
  runs), with coverage; as JSON, CSV or a Markdown table shaped like the paper's Table 1 with its
  published rows alongside. Every report names its model, benchmark, judge endpoint and templates.
"""

import csv
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

import PIL.Image

from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import BUILTIN, load_benchmark
from pipeline.evaluation.judge import TEMPLATE_SOURCES, Judgement, TemplateSet, judge_item, load_templates, summarize
from pipeline.images import load_image
from pipeline.providers import Provider, ProviderError, endpoint, is_auth_failure, judge_provider
from pipeline.store import Store

if TYPE_CHECKING:
    from pipeline.generation.weights import ModelSpec

# The paper's Table 1 (GPT-4o judge): CP by category and overall, PF by prompt kind and overall, CP*PF;
# then the de-biased CP overall and the de-biased CP*PF. The paper has no style category and no
# "style change" PF column.
PAPER_ROWS = {
    "Textual Inversion": (0.502, 0.358, 0.305, 0.388, 0.671, 0.437, 0.598, 0.232, 0.722, 0.391),
    "DreamBooth": (0.640, 0.199, 0.488, 0.442, 0.798, 0.504, 0.692, 0.306, 0.626, 0.411),
    "DreamBooth LoRA": (0.751, 0.311, 0.543, 0.535, 0.898, 0.754, 0.849, 0.450, 0.720, 0.588),
    "BLIP-Diffusion": (0.637, 0.557, 0.469, 0.554, 0.581, 0.303, 0.464, 0.257, 0.750, 0.332),
    "Emu2": (0.670, 0.546, 0.447, 0.554, 0.732, 0.560, 0.670, 0.371, 0.681, 0.424),
    "IP-Adapter": (0.667, 0.558, 0.504, 0.576, 0.743, 0.446, 0.607, 0.350, 0.766, 0.451),
    "IP-Adapter+": (0.900, 0.845, 0.759, 0.834, 0.502, 0.279, 0.388, 0.324, 0.504, 0.187),
    "DSD": (0.647, 0.567, 0.640, 0.631, 0.777, 0.625, 0.726, 0.458, 0.789, 0.597),
}
METRICS = ("clip_i", "clip_t", "dino_v1", "dino_v2")


class Judge(Protocol):
    """What scores samples. Every judgement records who judged (`name`, `endpoint`) and how (`method`, such
    as a VLM's templates, and its `method_hash`); a rerun skips what the same judge and method scored."""

    name: str
    endpoint: str
    method: str
    method_hash: str

    def score(self, *, reference: PIL.Image.Image, generated: PIL.Image.Image, prompt: str, category: str,
              subject: str) -> Judgement:
        """One sample's CP and PF on DreamBench++'s 0..4 scale; `subject` is the benchmark's subject name."""
        ...


@dataclass(frozen=True)
class DreamBenchJudge:
    """A VLM asked with DreamBench++'s protocol: its provider, how every judgement names it (model and
    endpoint), and the templates it is asked with."""

    provider: Provider
    name: str
    endpoint: str
    templates: TemplateSet

    @property
    def method(self) -> str:
        return self.templates.source

    @property
    def method_hash(self) -> str:
        return self.templates.templates_hash

    def score(self, *, reference, generated, prompt, category, subject) -> Judgement:
        return judge_item(self.provider, self.templates, reference=reference, generated=generated, prompt=prompt,
                          category=category)


def judge_from_options(url: str | None = None, model: str | None = None, spec: str | None = None,
                       templates: str | None = None) -> DreamBenchJudge:
    """`--judge-url URL --judge-model NAME` (OpenAI-compatible; key from OPENAI_API_KEY) or `--judge gemini:MODEL`,
    asked with our templates or those in `templates` (a DreamBench++ checkout)."""
    provider = judge_provider(spec, url, model)
    return DreamBenchJudge(provider, provider.model, endpoint(provider), load_templates(templates))


class JudgeFailed(ProviderError):
    """The judge scored nothing: it cannot be reached, refused the key, or failed every sample; says why."""


@dataclass(frozen=True)
class JudgeRun:
    """What one judge stage did: judgements added, how many of them failed, and the first failure's message."""

    added: int
    failed: int = 0
    first_error: str = ""

    def summary(self, judge: Judge) -> str:
        failed = f" ({self.failed} failed, first: {self.first_error})" if self.failed else ""
        return f"{self.added} judgements by {judge.name} at {judge.endpoint}{failed}"


def is_local(endpoint: str) -> bool:
    return urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


# stages


def create_eval(store: Store, name: str, benchmark: str | None = None, base: str | None = None,
                dsd: str | None = None, run: int | None = None, per_prompt: int = 1, seed: int = 0,
                size: int | None = None, steps: int | None = None) -> int:
    """The evaluation `name` (made on first use; the same name with other settings is refused). `run` is
    the training run whose weights `base` and `dsd` are, recorded for the report. Size and steps left out
    are the model's own (`sampling_defaults` of `base` and `dsd`: FLUX's 512 px and 28 steps, unless their
    folders say otherwise); a caller whose blank base means another model fills them in first."""
    if size is None or steps is None:
        from pipeline.generation.weights import ModelSpec, sampling_defaults

        own = sampling_defaults(ModelSpec(base=base, dsd=dsd))
        size, steps = size or own["width"], steps or own["steps"]
    folder = str(Path(benchmark).expanduser().resolve()) if benchmark else str(BUILTIN)
    fingerprint = load_benchmark(folder).fingerprint
    model = {"base": base or None, "dsd": dsd or None, "run": run}
    settings = {"benchmark": folder, "fingerprint": fingerprint, "model": model, "per_prompt": per_prompt,
                "seed": seed, "size": size, "steps": steps}
    if per_prompt < 1 or steps < 1:
        raise UserInputError("per_prompt and steps must be at least 1")
    known = store.eval_named(name)
    if known:
        changed = [key for key, value in settings.items() if known[key] != value]
        if changed:
            raise UserInputError(f"evaluation {name!r} exists with other {', '.join(changed)}: pick another name")
        return known["id"]
    return store.insert("evals", {"name": name, **settings})


def get_eval(store: Store, eval_id) -> dict:
    found = store.find_eval(eval_id)
    if not found:
        raise UserInputError(f"no evaluation {eval_id!r}: `dsd eval sample --name NAME` makes one")
    return found


def recorded_model(evaluation: dict) -> "ModelSpec":
    """The model an evaluation names (its base may be blank: the caller's default model)."""
    from pipeline.generation.weights import ModelSpec  # torch: only when samples are drawn

    return ModelSpec(base=evaluation["model"]["base"], dsd=evaluation["model"]["dsd"])


def check_references(paths: list[Path]) -> None:
    """Every reference the samples need is a picture, checked before the model loads; one line names the file."""
    for path in paths:
        try:
            load_image(path)
        except UserInputError as error:
            raise UserInputError(f"benchmark reference {path}: {error}") from None


def sample_items(store: Store, eval_id, limit: int | None = None, memory: str = "auto",
                 on_progress: Callable[[int, int], None] | None = None, model: "ModelSpec | None" = None,
                 should_stop: Callable[[], bool] | None = None) -> int:
    """Generate the samples not made yet (at most `limit`); returns how many were made. `model` is the
    evaluation's recorded model with its blanks filled by the caller (default: as recorded). `should_stop`
    is asked before each picture (a job's Stop): what was made is kept, and a rerun makes the rest.

    Every picture has a seed of its own, the evaluation's seed plus its place in the benchmark (prompt by
    prompt, K pictures each): no two prompts start from the same noise, and a picture is drawn alike
    whenever it is drawn (`dsd mini report` seeds its items the same way, so its rows can be checked here)."""
    from pipeline.generation.generate import MODELS

    evaluation = get_eval(store, eval_id)
    items, per_prompt = load_benchmark(evaluation["benchmark"]).items(), evaluation["per_prompt"]
    done = {(row["item_id"], row["k"]) for row in store.eval_samples(evaluation["id"])}
    todo = [(evaluation["seed"] + place * per_prompt + k, item, k) for place, item in enumerate(items)
            for k in range(per_prompt) if (item.id, k) not in done]
    todo = todo[:limit] if limit is not None else todo
    if not todo:
        return 0
    check_references(sorted({item.reference for _, item, _ in todo}))
    pipe = MODELS.get(model or recorded_model(evaluation), memory)
    folder = store.home / "evals" / str(evaluation["id"]) / "samples"
    import torch

    for count, (seed, item, k) in enumerate(todo, 1):
        if should_stop and should_stop():
            return count - 1
        image = pipe(item.reference, item.prompt, height=evaluation["size"], width=evaluation["size"],
                     num_inference_steps=evaluation["steps"], generator=torch.Generator().manual_seed(seed)).images[0]
        path = folder / item.subject_id / f"{item.prompt_index}-{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path.with_suffix(".tmp.png"))
        path.with_suffix(".tmp.png").rename(path)
        store.add("eval_samples", [{"eval_id": evaluation["id"], "item_id": item.id, "k": k, "subject_id": item.subject_id,
                                    "category": item.category, "kind": item.kind, "prompt": item.prompt,
                                    "reference": str(item.reference), "path": str(path), "seed": seed}])
        if on_progress:
            on_progress(count, len(todo))
    return len(todo)


def judge_samples(store: Store, eval_id, judge: Judge, runs: int = 3, concurrency: int = 4,
                  on_progress: Callable[[int, int], None] | None = None) -> JudgeRun:
    """Score every sample `runs` times (skipping what this judge and method scored already). Failures are
    recorded as such, never as scores; a judge that scores nothing raises `JudgeFailed` with its message.

    The first sample is asked alone: a judge that cannot answer it (unreachable, a refused key, a wrong
    model) ends the stage there, before every other sample fails the same way, and nothing is recorded."""
    if runs < 1 or concurrency < 1:
        raise UserInputError("runs and concurrency must be at least 1")
    evaluation = get_eval(store, eval_id)
    samples = store.eval_samples(evaluation["id"])
    if not samples:
        raise UserInputError(f"evaluation {evaluation['name']!r} has no samples yet: run `dsd eval sample` first")
    subjects = {subject.id: subject.name for subject in load_benchmark(evaluation["benchmark"]).subjects}
    scored = {(row["item_id"], row["k"], row["run"])
              for row in store.scored_judgements(evaluation["id"], judge.name, judge.method_hash)}
    # Runs one after another: the protocol's runs are independent repetitions of the whole set.
    todo = [(run, row) for run in range(runs) for row in samples if (row["item_id"], row["k"], run) not in scored]
    if not todo:
        return JudgeRun(0)

    def one(task):
        run, row = task
        try:
            with PIL.Image.open(row["reference"]) as reference, PIL.Image.open(row["path"]) as generated:
                return judge.score(reference=reference.convert("RGB"), generated=generated.convert("RGB"),
                                   prompt=row["prompt"], category=row["category"], subject=subjects.get(row["subject_id"], ""))
        except ProviderError as error:
            if is_auth_failure(error):  # a refused key fails every sample alike
                raise JudgeFailed(f"judging stopped: {error}") from None
            raise

    first = one(todo[0])
    if first.unanswered:
        raise JudgeFailed(f"judging stopped, nothing scored: {first_error(first)}")
    failed, first_failure = 0, ""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval-judge")
    try:
        for count, ((run, row), result) in enumerate(zip(todo, chain([first], pool.map(one, todo[1:]))), 1):
            store.replace_judgement({
                "eval_id": evaluation["id"], "item_id": row["item_id"], "k": row["k"], "run": run,
                "cp": result.cp, "pf": result.pf, "cp_debiased": result.cp_debiased, "judge": judge.name,
                "endpoint": judge.endpoint, "templates_hash": judge.method_hash, "templates_source": judge.method,
                "replies": result.replies, "errors": result.errors})
            if result.cp is None or result.pf is None:
                failed, first_failure = failed + 1, first_failure or first_error(result)
            if on_progress:
                on_progress(count, len(todo))
    finally:
        pool.shutdown(cancel_futures=True)  # a refused key: the samples not asked yet are not asked
    if failed == len(todo):
        raise JudgeFailed(f"the judge failed all {failed} judgements, nothing scored (first: {first_failure})")
    return JudgeRun(len(todo), failed, first_failure)


def first_error(judgement: Judgement) -> str:
    return next(iter(judgement.errors.values()), "no score")


def feature_metrics(store: Store, eval_id, clip: str | None = None, dino: str | None = None, dinov2: str | None = None,
            batch_size: int = 16) -> int:
    """CLIP-I and CLIP-T (`clip` folder), DINO v1 (`dino`) and v2 (`dinov2`) for every sample; returns rows added."""
    from pipeline.evaluation.features import CLIPMetrics, DINOMetric

    evaluation = get_eval(store, eval_id)
    samples = store.eval_samples(evaluation["id"])
    if not (clip or dino or dinov2):
        raise UserInputError("give at least one of --clip, --dino, --dinov2 (local checkpoint folders)")
    pictures = [(PIL.Image.open(row["reference"]).convert("RGB"), PIL.Image.open(row["path"]).convert("RGB"))
                for row in samples]
    scores = {}
    if clip:
        model = CLIPMetrics(clip)
        scores["clip_i"] = model.image_scores(pictures, batch_size)
        scores["clip_t"] = model.text_scores([row["prompt"] for row in samples], [g for _, g in pictures], batch_size)
    for name, folder, version in (("dino_v1", dino, "v1"), ("dino_v2", dinov2, "v2")):
        if folder:
            scores[name] = DINOMetric(folder, version).pair_scores(pictures, batch_size)
    rows = [{"eval_id": evaluation["id"], "item_id": row["item_id"], "k": row["k"], "metric": name, "value": values[i]}
            for name, values in scores.items() for i, row in enumerate(samples)]
    return store.replace_eval_metrics(evaluation["id"], scores, rows)


# reports


def judge_records(store: Store, evaluation: dict, judge_name: str | None = None) -> tuple[list[dict], dict]:
    """The judgements of one judge (default: the newest that scored anything, else the newest used) as
    `summarize` records, and their provenance."""
    rows = store.eval_judgements(evaluation["id"])
    if judge_name:
        rows = [row for row in rows if row["judge"] == judge_name]
    if not rows:
        raise UserInputError(f"evaluation {evaluation['name']!r} has no judgements"
                             + (f" by {judge_name}" if judge_name else "") + ": run `dsd eval judge` first")
    newest = ([row for row in rows if row["cp"] is not None and row["pf"] is not None] or rows)[-1]
    rows = [row for row in rows if (row["judge"], row["templates_hash"]) == (newest["judge"], newest["templates_hash"])]
    samples = {(row["item_id"], row["k"]): row for row in store.eval_samples(evaluation["id"])}
    records = [{"item_id": f"{row['item_id']}~{row['k']}", "run": row["run"], "cp": row["cp"], "pf": row["pf"],
                "category": samples[row["item_id"], row["k"]]["category"], "kind": samples[row["item_id"], row["k"]]["kind"]}
               for row in rows]
    provenance = {"judge": newest["judge"], "endpoint": newest["endpoint"], "templates": newest["templates_source"],
                  "templates_hash": newest["templates_hash"][:12], "local_endpoint": is_local(newest["endpoint"])}
    return records, provenance


def report(store: Store, eval_id, runs: int | None = None, judge_name: str | None = None,
           allow_partial: bool = False) -> dict:
    """The evaluation's figures as JSON: cp, pf, cp_pf, coverage, by_category, by_kind, debiased CP, the
    feature metrics, and the provenance (model, benchmark, judge endpoint, templates)."""
    evaluation = get_eval(store, eval_id)
    benchmark = load_benchmark(evaluation["benchmark"])
    expected = len(benchmark.items()) * evaluation["per_prompt"]
    records, provenance = judge_records(store, evaluation, judge_name)
    runs = runs or len({record["run"] for record in records})  # default: the runs that were judged
    summary = summarize(records, runs, expected, allow_partial=allow_partial).to_json()
    debiased = [score / 4 for score in store.debiased_scores(evaluation["id"], provenance["judge"],
                                                             provenance["templates_hash"])]
    features = {}
    for name in METRICS:
        values = store.metric_values(evaluation["id"], name)
        if values:
            features[name] = sum(values) / len(values)
    return {**summary, "cp_debiased": sum(debiased) / len(debiased) if debiased else None, "metrics": features,
            "provenance": {"evaluation": evaluation["name"], "model": evaluation["model"],
                           "benchmark": evaluation["benchmark"], "benchmark_fingerprint": evaluation["fingerprint"][:12],
                           "fingerprint_matches": benchmark.fingerprint == evaluation["fingerprint"], **provenance}}


def describe_judge(provenance: dict) -> str:
    where = provenance["endpoint"] + (" (a local endpoint: not a published judge)" if provenance["local_endpoint"] else "")
    method = provenance["templates"]
    asked = f"templates {method}" if method in TEMPLATE_SOURCES else method  # a judge that is not a VLM names its own
    return f"judge {provenance['judge']} at {where}, {asked} {provenance['templates_hash']}"


def markdown_table(result: dict) -> str:
    """Our row beside the paper's published rows, in the shape of its Table 1."""
    prov = result["provenance"]

    def mean(figure):
        return f"{figure['mean']:.3f}" if figure and figure.get("mean") is not None else "–"

    by_cat, by_kind = result["by_category"], result["by_kind"]
    ours = ([mean(by_cat.get(c, {}).get("cp")) for c in ("animal", "human", "object")] + [mean(result["cp"])]
            + [mean(by_kind.get(k, {}).get("pf")) for k in ("photorealistic", "imaginative")] + [mean(result["pf"])]
            + [mean(result["cp_pf"]),
               f"{result['cp_debiased']:.3f}" if result["cp_debiased"] is not None else "–",
               f"{result['cp_debiased'] * result['pf']['mean']:.3f}" if result["cp_debiased"] is not None else "–"])
    header = ("| method | CP animal | CP human | CP object | CP | PF real. | PF imag. | PF | CP·PF "
              "| de-biased CP | de-biased CP·PF |")
    lines = [
        f"Evaluation {prov['evaluation']!r}: model {json.dumps(prov['model'])}, benchmark {prov['benchmark']} "
        f"({prov['benchmark_fingerprint']}), {describe_judge(prov)}; {result['runs']} run(s), coverage "
        f"{result['coverage']['scored']}/{result['coverage']['expected']}" + (" (PARTIAL)" if result["partial"] else ""),
        "", header, "|---" + "|---:" * 10 + "|",
        f"| **{prov['evaluation']}** ({prov['judge']}{', local endpoint' if prov['local_endpoint'] else ''}) | "
        + " | ".join(ours) + " |",
    ]
    lines += [f"| {name} (paper, GPT-4o) | " + " | ".join(f"{value:.3f}" for value in values) + " |"
              for name, values in PAPER_ROWS.items()]
    return "\n".join(lines)


def write_csv(store: Store, eval_id, out: str | Path) -> int:
    """Every judgement with its sample (one row per sample and run); returns the rows written."""
    evaluation = get_eval(store, eval_id)
    samples = {(row["item_id"], row["k"]): row for row in store.eval_samples(evaluation["id"])}
    rows = store.eval_judgements(evaluation["id"])
    columns = ("item_id", "k", "run", "category", "kind", "prompt", "cp", "pf", "cp_debiased", "judge", "endpoint",
               "templates_hash", "path")
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            merged = {**samples[row["item_id"], row["k"]], **row}
            writer.writerow([merged[column] for column in columns])
    return len(rows)

