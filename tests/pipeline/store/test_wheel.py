"""The data wheel in the store: each stage finds only the work left, and the pair views read one join."""

import pytest

from pipeline.store import Store


@pytest.fixture
def wheel(tmp_path) -> Store:
    """Three captions (one filtered out), two prompts and a repeat of one, a grid cut into two panels, two pairs."""
    store = Store(tmp_path)
    store.add("captions", [{"text": "a fox"}, {"text": "a robot", "keep": 1}, {"text": "a blur", "keep": 0}])
    store.add("grid_prompts", [{"caption_id": 1, "text": "fox grid"}, {"caption_id": 2, "text": "robot grid"}])
    store.update("grid_prompts", 2, {"duplicate_of": 1})
    store.add("captions", [{"text": "a cat"}])
    store.add("grids", [{"prompt_id": 1, "seed": 11, "path": "/wheel/grids/1-11.png"}])
    store.add_grid_split(1, [{"idx": k, "path": f"/wheel/panels/1-{k}.png"} for k in range(2)], [(0, 1), (1, 0)])
    store.add("grids", [{"prompt_id": 1, "seed": 12, "path": "/wheel/grids/1-12.png"}])
    return store


def test_each_stage_finds_only_the_work_left(wheel):
    assert [caption["text"] for caption in wheel.captions_to_prompt()] == ["a cat"]
    assert [prompt["text"] for prompt in wheel.grid_prompts()] == ["fox grid"]
    assert [prompt["text"] for prompt in wheel.grid_prompts(duplicates=True)] == ["fox grid", "robot grid"]
    assert wheel.prompts_to_draw(per_prompt=2) == [] and wheel.prompts_to_draw(per_prompt=3)[0]["id"] == 1
    assert wheel.has_grid(1, 11) and not wheel.has_grid(1, 13)
    assert [grid["seed"] for grid in wheel.grids_to_split()] == [12]
    assert wheel.grid_at("/wheel/grids/1-12.png", 12)["id"] == 2 and wheel.grid_at("/wheel/grids/1-12.png", 0) is None

    wheel.put("verdicts", {"pair_id": 1, "status": "ok", "same": 1, "confidence": 0.9})
    wheel.put("verdicts", {"pair_id": 2, "status": "failed", "error": "not JSON"})
    assert [pair["pair_id"] for pair in wheel.pairs_to_judge()] == [2], "a failed verdict is judged again"
    assert [pair["pair_id"] for pair in wheel.pairs_to_judge(limit=0)] == []


def test_pairs_with_their_pictures_verdict_and_review(wheel):
    wheel.put("verdicts", {"pair_id": 1, "status": "ok", "same": 1, "confidence": 0.9})
    wheel.put("verdicts", {"pair_id": 2, "status": "ok", "same": 1, "confidence": 0.6})
    wheel.put("reviews", {"pair_id": 2, "decision": "reject"})

    pair = wheel.pairs_by_id([1])[0]
    assert (pair["reference_path"], pair["target_path"], pair["grid_path"]) == (
        "/wheel/panels/1-0.png", "/wheel/panels/1-1.png", "/wheel/grids/1-11.png")
    assert [pair["pair_id"] for pair in wheel.grid_pairs(1)] == [1, 2]
    assert [pair["pair_id"] for pair in wheel.judged_pairs()] == [1, 2]
    assert [pair["pair_id"] for pair in wheel.accepted_pairs()] == [1], "a person's rejection wins"
    assert wheel.accepted_pairs(reviewed_only=True) == []
    assert [pair["pair_id"] for pair in wheel.review_queue(min_confidence=0.8)] == [1]
    assert [pair["pair_id"] for pair in wheel.review_queue(review="rejected", disagreement=True)] == [2]
    with pytest.raises(ValueError, match="verdict filter"):
        wheel.review_queue(verdict="maybe")
    counts = wheel.wheel_counts()
    assert (counts["verdicts"], counts["same"], counts["grids_with_accepted_pair"], counts["duplicate_prompts"]) == (2, 2, 1, 1)


def test_the_curation_cache_round_trips(tmp_path):
    store = Store(tmp_path)
    assert store.cache_get("k") is None
    store.cache_put("k", {"same": True})
    assert store.cache_get("k") == {"same": True}
