"""The Generate tab's history in the store: recorded, read back, listed newest first, searched."""

from datetime import datetime, timedelta

import pytest

from pipeline.store import Store


def generation(**overrides):
    fields = dict(
        mode="subject",
        prompt="A photo of the toy on a beach",
        prompt_used="Left: the toy. Right: a photo of the toy on a beach",
        model="FLUX.1-dev + DSD (bf16)",
        params={"steps": 28, "guidance": 3.5, "image_guidance": 1.0, "text_guidance": 3.5,
                "size": [512, 512], "seeds": [7, 8], "memory_mode": "offload", "dtype": "bfloat16"},
        seed=7,
        num_images=2,
        reference_path="/data/refs/toy.png",
        output_paths=["/data/out/1.png", "/data/out/2.png"],
        timings={"load_s": 12.5, "encode_s": 0.4, "denoise_s": 9.1, "decode_s": 0.3,
                 "total_s": 22.3, "per_step_s": 0.325},
        notices=["reference resized to 512x512"],
    )
    return {**fields, **overrides}


def test_record_then_read_back_decodes_json(tmp_path):
    store = Store(tmp_path / "data")
    fields = generation()

    row = store.get_generation(store.record_generation(**fields))

    for name, value in fields.items():
        assert row[name] == value
    assert row["status"] == "ok" and row["error"] is None
    assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(0)
    assert store.path == tmp_path / "data" / "dsd.sqlite" and store.path.is_file()


def test_failed_generation_keeps_its_error(tmp_path):
    store = Store(tmp_path)
    gid = store.record_generation(**generation(output_paths=[], status="error", error="CUDA out of memory"))

    row = store.get_generation(gid)

    assert (row["status"], row["error"], row["output_paths"]) == ("error", "CUDA out of memory", [])


def test_list_is_newest_first_with_limit_and_offset(tmp_path):
    store = Store(tmp_path)
    ids = [store.record_generation(**generation(prompt=f"prompt {i}")) for i in range(5)]

    assert [row["id"] for row in store.list_generations()] == ids[::-1]
    assert [row["id"] for row in store.list_generations(limit=2, offset=1)] == [ids[3], ids[2]]
    assert store.list_generations(limit=10, offset=5) == []
    assert store.list_generations()[0]["params"]["steps"] == 28
    assert len(store.list_generations()) == 5


def test_search_matches_prompt_substring_ignoring_case(tmp_path):
    store = Store(tmp_path)
    beach = store.record_generation(**generation(prompt="A toy on a BEACH"))
    store.record_generation(**generation(prompt="A toy in a forest", prompt_used="beach"))
    percent = store.record_generation(**generation(prompt="100% cotton beach towel"))

    assert [row["id"] for row in store.list_generations(search="beach")] == [percent, beach]
    assert [row["id"] for row in store.list_generations(search="0% c")] == [percent]
    assert store.list_generations(search="%") == store.list_generations(search="100%")
    assert len(store.list_generations(search="Beach")) == 2
    assert store.list_generations(search="mountain") == []
    assert len(store.list_generations(search="")) == 3


@pytest.mark.parametrize("params", [
    {"steps": 28, "api_key": "sk-live-123"},
    {"HF_TOKEN": "hf_abc"},
    {"provider": {"name": "openai", "client_secret": "x"}},
    {"logins": [{"password": "hunter2"}]},
])
def test_secret_looking_params_are_refused(tmp_path, params):
    store = Store(tmp_path)

    with pytest.raises(ValueError, match="secrets"):
        store.record_generation(**generation(params=params))

    assert store.list_generations() == []


def test_bad_fields_are_refused(tmp_path):
    store = Store(tmp_path)

    with pytest.raises(ValueError, match="prompt_typo"):
        store.record_generation(**generation(prompt_typo="x"))
    with pytest.raises(ValueError, match="id"):
        store.record_generation(**generation(id=5))
    with pytest.raises(ValueError, match="status"):
        store.record_generation(**generation(status="done"))
    assert store.list_generations() == []


def test_a_missing_generation_raises_key_error(tmp_path):
    store = Store(tmp_path)
    known = store.record_generation(**generation())

    with pytest.raises(KeyError, match="generations"):
        store.get_generation(known + 1)
