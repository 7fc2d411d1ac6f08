"""Deliberate breakages of the method, each applied alone to a copy of the code, and whether the tests catch it.

Run on demand, not in CI (the whole list takes the better part of an hour on two cores):

    python tests/mutations.py                  # every breakage; prints the README's Markdown table
    python tests/mutations.py --only resume    # those whose name contains a word
    python tests/mutations.py --list           # the breakages, without running anything

The copy is the last commit (`git archive HEAD`), so uncommitted work in the tree never leaks into it. The
unbroken copy first runs every test the list names, which must pass; then each breakage is a textual
replacement that must match exactly once (the script stops if it does not: the code moved, update the
entry), the named tests run with `pytest -x`, and the file is put back. A breakage is caught when a test
fails; one the suite is known not to catch carries the reason instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Breakage:
    name: str  # what the breakage does, as the table shows it
    file: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repository
    not_caught: str = ""  # why the suite cannot catch it, for the breakages it is known to miss


TRAINER, FLOW, GENERATOR = "train/trainer.py", "pipeline/flow.py", "pipeline/generation/pipeline.py"
LOSS = "tests/train/test_loss.py"
HAND = f"{LOSS}::test_the_loss_is_the_weighted_flow_matching_error_of_both_halves"
LEVELS = f"{LOSS}::test_noise_levels_follow_the_generators_schedule"
DROPOUT = f"{LOSS}::test_dropout_rates_and_the_inputs_they_give_are_the_generators_unconditional_ones"
HALVES = f"{LOSS}::test_the_trainer_learns_from_the_halves_it_is_configured_to"
GUIDANCE = "tests/pipeline/generation/test_guidance.py"
FEATURES = "tests/pipeline/evaluation/test_features.py"
CACHE = "tests/pipeline/wheel/test_curation.py::test_a_cached_verdict_serves_only_the_same_model_provider_prompt_and_pictures"

BREAKAGES = [
    # The table (#18): the first six were missed by the suite before it.
    Breakage("the trainer's loss ignores the reference half's weight", TRAINER,
             "return (w_left * left_loss + w_right * right_loss) / (w_left + w_right), left_loss, right_loss",
             "return (left_loss + w_right * right_loss) / (1 + w_right), left_loss, right_loss", (HAND,)),
    Breakage("the trainer's loss is computed on the target half only", TRAINER,
             "return (w_left * left_loss + w_right * right_loss) / (w_left + w_right), left_loss, right_loss",
             "return right_loss, left_loss, right_loss", (HAND,)),
    Breakage("condition dropout is never applied", TRAINER,
             "drop_condition = draw(size) < config.condition_dropout", "drop_condition = draw(size) < 0", (DROPOUT,)),
    Breakage("DINO features mean-pooled instead of the CLS token", "pipeline/evaluation/features.py",
             'return output.last_hidden_state[:, 0] if self.version == "v1" else output.pooler_output',
             'return output.last_hidden_state.mean(1) if self.version == "v1" else output.pooler_output', (FEATURES,)),
    Breakage("curation's cache key keeps the provider but drops the model name", "pipeline/wheel/curation.py",
             "parts = [PROMPT_VERSION, prompt_fingerprint(), curator_name, digest_a, digest_b]",
             'parts = [PROMPT_VERSION, prompt_fingerprint(), curator_name.split(":")[0], digest_a, digest_b]', (CACHE,)),
    Breakage("true-guidance formula changed (`full - image` -> `full - base`), end-to-end tests only", GENERATOR,
             "return base + text_scale * (full - image)", "return base + text_scale * (full - base)", (GUIDANCE,)),
    Breakage("condition embedder's addition removed", "pipeline/generation/model.py",
             "return super().forward(noisy) + self._c_embedder[0](condition)", "return super().forward(noisy)",
             ("tests/pipeline/generation/test_weights.py::test_released_layout_loads_every_tensor",)),
    Breakage("resume restarts at step 0", TRAINER, "        step, path = found\n", "        _, path = found\n",
             ("tests/train/test_trainer.py::test_a_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one",)),
    Breakage("two `Score:` lines accepted", "pipeline/evaluation/judge.py", "if len(lines) > 1:", "if len(lines) > 99:",
             ("tests/pipeline/evaluation/test_judge.py::test_parse_score_refuses_anything_else",)),
    Breakage("EXIF orientation ignored", "pipeline/images.py", "img = _to_rgb(ImageOps.exif_transpose(img))",
             "img = _to_rgb(img)", ("tests/pipeline/test_images.py::test_exif_rotated_jpeg_comes_upright",)),
    Breakage("grid gutters ignored", "pipeline/wheel/grids.py",
             "interior = [(a, b) for a, b in bands if a > 0 and b < n]", "interior = []",
             ("tests/pipeline/wheel/test_grids.py",)),
    # Generator.
    Breakage("generator: the unconditional pass is given the reference", GENERATOR,
             "UNCOND: (torch.zeros_like(condition), empty),", "UNCOND: (condition, empty),", (GUIDANCE,)),
    Breakage("generator: the condition's right half is grey, not black", GENERATOR,
             "torch.full_like(left_pixels, -1.0) if right is None", "torch.full_like(left_pixels, 0.0) if right is None",
             (GUIDANCE,)),
    Breakage("generator: the output is the left (reference) half", GENERATOR,
             "images = self.image_processor.postprocess(canvas[..., width:], output_type=output_type)",
             "images = self.image_processor.postprocess(canvas[..., :width], output_type=output_type)",
             ("tests/pipeline/generation/test_pipeline.py::test_reconstruction_is_the_left_panel",)),
    Breakage("generator: the schedule is not shifted for the canvas' size", GENERATOR,
             "mu = schedule_shift(config, image_seq_len)", "mu = schedule_shift(config, 256)", (LEVELS,)),
    # Trainer.
    Breakage("trainer: the velocity target's sign flipped (`x0 - noise`)", FLOW,
             "return noisy, sigma, noise - x0", "return noisy, sigma, x0 - noise", (HAND,)),
    Breakage("trainer: noise levels drawn without FLUX's shift", FLOW,
             "sigma = math.exp(mu) / (math.exp(mu) + (1 / u - 1))", "sigma = u", (LEVELS,)),
    Breakage("trainer: the reference half taken as the top half of the canvas", TRAINER,
             "return (torch.arange(cols) < cols // 2).repeat(rows)", "return torch.arange(rows * cols) < rows * cols // 2",
             (HAND,)),
    Breakage("trainer: caption dropout is never applied", TRAINER,
             "drop_caption = (draw(size) < config.caption_dropout)[:, None]", "drop_caption = (draw(size) < 0)[:, None]",
             (DROPOUT,)),
    Breakage("trainer: a dropped caption is all zeros, not the empty prompt", TRAINER,
             'prompt = torch.where(drop_caption[:, :, None], empty["prompt"].to(device), batch["prompt"])',
             'prompt = torch.where(drop_caption[:, :, None], torch.zeros_like(batch["prompt"]), batch["prompt"])',
             (DROPOUT,)),
    Breakage("trainer: the step learns from the target half whatever the weights", TRAINER,
             "accelerator.backward(loss / config.gradient_accumulation)",
             "accelerator.backward(right_loss / config.gradient_accumulation)", (HALVES,)),
    # Data wheel.
    Breakage("wheel: the cache key ignores picture B", "pipeline/wheel/curation.py",
             "parts = [PROMPT_VERSION, prompt_fingerprint(), curator_name, digest_a, digest_b]",
             "parts = [PROMPT_VERSION, prompt_fingerprint(), curator_name, digest_a]", (CACHE,)),
    Breakage("wheel: the prompt's fingerprint ignores the prompt's text", "pipeline/wheel/curation.py",
             'text = "\\n".join([PROMPT_VERSION, CURATION_PROMPT, json.dumps(VERDICT_SCHEMA, sort_keys=True)])',
             'text = "\\n".join([PROMPT_VERSION, json.dumps(VERDICT_SCHEMA, sort_keys=True)])', (CACHE,)),
    Breakage("wheel: pairs in one order only", "pipeline/wheel/grids.py",
             "return list(itertools.permutations(panels, 2))", "return list(itertools.combinations(panels, 2))",
             ("tests/pipeline/wheel/test_grids.py::test_compose_pairs_gives_every_ordered_pair",)),
    # Evaluation.
    Breakage("evaluation: each reference scored against the next pair's picture", "pipeline/evaluation/features.py",
             "scores += cosine_scores(embeddings[0::2], embeddings[1::2])",
             "scores += cosine_scores(embeddings[0::2], embeddings[1::2].roll(1, 0))", (FEATURES,)),
    Breakage("evaluation: CLIP-T scores every picture against its batch's first prompt", "pipeline/evaluation/features.py",
             "scores += cosine_scores(self.embed([image for _, image in batch]), texts)",
             "scores += cosine_scores(self.embed([image for _, image in batch]), texts[:1].expand_as(texts))",
             (FEATURES,)),
    Breakage("evaluation: judge scores normalised by 5, not 4", "pipeline/evaluation/judge.py",
             'cp = _mean([r["cp"] / MAX_SCORE for r in in_run if r["cp"] is not None])',
             'cp = _mean([r["cp"] / (MAX_SCORE + 1) for r in in_run if r["cp"] is not None])',
             ("tests/pipeline/evaluation/test_judge.py",)),
    # Miniature.
    Breakage("miniature: a caption names the accent's colour for the body's", "mini/world.py",
             "        words.append(identity.body)\n", "        words.append(identity.accent)\n",
             ("tests/mini/test_world.py",)),
    Breakage("miniature: the world draws every body red", "mini/world.py",
             "body_colour, accent = BODY_COLOURS[identity.body], ACCENT_COLOURS[identity.accent]",
             'body_colour, accent = BODY_COLOURS["red"], ACCENT_COLOURS[identity.accent]',
             ("tests/mini/test_world.py",)),
    Breakage("miniature: the report's two students swapped", "mini/report.py",
             'STUDENTS = {"student_uncurated": STUDENT / "uncurated", "student_curated": STUDENT / "curated"}',
             'STUDENTS = {"student_uncurated": STUDENT / "curated", "student_curated": STUDENT / "uncurated"}',
             ("tests/mini/test_shipped.py::test_report_on_shipped_weights_reproduces_the_shipped_figures",)),
]


def pytest(copy: Path, tests: tuple[str, ...] | list[str], log: Path, timeout: int) -> int:
    """Run `tests` in the copy (its packages first on the path, no bytecode left behind); the exit code."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               f"--timeout={timeout}", *tests],
                              cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def apply(copy: Path, breakage: Breakage) -> str:
    """Write the breakage into the copy; returns the file's original text."""
    path = copy / breakage.file
    text = path.read_text()
    found = text.count(breakage.old)
    if found != 1:
        sys.exit(f"{breakage.name!r}: {breakage.file} holds the text to replace {found} times, not once; update the entry")
    path.write_text(text.replace(breakage.old, breakage.new))
    return text


