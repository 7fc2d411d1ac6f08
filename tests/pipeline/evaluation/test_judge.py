"""The judge: `Score: N` parsing, the real `openai` client against a scripted server, and
the CP / PF aggregation checked against numbers computed by hand."""

import json
import math
import shutil

import pytest
from PIL import Image

from pipeline.errors import UserInputError
from pipeline.evaluation.judge import (
    DREAMBENCH_FILES,
    InvalidScore,
    ask_score,
    judge_item,
    load_templates,
    parse_score,
    summarize,
)
from pipeline.providers import InvalidReply, OpenAICompatibleProvider, ProviderError
from tests.fake_api import request_images, request_texts

REFERENCE = Image.new("RGB", (300, 200), (200, 30, 30))
GENERATED = Image.new("RGB", (640, 480), (30, 30, 200))


def judge_at(fake_api, **options):
    options.setdefault("max_retries", 0)
    return OpenAICompatibleProvider("judge-test", base_url=fake_api.openai_base_url, **options)


def scripted(*replies):
    """A server reply function that answers with `replies` in order."""
    queue = list(replies)
    return lambda body: queue.pop(0)


# --- parse_score -----------------------------------------------------------------------------


@pytest.mark.parametrize("reply, score", [
    ("Analysis: the dog matches.\nScore: 4", 4),
    ("Analysis: nothing alike.\nScore: 0", 0),
    ("analysis...\n  score :  2  \n", 2),
    ("SCORE:3", 3),
])
def test_parse_score_reads_the_one_score_line(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply, problem", [
    ("Analysis: fine.\nScore: 2\nScore: 3", "2 'Score:' lines"),
    ("Analysis: fine.\nScore: 5", "not an integer from 0 to 4"),
    ("Score: -1", "not an integer"),
    ("Score: 2.5", "not an integer"),
    ("Score: three", "not an integer"),
    ("Score: ", "not an integer"),
    ("Analysis: looks good, I would give it a 3.", "no 'Score: N' line"),
    ("", "no 'Score: N' line"),
])
def test_parse_score_refuses_anything_else(reply, problem):
    with pytest.raises(InvalidScore, match=problem) as caught:
        parse_score(reply)
    assert isinstance(caught.value, InvalidReply)


# --- ask_score and judge_item through the real openai client ----------------------------------


def test_malformed_replies_are_asked_again_until_a_valid_score(fake_api):
    fake_api.reply = scripted("I like it.", "Score: 2\nScore: 3", "Analysis: close.\nScore: 3")

    answer = ask_score(judge_at(fake_api), "judge this", [REFERENCE, GENERATED])

    assert answer.score == 3
    assert len(answer.replies) == 3 and answer.replies[-1].endswith("Score: 3")
    assert len(fake_api.requests) == 3
    body = fake_api.requests[0].json
    assert body["temperature"] == 1
    images = request_images(body)
    assert [(mime, image.size) for mime, image in images] == [("image/jpeg", (512, 512))] * 2
    assert images[0][1].getpixel((256, 256))[0] > 180  # the reference goes first


def test_always_malformed_is_a_failure_not_a_score(fake_api):
    fake_api.reply = lambda body: "Score: 5"

    with pytest.raises(InvalidScore, match="3 replies without a valid score") as caught:
        ask_score(judge_at(fake_api), "judge this", [GENERATED], retries=2)

    assert caught.value.replies == ["Score: 5"] * 3
    assert len(fake_api.requests) == 3


