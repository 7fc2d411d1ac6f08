"""The miniature as it ships in assets/mini: the teacher and students load through the ordinary
loading paths and draw at their sizes, the student is the embedded default, and the report on the
shipped weights reproduces the figures in report.json and the README."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mini import ASSETS, GRID, JUDGE, PANEL, TEACHER, world
from pipeline.wheel.grids import panel_problem, split_grid

ROOT = Path(__file__).resolve().parents[2]
# A held-out subject (never in any training set of the miniature), as in the Generate tab's examples.
SUBJECT = world.Identity(shape="star", body="purple", pattern="plain", accent="white", accessory="hat")


def shipped_report() -> dict:
    return json.loads((ASSETS / "report.json").read_text())


def standard_error(std: float, seeds: int) -> float:
    """Of a mean over `seeds` evaluation seeds whose spread across seeds is `std`."""
    return std / math.sqrt(seeds)


def separated(a: dict, b: dict, seeds: int, key: str = "cp_pf") -> bool:
    """Two rows whose figures differ by more than twice the standard error of their difference, from the
    spread across seeds the report measured: an ordering the seeds support, not one a reseed could flip."""
    return abs(a[key] - b[key]) > 2 * math.hypot(standard_error(a[f"{key}_std"], seeds), standard_error(b[f"{key}_std"], seeds))


def rerun_tolerance(row: dict, report: dict) -> float:
    """How far a rerun on the same seeds and items may land from a shipped CP·PF (on this machine it lands on
    it): other CPU kernels flip a reading here and there, which moves a figure by far less than a new seed
    does. So: the standard error over the seeds, and never less than one item's whole score in one seed
    (1 / (items x seeds)), or a single item that reads differently would fail it."""
    return max(standard_error(row["cp_pf_std"], report["seeds"]), 1 / (report["items_per_seed"] * report["seeds"]))


@pytest.fixture(scope="module")
def judge_model():
    from mini.judge import AttributeReader

    return AttributeReader.from_pretrained(str(JUDGE)).eval()


def test_the_shipped_weights_fit_the_budget():
    size = sum(path.stat().st_size for path in ASSETS.rglob("*") if path.is_file())
    assert size <= 30 * 2**20, size / 2**20


def test_shipped_teacher_draws_grids_the_wheel_can_cut():
    from pipeline.wheel.prompts import OfflinePromptWriter
    from pipeline.wheel.teacher import load_teacher

    teacher = load_teacher(str(TEACHER))
    assert teacher.true_cfg == 4  # its sampling.json
    grid = teacher(OfflinePromptWriter().write("a purple star wearing a hat").text, GRID, GRID, steps=12,
                   guidance=3.5, seed=0)
    assert grid.size == (GRID, GRID)
    panels = split_grid(grid)
    assert len(panels) == 4  # cut where the teacher drew its gutters: within a few pixels of the layout's
    assert all(abs(side - PANEL) <= 4 for panel in panels for side in panel.image.size), [p.image.size for p in panels]
    assert sum(panel_problem(panel.image) is None for panel in panels) >= 3


def test_the_embedded_default_is_the_curated_student_at_its_own_size(judge_model):
    """No model named: the generator is the teacher plus the curated student, 64 px and 20 steps. It
    draws the prompt's scene, and the reference shows: a held-out purple star comes out purple more often
    than the teacher draws purple from the same words (the report measures the rest, on 144 items)."""
    from mini.embedded import with_embedded
    from mini.judge import read_attributes
    from pipeline.generation.weights import ModelSpec, load_generator, sampling_defaults
    from pipeline.wheel.teacher import load_teacher

    spec = with_embedded(ModelSpec())
    assert sampling_defaults(spec) == {"width": PANEL, "height": PANEL, "steps": 20}
    pipe = load_generator(spec)
    assert pipe.load_report.lora_modules > 0 and "miniature" in spec.describe()
    reference = world.render(SUBJECT, world.Context(scene="studio"))
    prompt = "a creature, in a desert, lit from the left, in warm light"
    seeds = lambda: [torch.Generator().manual_seed(k) for k in range(8)]  # noqa: E731
    out = pipe([reference] * 8, [prompt] * 8, height=PANEL, width=PANEL, num_inference_steps=20, generator=seeds()).images
    assert [image.size for image in out] == [(PANEL, PANEL)] * 8
    student = read_attributes(judge_model, out)
    teacher = read_attributes(judge_model, load_teacher(str(TEACHER)).draw([prompt] * 8, PANEL, PANEL, 20, 3.5, seeds()))
    assert np.mean([r["scene"] == "desert" for r in student]) >= 0.5, student
    purple = lambda readings: sum(r["body"] == SUBJECT.body for r in readings)  # noqa: E731
    assert purple(student) >= 3 and purple(student) > purple(teacher), (student, teacher)


def test_the_studios_example_references_are_the_worlds_renders():
    from PIL import Image

    from mini.embedded import EXAMPLES

    assert [example.file for example in EXAMPLES] == ["mini-star.png", "mini-circle.png", "mini-triangle.png"]
    assert EXAMPLES[0].identity == SUBJECT
    for example in EXAMPLES:
        assert example.identity in world.held_out()
        with Image.open(example.path) as shipped:
            assert shipped.convert("RGB").tobytes() == world.render(example.identity, example.context, PANEL).tobytes()
        assert set(world.caption_words(example.prompt)) <= set(world.VOCABULARY), example.prompt  # words it was trained on


# The whole report rerun on the shipped weights: about 3.5 minutes on one busy core, past the suite's 600 s guard
# against hangs when two trainings share the machine (it took over 600 s so, issue 14); 1,200 s still catches a hang.
@pytest.mark.timeout(1200)
def test_report_on_shipped_weights_reproduces_the_shipped_figures():
    from mini.report import ROWS, run_report

    shipped = shipped_report()
    result = run_report(seeds=shipped["seeds"], per_mode=shipped["items_per_seed"] // 3, log=lambda _: None)
    assert [row["name"] for row in result["rows"]] == list(ROWS)
    for row, expected in zip(result["rows"], shipped["rows"]):
        tolerance = rerun_tolerance(expected, shipped)
        # CP and PF may move by what would move CP·PF by its tolerance (d(CP·PF) = PF dCP + CP dPF).
        for key, allowed in (("cp_pf", tolerance), ("cp", tolerance / expected["pf"]), ("pf", tolerance / expected["cp"])):
            assert abs(row[key] - expected[key]) <= allowed, (row["name"], key, row[key], expected[key], allowed)
    # Every ordering the shipped seeds support holds in the rerun (the two students swapped would not).
    rerun = {row["name"]: row for row in result["rows"]}
    for a in shipped["rows"]:
        for b in shipped["rows"]:
            if a["cp_pf"] > b["cp_pf"] and separated(a, b, shipped["seeds"]):
                assert rerun[a["name"]]["cp_pf"] > rerun[b["name"]]["cp_pf"], (a["name"], b["name"], rerun)
    assert result["judge_accuracy"] == shipped["judge_accuracy"] >= 0.95
    for name, value in shipped["teacher_singles"]["by_attribute"].items():  # 96 panels: 0.05 is about 5 readings
        assert abs(result["teacher_singles"]["by_attribute"][name] - value) <= 0.05, (name, result["teacher_singles"])
    for part in ("agree", "chance"):  # 48 canvases read twice: 0.1 is about five canvases' readings
        for name, value in shipped["teacher_consistency"][part].items():
            assert abs(result["teacher_consistency"][part][name] - value) <= 0.1, (name, result["teacher_consistency"])
    for part in ("copied", "chance"):  # 48 right halves read once: 0.1 is about five readings
        for name, value in shipped["teacher_copy"][part].items():
            assert abs(result["teacher_copy"][part][name] - value) <= 0.1, (name, result["teacher_copy"])
    for name, found in shipped["examples"]["mean"].items():  # 4 pictures: 0.5 is two readings
        assert abs(result["examples"]["mean"][name] - found) <= 0.5, (name, result["examples"])


def test_the_shipped_table_shows_what_the_readme_claims_beyond_the_seed_spread():
    """The README's claims on the table, read from report.json, each against the spread across seeds: copying
    the reference keeps identity and follows almost nothing, and scores above both students."""
    shipped = shipped_report()
    rows, seeds = {row["name"]: row for row in shipped["rows"]}, shipped["seeds"]
    copy, teacher = rows["copy_reference"], rows["teacher_text"]
    others = [row for name, row in rows.items() if name != "copy_reference"]
    assert all(copy["cp"] > row["cp"] and copy["pf"] < row["pf"] for row in others), rows
    assert all(teacher["pf"] > row["pf"] for row in others + [copy] if row is not teacher), rows
    for student in ("student_uncurated", "student_curated"):
        assert copy["cp_pf"] > rows[student]["cp_pf"] and separated(copy, rows[student], seeds), (student, rows)
    # Curated above uncurated is the paper's claim, and not asserted here yet: on crisp renders the shipped gap
    # (CP·PF 0.203 against 0.184) is inside the spread (issue 14). A gap the seeds support the wrong way fails.
    curated, uncurated = rows["student_curated"], rows["student_uncurated"]
    assert not (curated["cp_pf"] < uncurated["cp_pf"] and separated(curated, uncurated, seeds)), (curated, uncurated)


def test_on_the_teachers_own_pictures_curation_is_worth_more_than_the_seed_spread():
    """teacher_domain.json, the README's 'curation is worth 0.067': the curated student keeps more of the
    reference's identity than the uncurated one, and both more than the caption alone, each by more than twice
    the standard error of the difference; the curated pairs' own targets are the ceiling."""
    domain = json.loads((ASSETS / "teacher_domain.json").read_text())
    rows, seeds = {row["name"]: row for row in domain["rows"]}, domain["seeds"]
    assert seeds >= 2, "one seed measures no spread"
    curated, uncurated, teacher = rows["student_curated"], rows["student_uncurated"], rows["teacher_text"]
    for better, worse in ((curated, uncurated), (curated, teacher), (uncurated, teacher)):
        assert better["kept"] > worse["kept"] and separated(better, worse, seeds, key="kept"), (better, worse)
    assert rows["curated_target"]["kept"] >= max(row["kept"] for row in rows.values())


