"""The miniature's world: deterministic pictures, captions from a fixed vocabulary, held-out identities."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mini.world import (
    ATTRIBUTE_VALUES,
    ATTRIBUTE_WORDS,
    ATTRIBUTES,
    LIGHTS,
    SCENES,
    SHAPES,
    VOCABULARY,
    WARMTHS,
    Context,
    Identity,
    all_identities,
    caption,
    caption_words,
    describe_context,
    held_out,
    render,
    sample_context,
    sample_identity,
)

SUBJECT = Identity(shape="hexagon", body="blue", pattern="stripes", accent="gold", accessory="hat")
CONTEXTS = [Context(), Context(scene="grass", x=0.4, rotation=20, light="left", warmth="warm"),
            Context(scene="night", scale=0.4, light="top", warmth="cool"), Context(scene="city", y=0.6, light="right")]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_render_is_deterministic_and_sensitive_to_identity_and_context():
    assert render(SUBJECT, CONTEXTS[1]).tobytes() == render(SUBJECT, CONTEXTS[1]).tobytes()
    assert render(SUBJECT).tobytes() != render(replace(SUBJECT, body="red")).tobytes()
    assert render(SUBJECT, CONTEXTS[0]).tobytes() != render(SUBJECT, CONTEXTS[1]).tobytes()


def test_sizes_of_panels():
    assert render(SUBJECT, size=64).size == (64, 64)
    assert render(SUBJECT, size=32).size == (32, 32)
    assert render(SUBJECT).mode == "RGB"
    with pytest.raises(ValueError, match="between 8 and 64"):
        render(SUBJECT, size=128)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_every_identity_value_changes_the_picture(attribute):
    base = Identity(shape="circle", body="red", pattern="plain", accent="white", accessory="none")
    reference = pixels(render(base, CONTEXTS[0]))
    for value in ATTRIBUTE_VALUES[attribute]:
        if value != getattr(base, attribute):
            changed = pixels(render(replace(base, **{attribute: value}), CONTEXTS[0]))
            assert np.abs(changed - reference).sum(axis=-1).max() > 60, f"{attribute}={value} is invisible"


@pytest.mark.parametrize("field, values", [("scene", SCENES), ("light", LIGHTS), ("warmth", WARMTHS),
                                           ("x", (0.4,)), ("y", (0.45,)), ("scale", (0.4,)), ("rotation", (25.0,))])
def test_every_context_value_changes_the_picture(field, values):
    base = Context()
    reference = render(SUBJECT, base).tobytes()
    for value in values:
        if value != getattr(base, field):
            assert render(SUBJECT, replace(base, **{field: value})).tobytes() != reference, f"{field}={value}"


@pytest.mark.parametrize("named", [None, [], ["shape"], ["body", "accessory"], ["pattern", "accent"],
                                   ["shape", "body", "pattern"]])
def test_captions_use_the_vocabulary_and_name_exactly_the_named_attributes(named):
    rng = np.random.default_rng(3)
    for _ in range(100):
        identity, context = sample_identity(rng), sample_context(rng)
        text = caption(identity, context, named=named)
        words = caption_words(text)
        assert set(words) <= set(VOCABULARY), set(words) - set(VOCABULARY)
        mentioned = {attribute: [value for value, word in ATTRIBUTE_WORDS[attribute].items() if word in words]
                     for attribute in ATTRIBUTES}
        expected = {attribute: [getattr(identity, attribute)] if named is None or attribute in named else []
                    for attribute in ATTRIBUTES}
        assert mentioned == expected, text
        assert text.endswith(describe_context(context))


def test_attribute_words_are_unambiguous():
    words = [word for attribute in ATTRIBUTES for word in ATTRIBUTE_WORDS[attribute].values()]
    assert len(words) == len(set(words))
    context_words = {word for scene in SCENES for light in LIGHTS for warmth in WARMTHS
                     for word in caption_words(describe_context(Context(scene=scene, light=light, warmth=warmth)))}
    assert not set(words) & context_words
    assert caption(SUBJECT) == "a blue striped hexagon with gold trim wearing a hat"
    assert caption(SUBJECT, named=["accent"]) == "a creature with gold trim"


def test_vocabulary_is_sorted_unique_and_covers_every_context():
    assert VOCABULARY == sorted(set(VOCABULARY))
    for scene in SCENES:
        for light in LIGHTS:
            context = Context(scene=scene, light=light, x=0.3, y=0.7, scale=0.6, rotation=-20)
            assert set(caption_words(describe_context(context))) <= set(VOCABULARY)
    with pytest.raises(ValueError, match="unknown attributes"):
        caption(SUBJECT, named=["colour"])


def test_identity_space_and_held_out_share():
    identities = all_identities()
    assert len(identities) == len(set(identities)) == np.prod([len(v) for v in ATTRIBUTE_VALUES.values()])
    assert identities == all_identities()
    assert {i.shape for i in identities} == set(SHAPES)
    held = held_out(0.1, seed=0)
    assert held == held_out(0.1, seed=0)
    assert held <= set(identities)
    assert len(held) == round(0.1 * len(identities))
    assert len(held_out(0.25, seed=0)) == round(0.25 * len(identities))
    assert held != held_out(0.1, seed=1)


def test_sampling_is_seeded_and_never_returns_held_out_identities():
    rng = np.random.default_rng(0)
    drawn = [sample_identity(rng) for _ in range(3000)]
    assert not set(drawn) & held_out()
    assert len(set(drawn)) > 1000
    again = np.random.default_rng(0)
    assert drawn[:20] == [sample_identity(again) for _ in range(20)]
    rng = np.random.default_rng(0)
    with_held = {sample_identity(rng, exclude_held_out=False) for _ in range(3000)}
    assert with_held & held_out()
    assert sample_context(np.random.default_rng(5)) == sample_context(np.random.default_rng(5))


def test_mask_marks_where_the_subject_is():
    from mini.world import render_with_mask

    panel, mask = render_with_mask(SUBJECT, Context(x=0.3, y=0.6, scale=0.4))
    assert panel.tobytes() == render(SUBJECT, Context(x=0.3, y=0.6, scale=0.4)).tobytes()
    coverage = np.asarray(mask) > 128
    assert 0.03 < coverage.mean() < 0.4
    rows, columns = np.nonzero(coverage)
    assert columns.mean() < 32 and rows.mean() > 28  # left of centre, lower half, as placed


def test_world_captions_parse_back_to_the_attributes_they_name():
    from mini.world import parse_subject

    for named in ([], ["body"], ["shape", "accent", "accessory"], list(ATTRIBUTES)):
        text = caption(SUBJECT, Context(), named)
        assert parse_subject(text) == {a: getattr(SUBJECT, a) for a in named}
    assert parse_subject("a photo of a dog") is None
    assert parse_subject("") is None


def test_a_narrow_spread_centres_the_subject_and_keeps_the_rest_of_the_draw():
    wide = [sample_context(np.random.default_rng(seed)) for seed in range(50)]
    narrow = [sample_context(np.random.default_rng(seed), spread=0.2) for seed in range(50)]
    assert [(c.scene, c.light, c.warmth) for c in wide] == [(c.scene, c.light, c.warmth) for c in narrow]
    assert max(abs(c.rotation) for c in narrow) <= 6 < max(abs(c.rotation) for c in wide)
    assert max(abs(c.x - 0.5) for c in narrow) <= 0.031 < max(abs(c.x - 0.5) for c in wide)
    # the subject stays whole in the panel: its mask touches no edge
    from mini.world import render_with_mask

    for context in narrow[:10]:
        mask = np.asarray(render_with_mask(SUBJECT, context)[1]) > 128
        assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