def test_judge_item_scores_cp_pf_and_debiased_with_the_right_templates(fake_api):
    templates = load_templates()

    def reply(body):
        text = "\n".join(request_texts(body))
        if "de-biased" in text:
            return "Analysis: a copy of the reference.\nScore: 1"
        if "The text prompt:" in text:
            return "Analysis: all there.\nScore: 4"
        return "Analysis: same style.\nScore: 3"

    fake_api.reply = reply
    judged = judge_item(judge_at(fake_api), templates, reference=REFERENCE, generated=GENERATED,
                        prompt="a castle in the style", category="style")

    assert (judged.cp, judged.pf, judged.cp_debiased) == (3, 4, 1)
    assert judged.errors == {}
    assert judged.replies["pf"] == ["Analysis: all there.\nScore: 4"]
    texts = ["\n".join(request_texts(request.json)) for request in fake_api.requests]
    assert templates.text("cp_style") in texts[0]
    assert "a castle in the style" in texts[1]
    assert templates.text("cp_style_debiased") in texts[2]
    assert [len(request_images(request.json)) for request in fake_api.requests] == [2, 1, 2]


def test_judge_item_counts_malformed_replies_and_timeouts_as_failures(fake_api):
    fake_api.reply = lambda body: "no score here"
    judged = judge_item(judge_at(fake_api), load_templates(), reference=REFERENCE,
                        generated=GENERATED, prompt="a dog on a beach", category="animal",
                        debiased=False)
    assert (judged.cp, judged.pf, judged.cp_debiased) == (None, None, None)
    assert "counted as a failure" in judged.errors["cp"]
    assert judged.replies["cp"] == ["no score here"] * 3

    fake_api.latency = 1.0
    fake_api.reply = lambda body: "Score: 4"
    slow = judge_at(fake_api, timeout=0.2)
    with pytest.raises(ProviderError, match="did not answer within 0.2 s"):
        ask_score(slow, "judge this", [GENERATED])
    judged = judge_item(slow, load_templates(), reference=REFERENCE, generated=GENERATED,
                        prompt="a dog on a beach", category="animal", debiased=False)
    assert (judged.cp, judged.pf) == (None, None)
    assert "did not answer" in judged.errors["pf"]


# --- templates -------------------------------------------------------------------------------


def test_our_templates_ask_for_one_score_line_and_label_the_reconstruction():
    templates = load_templates()
    assert templates.source == "ours" and templates.has_debiased
    for role, text in templates.texts.items():
        assert "`Score: N`" in text and "0 to 4" in text
        assert ("Our reconstruction of DSD's de-biased judge" in text) == role.endswith(
            "_debiased")