@pytest.mark.xfail(strict=True, reason="issue 14: the shipped miniature finds 1.00, 1.75 and 0.75 of the 5 (see "
                                       "assets/mini/report.json); this mark goes when weights that keep identity ship")
def test_the_embedded_default_keeps_its_examples_identity():
    """The Generate tab's three examples at the tab's defaults (the shipped report generates them through
    `generate`, and the test above holds it to a rerun): over 4 seeds, the judge finds at least 4 of the
    reference's 5 identity attributes on average (in the instruct example the fifth is the one it changes)."""
    examples = shipped_report()["examples"]
    assert examples["seeds"] >= 4 and len(examples["mean"]) == 3
    assert all(mean >= 4 for mean in examples["mean"].values()), examples["mean"]


def test_readme_quotes_the_shipped_figures():
    readme = (ROOT / "README.md").read_text()
    shipped = shipped_report()
    for row in shipped["rows"]:
        line = next(line for line in readme.splitlines() if line.startswith(f"| {row['name']} |"))
        assert re.search(rf"\| {row['cp_pf']:.3f} \| {row['cp_pf_std']:.3f} \|", line), line
    assert f"{shipped['judge_accuracy']:.3f}" in readme
    wheel = json.loads((ASSETS / "wheel.json").read_text())
    for key in ("hit_rate", "acceptance_rate", "curator_precision", "named_kept_accepted", "named_kept_rejected"):
        assert f"| {key.replace('_', ' ')} | {wheel[key]:.3f} |" in readme, key
    singles = shipped["teacher_singles"]
    assert f"PF {singles['pf']:.3f}" in readme and f"only {singles['identity_all']:.3f}" in readme
    assert "| " + " | ".join(f"{v:.3f}" for v in singles["by_attribute"].values()) + " |" in readme
    consistency = shipped["teacher_consistency"]
    assert f"all five alike {consistency['all_five']:.3f}" in readme
    assert "| " + " | ".join(f"{consistency['agree'][x]:.3f} ({consistency['chance'][x]:.3f})"
                             for x in consistency["agree"]) + " |" in readme
    copy = shipped["teacher_copy"]
    assert f"all five copied {copy['all_five']:.3f}" in readme
    assert "| " + " | ".join(f"{copy['copied'][x]:.3f} ({copy['chance'][x]:.3f})" for x in copy["copied"]) + " |" in readme
    star, circle, triangle = shipped["examples"]["mean"].values()
    assert f"{star:.2f} (star), {circle:.2f} (circle) and {triangle:.2f} (triangle)" in readme
    domain = json.loads((ASSETS / "teacher_domain.json").read_text())
    for row in domain["rows"]:
        assert f"| {row['kept']:.3f} | {row['kept_std']:.3f} |" in readme, row


