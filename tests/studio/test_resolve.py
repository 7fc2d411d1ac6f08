"""What the edge fills in: the embedded model, the default teacher and its steps, the default and `mini:` judges,
the default prompt writer, and the notices for what the miniature cannot draw."""

import json
import shutil

import pytest

from mini import GRID, STUDENT, TEACHER, world
from pipeline.errors import UserInputError
from pipeline.generation.generate import GenerateRequest
from pipeline.generation.weights import ModelSpec, sampling_defaults
from studio.resolve import (request_notices, resolve_captions, resolve_config, resolve_judge, resolve_model,
                            resolve_teacher, resolve_writer, teacher_steps)
from tests.pictures import EXAMPLES
from train.config import TrainConfig

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


def test_the_default_judge_is_the_shipped_miniature_judge_and_the_stand_in_is_asked_for_by_name():
    assert resolve_judge(None).name.startswith("mini-judge:") and resolve_judge("  ").name.startswith("mini-judge:")
    assert "stand-in" in resolve_judge("offline").name
    with pytest.raises(UserInputError) as refused:
        resolve_judge("claude:opus")
    assert "unknown judge 'claude:opus'" in str(refused.value) and "mini:FOLDER" in str(refused.value)


def test_a_judge_saved_under_its_former_class_name_still_loads(tmp_path):
    from mini.judge import AttributeReader

    AttributeReader().save_pretrained(str(tmp_path / "judge"))
    config = tmp_path / "judge" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "AttributeJudge"}))
    assert resolve_judge(f"mini:{tmp_path / 'judge'}").name.startswith("mini-judge:")


def test_a_blank_model_is_the_embedded_miniature_and_a_named_one_is_kept():
    embedded = resolve_model(ModelSpec())
    assert (embedded.base, embedded.dsd) == (str(TEACHER), str(STUDENT / "curated"))
    assert "miniature" in embedded.describe()
    assert sampling_defaults(embedded) == {"width": 64, "height": 64, "steps": 20}  # the miniature's own
    named = ModelSpec(base="models/flux1-dev", dsd="models/dsd")
    assert resolve_model(named) == named
    # DSD weights without a base (a training run's, say) run on the embedded base, without its student.
    run = resolve_model(ModelSpec(dsd="runs/3/weights"))
    assert (run.base, run.dsd) == (str(TEACHER), "runs/3/weights")


def test_a_blank_teacher_is_the_miniature_at_its_own_grid_size():
    assert resolve_teacher(None, None) == (str(TEACHER), (GRID, GRID), "embedded miniature teacher")
    assert resolve_teacher("models/flux1-dev", None) == ("models/flux1-dev", (1024, 1024), None)
    assert resolve_teacher(None, (288, 288))[1] == (288, 288)


def test_grids_are_drawn_at_the_teachers_own_steps(tmp_path):
    assert teacher_steps(None) == sampling_defaults(resolve_model(ModelSpec()))["steps"] == 20  # the miniature's
    assert teacher_steps("black-forest-labs/FLUX.1-dev") == 28  # a Hub id: FLUX's, without the network
    shutil.copytree(TEACHER, tmp_path / "teacher")
    (tmp_path / "teacher" / "sampling.json").write_text('{"width": 64, "height": 64, "steps": 12}')
    assert teacher_steps(str(tmp_path / "teacher")) == 12


def request(image=EXAMPLES / "mini-star.png", prompt="a creature, at sea, lit from above, in cool light", size=None):
    return GenerateRequest(image=str(image), prompt=prompt, width=size, height=size)


def test_the_miniature_says_what_it_cannot_draw_and_still_draws():
    embedded = resolve_model(ModelSpec())
    assert request_notices(embedded, request()) == [] == request_notices(embedded, request(size=64))
    words, = request_notices(embedded, request(prompt="a creature in a forest, lit from the left, in warm light"))
    assert "'forest'" in words and "'lit'" not in words
    size, = request_notices(embedded, request(size=128))
    assert "64x64" in size and "128x128" in size
    photo, words, size = request_notices(embedded, request(EXAMPLES / "cat.jpg", "a cat on a sofa", 512))
    assert "does not look like a creature" in photo and "'cat', 'sofa'" in words and "512x512" in size
    # A training run's weights on the miniature's base are the miniature too; FLUX draws all of it.
    assert len(request_notices(resolve_model(ModelSpec(dsd="runs/3/weights")), request(size=128))) == 1
    assert request_notices(ModelSpec(base="black-forest-labs/FLUX.1-dev"), request(EXAMPLES / "cat.jpg", "a cat",
                                                                                     512)) == []


def test_a_training_config_without_a_base_fine_tunes_the_embedded_base():
    assert resolve_config(TrainConfig()).base == str(TEACHER)
    assert resolve_config(TrainConfig(base="models/flux1-dev")).base == "models/flux1-dev"


def test_the_default_prompt_writer_knows_the_world_and_falls_back_to_templates():
    for spec in (None, "offline"):
        write = resolve_writer(spec)
        assert write("a green dotted star wearing a crown").subject == "green dotted star wearing a crown"
        assert write("a photo of a dog").panels[0].startswith("the dog")


def test_without_a_caption_file_the_wheel_starts_from_creatures_the_miniature_can_draw():
    name, captions = resolve_captions(8)
    assert len(set(captions)) == 8 and all(world.parse_subject(caption) is not None for caption in captions)
    assert resolve_captions(20)[1][:8] == captions  # a larger limit extends the same list
    assert len(resolve_captions(None)[1]) > 100 and name == "miniature world"
