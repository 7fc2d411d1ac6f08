"""What every provider shares: the `Provider` interface, its `Completion`, and the errors it raises,
each one line that says what to do and never contains an API key."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from PIL import Image

from pipeline.errors import UserInputError

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2


class ProviderError(RuntimeError):
    """A provider failed (auth, network, rate limit, bad reply); the message says what to do."""


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int = 0  # 0 when the server reports no usage
    output_tokens: int = 0
    model: str = ""


@runtime_checkable
class Provider(Protocol):
    name: str
    model: str

    def complete(
        self,
        prompt: str,
        images: Sequence[Image.Image] = (),
        *,
        system: str | None = None,
        json_schema: dict | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """One request, one reply. With `json_schema` the reply is the raw JSON text."""
        ...


# `status_error` words every refused or missing key as "(HTTP 401)" or "(HTTP 403)" (the Gemini
# provider reports its 400 API_KEY_INVALID as 401): the message is what a caller can test.
_AUTH_FAILURE = re.compile(r"\(HTTP 40[13]\)")


def is_auth_failure(error: BaseException) -> bool:
    """A refused or missing API key: every further request would fail the same way."""
    return isinstance(error, ProviderError) and bool(_AUTH_FAILURE.search(str(error)))


class InvalidReply(ProviderError):
    """The model answered every time, but never in the shape asked for; carries the tokens spent."""

    def __init__(self, message: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


def read_key(
    provider, env_names: Sequence[str], *, required: bool
) -> tuple[str | None, str | None]:
    """(variable name, key) from the first variable that is set, else (None, None)."""
    for env_name in env_names:
        value = os.environ.get(env_name, "").strip()
        if value:
            return env_name, value
    if required:
        raise UserInputError(
            f"{provider.name}:{provider.model} needs an API key: "
            f"set the environment variable {' or '.join(env_names)}."
        )
    return None, None


def label(provider) -> str:
    where = f" at {provider.base_url}" if provider.base_url else ""
    return f"{provider.name}:{provider.model}{where}"


class RemoteProvider:
    """What the providers behind an API share: where they connect, how patiently, and a repr that names the
    key's variable, never the key."""

    def __init__(self, model: str, base_url: str | None, api_key_env: str, timeout: float, max_retries: int):
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.timeout, self.max_retries = timeout, max_retries

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"


def one_line(text: str, key: str | None, limit: int = 200) -> str:
    """Server text fit for a one-line message: the key scrubbed, whitespace folded, cut short."""
    if key:
        text = text.replace(key, "***")
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def status_error(provider, status: int, server_message: str) -> ProviderError:
    """One line per HTTP failure. The server's own words are kept (scrubbed) except on auth
    failures, where servers tend to quote the key."""
    name, tries = label(provider), provider.max_retries + 1
    server_message = one_line(server_message, provider._key).rstrip(".")
    said = f": {server_message}" if server_message else ""
    if status in (401, 403):
        if provider._key_env is None:
            return ProviderError(
                f"{name} wants an API key (HTTP {status}); "
                f"set the environment variable {provider.api_key_env}."
            )
        return ProviderError(
            f"{name} rejected the API key (HTTP {status}); "
            f"check the key in the environment variable {provider._key_env}."
        )
    if status == 429:
        return ProviderError(
            f"{name} is rate limited (HTTP 429) after {tries} attempt(s){said}; "
            "wait a minute, lower the request rate or check your quota."
        )
    if status >= 500:
        return ProviderError(
            f"{name} had a server error (HTTP {status}) after {tries} attempt(s){said}; "
            "try again later or use another model."
        )
    return ProviderError(
        f"{name} refused the request (HTTP {status}{said}); "
        "check the model name, the base URL and the request."
    )


def timeout_error(provider) -> ProviderError:
    return ProviderError(
        f"{label(provider)} did not answer within {provider.timeout:g} s "
        f"({provider.max_retries + 1} attempt(s)); try again later or raise the timeout."
    )


def connection_error(provider) -> ProviderError:
    return ProviderError(
        f"{label(provider)} cannot be reached; check the network connection and the base URL."
    )


def malformed_error(provider, what: str) -> ProviderError:
    return ProviderError(
        f"{label(provider)} sent {what}; try again, and if it persists check that the base URL "
        "points at a compatible API."
    )


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
