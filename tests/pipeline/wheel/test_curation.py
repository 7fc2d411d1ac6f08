"""Pair curation: the real `openai` and `google-genai` clients judge example photos on 127.0.0.1."""

import json
import threading
import time

import pytest
from PIL import ImageOps

from pipeline.errors import UserInputError
from pipeline.providers import GeminiProvider, OpenAICompatibleProvider, ProviderError
from pipeline.wheel.curation import (
    CURATION_PROMPT,
    PROMPT_VERSION,
    VERDICT_SCHEMA,
    CurationFailure,
    CurationStats,
    SimilarityCurator,
    Verdict,
    VLMCurator,
    cache_key,
    check_verdict,
    curate,
    image_digest,
    prompt_fingerprint,
)
from tests.fake_api import request_images, request_texts

KINDS = ["openai", "gemini"]
GOOD = {
    "subject": "a tabby cat with green eyes",
    "description_a": "A tabby cat, striped grey-brown fur, green eyes, looking left.",
    "description_b": "The same tabby cat, same stripes and green eyes, seen from the right.",
    "reasoning": "Fur pattern, eye colour and ear shape match; only the framing differs.",
    "same": True,
    "confidence": 0.92,
    "caption_target": "A striped tabby cat with green eyes resting on a wooden floor.",
    "caption_instruction": "Show the cat from slightly further to the right.",
}


@pytest.fixture(autouse=True)
def api_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-curation")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test-curation")


@pytest.fixture
def cat_crops(references):
    """Two overlapping crops of the same photo: one subject, two views."""
    cat = references["cat"]
    width, height = cat.size
    return cat.crop((0, 0, int(width * 0.8), height)), cat.crop((int(width * 0.2), 0, width, height))


def curator_for(kind, fake_api, attempts=3):
    if kind == "openai":
        provider = OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url)
    else:
        provider = GeminiProvider("gemini-test", base_url=fake_api.url, retry_delay=0.01)
    return VLMCurator(provider, attempts=attempts)


def replies(*texts):
    """A reply function answering with `texts` in order, then repeating the last one."""
    queue = list(texts)
    lock = threading.Lock()

    def reply(body):
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply


def server_input_tokens(fake_api):
    """Input usage the fake server reported: the words of every text it received."""
    return sum(len(t.split()) for r in fake_api.requests for t in request_texts(r.json))


