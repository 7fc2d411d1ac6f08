"""Pair curation (paper Sec. 3.1.3): a VLM decides whether two images show the identical subject.

The curator reasons step by step, as the paper prescribes: name the subject both images share,
describe each image, then decide whether they are the same individual object, character or scene
(identity preserved, not merely the same category). In the same reply it captions the pair for
training twice: a description of the second image and an instruction that turns the first into
the second. `curate` runs a curator over many pairs with bounded concurrency and a verdict cache,
handing every result back on the calling thread so the caller can write it to SQLite. A verdict
records its curator's name as `judge`.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterable, Protocol

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import UserInputError
from pipeline.providers import InvalidReply, Provider, ProviderError, ask_json, is_auth_failure, judge_provider

PROMPT_VERSION = "curate-v1"
MAX_SIDE = 768  # long side sent to the VLM: enough to judge identity, cheap in image tokens

CURATION_PROMPT = """\
You curate training data for an identity-preserving image generator. You are shown two images, \
image A (first) and image B (second). They were generated to show the same subject: the same \
individual object, character, creature or scene. Decide whether they really do.

Think step by step, in this order:
1. subject: name the main subject that appears in both images (for example "a red ceramic mug \
with a white fox logo"). If they share none, say so.
2. description_a: describe that subject in image A in detail: kind, shape, proportions, colors, \
materials, patterns, markings, text or logos, face and hair for people and animals.
3. description_b: describe the subject in image B in the same detail.
4. reasoning: compare the two descriptions feature by feature. The same category is not enough: \
a different mug, a different cat or a different person is NOT the same subject, even if similar. \
Pose, viewpoint, lighting, background, framing and style may differ; identity must not.
5. same: true only if both images show the identical subject, else false.
6. confidence: how sure you are of "same", from 0 to 1.
7. caption_target: one sentence describing image B as a prompt for an image generator: the \
subject and its scene, lighting and style. Do not mention image A.
8. caption_instruction: one imperative sentence that turns image A into image B (for example \
"Show the mug on a wooden table in morning light").

