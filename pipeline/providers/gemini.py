"""Gemini through the `google-genai` SDK."""

from __future__ import annotations

from typing import Sequence

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
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
    read_key,
    status_error,
    timeout_error,
)


class GeminiProvider(RemoteProvider):
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
        super().__init__(model, base_url, api_key_env, timeout, max_retries)
        env_names = list(dict.fromkeys([api_key_env, "GOOGLE_API_KEY"]))
        self._key_env, self._key = read_key(self, env_names, required=base_url is None)
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
            genai_types.Part.from_bytes(data=jpeg_bytes(image), mime_type="image/jpeg")
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
            raise status_error(self, 401 if bad_key else exc.code, exc.message or "") from None
        except (httpx.TimeoutException, httpx2.TimeoutException):
            raise timeout_error(self) from None
        except (httpx.TransportError, httpx2.TransportError):
            raise connection_error(self) from None
        except ValueError:
            raise malformed_error(self, "a reply that is not a GenerateContentResponse") from None
        if not response.candidates:
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason:
                raise ProviderError(
                    f"{label(self)} blocked the prompt ({feedback.block_reason}); "
                    "rephrase the prompt or use another model."
                )
            raise malformed_error(self, "a reply with no candidates")
        text = response.text or ""
        if not text.strip():
            raise malformed_error(self, "an empty reply")
        usage = response.usage_metadata
        return Completion(
            text=text,
            input_tokens=(usage.prompt_token_count or 0) if usage else 0,
            output_tokens=(usage.candidates_token_count or 0) if usage else 0,
            model=response.model_version or self.model,
        )