@pytest.mark.parametrize("kind", KINDS)
def test_good_verdict_is_parsed_and_both_images_arrive_as_jpeg(kind, fake_api, cat_crops):
    fake_api.reply = lambda body: json.dumps(GOOD)
    judge = curator_for(kind, fake_api)

    verdict = judge.judge(*cat_crops)

    assert verdict.same is True and verdict.confidence == pytest.approx(0.92)
    assert verdict.subject == GOOD["subject"]
    assert verdict.caption_target == GOOD["caption_target"]
    assert verdict.caption_instruction == GOOD["caption_instruction"]
    assert verdict.judge == judge.name == f"{kind}:{kind if kind == 'gemini' else 'gpt'}-test"
    assert verdict.prompt_version == PROMPT_VERSION
    assert verdict.input_tokens > 0 and verdict.output_tokens == len(json.dumps(GOOD).split())
    [request] = fake_api.requests
    assert request_texts(request.json)[-1] == CURATION_PROMPT
    sent = request_images(request.json)
    assert [mime for mime, _ in sent] == ["image/jpeg", "image/jpeg"]
    assert [image.size for _, image in sent] == [crop.size for crop in cat_crops]
    for (_, image), crop in zip(sent, cat_crops):  # in order: A first, then B
        assert image.format == "JPEG"
        thumbs = [im.convert("L").resize((8, 8)) for im in (image, crop)]
        assert max(abs(p - q) for p, q in zip(*(t.getdata() for t in thumbs))) < 24
    body = request.json
    if kind == "openai":
        assert body["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA
    else:
        assert body["generationConfig"]["responseJsonSchema"] == VERDICT_SCHEMA


def test_large_images_are_sent_with_the_long_side_at_768(fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    big = references["coffee"].resize((1536, 1024))

    curator_for("openai", fake_api).judge(big, references["coffee"])

    sizes = [image.size for _, image in request_images(fake_api.requests[0].json)]
    assert sizes == [(768, 512), references["coffee"].size]


def test_a_fenced_json_block_is_accepted(fake_api, cat_crops):
    fake_api.reply = lambda body: "Here is my verdict:\n```json\n" + json.dumps(GOOD) + "\n```\n"

    assert curator_for("openai", fake_api).judge(*cat_crops).subject == GOOD["subject"]


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json_is_asked_again_and_tokens_of_every_attempt_count(kind, fake_api, cat_crops):
    fake_api.reply = replies("{\"same\": tru", json.dumps(GOOD))

    verdict = curator_for(kind, fake_api).judge(*cat_crops)

    assert verdict.same is True
    assert len(fake_api.requests) == 2
    assert verdict.input_tokens == server_input_tokens(fake_api)
    assert verdict.output_tokens == 2 + len(json.dumps(GOOD).split())


@pytest.mark.parametrize("kind", KINDS)
def test_three_malformed_replies_are_a_failure_not_a_verdict(kind, fake_api, cat_crops):
    fake_api.reply = lambda body: "I think they are the same cat."
    seen = []

    stats = curate([("pair-1", *cat_crops)], curator_for(kind, fake_api),
                   on_result=lambda item, result, cached: seen.append(result))

    [failure] = seen
    assert isinstance(failure, CurationFailure)
    assert "sent 3 invalid verdicts" in str(failure) and "not JSON" in str(failure)
    assert "\n" not in str(failure)
    assert len(fake_api.requests) == 3
    assert (stats.judged, stats.failed, stats.same) == (0, 1, 0)
    assert stats.input_tokens == server_input_tokens(fake_api) and stats.output_tokens == 3 * 7


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"confidence": 1.5}, "not a number from 0 to 1"),
        ({"confidence": "high"}, "not a number from 0 to 1"),
        ({"same": "yes"}, "not true or false"),
        ({"caption_target": "  "}, "empty 'caption_target'"),
        ({"caption_instruction": None}, "not text"),
        ({"reasoning": None}, "not text"),
    ],
)
def test_fields_of_the_wrong_type_or_range_are_rejected(change, problem):
    with pytest.raises(ValueError, match=problem):
        check_verdict(GOOD | change)


