"""LLM/VLM providers behind one small interface.

Prompt enhancement, the data wheel and the evaluator call `Provider.complete` and nothing else;
only this module knows the vendor SDKs. API keys come from environment variables only, and no
message, repr or log line written here contains one.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import httpx
import httpx2
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from PIL import Image

from pipeline.errors import UserInputError

DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
SPEC_FORMS = ("offline", "openai:MODEL", "openai:MODEL@BASE_URL", "gemini:MODEL",
              "gemini:MODEL@BASE_URL")

IDENTITY_INSTRUCTION = (
    "You write prompts for an image generator that keeps the identity of the subject shown in a "
    "reference image. Rewrite the user's short request into one detailed paragraph (at most 120 "
    "words) describing the target image: the same subject, with its distinctive features "
    "(kind, shape, colors, materials, markings, text or logos), placed in the scene the user asks "
    "for, with setting, pose, composition, lighting and style. If no image is attached, describe "
    "the subject from the request alone. Describe only the final image; do not mention the "
    "reference, the user or these instructions. Reply with the prompt only."
)
RELIGHT_INSTRUCTION = (
    "You write prompts for an image generator that relights a photo and changes nothing else. "
    "Rewrite the user's short lighting request into one detailed paragraph (at most 120 words) "
    "describing the same subject, pose, framing and background as in the reference image, now "
    "under the requested lighting: light sources and their direction, color temperature, "
    "intensity, shadows, highlights, reflections and mood. Do not add, remove or restyle "
    "anything in the scene. Reply with the prompt only."
)
INSTRUCT_INSTRUCTION = (
    "You write prompts for an image generator that edits a reference image. Turn the user's edit "
    "instruction into one detailed paragraph (at most 120 words) describing the resulting image "
    "after the edit: the changed parts as they now look, and the subject and everything the "
    "instruction does not touch as they are in the reference. Write a description of the "
    "result, not an instruction: no 'add', 'change', 'make' or 'replace'. Reply with the prompt "
    "only."
)
ENHANCE_INSTRUCTIONS = {
    "identity": IDENTITY_INSTRUCTION,
    "relight": RELIGHT_INSTRUCTION,
    "instruct": INSTRUCT_INSTRUCTION,
}


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


class OpenAICompatibleProvider:
    """Chat Completions through the `openai` SDK: OpenAI, or vLLM / Ollama / LM Studio via base_url.

    The SDK retries 429/5xx and connection errors `max_retries` times with exponential backoff
    (0.5 s, 1 s, ...) and honours the server's `retry-after-ms` / `retry-after` headers.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.timeout = timeout
        self._key_env, self._key = _read_key(self, [api_key_env], required=base_url is None)
        # Local servers need no key, but the SDK insists on one.
        self._client = openai.OpenAI(
            api_key=self._key or "no-key", base_url=base_url, timeout=timeout,
            max_retries=max_retries,
        )

    def __repr__(self) -> str:
        return _repr(self)

    def complete(
        self,
        prompt: str,
        images: Sequence[Image.Image] = (),
        *,
        system: str | None = None,
        json_schema: dict | None = None,
        temperature: float | None = None,
    ) -> Completion:
        messages: list[dict] = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": _openai_content(prompt, images)})
        options: dict = {}
        if temperature is not None:
            options["temperature"] = temperature
        if json_schema is not None:
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(json_schema), "schema": json_schema},
            }
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, **options
            )
        except openai.APITimeoutError:
            raise _timeout_error(self) from None
        except openai.APIConnectionError:
            raise _connection_error(self) from None
        except openai.APIStatusError as exc:
            raise _status_error(self, exc.status_code, _openai_server_message(exc)) from None
        except (openai.OpenAIError, ValueError):
            raise _malformed_error(self, "a reply that is not a chat completion") from None
        if not isinstance(response, openai.types.chat.ChatCompletion):
            raise _malformed_error(self, "a reply that is not a chat completion")
        # The SDK does not validate replies, so any field may be missing.
        choices = getattr(response, "choices", None)
        if not choices:
            raise _malformed_error(self, "a reply with no choices")
        message = getattr(choices[0], "message", None)
        if getattr(message, "refusal", None):
            raise ProviderError(
                f"{_label(self)} refused the request ({_one_line(message.refusal, self._key)}); "
                "rephrase the prompt or use another model."
            )
        text = getattr(message, "content", None)
        text = text if isinstance(text, str) else ""
        if not text.strip():
            raise _malformed_error(self, "an empty reply")
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=getattr(response, "model", None) or self.model,
        )


