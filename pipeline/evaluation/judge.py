"""The DreamBench++ judge: prompt templates, `Score: N` replies, and CP / PF aggregation.

Protocol (DreamBench++, as the DSD paper uses it): concept preservation (CP) sees (reference, generated), prompt
following (PF) sees (prompt, generated); images go out as 512x512 JPEG; the reply must hold
exactly one `Score: N` with N in 0..4, normalised by 4; temperature 1; several independent
runs, reported as mean and sample standard deviation of per-run micro-averages. Malformed
replies are asked again and then counted as failures, never as scores, and a report with
failed or missing items is refused unless a partial one is asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from PIL import Image

from pipeline.errors import UserInputError
from pipeline.evaluation.dreambench import CATEGORIES, KINDS
from pipeline.providers import InvalidReply, Provider, ProviderError, is_auth_failure

OUR_TEMPLATES = Path(__file__).resolve().parent / "judge_templates"
JUDGE_SIZE = (512, 512)
MAX_SCORE = 4
JUDGE_TEMPERATURE = 1.0

# Template roles. The de-biased ones are our reconstruction of DSD's de-biased judge (DSD's
# prompts are not public), so a DreamBench++ checkout has none and they are optional.
REQUIRED_ROLES = ("cp_subject", "cp_style", "pf")
DEBIASED_ROLES = ("cp_subject_debiased", "cp_style_debiased")
ROLES = REQUIRED_ROLES + DEBIASED_ROLES
MAPPING_FILE = "templates.json"
TEMPLATE_SOURCES = ("ours", "custom", "dreambench++")  # what `TemplateSet.source` says
# The user-turn prompts DreamBench++ evaluates with ("full" = with scoring criteria and CoT).
DREAMBENCH_FILES = {
    "cp_subject": "user_prompt_subject_full.txt",
    "cp_style": "user_prompt_style_full.txt",
    "pf": "user_prompt_text_full.txt",
}
DREAMBENCH_SUBFOLDER = Path("dreambench_plus") / "prompts"


_SCORE_LINE = re.compile(r"^[ \t]*score[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE)
_SCORE_VALUE = re.compile(r"[0-4]")


class InvalidScore(InvalidReply):
    """A judge reply without exactly one `Score: N` line, N an integer in 0..4."""

    def __init__(self, message: str, replies: Sequence[str] = (), input_tokens: int = 0,
                 output_tokens: int = 0) -> None:
        super().__init__(message, input_tokens, output_tokens)
        self.replies = list(replies)


# --- templates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSet:
    """Judge prompt texts by role, read from one folder, with a hash for provenance."""

    folder: Path
    source: str  # "ours", "dreambench++" or "custom"
    files: dict[str, str]  # role -> file name inside `folder`
    texts: dict[str, str]  # role -> template text
    templates_hash: str  # sha256 over the role names, file names and file bytes

    def text(self, role: str) -> str:
        if role not in self.texts:
            raise UserInputError(
                f"the judge templates in {self.folder} have no {role!r} template; "
                f"add one or use our templates (leave the templates folder unset)."
            )
        return self.texts[role]

    @property
    def has_debiased(self) -> bool:
        return all(role in self.texts for role in DEBIASED_ROLES)


def load_templates(folder: str | Path | None = None) -> TemplateSet:
    """Load judge templates. `None` means ours (`pipeline/evaluation/judge_templates/`). A folder is read as:

    1. `templates.json` in it, mapping roles to file names in that folder, e.g.
       `{"cp_subject": "a.txt", "cp_style": "b.txt", "pf": "c.txt"}`; or
    2. our file names, `<role>.txt` for the roles cp_subject, cp_style, pf and optionally
       cp_subject_debiased, cp_style_debiased; or
    3. a DreamBench++ checkout (its root or `dreambench_plus/prompts/`), whose
       `user_prompt_{subject,style,text}_full.txt` become cp_subject, cp_style and pf.

    cp_subject, cp_style and pf are required; the de-biased roles are optional.
    """
    if folder is None:
        return _read_set(OUR_TEMPLATES, "ours", {role: f"{role}.txt" for role in ROLES})
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserInputError(f"judge templates folder {folder} does not exist; give a folder.")
    if (folder / MAPPING_FILE).is_file():
        return _read_set(folder, "custom", _read_mapping(folder / MAPPING_FILE))
    ours = {role: f"{role}.txt" for role in ROLES if (folder / f"{role}.txt").is_file()}
    if ours:
        return _read_set(folder, "custom", ours)
    for candidate in (folder, folder / DREAMBENCH_SUBFOLDER):
        if any((candidate / name).is_file() for name in DREAMBENCH_FILES.values()):
            return _read_set(candidate, "dreambench++", DREAMBENCH_FILES)
    raise UserInputError(
        f"no judge templates found in {folder}: give a DreamBench++ checkout, a folder with "
        f"{', '.join(f'{role}.txt' for role in REQUIRED_ROLES)}, or a {MAPPING_FILE} mapping "
        "roles to files."
    )


def _read_mapping(path: Path) -> dict[str, str]:
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserInputError(
            f"{path} is not valid JSON; map template roles to file names."
        ) from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise UserInputError(f"{path} must map template roles to file names (strings).")
    unknown = sorted(set(mapping) - set(ROLES))
    if unknown:
        raise UserInputError(
            f"{path} names unknown template roles {', '.join(unknown)}; "
            f"use {', '.join(ROLES)}."
        )
    return mapping


def _read_set(folder: Path, source: str, files: Mapping[str, str]) -> TemplateSet:
    missing = [f"{role} ({files.get(role, f'{role}.txt')})" for role in REQUIRED_ROLES
               if role not in files or not (folder / files[role]).is_file()]
    if missing:
        raise UserInputError(
            f"the judge templates in {folder} lack {', '.join(missing)}; add those files."
        )
    digest = hashlib.sha256()
    texts, used = {}, {}
    for role in ROLES:
        path = folder / files[role] if role in files else None
        if path is None or not path.is_file():
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace").strip()
        if not text:
            raise UserInputError(f"judge template {path} is empty; write the judge prompt in it.")
        for part in (role.encode(), files[role].encode(), data):
            digest.update(len(part).to_bytes(8, "big") + part)
        texts[role], used[role] = text, files[role]
    return TemplateSet(folder, source, used, texts, digest.hexdigest())


# --- asking for a score ----------------------------------------------------------------------


def parse_score(reply: str) -> int:
    """The N of the one `Score: N` line in a reply (case and spaces free), N an integer 0..4."""
    lines = _SCORE_LINE.findall(reply or "")
    if not lines:
        raise InvalidScore("no 'Score: N' line", [reply])
    if len(lines) > 1:
        raise InvalidScore(f"{len(lines)} 'Score:' lines instead of one", [reply])
    value = lines[0].strip()
    if not _SCORE_VALUE.fullmatch(value):
        raise InvalidScore(f"score {value[:20]!r} is not an integer from 0 to {MAX_SCORE}", [reply])
    return int(value)


def judge_image(image: Image.Image) -> Image.Image:
    """The image as the judge sees it: RGB, resized (not cropped) to 512x512 like DreamBench++."""
    return image.convert("RGB").resize(JUDGE_SIZE, Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class ScoreReply:
    score: int
    replies: list[str]  # every reply, the accepted one last
    input_tokens: int
    output_tokens: int


def ask_score(provider: Provider, prompt: str, images: Sequence[Image.Image] = (), *,
              retries: int = 2, temperature: float | None = JUDGE_TEMPERATURE) -> ScoreReply:
    """Ask the judge and return its score. Malformed replies are asked again up to `retries`
    times, then `InvalidScore` (never a guessed score). Provider failures (the SDK has already
    retried timeouts and 429/5xx) propagate as `ProviderError`."""
    sent = [judge_image(image) for image in images]
    replies, problem, input_tokens, output_tokens = [], "", 0, 0
    for _ in range(retries + 1):
        completion = provider.complete(prompt, sent, temperature=temperature)
        input_tokens += completion.input_tokens
        output_tokens += completion.output_tokens
        replies.append(completion.text)
        try:
            return ScoreReply(parse_score(completion.text), replies, input_tokens, output_tokens)
        except InvalidScore as exc:
            problem = str(exc)
    where = f" at {provider.base_url}" if getattr(provider, "base_url", None) else ""
    raise InvalidScore(
        f"{provider.name}:{provider.model}{where} sent {retries + 1} replies without a valid "
        f"score (last: {problem}); counted as a failure.", replies, input_tokens, output_tokens,
    )


# --- judging one item ------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One item's scores on DreamBench++'s 0..4 scale (a VLM's whole numbers; a judge that measures shares
    gives 4 x the share), None where the judge failed; every raw reply, and the errors. `unanswered`: no
    request got a reply at all (the judge cannot be reached, refused, or timed out), which no other item
    would fare better with."""

    cp: float | None
    pf: float | None
    cp_debiased: float | None
    replies: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    unanswered: bool = False


