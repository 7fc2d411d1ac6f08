"""Evaluations in the store: found by id or name, a judgement replaced rather than doubled, metrics redone."""

from pipeline.store import Store


def judgement(eval_id: int, **fields) -> dict:
    return {"eval_id": eval_id, "item_id": "cat#0", "k": 0, "run": 0, "cp": 3, "pf": 4, "cp_debiased": 2,
            "judge": "judge-a", "templates_hash": "abc123def456", "replies": {"cp": ["alike"]}, **fields}


def test_an_evaluation_is_found_by_id_or_name(tmp_path):
    store = Store(tmp_path)
    first = store.insert("evals", {"name": "base", "model": {"base": None}})
    numbered = store.insert("evals", {"name": str(first + 5)})

    assert store.find_eval(first)["name"] == store.find_eval("base")["name"] == "base"
    assert store.find_eval(str(first + 5))["id"] == numbered
    assert store.eval_named("nothing") is None and store.find_eval("nothing") is None
    assert store.eval_names() == [str(first + 5), "base"]


def test_judging_a_sample_again_replaces_its_judgement(tmp_path):
    store = Store(tmp_path)
    eval_id = store.insert("evals", {"name": "e"})
    store.replace_judgement(judgement(eval_id, pf=None, errors={"pf": "not JSON"}))
    assert store.scored_judgements(eval_id, "judge-a", "abc123def456") == []

    store.replace_judgement(judgement(eval_id))
    store.replace_judgement(judgement(eval_id, judge="judge-b", cp_debiased=4))

    assert [(row["judge"], row["pf"]) for row in store.eval_judgements(eval_id)] == [("judge-a", 4), ("judge-b", 4)]
    assert len(store.scored_judgements(eval_id, "judge-a", "abc123def456")) == store.count_judgements(eval_id) - 1
    assert store.eval_judgements(eval_id, "cat#0", 0)[0]["replies"] == {"cp": ["alike"]}
    assert store.debiased_scores(eval_id, "judge-b", "abc123") == [4]
    assert store.debiased_scores(eval_id, "judge-b", "abd") == []


def test_feature_metrics_are_replaced_per_metric(tmp_path):
    store = Store(tmp_path)
    eval_id = store.insert("evals", {"name": "e"})
    rows = lambda metric, value: [{"eval_id": eval_id, "item_id": f"cat#{i}", "k": 0, "metric": metric,  # noqa: E731
                                   "value": value} for i in range(2)]
    assert store.replace_eval_metrics(eval_id, ["clip_i", "dino_v1"], rows("clip_i", 0.5) + rows("dino_v1", 0.25)) == 4

    assert store.replace_eval_metrics(eval_id, ["clip_i"], rows("clip_i", 0.75)) == 2

    assert store.metric_values(eval_id, "clip_i") == [0.75, 0.75]
    assert store.metric_values(eval_id, "dino_v1") == [0.25, 0.25]