class GeminiProvider:
    """Gemini through `google-genai`. The key comes from `api_key_env`, else GOOGLE_API_KEY.

    The SDK retries 429/5xx and connection errors `max_retries` times, waiting `retry_delay`
    seconds before the first retry and doubling after that (with up to 1 s of jitter).
    """

    name = "gemini"

    def __init__(
        self,
        model: str,
        api_key_env: str = "GEMINI_API_KEY",
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: float = 1.0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.max_retries = max_retries
        self.timeout = timeout
        env_names = list(dict.fromkeys([api_key_env, "GOOGLE_API_KEY"]))
        self._key_env, self._key = _read_key(self, env_names, required=base_url is None)
        retry = genai_types.HttpRetryOptions(
            attempts=max_retries + 1,
            initial_delay=retry_delay,
            max_delay=8 * retry_delay,
            jitter=min(1.0, retry_delay),
        )
        self._client = genai.Client(
            api_key=self._key or "no-key",
            http_options=genai_types.HttpOptions(
                base_url=base_url, timeout=int(timeout * 1000), retry_options=retry
            ),
        )

    def __repr__(self) -> str:
        return _repr(self)

    def complete(
        self,
        prompt: str,
        images: Sequence[Image.Image] = (),
        *,
        system: str | None = None,
        json_schema: dict | None = None,
        temperature: float | None = None,
    ) -> Completion:
        # Google's prompting guide puts images before the text that refers to them.
        parts = [
            genai_types.Part.from_bytes(data=_jpeg_bytes(image), mime_type="image/jpeg")
            for image in images
        ]
        parts.append(genai_types.Part.from_text(text=prompt))
        config = genai_types.GenerateContentConfig(
            system_instruction=system,
            temperature=temperature,
            response_mime_type="application/json" if json_schema is not None else None,
            response_json_schema=json_schema,
        )
        try:
            response = self._client.models.generate_content(
                model=self.model,
                contents=[genai_types.Content(role="user", parts=parts)],
                config=config,
            )
        except genai_errors.APIError as exc:
            # Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401.
            bad_key = "API_KEY_INVALID" in str(exc.details) or "API key not valid" in str(exc)
            raise _status_error(self, 401 if bad_key else exc.code, exc.message or "") from None
        except (httpx.TimeoutException, httpx2.TimeoutException):
            raise _timeout_error(self) from None
        except (httpx.TransportError, httpx2.TransportError):
            raise _connection_error(self) from None
        except ValueError:
            raise _malformed_error(self, "a reply that is not a GenerateContentResponse") from None
        if not response.candidates:
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason:
                raise ProviderError(
                    f"{_label(self)} blocked the prompt ({feedback.block_reason}); "
                    "rephrase the prompt or use another model."
                )
            raise _malformed_error(self, "a reply with no candidates")
        text = response.text or ""
        if not text.strip():
            raise _malformed_error(self, "an empty reply")
        usage = response.usage_metadata
        return Completion(
            text=text,
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=(usage.candidates_token_count or 0) if usage else 0,
            model=response.model_version or self.model,
        )


class OfflineProvider:
    """No network, deterministic. Used when no provider is configured.

    `reply(prompt, images)` builds the text; without it the reply is the prompt with its
    whitespace tidied, so prompt enhancement leaves the user's prompt as written.
    """

    name = "offline"

    def __init__(
        self,
        reply: Callable[[str, Sequence[Image.Image]], str] | None = None,
        model: str = "echo",
    ) -> None:
        self.model = model
        self._reply = reply

    def __repr__(self) -> str:
        return f"OfflineProvider(model={self.model!r})"

    def complete(
        self,
        prompt: str,
        images: Sequence[Image.Image] = (),
        *,
        system: str | None = None,
        json_schema: dict | None = None,
        temperature: float | None = None,
    ) -> Completion:
        if self._reply is not None:
            text = self._reply(prompt, images)
        elif json_schema is not None:
            raise ProviderError(
                "offline: cannot write structured (JSON) replies; configure a provider such as "
                "openai:gpt-4o-mini or gemini:gemini-2.0-flash."
            )
        else:
            text = " ".join(prompt.split())
        return Completion(text=text, model=self.model)


_FENCED = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)


_AUTH_FAILURE = re.compile(r"\(HTTP 40[13]\)")


def is_auth_failure(error: BaseException) -> bool:
    """A refused or missing API key: every further request would fail the same way."""
    return isinstance(error, ProviderError) and bool(_AUTH_FAILURE.search(str(error)))


class InvalidReply(ProviderError):
    """The model answered every time, but never in the shape asked for; carries the tokens spent."""

    def __init__(self, message: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        super().__init__(message)
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


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
        f"{_label(provider)} sent {attempts} invalid {what} (last: {problem}); "
        "try again or use a model that supports structured output.", input_tokens, output_tokens,
    )


