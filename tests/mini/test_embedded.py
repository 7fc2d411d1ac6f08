"""What the embedded miniature tells its users: prompts in its words, and when a reference, a word or a size is not
of its world."""

import numpy as np
import pytest

from mini import TEACHER, world
from mini.embedded import EXAMPLES as MINI_EXAMPLES
from mini.embedded import CHANGES, prompt_notice, reference_notice, size_notice, unknown_words, world_prompt
from mini.prompts import WorldPromptWriter
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


def test_words_outside_the_world_are_named_once_and_its_own_words_never():
    assert unknown_words("A creature in a FOREST, lit from the left by the moon; forest!") == ["forest", "moon"]
    # Function words, punctuation and the light and accessory phrases are the world's own.
    assert unknown_words("a creature wearing a hat, under a night sky, lit from above, in warm light.") == []
    notice = prompt_notice("a striped star in a forest near a tree")
    assert "'forest', 'near', 'tree'" in notice and "'star'" not in notice and "'a'" not in notice
    assert "FLUX.1-dev" in notice and "--base" in notice  # how to switch
    assert "and 2 more" in prompt_notice("one two three four five six seven eight nine ten")
    rng = np.random.default_rng(7)  # the examples, the world's captions and the wheel's grid prompts
    captions = [world.caption(world.sample_identity(rng), world.sample_context(rng)) for _ in range(50)]
    prompts = [example.prompt for example in MINI_EXAMPLES] + captions + [
        WorldPromptWriter()(caption).text for caption in captions[:20]]
    assert [prompt_notice(prompt) for prompt in prompts] == [None] * len(prompts)


def test_the_words_it_names_are_those_its_tokenizer_cannot_read():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TEACHER), subfolder="tokenizer_2")
    prompt = "A red creature in a Forest, lit from the left by a lantern: wearing a crown (at dusk)!"
    words = [word for word, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(prompt.lower())]
    unread = [word for word in words if tokenizer.convert_tokens_to_ids(word) == tokenizer.unk_token_id]
    assert ")!" in unread  # punctuation it has no token for, which no notice names
    assert unknown_words(prompt) == [word for word in unread if word.isalnum()] == ["forest", "lantern", "dusk"]


def test_a_size_other_than_its_own_gets_a_notice():
    assert size_notice((64, 64), (64, 64)) is None
    notice = size_notice((128, 128), (64, 64))
    assert "64x64" in notice and "128x128" in notice and "FLUX.1-dev" in notice
    assert "64x128" in size_notice((64, 128), (64, 64))
