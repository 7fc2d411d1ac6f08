"""The miniature of issue 6: its training data, judge, teacher, student and report, on the weights
shipped in assets/mini (which `dsd mini chain` made), and the whole chain in a quick run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.grids import panel_problem, split_grid
from pipeline.mini import ASSETS, JUDGE, STUDENT, TEACHER, world
from pipeline.mini.models import GRID, PANEL, TeacherSettings, training_grid

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = world.Identity(shape="star", body="green", pattern="dots", accent="black", accessory="crown")
# How far a rerun of the report on another machine may drift from the shipped figures: CPU kernels
# differ in the last bits, and a few of the 48 items per seed can then read differently.
TOLERANCE = 0.03


def dsd(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_training_grids_are_seeded_and_some_are_deliberately_inconsistent():
    settings = TeacherSettings(inconsistent=0.5)
    first = [training_grid(np.random.default_rng(3), settings) for _ in range(1)][0]
    again = training_grid(np.random.default_rng(3), settings)
    assert first[0] == again[0] and first[1].tobytes() == again[1].tobytes()
    assert first[1].size == (GRID, GRID)
    rng = np.random.default_rng(0)
    grids = [training_grid(rng, settings) for _ in range(40)]
    assert 5 < sum(not consistent for _, _, consistent in grids) < 35
    assert all(text.startswith("A grid of 4 panels") and text.count("Panel ") == 4 for text, _, _ in grids)


def test_the_wheels_prompt_writer_writes_world_prompts_for_world_captions():
    from pipeline.grid_prompts import OfflinePromptWriter

    prompt = OfflinePromptWriter().write("a green dotted star wearing a crown")
    assert prompt.subject == "green dotted star wearing a crown"
    assert all(set(world.caption_words(p.lower())) <= set(world.VOCABULARY) for p in prompt.panels)
    assert world.parse_subject(prompt.subject) == {"shape": "star", "body": "green", "pattern": "dots",
                                                   "accessory": "crown"}
    assert OfflinePromptWriter().write("a photo of a dog").panels[0].startswith("the dog")


@pytest.fixture(scope="module")
def judge_model():
    from pipeline.mini.judge import AttributeJudge

    return AttributeJudge.from_pretrained(str(JUDGE)).eval()


def test_shipped_judge_tells_held_out_subjects_apart(judge_model):
    from pipeline.mini.judge import held_out_pairs, pair_accuracy

    measured = pair_accuracy(judge_model, held_out_pairs(200, seed=7))
    assert measured["accuracy"] >= 0.95, measured


def test_shipped_judge_curates_like_a_vlm():
    from pipeline.curation import make_judge

    judge = make_judge(f"mini:{JUDGE}")
    same = judge.judge(world.render(SUBJECT, world.Context(scene="grass", light="left")),
                       world.render(SUBJECT, world.Context(scene="night", x=0.4, scale=0.45, light="top")))
    assert same.same and same.caption_target.startswith("a creature, under a night sky")
    other = judge.judge(world.render(SUBJECT), world.render(world.Identity(**{**SUBJECT.__dict__, "accessory": "hat"})))
    assert not other.same and "accessory (crown vs hat)" in other.reasoning
    with pytest.raises(Exception, match="no miniature judge"):
        make_judge("mini:/nowhere")


def test_shipped_teacher_draws_grids_the_wheel_can_cut():
    from pipeline.teacher import load_teacher

    teacher = load_teacher(str(TEACHER))
    from pipeline.grid_prompts import OfflinePromptWriter

    grid = teacher(OfflinePromptWriter().write("a green dotted star wearing a crown").text, GRID, GRID, steps=12,
                   guidance=3.5, seed=0)
    assert grid.size == (GRID, GRID)
    panels = split_grid(grid)
    assert [panel.image.size for panel in panels] == [(PANEL, PANEL)] * 4
    assert sum(panel_problem(panel.image) is None for panel in panels) >= 3


def test_shipped_student_keeps_the_reference_subject(judge_model):
    from pipeline.mini.judge import read_attributes
    from pipeline.weights import ModelSpec, load_generator

    pipe = load_generator(ModelSpec(base=str(TEACHER), dsd=str(STUDENT / "curated")))
    assert pipe.load_report.lora_modules > 0
    reference = world.render(SUBJECT, world.Context(scene="studio"))
    import torch

    out = pipe([reference] * 4, ["a creature, in a desert, lit from the left, in warm light"] * 4, height=PANEL,
               width=PANEL, num_inference_steps=20, generator=[torch.Generator().manual_seed(k) for k in range(4)]).images
    assert [image.size for image in out] == [(PANEL, PANEL)] * 4
    readings = read_attributes(judge_model, out)
    kept = np.mean([[r[a] == getattr(SUBJECT, a) for a in world.ATTRIBUTES] for r in readings])
    assert kept >= 0.6, readings  # chance is about 0.2


def shipped_report() -> dict:
    return json.loads((ASSETS / "report.json").read_text())


def test_report_on_shipped_weights_reproduces_the_shipped_figures():
    from pipeline.mini import chain

    shipped = shipped_report()
    result = chain.report(seeds=shipped["seeds"], per_mode=shipped["items_per_seed"] // 3)
    assert [row["name"] for row in result["rows"]] == list(chain.ROWS)
    for row, expected in zip(result["rows"], shipped["rows"]):
        for key in ("cp", "pf", "cp_pf"):
            assert abs(row[key] - expected[key]) <= TOLERANCE, (row["name"], key, row[key], expected[key])
    assert result["judge_accuracy"] == shipped["judge_accuracy"] >= 0.95


def test_readme_quotes_the_shipped_figures():
    readme = (ROOT / "README.md").read_text()
    shipped = shipped_report()
    for row in shipped["rows"]:
        line = next(line for line in readme.splitlines() if line.startswith(f"| {row['name']} |"))
        assert re.search(rf"\| {row['cp_pf']:.3f} \| {row['cp_pf_std']:.3f} \|", line), line
    assert f"{shipped['judge_accuracy']:.3f}" in readme


def test_cli_report_json_has_the_issue_format():
    result = dsd("mini", "report", "--json", "--seeds", "2", "--per-mode", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) >= {"judge_accuracy", "rows"}
    assert [row["name"] for row in report["rows"]] == ["teacher_text", "copy_reference", "student_uncurated",
                                                       "student_curated"]
    assert all(set(row) >= {"name", "cp", "pf", "cp_pf", "cp_pf_std"} for row in report["rows"])
    copy = report["rows"][1]
    assert copy["cp"] > 0.9  # the judge reads the reference's own attributes in the reference


def test_cli_missing_models_is_one_line_exit_2(tmp_path):
    result = dsd("mini", "wheel", "--teacher", str(tmp_path / "none"), "--judge", str(tmp_path / "none"),
                 "--home", str(tmp_path / "wheel"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no teacher at" in result.stderr and "Traceback" not in result.stderr


def test_quick_chain_runs_every_stage_through_the_projects_wheel_and_trainer(tmp_path):
    result = dsd("mini", "chain", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{\n"):])
    assert set(report["stage_seconds"]) == {"train-teacher", "train-judge", "wheel", "train-student-uncurated",
                                            "train-student-curated", "report"}
    for path in ("teacher/transformer", "teacher/vae", "judge/config.json", "wheel/dsd.sqlite",
                 "wheel/uncurated.parquet", "student/uncurated/pytorch_lora_weights.safetensors"):
        assert (tmp_path / path).exists(), path
    wheel = json.loads((tmp_path / "wheel" / "wheel.json").read_text())
    assert wheel["grids"] == 4 and wheel["exported"]["uncurated"] == wheel["pairs"]
