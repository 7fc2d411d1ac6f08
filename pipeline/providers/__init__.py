"""LLM/VLM providers behind one small interface.

The data wheel, the evaluator and prompt enhancement call `Provider.complete` and nothing else; only
this package knows the vendor SDKs: `openai_compatible` and `gemini`, and `offline`, which needs
none. `base` holds the interface and the errors, `structured` asks for JSON replies and checks them.
API keys come from environment variables only, and no message, repr or log line written here
contains one.
"""

from pipeline.errors import UserInputError

# The package's interface: what the wheel, the evaluator and the studio import from here.
from pipeline.providers.base import InvalidReply, Provider, ProviderError, is_auth_failure  # noqa: F401
from pipeline.providers.gemini import GeminiProvider
from pipeline.providers.offline import OfflineProvider
from pipeline.providers.openai_compatible import OpenAICompatibleProvider
from pipeline.providers.structured import ask_json  # noqa: F401

SPEC_FORMS = ("offline", "openai:MODEL", "openai:MODEL@BASE_URL", "gemini:MODEL",
              "gemini:MODEL@BASE_URL")


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


def judge_provider(spec: str | None = None, url: str | None = None, model: str | None = None) -> Provider:
    """The VLM behind a judge (the wheel's curator, the evaluation's scorer): a provider spec
    ("openai:MODEL[@BASE_URL]", "gemini:MODEL[@BASE_URL]"), or an OpenAI-compatible `url` and `model`
    (`--judge-url`, `--judge-model`). The offline provider cannot judge."""
    if url or model:
        if not (url and model):
            raise UserInputError("an OpenAI-compatible judge needs both --judge-url URL and --judge-model NAME")
        return OpenAICompatibleProvider(model, base_url=url)
    if not spec:
        raise UserInputError("choose a judge: --judge-url URL --judge-model NAME, or --judge gemini:MODEL")
    provider = make_provider(spec)
    if isinstance(provider, OfflineProvider):
        raise UserInputError(f"{spec!r} cannot judge: use an OpenAI-compatible endpoint or gemini:MODEL")
    return provider


def endpoint(provider: Provider) -> str:
    """Where a provider's requests go, as results record it."""
    default = {"gemini": "Gemini API", "openai": "OpenAI API"}.get(provider.name, provider.name)
    return getattr(provider, "base_url", None) or default