def cp_request(reference_is_style: bool) -> str:
    kind = "style" if reference_is_style else "subject"
    return (f"The first image is the reference image ({kind}); "
            "the second image is the generated image.")


def pf_request(prompt: str) -> str:
    return f"The text prompt: {prompt.strip()}\nThe image is the generated image."


def judge_item(provider: Provider, templates: TemplateSet, *, reference: Image.Image,
               generated: Image.Image, prompt: str, category: str, retries: int = 2,
               temperature: float | None = JUDGE_TEMPERATURE, debiased: bool = True) -> Judgement:
    """Score one generated image: CP (reference, generated), PF (prompt, generated) and, when
    asked and the templates have them, de-biased CP. Category "style" uses the style templates.
    A criterion whose judge fails (malformed replies, timeouts) scores None with its error; a refused
    API key is raised, since every other item would fail the same way."""
    style = category == "style"
    cp_role = "cp_style" if style else "cp_subject"
    requests = {
        "cp": (cp_role, cp_request(style), [reference, generated]),
        "pf": ("pf", pf_request(prompt), [generated]),
    }
    if debiased and templates.has_debiased:
        requests["cp_debiased"] = (f"{cp_role}_debiased", cp_request(style), [reference, generated])
    scores: dict[str, int | None] = {"cp": None, "pf": None, "cp_debiased": None}
    replies, errors = {}, {}
    for name, (role, request, images) in requests.items():
        text = f"{templates.text(role)}\n\n### Input\n{request}"
        try:
            answer = ask_score(provider, text, images, retries=retries, temperature=temperature)
        except InvalidScore as exc:
            replies[name], errors[name] = exc.replies, str(exc)
        except ProviderError as exc:
            if is_auth_failure(exc):  # a refused key fails every item alike: stop, and say why
                raise
            replies[name], errors[name] = [], str(exc)
        else:
            scores[name], replies[name] = answer.score, answer.replies
    unanswered = not any(replies.values())
    return Judgement(**scores, replies=replies, errors=errors, unanswered=unanswered)


