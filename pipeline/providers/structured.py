"""Structured replies: ask for JSON, check it, and ask again when a reply breaks the rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from PIL import Image

from pipeline.providers.base import InvalidReply, Provider, label

_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class JsonReply:
    value: object
    input_tokens: int
    output_tokens: int


def read_json(text: str) -> object:
    """The JSON in a reply: bare, or inside a ```json block (some models add one)."""
    fenced = _FENCED.search(text)
    try:
        return json.loads(fenced.group(1) if fenced else text.strip())
    except json.JSONDecodeError:
        raise ValueError("was not JSON") from None


def ask_json(provider: Provider, prompt: str, *, parse: Callable[[object], object], what: str,
             images: Sequence[Image.Image] = (), system: str | None = None, schema: dict | None = None,
             attempts: int = 3) -> JsonReply:
    """Ask for a structured reply and return `parse(reply)`. `parse` raises ValueError on a reply
    that breaks the rules; such replies are asked again, up to `attempts` requests in all, and
    then `InvalidReply`. Provider failures (already retried by the SDK) propagate."""
    problem, input_tokens, output_tokens = "", 0, 0
    for _ in range(attempts):
        completion = provider.complete(prompt, images, system=system, json_schema=schema)
        input_tokens += completion.input_tokens
        output_tokens += completion.output_tokens
        try:
            return JsonReply(parse(read_json(completion.text)), input_tokens, output_tokens)
        except ValueError as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise InvalidReply(
        f"{label(provider)} sent {attempts} invalid {what} (last: {problem}); "
        "try again or use a model that supports structured output.", input_tokens, output_tokens,
    )