Reply with one JSON object with exactly these keys: subject, description_a, description_b, \
reasoning, same, confidence, caption_target, caption_instruction. No text outside the JSON."""

VERDICT_SCHEMA: dict = {
    "title": "Pair verdict",
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "description_a": {"type": "string"},
        "description_b": {"type": "string"},
        "reasoning": {"type": "string"},
        "same": {"type": "boolean"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "caption_target": {"type": "string"},
        "caption_instruction": {"type": "string"},
    },
    "required": ["subject", "description_a", "description_b", "reasoning", "same", "confidence",
                 "caption_target", "caption_instruction"],
    "additionalProperties": False,
}

_TEXT_FIELDS = ("subject", "description_a", "description_b", "reasoning")
_CAPTION_FIELDS = ("caption_target", "caption_instruction")


def prompt_fingerprint() -> str:
    """Short hash of everything that shapes a verdict's wording: version, prompt and schema."""
    text = "\n".join([PROMPT_VERSION, CURATION_PROMPT, json.dumps(VERDICT_SCHEMA, sort_keys=True)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Verdict:
    same: bool
    confidence: float
    subject: str
    description_a: str
    description_b: str
    reasoning: str
    caption_target: str
    caption_instruction: str
    judge: str  # the curator's name
    prompt_version: str = PROMPT_VERSION
    input_tokens: int = 0  # summed over every attempt this verdict took
    output_tokens: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        return cls(**{field.name: data[field.name] for field in fields(cls) if field.name in data})


class CurationFailure(Exception):
    """No verdict for this pair; the message is one line saying why. Tokens spent are kept."""

    def __init__(self, reason: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class Curator(Protocol):
    """Judges whether two pictures show the same subject, and captions the pair."""

    name: str  # recorded in every verdict (and in its cache key)

    def judge(self, a: Image.Image, b: Image.Image) -> Verdict: ...


class VLMCurator:
    """The paper's curator: one chain-of-thought request per pair, JSON reply validated.

    An invalid reply is asked again, up to `attempts` requests in all. Provider failures (already
    retried by the SDK for 429/5xx/timeouts) end the pair as a `CurationFailure`; a refused key is
    re-raised as the provider's `ProviderError`, since no other pair could succeed either.
    """

    def __init__(self, provider: Provider, attempts: int = 3) -> None:
        if attempts < 1:
            raise UserInputError(f"attempts must be at least 1, not {attempts}.")
        self.provider = provider
        self.attempts = attempts
        self.name = f"{provider.name}:{provider.model}"

    def __repr__(self) -> str:
        return f"VLMCurator({self.name!r}, attempts={self.attempts})"

    def judge(self, a: Image.Image, b: Image.Image) -> Verdict:
        # No temperature: reasoning models refuse any but their default.
        try:
            reply = ask_json(self.provider, CURATION_PROMPT, images=[fit_long_side(a), fit_long_side(b)],
                             schema=VERDICT_SCHEMA, parse=check_verdict, what="verdicts", attempts=self.attempts)
        except InvalidReply as error:
            raise CurationFailure(str(error), error.input_tokens, error.output_tokens) from None
        except ProviderError as error:
            if is_auth_failure(error):
                raise
            raise CurationFailure(str(error)) from None
        return Verdict(**reply.value, judge=self.name, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)


def check_verdict(data: object) -> dict:
    """The verdict fields of a reply's JSON; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("was JSON but not an object")
    missing = [key for key in VERDICT_SCHEMA["required"] if key not in data]
    if missing:
        raise ValueError(f"lacked {', '.join(missing)}")
    if not isinstance(data["same"], bool):
        raise ValueError("had a 'same' that is not true or false")
    confidence = data["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not (
        0.0 <= confidence <= 1.0
    ):
        raise ValueError("had a 'confidence' that is not a number from 0 to 1")
    for key in _TEXT_FIELDS + _CAPTION_FIELDS:
        if not isinstance(data[key], str):
            raise ValueError(f"had a '{key}' that is not text")
    for key in _CAPTION_FIELDS:
        if not data[key].strip():
            raise ValueError(f"had an empty '{key}'")
    return {
        "same": data["same"],
        "confidence": float(confidence),
        **{key: data[key].strip() for key in _TEXT_FIELDS + _CAPTION_FIELDS},
    }


def make_curator(spec: str | None = None) -> Curator:
    """The curator a `--judge` spec names: none or "offline" -> the offline similarity stand-in;
    "openai:MODEL[@BASE_URL]" or "gemini:MODEL[@BASE_URL]" -> that VLM."""
    if not spec or spec.strip() == "offline":
        return SimilarityCurator()
    return VLMCurator(judge_provider(spec))


class SimilarityCurator:
    """Offline stand-in for a VLM: a deterministic score on colour, layout and edge features.

    It tells two views of one photo from two different photos, which is enough to exercise the
    data wheel without a network; it knows nothing about identity and its captions are a
    template. Score: mean of HSV histogram intersection, grayscale thumbnail correlation and
    edge-orientation histogram intersection, the best of B as given and B mirrored.
    """

    name = "offline-similarity (stand-in, not a VLM)"
    CAPTION_TARGET = "the same subject, another view"
    CAPTION_INSTRUCTION = "show the same subject from another view"

    # Crops and mirror images of one example photo score 0.77-1.0, two different ones 0.53-0.62.
    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"SimilarityCurator(threshold={self.threshold})"

    def score(self, a: Image.Image, b: Image.Image) -> float:
        features_a = _features(a)
        return max(_similarity(features_a, _features(view)) for view in (b, ImageOps.mirror(b)))

    def judge(self, a: Image.Image, b: Image.Image) -> Verdict:
        score = self.score(a, b)
        same = score >= self.threshold
        # Confidence grows with the distance from the threshold, on either side.
        span = (1.0 - self.threshold) if same else self.threshold
        confidence = 0.5 + 0.5 * min(1.0, abs(score - self.threshold) / max(span, 1e-6))
        relation = ">=" if same else "<"
        return Verdict(
            same=same,
            confidence=round(confidence, 3),
            subject="unknown (no VLM: offline similarity only)",
            description_a="",
            description_b="",
            reasoning=f"similarity score {score:.3f} {relation} threshold {self.threshold:.3f} "
                      "(colour histogram, thumbnail correlation, edge orientations)",
            caption_target=self.CAPTION_TARGET,
            caption_instruction=self.CAPTION_INSTRUCTION,
            judge=self.name,
        )


def _features(image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = image.convert("RGB")
    hsv = np.asarray(rgb.resize((64, 64), Image.BILINEAR).convert("HSV"), dtype=np.int32)
    bins = (hsv[..., 0] * 12 // 256) * 16 + (hsv[..., 1] * 4 // 256) * 4 + hsv[..., 2] * 4 // 256
    colour = np.bincount(bins.ravel(), minlength=12 * 16).astype(np.float64)
    thumb = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel()
    gray = np.asarray(rgb.convert("L").resize((128, 128), Image.BILINEAR), dtype=np.float64)
    dy, dx = np.gradient(gray)
    magnitude = np.hypot(dx, dy)
    angle = np.mod(np.arctan2(dy, dx), np.pi)  # orientation, not direction
    orient = np.bincount(
        np.minimum((angle / np.pi * 12).astype(int), 11).ravel(), weights=magnitude.ravel(),
        minlength=12,
    )
    return colour / colour.sum(), thumb - thumb.mean(), orient / max(orient.sum(), 1e-9)


def _similarity(a: tuple, b: tuple) -> float:
    colour = np.minimum(a[0], b[0]).sum()
    norms = np.linalg.norm(a[1]) * np.linalg.norm(b[1])
    correlation = float(a[1] @ b[1] / norms) if norms > 0 else 0.0
    edges = np.minimum(a[2], b[2]).sum()
    return float((colour + (correlation + 1.0) / 2.0 + edges) / 3.0)


def fit_long_side(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """RGB copy with the long side at most `max_side`, aspect kept."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.LANCZOS)
    return image


def image_digest(image: Image.Image) -> str:
    """Content hash of the pixels (RGB) and the size: equal images, equal digests."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even RGB
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def cache_key(digest_a: str, digest_b: str, curator_name: str) -> str:
    """Order matters (captions describe B); a new prompt or curator makes new keys."""
    parts = [PROMPT_VERSION, prompt_fingerprint(), curator_name, digest_a, digest_b]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class VerdictCache(Protocol):
    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, verdict: dict) -> None: ...


@dataclass
class CurationStats:
    judged: int = 0  # verdicts from a curator call
    cached: int = 0  # verdicts from the cache, no call made
    failed: int = 0  # pairs with no verdict (CurationFailure)
    same: int = 0  # verdicts, judged or cached, saying "same subject"
    input_tokens: int = 0  # reported by the server, failures and retries included
    output_tokens: int = 0
    seconds: float = 0.0

    def count(self, result: Verdict | CurationFailure, cached: bool) -> None:
        if isinstance(result, Verdict):
            self.cached += cached
            self.judged += not cached
            self.same += result.same
        else:
            self.failed += 1
        if not cached:
            self.input_tokens += result.input_tokens
            self.output_tokens += result.output_tokens


ResultCallback = Callable[[str, "Verdict | CurationFailure", bool], None]


def curate(
    items: Iterable[tuple[str, Image.Image, Image.Image]],
    curator: Curator,
    *,
    concurrency: int = 4,
    cache: VerdictCache | None = None,
    on_result: ResultCallback | None = None,
) -> CurationStats:
    """Judge every `(item_id, image_a, image_b)`; at most `concurrency` curator calls in flight.

    Items are read lazily, so only about `concurrency` pairs are in memory at once. A cached
    verdict makes no call. `on_result(item_id, verdict_or_failure, cached)` runs on this thread
    in completion order. A refused API key stops the run: pending pairs are dropped and the
    provider's error is raised.
    """
    if concurrency < 1:
        raise UserInputError(f"concurrency must be at least 1, not {concurrency}.")
    stats = CurationStats()
    started = time.perf_counter()

    def report(item_id: str, result: Verdict | CurationFailure, cached: bool) -> None:
        stats.count(result, cached)
        if on_result is not None:
            on_result(item_id, result, cached)

    def settle(done: set[Future]) -> None:
        # Verdicts that did arrive are handed over before an auth failure ends the run.
        for future in sorted(done, key=lambda future: future.exception() is not None):
            item_id, key = pending.pop(future)
            result = future.result()  # re-raises an auth failure
            if cache is not None and isinstance(result, Verdict):
                cache.put(key, result.to_dict())
            report(item_id, result, False)

    pending: dict[Future, tuple[str, str]] = {}
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="curate")
    try:
        for item_id, image_a, image_b in items:
            # The cache is used on this thread only, so it may wrap a SQLite connection.
            key = ""
            if cache is not None:
                key = cache_key(image_digest(image_a), image_digest(image_b), curator.name)
                hit = cache.get(key)
                if hit is not None:
                    report(item_id, Verdict.from_dict(hit), True)
                    continue
            while len(pending) >= concurrency:
                settle(wait(pending, return_when=FIRST_COMPLETED).done)
            pending[executor.submit(_judge_pair, curator, image_a, image_b)] = (item_id, key)
        while pending:
            settle(wait(pending, return_when=FIRST_COMPLETED).done)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        stats.seconds = time.perf_counter() - started
    return stats


def _judge_pair(curator: Curator, a: Image.Image, b: Image.Image) -> Verdict | CurationFailure:
    try:
        return curator.judge(a, b)
    except CurationFailure as failure:
        return failure
