"""Chat Completions through the `openai` SDK: OpenAI, or any compatible server (vLLM, Ollama, LM Studio)."""

from __future__ import annotations

import base64
import re
from typing import Sequence

import openai
from PIL import Image

from pipeline.providers.base import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Completion,
    ProviderError,
    RemoteProvider,
    connection_error,
    jpeg_bytes,
    label,
    malformed_error,
    one_line,
    read_key,
    status_error,
    timeout_error,
)


class OpenAICompatibleProvider(RemoteProvider):
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
        super().__init__(model, base_url, api_key_env, timeout, max_retries)
        self._key_env, self._key = read_key(self, [api_key_env], required=base_url is None)
        # Local servers need no key, but the SDK insists on one.
        self._client = openai.OpenAI(
            api_key=self._key or "no-key", base_url=base_url, timeout=timeout,
            max_retries=max_retries,
        )

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
        messages.append({"role": "user", "content": openai_content(prompt, images)})
        options: dict = {}
        if temperature is not None:
            options["temperature"] = temperature
        if json_schema is not None:
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name(json_schema), "schema": json_schema},
            }
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, **options
            )
        except openai.APITimeoutError:
            raise timeout_error(self) from None
        except openai.APIConnectionError:
            raise connection_error(self) from None
        except openai.APIStatusError as exc:
            raise status_error(self, exc.status_code, server_message(exc)) from None
        except (openai.OpenAIError, ValueError):
            raise malformed_error(self, "a reply that is not a chat completion") from None
        if not isinstance(response, openai.types.chat.ChatCompletion):
            raise malformed_error(self, "a reply that is not a chat completion")
        # The SDK does not validate replies, so any field may be missing.
        choices = getattr(response, "choices", None)
        if not choices:
            raise malformed_error(self, "a reply with no choices")
        message = getattr(choices[0], "message", None)
        if getattr(message, "refusal", None):
            raise ProviderError(
                f"{label(self)} refused the request ({one_line(message.refusal, self._key)}); "
                "rephrase the prompt or use another model."
            )
        text = getattr(message, "content", None)
        text = text if isinstance(text, str) else ""
        if not text.strip():
            raise malformed_error(self, "an empty reply")
        usage = getattr(response, "usage", None)
        return Completion(
            text=text,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            model=getattr(response, "model", None) or self.model,
        )


def server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def openai_content(prompt: str, images: Sequence[Image.Image]) -> str | list[dict]:
    if not images:
        return prompt  # plain string: the form every OpenAI-compatible server accepts
    parts: list[dict] = [{"type": "text", "text": prompt}]
    for image in images:
        data = base64.b64encode(jpeg_bytes(image)).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}})
    return parts


def schema_name(schema: dict) -> str:
    """OpenAI wants a name matching [a-zA-Z0-9_-]{1,64}; the schema's title is the natural one."""
    name = re.sub(r"[^a-zA-Z0-9_-]+", "_", str(schema.get("title", ""))).strip("_")
    return name[:64] or "reply"