# --- aggregation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    mean: float | None
    std: float | None  # sample standard deviation over runs; None with fewer than 2 runs

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Coverage:
    expected: int  # items x runs
    scored: int  # both CP and PF scored
    failed: int  # judged, but CP or PF failed
    missing: int  # never judged

    @property
    def fraction(self) -> float:
        return self.scored / self.expected if self.expected else 0.0

    def to_json(self) -> dict:
        return {"expected": self.expected, "scored": self.scored, "failed": self.failed,
                "missing": self.missing, "fraction": self.fraction}


@dataclass(frozen=True)
class Scores:
    cp: Figure
    pf: Figure
    cp_pf: Figure

    def to_json(self) -> dict:
        return {"cp": self.cp.to_json(), "pf": self.pf.to_json(), "cp_pf": self.cp_pf.to_json()}


@dataclass(frozen=True)
class Report:
    overall: Scores
    by_category: dict[str, Scores]
    by_kind: dict[str, Scores]
    coverage: Coverage
    runs: int
    partial: bool

    def to_json(self) -> dict:
        """A JSON-ready dict: cp, pf, cp_pf ({mean, std}), coverage, partial, runs, by_category
        and by_kind."""
        return {
            **self.overall.to_json(),
            "coverage": self.coverage.to_json(),
            "partial": self.partial,
            "runs": self.runs,
            "by_category": {name: scores.to_json() for name, scores in self.by_category.items()},
            "by_kind": {name: scores.to_json() for name, scores in self.by_kind.items()},
        }


