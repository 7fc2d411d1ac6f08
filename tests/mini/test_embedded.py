"""What the embedded miniature tells its users: prompts in its words, and when a reference is not of its world."""

import numpy as np
import pytest

from mini import world
from mini.embedded import CHANGES, reference_notice, world_prompt
from pipeline.errors import UserInputError
from pipeline.images import load_image
from tests.pictures import EXAMPLES

PHOTOS = ["cat.jpg", "coffee.jpg", "astronaut.jpg"]


def test_prompts_are_written_in_the_worlds_words():
    assert world_prompt("grass", "front", "neutral") == "a creature, on grass, lit from the front, in neutral light"
    assert world_prompt("city", "right", "cool", "body:blue").startswith("a blue creature, in a city, ")
    for label, change in CHANGES:  # every change names its value in words the tokenizer knows
        prompt = world_prompt("sea", "top", "warm", change)
        assert prompt.startswith(label) and set(world.caption_words(prompt)) <= set(world.VOCABULARY)
    assert len(CHANGES) == sum(len(values) for values in world.ATTRIBUTE_VALUES.values())
    with pytest.raises(UserInputError, match="forest"):
        world_prompt("forest", "left", "warm")
    with pytest.raises(UserInputError, match="accessory:hat"):
        world_prompt("sea", "left", "warm", "accessory:wings")


def test_a_photo_gets_a_notice_and_a_creature_of_the_world_does_not():
    rng = np.random.default_rng(2024)
    renders = [world.render(identity, world.sample_context(rng))
               for identity in sorted(world.held_out(), key=str)[:40]]  # held-out creatures, anywhere in the world
    assert [reference_notice(render) for render in renders] == [None] * len(renders)
    for name in PHOTOS:
        notice = reference_notice(load_image(EXAMPLES / name))
        assert notice and "FLUX.1-dev" in notice, name
