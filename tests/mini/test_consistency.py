"""The teacher's in-context consistency (`mini.report.teacher_consistency`), the prior the student's fine-tune
builds on: read on real renders by the shipped judge, a canvas whose halves show one subject scores far above
chance, two unrelated subjects score chance, and one subject drawn everywhere earns nothing over its habit."""

import numpy as np
import pytest

from mini import JUDGE, PANEL, world
from mini.judge import IDENTITY, AttributeReader, read_attributes
from mini.report import halves_agreement

COUNT = 48  # as many canvases as the report draws


@pytest.fixture(scope="module")
def readings():
    """The judge's readings of 48 held-out subjects, each rendered in two contexts, and of the same subjects'
    second renders paired with other subjects (the list rotated by one)."""
    rng = np.random.default_rng(7)
    subjects = sorted(world.held_out(), key=lambda i: tuple(vars(i).values()))
    identities = [subjects[k] for k in rng.choice(len(subjects), COUNT, replace=False)]
    model = AttributeReader.from_pretrained(str(JUDGE)).eval()
    left = read_attributes(model, [world.render(i, world.sample_context(rng), PANEL) for i in identities])
    right = read_attributes(model, [world.render(i, world.sample_context(rng), PANEL) for i in identities])
    return left, right


def test_halves_of_one_subject_agree_far_above_chance(readings):
    left, right = readings
    result = halves_agreement(left, right)
    # The judge reads each identity attribute right about 19 times in 20 (its same/different accuracy is >= 0.95),
    # so two renders of one subject agree in at least ~0.9 of canvases; chance is about 1/values (at most 1/2).
    for x in IDENTITY:
        assert result["agree"][x] >= 0.8 and result["agree"][x] - result["chance"][x] >= 0.3, (x, result)
    assert result["all_five"] >= 0.6, result


def test_unrelated_halves_agree_only_by_chance(readings):
    left, right = readings
    result = halves_agreement(left, right[1:] + right[:1])  # each left beside another subject's render
    # 48 canvases: agreement by chance moves by about sqrt(p(1-p)/48) <= 0.07; 0.2 is three of those.
    for x in IDENTITY:
        assert abs(result["agree"][x] - result["chance"][x]) <= 0.2, (x, result)


def test_one_subject_drawn_everywhere_earns_nothing_over_its_habit(readings):
    left, _ = readings
    same = [left[0]] * COUNT  # a teacher that draws the same creature whatever it is asked
    result = halves_agreement(same, same)
    assert result["agree"] == result["chance"] == {x: 1.0 for x in IDENTITY} and result["all_five"] == 1.0


def test_copy_canvases_hold_the_reference_in_the_left_half():
    """`teacher_copy` reads the right halves of canvases drawn beside a reference; that only measures copying if
    the left half really shows the reference when the teacher is done, whatever the teacher would have drawn."""
    import torch

    from mini import TEACHER
    from mini.prompts import world_grid_prompt
    from mini.report import copy_canvases
    from pipeline.wheel.grids import Layout
    from pipeline.wheel.teacher import load_teacher

    rng = np.random.default_rng(11)
    subjects = sorted(world.held_out(), key=lambda i: tuple(vars(i).values()))
    identities = [subjects[k] for k in rng.choice(len(subjects), 4, replace=False)]
    contexts = [world.grid_contexts(rng, 2) for _ in identities]
    references = [world.render(i, c[0], PANEL) for i, c in zip(identities, contexts)]
    prompts = [world_grid_prompt(world.caption(i, None, []), Layout(1, 2), c).text for i, c in zip(identities, contexts)]
    canvases = copy_canvases(load_teacher(str(TEACHER)), references, prompts, 8,
                             [torch.Generator().manual_seed(k) for k in range(4)])
    assert all(canvas.size == (2 * PANEL, PANEL) for canvas in canvases)
    pixels = [np.asarray(r, dtype=float) for r in references]
    for k, canvas in enumerate(canvases):
        left = np.asarray(canvas.crop((0, 0, PANEL, PANEL)), dtype=float)
        own, other = np.abs(left - pixels[k]).mean(), np.abs(left - pixels[k - 1]).mean()
        # What is left is the VAE's round trip of the reference; another subject in another scene differs in most
        # pixels. A left half drawn freely by the teacher would be as far from its reference as from any other.
        assert own < other / 3, (k, own, other)