def summarize(records: Iterable[Mapping], runs_expected: int, items_expected: int,
              allow_partial: bool = False) -> Report:
    """Aggregate judge records {item_id, category, kind, run, cp, pf} (cp/pf from 0 to 4, None = failed).

    Per run, CP and PF are micro-averages of score/4 over items and CP*PF is their product;
    each figure is then the mean and sample std over runs. A report with failed or missing
    items raises UserInputError unless `allow_partial`, and then says partial.
    """
    records = list(records)
    seen = set()
    for record in records:
        key = (record["item_id"], record["run"])
        if key in seen:
            raise UserInputError(
                f"item {key[0]!r} is judged twice in run {key[1]}; "
                "keep one record per item and run."
            )
        seen.add(key)
        for name in ("cp", "pf"):
            if record[name] is not None and not 0 <= record[name] <= MAX_SCORE:
                raise ValueError(f"{name} of item {key[0]!r} is {record[name]!r}, not from 0 to 4 or None")
    scored = sum(1 for r in records if r["cp"] is not None and r["pf"] is not None)
    failed = len(records) - scored
    expected = runs_expected * items_expected
    coverage = Coverage(expected, scored, failed, max(0, expected - len(records)))
    partial = scored < expected
    if partial and not allow_partial:
        raise UserInputError(
            f"the judge scored {scored} of {expected} expected items ({failed} failed, "
            f"{coverage.missing} missing); judge the rest again or ask for a partial report."
        )
    if scored == 0:
        raise UserInputError("the judge scored no items; nothing to report.")
    return Report(
        overall=_scores(records),
        by_category=_grouped(records, "category", CATEGORIES),
        by_kind=_grouped(records, "kind", KINDS),
        coverage=coverage,
        runs=len({r["run"] for r in records}),
        partial=partial,
    )


def _grouped(records: list[Mapping], key: str, order: Sequence[str]) -> dict[str, Scores]:
    present = {r[key] for r in records}
    names = [name for name in order if name in present] + sorted(present - set(order))
    return {name: _scores([r for r in records if r[key] == name]) for name in names}


def _scores(records: list[Mapping]) -> Scores:
    """Per-run micro-averages, then mean and sample std over the runs that scored anything."""
    cp_runs, pf_runs, product_runs = [], [], []
    for run in sorted({r["run"] for r in records}, key=str):
        in_run = [r for r in records if r["run"] == run]
        cp = _mean([r["cp"] / MAX_SCORE for r in in_run if r["cp"] is not None])
        pf = _mean([r["pf"] / MAX_SCORE for r in in_run if r["pf"] is not None])
        cp_runs += [cp] if cp is not None else []
        pf_runs += [pf] if pf is not None else []
        product_runs += [cp * pf] if cp is not None and pf is not None else []
    return Scores(_figure(cp_runs), _figure(pf_runs), _figure(product_runs))


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _figure(values: Sequence[float]) -> Figure:
    mean = _mean(values)
    if len(values) < 2:
        return Figure(mean, None)
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return Figure(mean, math.sqrt(variance))