def make_provider(spec: str) -> Provider:
    """Build a provider from "offline", "openai:MODEL[@BASE_URL]" or "gemini:MODEL[@BASE_URL]"."""
    spec = spec.strip()
    if spec == "offline":
        return OfflineProvider()
    scheme, _, rest = spec.partition(":")
    model, _, base_url = rest.partition("@")
    model, base_url = model.strip(), base_url.strip() or None
    builders = {"openai": OpenAICompatibleProvider, "gemini": GeminiProvider}
    if scheme not in builders or not model:
        raise UserInputError(
            f"unknown provider {spec!r}: use one of {', '.join(SPEC_FORMS)} "
            "(for example openai:gpt-4o-mini or openai:llama3@http://localhost:11434/v1)."
        )
    return builders[scheme](model, base_url=base_url)


def enhance_prompt(
    provider: Provider, prompt: str, image: Image.Image | None = None, mode: str = "identity"
) -> str:
    """Rewrite a short user prompt into a detailed description of the target image."""
    if mode not in ENHANCE_INSTRUCTIONS:
        raise UserInputError(
            f"unknown enhancement mode {mode!r}: use one of {', '.join(ENHANCE_INSTRUCTIONS)}."
        )
    if not prompt.strip():
        raise UserInputError("the prompt is empty: write a few words about the image you want.")
    images = [image] if image is not None else []
    completion = provider.complete(prompt.strip(), images, system=ENHANCE_INSTRUCTIONS[mode])
    text = completion.text.strip()
    if not text:
        raise ProviderError(
            f"{provider.name}:{provider.model} returned an empty prompt; "
            "try again or generate with the prompt as written."
        )
    return text


def _read_key(
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


def _label(provider) -> str:
    where = f" at {provider.base_url}" if provider.base_url else ""
    return f"{provider.name}:{provider.model}{where}"


def _repr(provider) -> str:
    return (
        f"{type(provider).__name__}(model={provider.model!r}, base_url={provider.base_url!r}, "
        f"api_key_env={provider.api_key_env!r})"
    )


def _one_line(text: str, key: str | None, limit: int = 200) -> str:
    """Server text fit for a one-line message: the key scrubbed, whitespace folded, cut short."""
    if key:
        text = text.replace(key, "***")
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _openai_server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def _status_error(provider, status: int, server_message: str) -> ProviderError:
    """One line per HTTP failure. The server's own words are kept (scrubbed) except on auth
    failures, where servers tend to quote the key."""
    label, tries = _label(provider), provider.max_retries + 1
    server_message = _one_line(server_message, provider._key).rstrip(".")
    said = f": {server_message}" if server_message else ""
    if status in (401, 403):
        if provider._key_env is None:
            return ProviderError(
                f"{label} wants an API key (HTTP {status}); "
                f"set the environment variable {provider.api_key_env}."
            )
        return ProviderError(
            f"{label} rejected the API key (HTTP {status}); "
            f"check the key in the environment variable {provider._key_env}."
        )
    if status == 429:
        return ProviderError(
            f"{label} is rate limited (HTTP 429) after {tries} attempt(s){said}; "
            "wait a minute, lower the request rate or check your quota."
        )
    if status >= 500:
        return ProviderError(
            f"{label} had a server error (HTTP {status}) after {tries} attempt(s){said}; "
            "try again later or use another model."
        )
    return ProviderError(
        f"{label} refused the request (HTTP {status}{said}); "
        "check the model name, the base URL and the request."
    )


def _timeout_error(provider) -> ProviderError:
    return ProviderError(
        f"{_label(provider)} did not answer within {provider.timeout:g} s "
        f"({provider.max_retries + 1} attempt(s)); try again later or raise the timeout."
    )


def _connection_error(provider) -> ProviderError:
    return ProviderError(
        f"{_label(provider)} cannot be reached; check the network connection and the base URL."
    )


def _malformed_error(provider, what: str) -> ProviderError:
    return ProviderError(
        f"{_label(provider)} sent {what}; try again, and if it persists check that the base URL "
        "points at a compatible API."
    )


def _openai_content(prompt: str, images: Sequence[Image.Image]) -> str | list[dict]:
    if not images:
        return prompt  # plain string: the form every OpenAI-compatible server accepts
    parts: list[dict] = [{"type": "text", "text": prompt}]
    for image in images:
        data = base64.b64encode(_jpeg_bytes(image)).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}})
    return parts


def _jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _schema_name(schema: dict) -> str:
    """OpenAI wants a name matching [a-zA-Z0-9_-]{1,64}; the schema's title is the natural one."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", str(schema.get("title", ""))).strip("_")
    return name[:64] or "reply"
