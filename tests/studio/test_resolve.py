"""What the edge fills in: the embedded model, the default teacher, `mini:` judges, the default prompt writer."""

import pytest

from mini import world
from pipeline.errors import UserInputError
from studio.resolve import resolve_judge

SUBJECT = world.Identity(shape="star", body="green", pattern="dots", accent="black", accessory="crown")


def test_the_wheel_curates_with_the_miniature_judge_spec(tmp_path):
    from mini.judge import AttributeReader

    AttributeReader().save_pretrained(str(tmp_path / "judge"))
    judge = resolve_judge(f"mini:{tmp_path / 'judge'}")
    verdict = judge.judge(world.render(SUBJECT), world.render(SUBJECT, world.Context(scene="sea")))
    assert verdict.judge.startswith("mini-judge:") and verdict.caption_target.startswith("a creature, ")
    with pytest.raises(UserInputError, match="no miniature judge"):
        resolve_judge(f"mini:{tmp_path / 'nowhere'}")
    AttributeReader(stem=16).save_pretrained(str(tmp_path / "other"))  # weights that do not fit their config
    config = tmp_path / "other" / "config.json"
    config.write_text(config.read_text().replace('"stem": 16', '"stem": 24'))
    with pytest.raises(UserInputError, match="cannot load the miniature judge"):
        resolve_judge(f"mini:{tmp_path / 'other'}")
