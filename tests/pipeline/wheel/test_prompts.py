"""Grid prompts: the LLM writer through the real openai and google-genai clients, the offline
templates, and the near-duplicate search."""

import json
import random
import time

import pytest

from pipeline.errors import UserInputError
from pipeline.providers import GeminiProvider, OpenAICompatibleProvider, ProviderError
from pipeline.wheel.captions import builtin_captions
from pipeline.wheel.grids import LAYOUTS
from pipeline.wheel.prompts import (
    GRID_PROMPT_INSTRUCTION,
    GRID_PROMPT_SCHEMA,
    GridPrompt,
    OfflinePromptWriter,
    make_prompt_writer,
    near_duplicates,
    subject_of,
    write_grid_prompt,
)
from tests.fake_api import request_texts

KINDS = ["openai", "gemini"]
PANELS = ["sitting on a sunny windowsill, eyes half closed",
          "stretching on a rug in warm lamplight, seen from above",
          "walking through tall grass at golden hour, low angle",
          "curled up asleep on a blue blanket, close-up"]


@pytest.fixture(autouse=True)
def api_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-grid")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test-grid")


def provider_for(kind, fake_api):
    if kind == "openai":
        return OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url, max_retries=0)
    return GeminiProvider("gemini-test", base_url=fake_api.url, max_retries=0)


def sent_schema(kind, body):
    if kind == "openai":
        return body["response_format"]["json_schema"]["schema"]
    return body["generationConfig"]["responseJsonSchema"]


@pytest.mark.parametrize("kind", KINDS)
def test_llm_writes_a_grid_prompt_from_a_caption(kind, fake_api):
    fake_api.reply = lambda body: json.dumps({"subject": "ginger tabby cat with a white chest",
                                              "panels": PANELS})

    prompt = write_grid_prompt(provider_for(kind, fake_api), "a tabby cat sleeping in a box", "2x2")

    assert prompt.subject == "ginger tabby cat with a white chest"
    assert prompt.panels == PANELS
    assert prompt.layout == "2x2" and prompt.caption == "a tabby cat sleeping in a box"
    assert prompt.writer == ("openai:gpt-test" if kind == "openai" else "gemini:gemini-test")
    assert prompt.text.startswith(
        "A grid of 4 panels (2 rows, 2 columns) separated by thin white gutters, showing the "
        "identical ginger tabby cat with a white chest in every panel. Panel 1: Sitting on a sunny")
    assert "Panel 4: Curled up asleep on a blue blanket, close-up." in prompt.text
    [request] = fake_api.requests
    assert sent_schema(kind, request.json) == GRID_PROMPT_SCHEMA
    system, user = request_texts(request.json)
    assert system == GRID_PROMPT_INSTRUCTION
    assert "a tabby cat sleeping in a box" in user and "exactly 4 panel" in user


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_panel_count_is_asked_again(kind, fake_api):
    replies = iter([{"subject": "red vintage car", "panels": PANELS[:3]},
                    {"subject": "red vintage car", "panels": ["Panel 1: parked by the sea", "Panel 2: on a bridge"]}])
    fake_api.reply = lambda body: json.dumps(next(replies))

    prompt = write_grid_prompt(provider_for(kind, fake_api), "red vintage convertible", "1x2")

    assert prompt.panels == ["parked by the sea", "on a bridge"]
    assert "A grid of 2 panels (1 row, 2 columns)" in prompt.text
    assert len(fake_api.requests) == 2


@pytest.mark.parametrize("reply", [
    {"subject": "", "panels": PANELS},
    {"subject": "a mug", "panels": [PANELS[0]] * 4},
    {"subject": "a mug", "panels": "one long paragraph"},
    "not json at all",
])
def test_replies_that_stay_invalid_end_in_a_provider_error(fake_api, reply):
    fake_api.reply = lambda body: reply if isinstance(reply, str) else json.dumps(reply)

    with pytest.raises(ProviderError) as caught:
        write_grid_prompt(provider_for("gemini", fake_api), "a blue mug", attempts=3)

    assert "gemini:gemini-test at " in str(caught.value) and "sent 3 invalid grid prompts" in str(caught.value)
    assert len(fake_api.requests) == 3


def test_grid_prompt_round_trips_through_a_dict():
    prompt = GridPrompt("a fox", "2x3", "red fox", [f"pose {i}" for i in range(6)], "openai:gpt-4o")

    again = GridPrompt.from_dict(json.loads(json.dumps(prompt.to_dict())))

    assert again == prompt and again.text == prompt.text
    assert "A grid of 6 panels (2 rows, 3 columns)" in prompt.text and "Panel 6: Pose 5." in prompt.text


def test_make_prompt_writer_picks_llm_or_templates(fake_api):
    fake_api.reply = lambda body: json.dumps({"subject": "blue mug", "panels": PANELS})

    offline = make_prompt_writer(None)("a blue mug on a desk", "2x2")
    online = make_prompt_writer(provider_for("openai", fake_api))("a blue mug on a desk", "2x2")

    assert offline.writer == "offline-templates" and online.writer == "openai:gpt-test"
    assert offline.layout == online.layout == "2x2"


