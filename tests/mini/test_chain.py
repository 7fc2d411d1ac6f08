"""The miniature: its training data, judge and prompts, and the whole chain (teacher, judge,
the project's wheel and trainer, report) in a quick run."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mini import GRID, PANEL, world
from mini.teacher import TeacherSettings, training_grid

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = world.Identity(shape="star", body="green", pattern="dots", accent="black", accessory="crown")


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
    from mini.prompts import WorldPromptWriter

    prompt = WorldPromptWriter()("a green dotted star wearing a crown")
    assert prompt.subject == "green dotted star wearing a crown"
    assert all(set(world.caption_words(p.lower())) <= set(world.VOCABULARY) for p in prompt.panels)
    assert world.parse_subject(prompt.subject) == {"shape": "star", "body": "green", "pattern": "dots",
                                                   "accessory": "crown"}
    assert WorldPromptWriter()("a photo of a dog").panels[0].startswith("the dog")


def test_judge_learns_to_read_the_world_from_rendered_panels():
    from mini.judge import HEADS, read_attributes, train_judge

    model = train_judge(count=384, steps=120, batch=32, log=lambda message: None)
    rng = np.random.default_rng(5)
    items = [(world.sample_identity(rng), world.sample_context(rng)) for _ in range(64)]
    readings = read_attributes(model, [world.render(identity, context) for identity, context in items])
    scene = np.mean([reading["scene"] == context.scene for reading, (_, context) in zip(readings, items)])
    assert scene >= 0.8  # the easiest head; chance is 1/6
    assert set(readings[0]) == set(HEADS) | {f"{name}_p" for name in HEADS}


def test_shipped_judge_tells_held_out_subjects_apart_as_its_report_says():
    from mini import JUDGE
    from mini.judge import AttributeReader, judge_accuracy

    measured = judge_accuracy(AttributeReader.from_pretrained(str(JUDGE)).eval())
    shipped = json.loads((JUDGE / "report.json").read_text())
    assert measured["pairs"] == shipped["pairs"] == 1000
    assert abs(measured["accuracy"] - shipped["accuracy"]) <= 0.005  # CPU kernels may flip a borderline pair
    assert measured["accuracy"] >= 0.95


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
    assert wheel["grids"] == 4 and wheel["exported"]["uncurated"] == min(wheel["exported"]["curated"], wheel["pairs"])



def test_the_copy_recipe_teacher_draws_panels_with_finer_tokens_for_the_projects_wheel_and_trainer(tmp_path):
    """`--recipe copy` (issue 14's teacher): its VAE compresses 4x, so a 64 px panel is 8 x 8 packed tokens
    rather than 4 x 4, its text encoders are the shipped teacher's, kept frozen, and the project's wheel and
    trainer take it as they take the shipped one (`dsd mini chain --recipe copy` runs these stages in turn)."""
    from safetensors.torch import load_file

    from mini import JUDGE, TEACHER
    from mini.teacher import RECIPES
    from pipeline.generation.pipeline import DSDPipeline
    from studio.cli.mini import RECIPE_NAMES

    assert RECIPE_NAMES == tuple(RECIPES)  # the CLI's choices, listed without importing torch
    teacher = tmp_path / "teacher"
    for stage in (("train-teacher", "--recipe", "copy", "--out", teacher, "--steps", "4", "--vae-steps", "3",
                   "--images", "16"),
                  ("wheel", "--teacher", teacher, "--judge", JUDGE, "--home", tmp_path / "wheel", "--grids", "2",
                   "--steps", "2"),
                  ("train-student", "--teacher", teacher, "--data", tmp_path / "wheel" / "uncurated.parquet",
                   "--out", tmp_path / "student", "--steps", "2")):
        result = dsd("mini", *map(str, stage))
        assert result.returncode == 0, (stage[0], result.stderr[-2000:])
    drawn = DSDPipeline.from_pretrained(teacher)
    assert drawn.vae_scale_factor == 4 and PANEL // drawn.vae_scale_factor // 2 == 8
    for part in ("text_encoder", "text_encoder_2"):
        shipped, trained = (load_file(next((folder / part).glob("*.safetensors"))) for folder in (TEACHER, teacher))
        assert all(torch.equal(shipped[k], trained[k]) for k in shipped), part
    assert (tmp_path / "student" / "pytorch_lora_weights.safetensors").is_file()

def test_teacher_training_pretrains_its_text_encoders_and_a_second_round_continues(tmp_path):
    """The miniature's encoders have no pretraining: they learn with the teacher, then load from its folder."""
    import torch

    from mini.teacher import TEACHER_CONFIG, train_teacher
    from pipeline.generation.pipeline import DSDPipeline
    from pipeline.generation.tiny_flux import build_tiny_components

    settings = TeacherSettings(vae_steps=3, steps=6, images=32, batch=4)
    first = train_teacher(tmp_path, settings, log=lambda _: None)
    trained = DSDPipeline.from_pretrained(tmp_path)
    fresh = build_tiny_components(TEACHER_CONFIG)
    for name in ("text_encoder", "text_encoder_2", "transformer"):
        before, after = fresh[name].state_dict(), getattr(trained, name).state_dict()
        assert any(not torch.equal(before[key], after[key]) for key in before), name
    assert trained.transformer.config.axes_dims_rope == [4, 14, 14] or trained.transformer.config.axes_dims_rope == (4, 14, 14)
    assert first["settings"]["train_text"] and first["vae_reconstruction_mse"] > 0
    from pipeline.wheel.teacher import load_teacher

    assert load_teacher(str(tmp_path)).true_cfg == settings.true_cfg > 1  # trained with caption dropout

    vae_weights = (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    logs = []
    train_teacher(tmp_path, settings, log=logs.append)
    assert any("continuing from" in line for line in logs)
    assert (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == vae_weights
    again = DSDPipeline.from_pretrained(tmp_path)
    assert not torch.equal(again.text_encoder_2.shared.weight, fresh["text_encoder_2"].shared.weight)


def test_the_teacher_can_train_on_the_students_canvas(tmp_path):
    """A 1x2 canvas is one subject in two contexts, side by side without a gutter: the `[reference | output]`
    canvas the student draws. With a canvas share the teacher trains on such canvases too."""
    from mini.teacher import pick_kind, train_teacher, training_canvas

    text, canvas = training_canvas(np.random.default_rng(4), TeacherSettings())
    assert canvas.size == (2 * PANEL, PANEL) and text.startswith("A grid of 2 panels")
    left, right = np.asarray(canvas)[:, :PANEL], np.asarray(canvas)[:, PANEL:]
    assert not np.array_equal(left, right)  # two contexts of the subject
    settings = TeacherSettings(grid_share=0.25, canvas_share=0.5)
    assert [pick_kind(u, settings) for u in (0.1, 0.3, 0.74, 0.8)] == ["grid", "canvas", "canvas", "single"]
    logs = []
    train_teacher(tmp_path, TeacherSettings(vae_steps=3, steps=8, images=16, batch=4, canvas_share=0.5,
                                            canvas_clearer=0.7), logs.append)
    assert any("canvas: 16 rendered" in line for line in logs) and any(" canvas " in line for line in logs)


def test_canvas_settings_leave_attributes_unnamed_and_align_the_halves():
    """`canvas_unnamed` words never appear in a canvas prompt, so only the other half shows them; an aligned canvas
    draws the subject at one place, size and rotation in both halves (only scene, light and warmth change)."""
    from mini.teacher import training_canvas

    settings = TeacherSettings(canvas_unnamed=("shape", "accessory"), canvas_named=1.0, canvas_aligned=1.0)
    rng = np.random.default_rng(9)
    for _ in range(6):
        text, canvas, mask = training_canvas(rng, settings, with_mask=True)
        unnamed = {*world.ATTRIBUTE_WORDS["shape"].values(), *world.ATTRIBUTE_WORDS["accessory"].values()}
        assert not unnamed & set(text.replace(",", " ").replace(".", " ").split())
        assert any(colour in text.split() for colour in world.BODY_COLOURS)  # the others are named (chance 1)
        halves = np.asarray(mask)[:, :PANEL] > 127, np.asarray(mask)[:, PANEL:] > 127
        assert np.array_equal(*halves)  # the same silhouette in the same place (unaligned: 3-6% of pixels differ)
        pixels = np.asarray(canvas)
        assert not np.array_equal(pixels[:, :PANEL], pixels[:, PANEL:])  # in two scenes or lights


def test_the_clearer_half_of_a_canvas_is_drawn_beside_and_carries_no_loss():
    """With `canvas_clearer`, one half of a canvas is clearer (often clean) and out of the loss: the teacher learns to
    draw the other half beside a clearer copy of its subject, the student's `[reference | output]`."""
    from mini.teacher import clearer_half

    latents, noise = torch.randn(64, 128, 8), torch.randn(64, 128, 8)
    sigma = torch.rand(64) * 0.9 + 0.1
    noisy, kept = clearer_half(latents, noise, sigma, 16, 1.0, torch.Generator().manual_seed(0))
    left = (torch.arange(128) % 16) < 8
    for item in range(64):
        keep = kept[item, :, 0]
        assert torch.equal(keep, left) or torch.equal(keep, ~left)  # exactly one half out of the loss
        level = sigma[item]
        assert torch.allclose(noisy[item, keep], (1 - level) * latents[item, keep] + level * noise[item, keep])
        error = lambda tokens: float((noisy[item, tokens] - latents[item, tokens]).abs().mean())  # noqa: E731
        assert error(~keep) < error(keep)  # the half out of the loss is the clearer one
    clean = [bool(torch.equal(noisy[i, ~kept[i, :, 0]], latents[i, ~kept[i, :, 0]])) for i in range(64)]
    assert 16 < sum(clean) < 48  # clean outright about half the time
    none, kept = clearer_half(latents, noise, sigma, 16, 0.0, torch.Generator().manual_seed(0))
    assert bool(kept.all()) and torch.allclose(none, (1 - sigma[:, None, None]) * latents + sigma[:, None, None] * noise)


def test_a_stopped_teacher_training_resumes_where_it_stopped(tmp_path):
    """Killed after a save, run again with the same settings: the weights come out as if it never stopped."""
    from safetensors.torch import load_file

    from mini.teacher import RESUME_FILE, train_teacher
    from pipeline.errors import UserInputError

    settings = TeacherSettings(vae_steps=3, steps=8, images=16, batch=4, save_every=3)
    train_teacher(tmp_path / "whole", settings, lambda line: None)

    def stop_after_second_save(line):
        if line == "teacher: saved at step 6":
            raise KeyboardInterrupt

    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train_teacher(stopped, settings, stop_after_second_save)
    assert (stopped / RESUME_FILE).is_file()
    logs = []
    train_teacher(stopped, settings, logs.append)

    assert "teacher: resuming at step 6" in logs and not (stopped / RESUME_FILE).exists()
    for part in ("transformer", "text_encoder", "text_encoder_2"):
        whole, resumed = (load_file(next((run / part).glob("*.safetensors"))) for run in (tmp_path / "whole", stopped))
        assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole), part
    with pytest.raises(UserInputError, match="other settings"):
        torch.save({"settings": {}}, stopped / RESUME_FILE)
        train_teacher(stopped, settings, logs.append)


def test_the_teachers_subject_weights_sit_on_the_subjects_tokens():
    """A grid's mask lines up with its panels, and a token's weight follows how much of it the subject covers:
    the packed token order is row-major, so the weights put back in a square show the subjects where they are."""
    import torch

    from mini.teacher import token_weights

    text, grid, consistent, mask = training_grid(np.random.default_rng(5), TeacherSettings(), with_mask=True)
    assert mask.size == grid.size and mask.mode == "L"
    coverage = np.asarray(mask) > 0
    assert 0.05 < coverage.mean() < 0.5 and not coverage[:, 64:80].any()  # subjects in panels, none in the gutter
    weights = token_weights([mask], 8, 5.0)
    side = grid.width // 8
    assert weights.shape == (1, side * side, 1)
    square = weights[0, :, 0].reshape(side, side).numpy()
    assert square.min() == 1 and square.max() == 5
    covered = (np.asarray(mask) / 255).reshape(side, 8, side, 8).mean(axis=(1, 3))  # soft edges count in part
    assert np.allclose(square, 1 + 4 * covered, atol=1e-5)
    assert torch.equal(token_weights([mask], 8, 1.0), torch.ones_like(weights))


def test_a_teacher_can_start_from_another_teachers_text_encoders_frozen(tmp_path):
    """FLUX's text encoders come pretrained and stay frozen. A teacher given a trained teacher's encoders with
    `train_text=False` keeps them bit for bit while its own transformer learns; a folder without encoders is
    refused with a message that says what to give."""
    from safetensors.torch import load_file

    from mini.teacher import train_teacher
    from pipeline.errors import UserInputError

    settings = TeacherSettings(vae_steps=3, steps=4, images=16, batch=4)
    train_teacher(tmp_path / "first", settings, lambda line: None)
    train_teacher(tmp_path / "second", replace(settings, text_encoders=str(tmp_path / "first"), train_text=False,
                                               seed=1), lambda line: None)
    for part in ("text_encoder", "text_encoder_2", "transformer"):
        first, second = (load_file(next((tmp_path / run / part).glob("*.safetensors"))) for run in ("first", "second"))
        same = all(torch.equal(first[k], second[k]) for k in first)
        assert same == (part != "transformer"), part
    with pytest.raises(UserInputError, match="no text encoders in .*train-teacher"):
        train_teacher(tmp_path / "third", replace(settings, text_encoders=str(tmp_path / "first" / "vae")),
                      lambda line: None)
