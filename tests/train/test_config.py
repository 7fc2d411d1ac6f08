"""Training configs: YAML round trip, and bad configs refused before anything starts."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import UserInputError
from pipeline.store import Store
from train.config import RELEASED_TARGETS, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "assets" / "pairs" / "examples.parquet"  # the cpu-smoke preset's pairs


@pytest.fixture
def data():
    return str(EXAMPLES)


def test_defaults_are_the_papers(data):
    config = TrainConfig(data=data)
    config.validate()
    assert (config.rank, config.learning_rate, config.half_weights) == (512, 1e-4, (1.0, 1.0))
    assert config.target_modules == list(RELEASED_TARGETS)


def test_yaml_round_trip(data, tmp_path):
    config = TrainConfig(data=data, rank=16, steps=20, half_weights=(0.5, 1.0), schedule="cosine")
    config.to_yaml(tmp_path / "run.yaml")
    assert TrainConfig.from_yaml(tmp_path / "run.yaml") == config


@pytest.mark.parametrize("change, phrase", [
    ({"rank": 0}, "rank must be at least 1"),
    ({"data": "/no/such/pairs.parquet"}, "is not a file"),
    ({"schedule": "sawtooth"}, "schedule must be one of"),
    ({"resolution": 500}, "multiples of 16"),
    ({"condition_dropout": 1.5}, "probabilities"),
    ({"half_weights": (0, 0)}, "not both zero"),
    ({"learning_rat": 1e-4}, "unknown setting(s) learning_rat"),
])
def test_bad_configs_are_refused_with_one_line(change, phrase, data):
    with pytest.raises(UserInputError) as refused:
        TrainConfig.from_dict({"data": data, **change})
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_or_broken_yaml_file_is_one_line(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("rank: [1,\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


def not_pictures(tmp_path) -> str:
    """A parquet in the pairs layout whose pictures are text."""
    path = tmp_path / "text.parquet"
    text = {"bytes": b"a shopping list, not a picture", "path": None}
    pq.write_table(pa.table({"image": [text], "conditioning": [text], "caption": ["a list"]}), path)
    return str(path)


BAD_VALUES = [
    pytest.param({"rank": "eight"}, "rank must be a whole number, got 'eight'", id="rank as text"),
    pytest.param({"steps": "1e9999"}, "steps must be a whole number, got '1e9999'", id="steps past a float"),
    pytest.param({"steps": 2.5}, "steps must be a whole number, got 2.5", id="fractional steps"),
    pytest.param({"half_weights": 5}, "half_weights must be two numbers, such as [1.0, 1.0], got 5", id="one half weight"),
    pytest.param({"gradient_checkpointing": 5}, "gradient_checkpointing must be true or false, got 5", id="bool as number"),
    pytest.param({"target_modules": "to_q"}, "target_modules must be a list of text", id="modules as text"),
    pytest.param({"learning_rate": float("nan")}, "learning_rate must be a finite number, got nan", id="nan learning rate"),
    pytest.param({"learning_rate": "1e9999"}, "learning_rate must be a finite number, got inf", id="inf learning rate"),
    pytest.param({"half_weights": [1.0, float("nan")]}, "half_weights[1] must be a finite number", id="nan half weight"),
    pytest.param({"samples": [{"image": str(ROOT / "README.md"), "prompt": "a cat"}]},
                 "README.md: this file is not a picture", id="sample that is not a picture"),
    pytest.param({"samples": [{"image": str(ROOT / "assets" / "examples" / "cat.jpg")}]}, "needs an image file and a prompt",
                 id="sample without a prompt"),
    pytest.param({"data": str(ROOT / "README.md")}, "is not a readable parquet file", id="data not a parquet"),
]


@pytest.mark.parametrize(("change", "phrase"), BAD_VALUES)
def test_wrong_types_and_values_are_refused_at_validation_in_one_line(change, phrase, data):
    with pytest.raises(UserInputError) as refused:
        TrainConfig.from_dict({"data": data, **change})
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


def test_a_parquet_of_non_pictures_is_refused_at_validation(tmp_path):
    with pytest.raises(UserInputError, match="row 0, conditioning: this file is not a picture"):
        TrainConfig.from_dict({"data": not_pictures(tmp_path)})


def test_yaml_numbers_without_a_dot_are_numbers(data, tmp_path):
    """YAML 1.1 reads 1e-4 as text; it is the learning rate everyone writes."""
    (tmp_path / "run.yaml").write_text(f"data: {data}\nlearning_rate: 1e-4\n")
    config = TrainConfig.from_yaml(tmp_path / "run.yaml")
    config.validate()
    assert config.learning_rate == 1e-4


BAD_FILES = [
    pytest.param(b"rank: eight\n", "rank must be a whole number, got 'eight'", id="rank as text"),
    pytest.param(b"steps: 1e9999\n", "steps must be a whole number, got '1e9999'", id="steps past a float"),
    pytest.param(b"half_weights: 5\n", "half_weights must be two numbers", id="one half weight"),
    pytest.param(b"learning_rate: .nan\n", "learning_rate must be a finite number, got nan", id="nan learning rate"),
    pytest.param(b"rank: 8\ncaption: caf\xe9\n", "is not UTF-8 text (byte 20): save it as UTF-8", id="latin-1 file"),
    pytest.param(b"- rank\n- 8\n", "expected settings by name (a YAML mapping), got list", id="a list"),
]


@pytest.mark.parametrize(("content", "phrase"), BAD_FILES)
def test_a_bad_config_file_is_one_line_and_queues_no_run(content, phrase, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-m", "studio.cli", "train", "launch", "--config", str(config),
                             "--data", str(EXAMPLES), "--home", str(home)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, env=os.environ)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and phrase in result.stderr, result.stderr
    assert Store(home).runs() == [] and Store(home).jobs() == []
