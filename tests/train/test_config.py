"""Training configs: YAML round trip, and bad configs refused before anything starts."""

import pytest

from pipeline.errors import UserInputError
from train.config import RELEASED_TARGETS, TrainConfig


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1")  # existence is what the config checks; the trainer reads it
    return str(path)


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