def test_cli_report_json_has_the_four_rows_and_their_figures():
    result = subprocess.run([sys.executable, "-m", "studio.cli", "mini", "report", "--json", "--seeds", "2",
                             "--per-mode", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["name"] for row in report["rows"]] == ["teacher_text", "copy_reference", "student_uncurated",
                                                       "student_curated"]
    assert all(set(row) >= {"name", "cp", "pf", "cp_pf", "cp_pf_std"} for row in report["rows"])
    assert report["rows"][1]["cp"] > 0.9  # the judge reads the reference's own attributes in the reference


def test_on_the_teachers_own_pictures_of_new_subjects_the_students_keep_identity(tmp_path):
    """The check behind the README's teacher-domain figures, on fewer grids: fresh captions only, the
    curated pairs' targets as the ceiling, and students that keep far more than the teacher from words."""
    from mini.recipe import SHIPPED_WHEEL, wheel_captions
    from mini.teacher_domain import teacher_domain

    trained = {caption for count, seed in SHIPPED_WHEEL for caption in wheel_captions(count, seed)}
    result = teacher_domain(tmp_path, grids=24, seeds=1, log=lambda _: None)
    used = set((tmp_path / "captions.txt").read_text().splitlines())
    assert len(used) == 24 and not used & trained
    kept = {row["name"]: row["kept"] for row in result["rows"]}
    assert list(kept) == ["curated_target", "teacher_text", "student_uncurated", "student_curated"]
    assert result["pairs"] > 0 and kept["curated_target"] == 1.0  # the judge called each pair the same subject
    assert kept["student_curated"] > kept["teacher_text"] + 0.1, kept
