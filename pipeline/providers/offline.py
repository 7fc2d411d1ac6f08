"""The provider used when none is configured: no network, deterministic."""

from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image

from pipeline.providers.base import Completion, ProviderError


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
