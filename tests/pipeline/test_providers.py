"""Providers: the real `openai` and `google-genai` clients against a fake server on 127.0.0.1."""

import json
import logging
import traceback

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.providers import (
    GeminiProvider,
    OfflineProvider,
    OpenAICompatibleProvider,
    Provider,
    ProviderError,
    make_provider,
)
from tests.fake_api import FakeAPI, request_images, request_texts

OPENAI_KEY = "sk-test-OPENAI-9f8e7d6c5b4a"
GEMINI_KEY = "AIza-test-GEMINI-1a2b3c4d5e"
KINDS = ["openai", "gemini"]


@pytest.fixture(autouse=True)
def api_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def provider_for(kind, fake_api, **options):
    options.setdefault("max_retries", 2)
    if kind == "openai":
        return OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url, **options)
    return GeminiProvider("gemini-test", base_url=fake_api.url, retry_delay=0.01, **options)


def key_of(kind):
    return OPENAI_KEY if kind == "openai" else GEMINI_KEY


@pytest.mark.parametrize("kind", KINDS)
def test_plain_completion_returns_the_server_text_and_usage(kind, fake_api):
    fake_api.reply = lambda body: f"you said: {request_texts(body)[-1]}"
    provider = provider_for(kind, fake_api)

    completion = provider.complete("a red fox", system="be brief", temperature=0.2)

    assert isinstance(provider, Provider)
    assert completion.text == "you said: a red fox"
    assert (completion.input_tokens, completion.output_tokens) == (5, 5)
    assert completion.model.endswith("-test")
    [request] = fake_api.requests
    assert request.api == kind
    assert request.api_key == key_of(kind)
    assert request_texts(request.json) == ["be brief", "a red fox"]


@pytest.mark.parametrize("kind", KINDS)
def test_image_arrives_as_base64_jpeg_of_the_same_size(kind, fake_api):
    reference = Image.new("RGBA", (96, 64), (200, 30, 30, 255))

    provider_for(kind, fake_api).complete("what is this?", [reference])

    [(mime, image)] = request_images(fake_api.requests[0].json)
    assert mime == "image/jpeg"
    assert image.format == "JPEG"
    assert image.size == (96, 64)
    red, green, blue = image.convert("RGB").getpixel((48, 32))
    assert red > 180 and green < 60 and blue < 60


@pytest.mark.parametrize("kind", KINDS)
def test_json_schema_is_sent_and_json_text_comes_back(kind, fake_api):
    schema = {
        "title": "Pair verdict",
        "type": "object",
        "properties": {"same_identity": {"type": "boolean"}, "reason": {"type": "string"}},
        "required": ["same_identity", "reason"],
    }
    fake_api.reply = lambda body: json.dumps({"same_identity": True, "reason": "same mug"})

    completion = provider_for(kind, fake_api).complete("judge", json_schema=schema)

    assert json.loads(completion.text) == {"same_identity": True, "reason": "same mug"}
    body = fake_api.requests[0].json
    if kind == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
        assert body["response_format"]["json_schema"]["name"] == "Pair_verdict"
    else:
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseJsonSchema"] == schema


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_is_retried_then_succeeds(kind, fake_api):
    fake_api.fail_with(429)

    completion = provider_for(kind, fake_api).complete("hello")

    assert completion.text == "fake reply"
    assert len(fake_api.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_past_the_retries_give_one_line(kind, fake_api):
    fake_api.fail_with(500, 500, 500)

    provider = provider_for(kind, fake_api, max_retries=2)

    with pytest.raises(ProviderError) as caught:
        provider.complete("hello")

    message = str(caught.value)
    assert "\n" not in message
    assert f"{kind}:{provider.model}" in message
    assert "HTTP 500" in message and "3 attempt" in message
    assert "try again later" in message
    assert len(fake_api.requests) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_rejected_key_is_reported_without_the_key(kind, fake_api, caplog):
    caplog.set_level(logging.DEBUG)
    fake_api.fail_with(401)  # the fake server quotes the key back in its error body
    provider = provider_for(kind, fake_api)

    with pytest.raises(ProviderError) as caught:
        provider.complete("hello")

    key = key_of(kind)
    message = str(caught.value)
    assert "rejected the API key" in message
    assert ("OPENAI_API_KEY" if kind == "openai" else "GEMINI_API_KEY") in message
    assert key not in message
    assert key not in "".join(traceback.format_exception(caught.value))
    assert key not in repr(provider)
    assert key not in caplog.text
    assert len(fake_api.requests) == 1  # auth failures are not retried


@pytest.mark.parametrize("kind", KINDS)
def test_server_words_are_kept_with_the_key_scrubbed(kind, fake_api):
    fake_api.error_message = f"model gone-1 is not available for key {key_of(kind)}."
    fake_api.fail_with(404)

    with pytest.raises(ProviderError) as caught:
        provider_for(kind, fake_api).complete("hello")

    message = str(caught.value)
    assert "HTTP 404: model gone-1 is not available for key ***" in message
    assert key_of(kind) not in message
    assert "check the model name" in message


def test_gemini_bad_key_reply_reads_as_a_rejected_key(fake_api):
    fake_api.error_message = "API key not valid. Please pass a valid API key."
    fake_api.fail_with(400)  # what Gemini really answers to a bad key

    with pytest.raises(ProviderError, match="rejected the API key .* GEMINI_API_KEY"):
        provider_for("gemini", fake_api).complete("hello")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["empty", "no_choices", "not_json"])
