"""Reference captions: the built-in set, real caption files of every format, the LLM filter."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import UserInputError
from pipeline.providers import OpenAICompatibleProvider, ProviderError
from pipeline.wheel.captions import (
    CAPTION_FILTER_SCHEMA,
    builtin_captions,
    filter_captions,
    read_captions,
)
from tests.fake_api import request_texts


@pytest.fixture
def provider(fake_api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-captions")
    return OpenAICompatibleProvider("gpt-test", base_url=fake_api.openai_base_url, max_retries=0)


def laion_table(captions):
    """Rows shaped like a LAION-400M parquet shard: the caption is TEXT among other columns."""
    n = len(captions)
    return pa.table({
        "SAMPLE_ID": pa.array(range(n), pa.int64()),
        "URL": [f"https://images.example.com/{i}.jpg" for i in range(n)],
        "TEXT": pa.array(captions, pa.string()),
        "HEIGHT": pa.array([512] * n, pa.int32()),
        "WIDTH": pa.array([768] * n, pa.int32()),
        "LICENSE": ["?"] * n,
        "NSFW": ["UNLIKELY"] * n,
        "similarity": pa.array([0.31] * n, pa.float64()),
    })


def test_builtin_set_is_large_distinct_and_tidy():
    captions = builtin_captions()

    assert len(captions) >= 250
    assert len(set(captions)) == len(captions)
    assert all(caption and caption == caption.strip() for caption in captions)
    assert len({caption.casefold() for caption in captions}) == len(captions)


def test_txt_is_one_caption_per_line_tidied_in_order(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("  a red fox in the snow \n\nblue ceramic mug\na red fox in the snow\n   \nplush bunny\n",
                    encoding="utf-8")

    assert read_captions(path) == ["a red fox in the snow", "blue ceramic mug", "plush bunny"]
    assert read_captions(path, limit=2) == ["a red fox in the snow", "blue ceramic mug"]


def test_csv_finds_the_caption_column_among_others(tmp_path):
    path = tmp_path / "laion.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "caption", "width"])
        writer.writerow(["http://x/1.jpg", "teddy bear, with a red bow tie", 512])
        writer.writerow(["http://x/2.jpg", "a vintage camera\non a table", 640])
        writer.writerow(["http://x/3.jpg", "", 640])

    assert read_captions(path) == ["teddy bear, with a red bow tie", "a vintage camera\non a table"]
    assert read_captions(path, column="url") == ["http://x/1.jpg", "http://x/2.jpg", "http://x/3.jpg"]


def test_csv_with_an_upper_case_text_column(tmp_path):
    path = tmp_path / "shard.csv"
    path.write_text("SAMPLE_ID,TEXT\n1,golden retriever puppy\n2,red vintage convertible\n", encoding="utf-8")

    assert read_captions(path) == ["golden retriever puppy", "red vintage convertible"]


def test_jsonl_reads_the_caption_key_and_skips_nulls(tmp_path):
    path = tmp_path / "captions.jsonl"
    rows = [{"text": "cartoon penguin mascot", "id": 1}, {"text": None, "id": 2},
            {"text": "anime girl with silver hair", "id": 3}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n", encoding="utf-8")

    assert read_captions(path) == ["cartoon penguin mascot", "anime girl with silver hair"]


def test_parquet_reads_the_laion_text_column(tmp_path):
    path = tmp_path / "part-00000.parquet"
    captions = [f"handmade ceramic bowl number {i}" for i in range(3000)] + ["", "handmade ceramic bowl number 5"]
    pq.write_table(laion_table(captions), path, row_group_size=500)

    assert read_captions(path) == captions[:3000]
    assert read_captions(path, limit=10) == captions[:10]
    assert read_captions(path, column="URL", limit=1) == ["https://images.example.com/0.jpg"]


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_captions(tmp_path / "nope.txt")


def test_an_unknown_format_names_the_ones_that_work(tmp_path):
    path = tmp_path / "captions.xlsx"
    path.write_bytes(b"PK\x03\x04")

    with pytest.raises(UserInputError, match=r"\.txt, \.csv, \.jsonl, \.parquet"):
        read_captions(path)


@pytest.mark.parametrize("name, content", [
    ("empty.txt", ""),
    ("blank.txt", "\n   \n\n"),
    ("header.csv", "url,caption\n"),
    ("empty.jsonl", "\n"),
])
def test_a_file_without_captions_is_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    with pytest.raises(UserInputError, match="holds no captions"):
        read_captions(path)


def test_an_empty_parquet_table_is_refused(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(laion_table([]), path)

    with pytest.raises(UserInputError, match="holds no captions"):
        read_captions(path)


def test_a_missing_column_names_the_columns_there_are(tmp_path):
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("url,alt\nhttp://x/1.jpg,a fox\n", encoding="utf-8")
    parquet_path = tmp_path / "data.parquet"
    pq.write_table(laion_table(["a fox"]), parquet_path)

    with pytest.raises(UserInputError) as no_default:
        read_captions(csv_path)
    with pytest.raises(UserInputError) as wrong_name:
        read_captions(parquet_path, column="caption")

    assert "its columns are: url, alt" in str(no_default.value) and "--column" in str(no_default.value)
    assert "no column 'caption'" in str(wrong_name.value)
    assert "SAMPLE_ID, URL, TEXT, HEIGHT" in str(wrong_name.value)


def test_a_number_column_is_not_taken_for_captions(tmp_path):
    path = tmp_path / "data.parquet"
    pq.write_table(laion_table(["a fox"]), path)

    with pytest.raises(UserInputError, match="not text"):
        read_captions(path, column="similarity")


def test_a_bad_jsonl_line_is_named_by_number(tmp_path):
    path = tmp_path / "captions.jsonl"
    path.write_text('{"caption": "a fox"}\n{"caption": "a mug"}\n{"caption": "a car",\n', encoding="utf-8")

    with pytest.raises(UserInputError, match="line 3 is not a JSON object"):
        read_captions(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_parquet_file_is_refused_in_one_line(tmp_path, damage):
    path = tmp_path / "part.parquet"
    pq.write_table(laion_table(["a fox", "a mug"] * 50), path)
    data = path.read_bytes()
    path.write_bytes(b"this is not parquet at all" * 10 if damage == "garbage" else data[: len(data) // 2])

    with pytest.raises(UserInputError) as caught:
        read_captions(path)

    message = str(caught.value)
    assert "cannot be read as a parquet file" in message and "\n" not in message


def test_text_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait in a cup\n".encode("latin-1"))

    with pytest.raises(UserInputError, match="not UTF-8"):
        read_captions(path)


def verdict_reply(keep_every=2):
    """Keep every `keep_every`-th caption of whatever list the request numbers."""
    def reply(body):
        listing = request_texts(body)[-1].splitlines()[1:]
        return json.dumps({"verdicts": [
            {"index": i, "keep": i % keep_every == 1, "reason": f"caption {i}"}
            for i in range(1, len(listing) + 1)
        ]})
    return reply


def test_filter_batches_captions_and_keeps_their_order(provider, fake_api):
    captions = [f"plush toy number {i}" for i in range(25)]
    fake_api.reply = verdict_reply()

    verdicts = filter_captions(provider, captions)

    assert [caption for caption, _, _ in verdicts] == captions
    assert [keep for _, keep, _ in verdicts] == [i % 20 % 2 == 0 for i in range(25)]
    assert verdicts[21][2] == "caption 2"
    assert len(fake_api.requests) == 2  # 20 + 5
    body = fake_api.requests[0].json
    assert body["response_format"]["json_schema"]["schema"] == CAPTION_FILTER_SCHEMA
    system, listing = request_texts(body)
    assert "identity" in system
    assert listing.splitlines()[1] == "1. plush toy number 0"
    assert listing.splitlines()[-1] == "20. plush toy number 19"


def test_an_invalid_verdict_reply_is_asked_again(provider, fake_api):
    replies = iter(["not json", json.dumps({"verdicts": [{"index": 1, "keep": True, "reason": "a fox"}]}),
                    json.dumps({"verdicts": [{"index": 1, "keep": True, "reason": "a fox"},
                                             {"index": 2, "keep": False, "reason": "no subject"}]})])
    fake_api.reply = lambda body: next(replies)

    verdicts = filter_captions(provider, ["a red fox", "abstract colors"])

    assert verdicts == [("a red fox", True, "a fox"), ("abstract colors", False, "no subject")]
    assert len(fake_api.requests) == 3


def test_replies_that_stay_invalid_end_in_a_provider_error(provider, fake_api):
    fake_api.reply = lambda body: json.dumps({"verdicts": "yes"})

    with pytest.raises(ProviderError) as caught:
        filter_captions(provider, ["a red fox"])

    assert "openai:gpt-test at " in str(caught.value) and "sent 3 invalid caption verdicts" in str(caught.value)
    assert len(fake_api.requests) == 3