def test_templates_hash_changes_when_a_template_file_changes(tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(load_templates().folder, folder)
    before = load_templates(folder).templates_hash
    assert before == load_templates().templates_hash
    assert load_templates(folder).templates_hash == before  # stable

    (folder / "pf.txt").write_text((folder / "pf.txt").read_text() + "\nBe strict.\n")

    assert load_templates(folder).templates_hash != before


def test_a_dreambench_checkout_and_a_mapping_file_are_accepted(tmp_path):
    prompts = tmp_path / "dreambench_plus" / "dreambench_plus" / "prompts"
    prompts.mkdir(parents=True)
    for name in DREAMBENCH_FILES.values():
        (prompts / name).write_text(f"{name}\nScore: [Your Score]\n")
    checkout = load_templates(tmp_path / "dreambench_plus")
    assert checkout.source == "dreambench++" and not checkout.has_debiased
    assert checkout.text("pf").startswith("user_prompt_text_full.txt")

    (tmp_path / "mapped").mkdir()
    for role in ("cp_subject", "cp_style", "pf"):
        (tmp_path / "mapped" / f"{role}-v2.txt").write_text(f"{role} judge\n")
    (tmp_path / "mapped" / "templates.json").write_text(
        json.dumps({role: f"{role}-v2.txt" for role in ("cp_subject", "cp_style", "pf")}))
    assert load_templates(tmp_path / "mapped").text("cp_style") == "cp_style judge"

    with pytest.raises(UserInputError, match="no judge templates found"):
        load_templates(tmp_path)  # the folder above the checkout


# --- summarize -------------------------------------------------------------------------------

ITEMS = {  # item id -> (category, kind); ids keep their hyphens
    "dog-01": ("animal", "photorealistic"),
    "spider-man-03": ("human", "style change"),
    "painting-02": ("style", "imaginative"),
    "cat-07": ("animal", "imaginative"),
}
RUN_SCORES = [  # (cp, pf) per item, per run
    {"dog-01": (4, 2), "spider-man-03": (2, 4), "painting-02": (0, 4), "cat-07": (2, 2)},
    {"dog-01": (4, 4), "spider-man-03": (4, 4), "painting-02": (2, 4), "cat-07": (2, 4)},
    {"dog-01": (3, 3), "spider-man-03": (1, 3), "painting-02": (1, 3), "cat-07": (3, 3)},
]


def records():
    return [
        {"item_id": item, "category": ITEMS[item][0], "kind": ITEMS[item][1], "run": run,
         "cp": cp, "pf": pf}
        for run, scores in enumerate(RUN_SCORES) for item, (cp, pf) in scores.items()
    ]


def figure(mean, std):
    return {"mean": pytest.approx(mean), "std": pytest.approx(std)}


def test_summary_matches_the_numbers_computed_by_hand():
    report = summarize(records(), runs_expected=3, items_expected=4).to_json()

    # Per run, CP = 8/16, 12/16, 8/16; PF = 12/16, 16/16, 12/16; CP*PF = 0.375, 0.75, 0.375.
    assert report["cp"] == figure(7 / 12, 1 / math.sqrt(48))
    assert report["pf"] == figure(5 / 6, 1 / math.sqrt(48))
    assert report["cp_pf"] == figure(0.5, math.sqrt(3) / 8)
    assert report["coverage"] == {"expected": 12, "scored": 12, "failed": 0, "missing": 0,
                                  "fraction": 1.0}
    assert report["partial"] is False
    assert list(report["by_category"]) == ["animal", "human", "style"]
    # Animal (dog, cat): CP 0.75 every run; PF 0.5, 1, 0.75; CP*PF 0.375, 0.75, 0.5625.
    assert report["by_category"]["animal"] == {
        "cp": figure(0.75, 0.0), "pf": figure(0.75, 0.25), "cp_pf": figure(0.5625, 0.1875)}
    # Style (painting): CP 0, 0.5, 0.25.
    assert report["by_category"]["style"]["cp"] == figure(0.25, 0.25)
    assert list(report["by_kind"]) == ["photorealistic", "style change", "imaginative"]
    # Imaginative (painting, cat): CP 0.25, 0.5, 0.5; PF 0.75, 1, 0.75.
    assert report["by_kind"]["imaginative"]["cp"] == figure(5 / 12, math.sqrt(3) / 12)
    assert report["by_kind"]["imaginative"]["pf"] == figure(5 / 6, 1 / math.sqrt(48))
    assert json.loads(json.dumps(report)) == report


def test_incomplete_runs_are_refused_then_reported_as_partial():
    kept = [r for r in records() if not (r["run"] == 2 and r["item_id"] == "cat-07")]
    kept[0] = {**kept[0], "cp": None}  # dog-01, run 0: the judge failed on CP

    refusal = r"scored 10 of 12 expected items \(1 failed, 1 missing\)"
    with pytest.raises(UserInputError, match=refusal):
        summarize(kept, runs_expected=3, items_expected=4)

    report = summarize(kept, runs_expected=3, items_expected=4, allow_partial=True)
    assert report.partial
    assert report.coverage.fraction == pytest.approx(10 / 12)
    # Run 0 CP over the 3 scored items: (2+0+2)/12; run 2 without cat: (3+1+1)/12.
    assert report.overall.cp.mean == pytest.approx((4 / 12 + 12 / 16 + 5 / 12) / 3)
    # PF keeps dog-01's run-0 score: the failure was in CP only.
    assert report.overall.pf.mean == pytest.approx((12 / 16 + 16 / 16 + 9 / 12) / 3)


def test_one_run_has_no_standard_deviation():
    one = [r for r in records() if r["run"] == 0]
    report = summarize(one, runs_expected=1, items_expected=4).to_json()
    assert report["cp"] == {"mean": 0.5, "std": None}