@pytest.mark.parametrize("layout, count", [("2x2", 4), ("1x2", 2), ("2x3", 6), ("3x3", 9)])
def test_offline_writer_fills_every_panel_with_a_different_variation(layout, count):
    prompt = OfflinePromptWriter().write("golden retriever puppy sitting on a wooden floor", layout)

    assert len(prompt.panels) == count
    assert len(set(prompt.panels)) == count
    assert prompt.text.count("Panel ") == count
    assert all("golden retriever puppy" in panel for panel in prompt.panels)
    assert prompt.writer == "offline-templates"


def test_offline_writer_is_deterministic_and_varies_with_caption_and_seed():
    caption = "red ceramic coffee mug with a white polka dot pattern"

    first, again = OfflinePromptWriter().write(caption), OfflinePromptWriter().write(caption)
    other_seed = OfflinePromptWriter(seed=1).write(caption)
    texts = {OfflinePromptWriter().write(c).text for c in builtin_captions()[:100]}

    assert first == again
    assert other_seed.subject == first.subject and other_seed.panels != first.panels
    assert len(texts) == 100
    assert not near_duplicates(sorted(texts))


@pytest.mark.parametrize("caption, subject", [
    ("A photo of a red fox, in the snow", "red fox"),
    ("an image of a black cat with green eyes sitting on a windowsill", "black cat"),
    ("Stock Photo - Portrait of a happy golden doodle dog lying on grass", "happy golden doodle dog"),
    ("Red Panda Plush Toy 30cm Super Soft Stuffed Animal", "red panda plush toy"),
    ("cozy wooden cabin in a snowy pine forest", "cozy wooden cabin in a snowy pine forest"),
])
def test_subject_is_taken_from_the_caption(caption, subject):
    assert subject_of(caption) == subject
    assert f"showing the identical {subject} in every panel" in OfflinePromptWriter().write(caption).text


def test_bad_layout_and_empty_caption_are_user_errors():
    with pytest.raises(UserInputError, match="2x2, 1x2, 2x3, 3x3"):
        OfflinePromptWriter().write("a fox", "4x4")
    with pytest.raises(UserInputError, match="caption is empty"):
        OfflinePromptWriter().write("   ")
    assert LAYOUTS == ("2x2", "1x2", "2x3", "3x3")


def test_near_duplicates_finds_rephrasings_and_keeps_distinct_prompts():
    writer = OfflinePromptWriter()
    fox = writer.write("a red fox in the snow").text
    mug = writer.write("blue ceramic mug").text
    prompts = [
        fox,
        mug,
        fox.upper().replace(",", " ;"),  # case and punctuation
        fox.replace("identical", "same").replace("thin white", "narrow white"),  # a few words
        writer.write("a red fox in the snow", "3x3").text,  # same subject, other panels
        writer.write("a grey wolf in the snow").text,
        mug + " Photorealistic.",
    ]

    assert near_duplicates(prompts) == [2, 3, 6]
    assert near_duplicates(prompts, threshold=1.0) == [2]
    assert near_duplicates([]) == []
    assert near_duplicates(["a", "a", "b"]) == [1]


def brute_force_duplicates(prompts, threshold):
    """The definition, pair by pair: a prompt repeats an earlier kept one at >= threshold."""
    def shingles(text):
        words = text.lower().split()
        return {tuple(words[i:i + 3]) for i in range(len(words) - 2)}

    kept, duplicates = [], []
    for i, prompt in enumerate(prompts):
        mine = shingles(prompt)
        if any(len(mine & other) / len(mine | other) >= threshold for other in kept):
            duplicates.append(i)
        else:
            kept.append(mine)
    return duplicates


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_near_duplicates_agrees_with_the_pairwise_definition(threshold):
    rng = random.Random(threshold)
    vocabulary = [f"word{i}" for i in range(300)]
    prompts = [" ".join(rng.choices(vocabulary, k=60)) for _ in range(30)]
    for _ in range(300):  # edits of edits: chains where a prompt repeats only a dropped one
        words = rng.choice(prompts).split()
        for _ in range(rng.randint(1, 8)):
            words[rng.randrange(60)] = rng.choice(vocabulary)
        prompts.append(" ".join(words))

    expected = brute_force_duplicates(prompts, threshold)

    assert near_duplicates(prompts, threshold) == expected
    assert 0 < len(expected) < len(prompts) - 30


def test_near_duplicates_handles_twenty_thousand_prompts_quickly():
    writer = OfflinePromptWriter()
    captions = builtin_captions()
    prompts = [writer.write(f"{caption} number {i}").text for i in range(63) for caption in captions][:20_000]
    prompts[19_999] = prompts[5].replace("thin white", "narrow white")

    started = time.process_time()  # this process's CPU time: other jobs on the machine don't count
    duplicates = near_duplicates(prompts)
    elapsed = time.process_time() - started

    assert duplicates == [19_999]
    assert elapsed < 2.0


def test_threshold_outside_zero_to_one_is_refused():
    with pytest.raises(UserInputError, match="at most 1"):
        near_duplicates(["a fox"], threshold=1.5)
