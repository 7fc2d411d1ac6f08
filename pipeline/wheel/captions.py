"""Reference captions for the data wheel (paper section 3.1.2).

Real image captions (LAION-like) fed to the LLM as content references keep the grid prompts
diverse. They come from the built-in set or a user's file (.txt, .csv, .jsonl or .parquet);
optionally an LLM keeps only those with a clear subject whose identity can be preserved.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.providers import Provider, ask_json

BUILTIN_CAPTIONS = Path(__file__).resolve().parents[2] / "assets" / "captions.txt"
CAPTION_COLUMNS = ("caption", "text", "TEXT")  # tried in this order when no column is named
FORMATS = (".txt", ".csv", ".jsonl", ".parquet")
FILTER_BATCH = 20

CAPTION_FILTER_SCHEMA = {
    "title": "Caption verdicts",
    "type": "object",
    "properties": {
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "keep": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
                "required": ["index", "keep", "reason"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["verdicts"],
    "additionalProperties": False,
}
CAPTION_FILTER_INSTRUCTION = (
    "You screen image captions for a dataset of images that show the same subject several times. "
    "For each numbered caption decide whether it names one clear subject (a character, person, "
    "animal, object, product, vehicle, building or scene) whose identity could be kept identical "
    "across several pictures with different poses, lighting and settings. Reject captions that "
    "are abstract, only text, a crowd or collection with no single subject, or too vague to "
    "picture. Reply with one verdict per caption: its index, keep (true or false) and a short "
    "reason naming the subject or what is missing."
)


def builtin_captions() -> list[str]:
    """The hand-written reference captions shipped in assets/captions.txt."""
    return _tidy(BUILTIN_CAPTIONS.read_text(encoding="utf-8").splitlines())


def read_captions(path: str | Path, column: str | None = None, limit: int | None = None) -> list[str]:
    """Captions from a .txt (one per line), .csv, .jsonl or .parquet file, stripped, in file order,
    without empty lines or repeats. For tables `column` defaults to caption, text or TEXT."""
    path = Path(path)
    readers = {".txt": _txt, ".csv": _csv, ".jsonl": _jsonl, ".parquet": _parquet}
    if not path.is_file():
        raise UserInputError(
            f"Caption file {path} does not exist: give the path of a {', '.join(FORMATS)} file."
        )
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserInputError(
            f"Cannot read captions from {path.name}: use a {', '.join(FORMATS)} file "
            "(one caption per line in .txt)."
        )
    try:
        captions = _tidy(reader(path, column), limit)
    except UnicodeDecodeError:
        raise UserInputError(f"{path} is not UTF-8 text: save it as UTF-8 and try again.") from None
    if not captions:
        raise UserInputError(f"{path} holds no captions: add one caption per line or row.")
    return captions


def filter_captions(provider: Provider, captions: list[str],
                    batch_size: int = FILTER_BATCH) -> list[tuple[str, bool, str]]:
    """(caption, keep, reason) per caption, in order: does it name a subject whose identity can be
    preserved? The LLM judges `batch_size` captions per request."""
    verdicts: list[tuple[str, bool, str]] = []
    for start in range(0, len(captions), batch_size):
        batch = captions[start:start + batch_size]
        listing = "\n".join(f"{i}. {' '.join(caption.split())}" for i, caption in enumerate(batch, 1))
        judged = ask_json(
            provider,
            f"Captions:\n{listing}",
            system=CAPTION_FILTER_INSTRUCTION,
            schema=CAPTION_FILTER_SCHEMA,
            parse=lambda reply, n=len(batch): _parse_verdicts(reply, n),
            what="caption verdicts",
        ).value
        verdicts += [(caption, keep, reason) for caption, (keep, reason) in zip(batch, judged)]
    return verdicts


def _parse_verdicts(reply: object, count: int) -> list[tuple[bool, str]]:
    """[(keep, reason)] for captions 1..count; ValueError if any is missing, repeated or malformed."""
    items = reply.get("verdicts") if isinstance(reply, dict) else None
    if not isinstance(items, list):
        raise ValueError("no 'verdicts' list")
    found: dict[int, tuple[bool, str]] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a verdict is not an object")
        index, keep, reason = item.get("index"), item.get("keep"), item.get("reason")
        if type(index) is not int or not 1 <= index <= count or index in found:
            raise ValueError(f"verdict index {index!r} is not one of 1..{count} exactly once")
        if not isinstance(keep, bool) or not isinstance(reason, str):
            raise ValueError(f"verdict {index} needs a boolean 'keep' and a string 'reason'")
        found[index] = (keep, reason.strip())
    if len(found) != count:
        raise ValueError(f"{count - len(found)} of {count} captions have no verdict")
    return [found[i] for i in range(1, count + 1)]


def _tidy(texts: Iterable[object], limit: int | None = None) -> list[str]:
    """Stripped, non-empty, first occurrence only; stops reading once `limit` are found."""
    seen: dict[str, None] = {}
    for text in texts:
        text = text.strip() if isinstance(text, str) else ""
        if text:
            seen.setdefault(text)
            if limit is not None and len(seen) >= limit:
                break
    return list(seen)


def _pick_column(path: Path, columns: list[str], column: str | None) -> str:
    if column is not None:
        if column in columns:
            return column
        raise UserInputError(
            f"{path.name} has no column {column!r}; its columns are: {', '.join(columns) or 'none'}."
        )
    for name in CAPTION_COLUMNS:
        if name in columns:
            return name
    raise UserInputError(
        f"{path.name} has no caption column ({', '.join(CAPTION_COLUMNS)}); its columns are: "
        f"{', '.join(columns) or 'none'}. Name the caption column with --column."
    )


def _txt(path: Path, column: str | None) -> Iterator[str]:
    with path.open(encoding="utf-8-sig") as lines:
        yield from lines


def _csv(path: Path, column: str | None) -> Iterator[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.DictReader(handle)
        try:
            name = _pick_column(path, [str(c) for c in rows.fieldnames or []], column)
            for row in rows:
                yield row.get(name)
        except csv.Error as exc:
            raise UserInputError(
                f"{path.name} is not a valid CSV file (line {rows.line_num}: {exc}); fix or re-export it."
            ) from None


def _jsonl(path: Path, column: str | None) -> Iterator[object]:
    name = None
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                raise UserInputError(
                    f"{path.name} line {number} is not a JSON object: each line of a .jsonl file "
                    "must be one object such as {\"caption\": \"a red fox\"}."
                )
            name = name or _pick_column(path, list(record), column)
            yield record.get(name)


def _parquet(path: Path, column: str | None) -> Iterator[object]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserInputError("Reading .parquet captions needs pyarrow: pip install pyarrow.") from None
    try:
        table = pq.ParquetFile(path)
        name = _pick_column(path, table.schema_arrow.names, column)
        kind = table.schema_arrow.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
                or pa.types.is_string_view(kind)):
            raise UserInputError(
                f"Column {name!r} of {path.name} holds {kind}, not text: name the caption column with --column."
            )
        # Only the caption column is read, a batch at a time: LAION shards are large.
        for batch in table.iter_batches(columns=[name], batch_size=65_536):
            yield from batch.column(0).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise UserInputError(
            f"{path.name} cannot be read as a parquet file ({' '.join(str(exc).split())[:160]}); "
            "check that the download finished or re-export it."
        ) from None