def test_replies_that_are_not_a_verdict_object_are_rejected():
    with pytest.raises(ValueError, match="lacked same"):
        check_verdict({k: v for k, v in GOOD.items() if k != "same"})
    with pytest.raises(ValueError, match="not an object"):
        check_verdict([1, 2])


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_is_retried_by_the_sdk_then_succeeds(kind, fake_api, cat_crops):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.fail_with(429)

    assert curator_for(kind, fake_api).judge(*cat_crops).same is True
    assert len(fake_api.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_past_the_retries_fail_the_pair_and_the_run_goes_on(kind, fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.fail_with(500, 500, 500)  # the SDK's 3 tries for the first pair
    pairs = [("broken", references["cat"], references["coffee"]),
             ("fine", references["cat"], references["astronaut"])]
    seen = {}

    stats = curate(pairs, curator_for(kind, fake_api), concurrency=1,
                   on_result=lambda item, result, cached: seen.update({item: result}))

    assert isinstance(seen["broken"], CurationFailure)
    assert "HTTP 500" in str(seen["broken"]) and "\n" not in str(seen["broken"])
    assert isinstance(seen["fine"], Verdict)
    assert (stats.judged, stats.failed) == (1, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_that_times_out_fails_the_pair_and_the_run_goes_on(kind, fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.latency = 1.0
    provider = (OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url, timeout=0.2, max_retries=0)
                if kind == "openai" else
                GeminiProvider("gemini-test", base_url=fake_api.url, timeout=0.2, max_retries=0))
    seen = {}

    stats = curate([("slow", references["cat"], references["coffee"])], VLMCurator(provider),
                   on_result=lambda item, result, cached: seen.update({item: result}))

    assert isinstance(seen["slow"], CurationFailure) and "\n" not in str(seen["slow"])
    assert "time" in str(seen["slow"]).lower()
    assert (stats.judged, stats.failed) == (0, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_rejected_key_stops_the_run_and_says_what_to_do(kind, fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.fail_with(*[401] * 50)
    pairs = [(f"pair-{i}", references["cat"], references["coffee"]) for i in range(20)]
    seen = []

    with pytest.raises(ProviderError) as caught:
        curate(pairs, curator_for(kind, fake_api), concurrency=2,
               on_result=lambda *result: seen.append(result))

    variable = "OPENAI_API_KEY" if kind == "openai" else "GEMINI_API_KEY"
    assert f"check the key in the environment variable {variable}" in str(caught.value)
    assert seen == []
    assert len(fake_api.requests) <= 2  # what was in flight; nothing after


def test_a_second_run_over_the_same_pairs_is_served_by_the_cache(fake_api, references, cat_crops, tmp_path):
    from pipeline.store import Store
    from pipeline.wheel.stages import StoreCache

    fake_api.reply = lambda body: json.dumps(GOOD)
    judge = curator_for("openai", fake_api)
    pairs = [("crops", *cat_crops), ("different", references["cat"], references["coffee"])]
    cache = StoreCache(Store(tmp_path))

    first = curate(pairs, judge, cache=cache)
    assert (first.judged, first.cached, len(fake_api.requests)) == (2, 0, 2)
    assert all(cache.get(cache_key(image_digest(a), image_digest(b), judge.name)) for _, a, b in pairs)
    seen = []
    second = curate(pairs, judge, cache=cache,
                    on_result=lambda item, verdict, cached: seen.append((item, verdict, cached)))

    assert len(fake_api.requests) == 2  # no new request
    assert (second.judged, second.cached, second.same) == (0, 2, 2)
    assert (second.input_tokens, second.output_tokens) == (0, 0)
    assert sorted(item for item, _, _ in seen) == ["crops", "different"]
    assert all(cached and verdict.caption_target == GOOD["caption_target"]
               for _, verdict, cached in seen)


def test_cache_keys_follow_the_pixels_the_order_the_judge_and_the_prompt(references, cat_crops):
    a, b = (image_digest(image) for image in cat_crops)

    assert image_digest(cat_crops[0].copy()) == a
    assert image_digest(ImageOps.mirror(cat_crops[0])) != a
    assert cache_key(a, b, "openai:gpt-4o") == cache_key(a, b, "openai:gpt-4o")
    assert len({cache_key(a, b, "openai:gpt-4o"), cache_key(b, a, "openai:gpt-4o"),
                cache_key(a, b, "gemini:gemini-2.0-flash")}) == 3
    fingerprint = prompt_fingerprint()
    assert len(fingerprint) == 12 and int(fingerprint, 16) >= 0


def test_a_cached_verdict_serves_only_the_same_model_provider_prompt_and_pictures(fake_api, cat_crops, tmp_path,
                                                                                monkeypatch):
    """Each field of the cache key changed alone, through `curate` with the store's cache and the real clients:
    the same request again is served from the cache, and a change of any one field is a new request."""
    from pipeline.store import Store
    from pipeline.wheel import curation
    from pipeline.wheel.stages import StoreCache

    fake_api.reply = lambda body: json.dumps(GOOD)
    cache = StoreCache(Store(tmp_path))
    a, b = cat_crops

    def one_pixel_changed(image):
        changed = image.copy()
        red, green, blue = changed.getpixel((0, 0))
        changed.putpixel((0, 0), ((red + 1) % 256, green, blue))
        return changed

    def openai(model="gpt-test"):
        return VLMCurator(OpenAICompatibleProvider(model, base_url=fake_api.openai_base_url))

    def requests_made(curator, first=a, second=b) -> int:
        before = len(fake_api.requests)
        curate([("pair", first, second)], curator, cache=cache)
        return len(fake_api.requests) - before

    assert requests_made(openai()) == 1
    assert requests_made(openai()) == 0, "the same model, prompt and pictures: the cached verdict"
    assert requests_made(openai("gpt-other")) == 1, "another model of the same provider"
    assert requests_made(VLMCurator(GeminiProvider("gpt-test", base_url=fake_api.url, retry_delay=0.01))) == 1, \
        "another provider with a model of the same name"
    assert requests_made(openai(), first=one_pixel_changed(a)) == 1, "picture A, one pixel changed"
    assert requests_made(openai(), second=one_pixel_changed(b)) == 1, "picture B, one pixel changed"
    assert requests_made(openai(), first=b, second=a) == 1, "the pictures in the other order (captions describe B)"
    monkeypatch.setattr(curation, "PROMPT_VERSION", "curate-v2")
    assert requests_made(openai()) == 1, "a new prompt version"
    monkeypatch.setattr(curation, "PROMPT_VERSION", PROMPT_VERSION)
    monkeypatch.setattr(curation, "CURATION_PROMPT", curation.CURATION_PROMPT + "Answer in English.\n")
    assert requests_made(openai()) == 1, "the prompt's text changed under the same version"


@pytest.mark.parametrize("kind", KINDS)
def test_concurrency_is_bounded_on_the_server(kind, fake_api, references):
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def slow_reply(body):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.1)
        with lock:
            in_flight[0] -= 1
        return json.dumps(GOOD)

    fake_api.reply = slow_reply
    pairs = [(f"pair-{i}", references["cat"], references["coffee"]) for i in range(12)]

    stats = curate(pairs, curator_for(kind, fake_api), concurrency=3)

    assert stats.judged == 12
    assert peak[0] == 3


def test_four_workers_are_about_four_times_faster_than_one(fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.latency = 0.2
    judge = curator_for("openai", fake_api)
    pairs = [(f"pair-{i}", references["cat"], references["coffee"]) for i in range(8)]

    serial = curate(pairs, judge, concurrency=1)
    parallel = curate(pairs, judge, concurrency=4)

    assert serial.seconds >= 8 * 0.2
    assert serial.seconds / parallel.seconds > 3.0


def test_items_are_read_lazily_and_results_come_back_on_the_calling_thread(fake_api, references):
    fake_api.reply = lambda body: json.dumps(GOOD)
    fake_api.latency = 0.02
    pulled, threads, most_open = [0], set(), [0]
    reported = []

    def items():
        for i in range(30):
            pulled[0] += 1
            most_open[0] = max(most_open[0], pulled[0] - len(reported))
            yield f"pair-{i}", references["cat"], references["coffee"]

    def on_result(item, verdict, cached):
        threads.add(threading.get_ident())
        reported.append(item)

    curate(items(), curator_for("openai", fake_api), concurrency=4, on_result=on_result)

    assert threads == {threading.get_ident()}
    assert len(reported) == 30
    assert most_open[0] <= 5  # four in flight plus the one just read


def test_token_accounting_sums_what_the_server_reported(fake_api, references, cat_crops):
    fake_api.reply = replies("not json", json.dumps(GOOD))  # one retry among the calls
    pairs = [("crops", *cat_crops), ("different", references["cat"], references["coffee"]),
             ("more", references["astronaut"], references["coffee"])]

    stats = curate(pairs, curator_for("openai", fake_api), concurrency=1)

    assert len(fake_api.requests) == 4
    assert stats.input_tokens == server_input_tokens(fake_api)
    assert stats.output_tokens == 2 + 3 * len(json.dumps(GOOD).split())


def test_similarity_judge_tells_views_of_one_photo_from_different_photos(references, cat_crops):
    judge = SimilarityCurator()
    coffee = references["coffee"]
    views = [cat_crops, (references["cat"], ImageOps.mirror(references["cat"])),
             (coffee, coffee.crop((60, 40, 480, 330))),
             (references["astronaut"], references["astronaut"].resize((200, 200)))]
    strangers = [(references[x], references[y]) for x, y in
                 [("cat", "coffee"), ("astronaut", "cat"), ("coffee", "astronaut")]]
    seen = {}

    stats = curate([(f"view-{i}", a, b) for i, (a, b) in enumerate(views)]
                   + [(f"other-{i}", a, b) for i, (a, b) in enumerate(strangers)],
                   judge, on_result=lambda item, verdict, cached: seen.update({item: verdict}))

    assert stats == CurationStats(judged=7, same=4, seconds=stats.seconds)
    assert all(seen[f"view-{i}"].same for i in range(len(views)))
    assert not any(seen[f"other-{i}"].same for i in range(len(strangers)))
    verdict = seen["view-0"]
    assert verdict.judge == "offline-similarity (stand-in, not a VLM)"
    assert verdict.caption_target == "the same subject, another view"
    assert verdict.caption_instruction == "show the same subject from another view"
    assert "similarity score" in verdict.reasoning and 0.5 <= verdict.confidence <= 1.0
    assert judge.judge(*cat_crops) == verdict  # deterministic


def test_verdict_round_trips_through_a_dict():
    verdict = Verdict(**check_verdict(GOOD), judge="openai:gpt-4o", input_tokens=7)

    data = verdict.to_dict()

    assert json.loads(json.dumps(data)) == data
    assert Verdict.from_dict(data | {"unknown": 1}) == verdict
    assert data["prompt_version"] == PROMPT_VERSION


def test_bad_settings_are_refused():
    with pytest.raises(UserInputError, match="concurrency"):
        curate([], SimilarityCurator(), concurrency=0)
    with pytest.raises(UserInputError, match="attempts"):
        VLMCurator(OpenAICompatibleProvider("gpt-test", base_url="http://127.0.0.1:9/v1"), attempts=0)


def test_a_judge_spec_names_the_stand_in_or_a_vlm_with_one_line_refusals(monkeypatch):
    from pipeline.evaluation.stages import judge_from_options
    from pipeline.wheel.curation import make_curator

    monkeypatch.setenv("GEMINI_API_KEY", "AIza-test")
    assert isinstance(make_curator(None), SimilarityCurator) and isinstance(make_curator("offline"), SimilarityCurator)
    curator = make_curator("openai:llama3@http://127.0.0.1:9/v1")
    assert isinstance(curator, VLMCurator) and curator.name == "openai:llama3"
    # The evaluation's judge is built from the same spec; its name and endpoint are what results record.
    judge = judge_from_options(spec="gemini:gemini-test")
    assert (judge.name, judge.endpoint, judge.provider.name) == ("gemini-test", "Gemini API", "gemini")
    judge = judge_from_options(url="http://127.0.0.1:9/v1", model="local")
    assert (judge.name, judge.endpoint) == ("local", "http://127.0.0.1:9/v1")
    for options, message in [({"spec": "offline"}, "cannot judge"), ({}, "choose a judge"),
                              ({"model": "x"}, "needs both --judge-url URL and --judge-model NAME"),
                              ({"spec": "claude:opus"}, "unknown provider")]:
        with pytest.raises(UserInputError, match=message) as refused:
            judge_from_options(**options)
        assert "\n" not in str(refused.value)
    with pytest.raises(UserInputError, match="unknown provider"):
        make_curator("claude:opus")