def test_malformed_reply_is_a_provider_error(kind, mode, fake_api):
    fake_api.malformed = mode

    with pytest.raises(ProviderError, match="compatible API"):
        provider_for(kind, fake_api).complete("hello")


@pytest.mark.parametrize("kind", KINDS)
def test_unreachable_server_is_a_provider_error(kind):
    with FakeAPI() as closed:
        pass  # started and stopped: its port now refuses connections

    with pytest.raises(ProviderError, match="cannot be reached"):
        provider_for(kind, closed, max_retries=0).complete("hello")


@pytest.mark.parametrize("kind", KINDS)
def test_slow_server_times_out(kind, fake_api):
    fake_api.latency = 1.0

    with pytest.raises(ProviderError, match="did not answer within 0.2 s"):
        provider_for(kind, fake_api, timeout=0.2, max_retries=0).complete("hello")


def test_missing_openai_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")

    with pytest.raises(UserInputError, match="set the environment variable OPENAI_API_KEY"):
        OpenAICompatibleProvider("gpt-4o-mini")
    with pytest.raises(UserInputError, match="MY_VENDOR_KEY"):
        OpenAICompatibleProvider("gpt-4o-mini", api_key_env="MY_VENDOR_KEY")


def test_missing_gemini_key_names_both_variables(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY")

    with pytest.raises(UserInputError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        GeminiProvider("gemini-2.0-flash")


def test_gemini_accepts_google_api_key(monkeypatch, fake_api):
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-google-fallback")

    GeminiProvider("gemini-test", base_url=fake_api.url).complete("hello")

    assert fake_api.requests[0].api_key == "AIza-google-fallback"


def test_local_server_needs_no_key(monkeypatch, fake_api):
    monkeypatch.delenv("OPENAI_API_KEY")
    provider = make_provider(f"openai:llama3:8b@{fake_api.openai_base_url}")

    assert provider.complete("hello").text == "fake reply"
    assert fake_api.requests[0].json["model"] == "llama3:8b"


def test_local_server_that_wants_a_key_says_which_variable(monkeypatch, fake_api):
    monkeypatch.delenv("OPENAI_API_KEY")
    fake_api.fail_with(401)

    with pytest.raises(ProviderError, match="set the environment variable OPENAI_API_KEY"):
        make_provider(f"openai:llama3@{fake_api.openai_base_url}").complete("hello")


def test_make_provider_parses_every_form():
    offline = make_provider("offline")
    openai_default = make_provider("openai:gpt-4o-mini")
    ollama = make_provider("openai:llama3@http://localhost:11434/v1")
    gemini = make_provider("gemini:gemini-2.0-flash")

    assert isinstance(offline, OfflineProvider) and offline.name == "offline"
    assert isinstance(openai_default, OpenAICompatibleProvider)
    assert (openai_default.model, openai_default.base_url) == ("gpt-4o-mini", None)
    assert (ollama.name, ollama.model, ollama.base_url) == (
        "openai", "llama3", "http://localhost:11434/v1")
    assert isinstance(gemini, GeminiProvider) and gemini.model == "gemini-2.0-flash"


@pytest.mark.parametrize("spec", ["anthropic:claude", "openai:", "gpt-4o", ""])
def test_make_provider_rejects_unknown_specs_listing_the_forms(spec):
    with pytest.raises(UserInputError) as caught:
        make_provider(spec)

    message = str(caught.value)
    for form in ("offline", "openai:MODEL", "openai:MODEL@BASE_URL", "gemini:MODEL"):
        assert form in message


def test_offline_provider_is_deterministic_and_honest():
    judge = OfflineProvider(reply=lambda prompt, images: json.dumps({"images": len(images)}))
    pair = [Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))]

    assert judge.complete("judge", pair, json_schema={"type": "object"}).text == '{"images": 2}'
    assert judge.name == "offline"
    assert OfflineProvider().complete("x").text == OfflineProvider().complete("x").text == "x"
    with pytest.raises(ProviderError, match="configure a provider"):
        OfflineProvider().complete("judge", json_schema={"type": "object"})