def row(breakage: Breakage, code: int | None) -> str:
    tests = ", ".join(f"`{test.removeprefix('tests/')}`" for test in breakage.tests)
    if code is None:
        verdict = "not run"
    elif code == 1:
        verdict = "caught"
    elif code == 0:
        verdict = f"**not caught**: {breakage.not_caught or 'no reason known: a gap to fill'}"
    else:
        verdict = f"error (pytest exit {code}): see its log"
    return f"| {breakage.name} | {tests} | {verdict} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="run the breakages whose name contains one of these words")
    parser.add_argument("--skip", nargs="*", default=[], help="leave out the breakages whose name contains one of these")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds a test may take (pytest-timeout); the miniature's report needs more on a busy machine")
    parser.add_argument("--list", action="store_true", help="list the breakages and exit")
    parser.add_argument("--logs", type=Path, help="keep each pytest log in this folder")
    args = parser.parse_args()
    chosen = [b for b in BREAKAGES if (not args.only or any(word in b.name for word in args.only))
              and not any(word in b.name for word in args.skip)]
    if args.list:
        print("\n".join(row(b, None) for b in chosen))
        return 0
    with tempfile.TemporaryDirectory(prefix="dsd-mutations-") as folder:
        copy, logs = Path(folder) / "code", args.logs or Path(folder) / "logs"
        copy.mkdir()
        logs.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
        for breakage in chosen:  # every entry must still match before anything runs
            (copy / breakage.file).write_text(apply(copy, breakage))
        every = list(dict.fromkeys(test for b in chosen for test in b.tests))
        started = time.monotonic()
        code = pytest(copy, every, logs / "unbroken.log", args.timeout)
        print(f"unbroken code: pytest exit {code} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        if code != 0:
            sys.exit(f"the unbroken copy fails its tests (log: {logs / 'unbroken.log'}): nothing to measure")
        rows = ["| breakage | tests run | caught? |", "|---|---|---|"]
        for index, breakage in enumerate(chosen):
            original = apply(copy, breakage)
            started = time.monotonic()
            try:
                code = pytest(copy, breakage.tests, logs / f"{index:02d}.log", args.timeout)
            finally:
                (copy / breakage.file).write_text(original)
            rows.append(row(breakage, code))
            print(f"{rows[-1]}  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        print("\n".join(rows))
        return 0 if all(" | caught |" in line for line in rows[2:]) else 1


if __name__ == "__main__":
    sys.exit(main())
