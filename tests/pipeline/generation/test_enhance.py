"""Prompt enhancement: one instruction per mode, through the real clients against a fake server on 127.0.0.1."""

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.generation.enhance import ENHANCE_INSTRUCTIONS, enhance_prompt
from pipeline.providers import GeminiProvider, OfflineProvider, OpenAICompatibleProvider, ProviderError
from tests.fake_api import request_images, request_texts

KINDS = ["openai", "gemini"]


def provider_for(kind, fake_api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    if kind == "openai":
        return OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url)
    return GeminiProvider("gemini-test", base_url=fake_api.url, retry_delay=0.01)


@pytest.mark.parametrize("kind", KINDS)
def test_enhance_prompt_sends_a_different_instruction_per_mode(kind, fake_api, monkeypatch):
    fake_api.reply = lambda body: "  A ceramic mug with a blue fox logo on a beach at sunset.\n"
    provider = provider_for(kind, fake_api, monkeypatch)
    reference = Image.new("RGB", (32, 32), "white")

    results = {mode: enhance_prompt(provider, "  mug on a beach ", reference, mode=mode)
               for mode in ENHANCE_INSTRUCTIONS}

    assert set(results.values()) == {"A ceramic mug with a blue fox logo on a beach at sunset."}
    sent = [request_texts(request.json) for request in fake_api.requests]
    assert [texts[0] for texts in sent] == list(ENHANCE_INSTRUCTIONS.values())
    assert len(set(ENHANCE_INSTRUCTIONS.values())) == 3
    assert all(texts[-1] == "mug on a beach" for texts in sent)
    assert all(len(request_images(request.json)) == 1 for request in fake_api.requests)


def test_enhance_prompt_offline_keeps_the_prompt_as_written():
    assert enhance_prompt(OfflineProvider(), "  a   red\nfox ", mode="relight") == "a red fox"


def test_enhance_prompt_rejects_bad_input_and_empty_replies():
    with pytest.raises(UserInputError, match="identity, relight, instruct"):
        enhance_prompt(OfflineProvider(), "a fox", mode="cartoon")
    with pytest.raises(UserInputError, match="prompt is empty"):
        enhance_prompt(OfflineProvider(), "   ")
    with pytest.raises(ProviderError, match="empty prompt"):
        enhance_prompt(OfflineProvider(reply=lambda prompt, images: "  "), "a fox")
