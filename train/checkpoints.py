"""Checkpoints: accelerate state, written aside and renamed into place, the last N kept.

A checkpoint is `checkpoint-<step>/` in the run folder, holding accelerate's state (optimizer,
RNG, ...) plus the trainable weights only (the LoRA and the condition embedder, not the frozen
12B base) and `trainer_state.json` with the step. It is written into `.tmp-checkpoint-<step>/`
and renamed, so a run killed at any moment leaves whole checkpoints or none: resume takes the
newest one that is whole.
"""

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
PREFIX = "checkpoint-"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def keep_only_trainable(accelerator: Accelerator) -> None:
    """accelerate saves and loads the trainable weights only: the frozen base is never copied."""

    def save(models, weights, output_dir):
        if accelerator.is_main_process:
            save_file(trainable_state(accelerator.unwrap_model(models[0])), Path(output_dir) / TRAINABLE_FILE)
        weights.clear()

    def load(models, input_dir):
        model = accelerator.unwrap_model(models[0])
        state = load_file(Path(input_dir) / TRAINABLE_FILE)
        expected = {name for name, p in model.named_parameters() if p.requires_grad}
        if set(state) != expected:
            raise ValueError(f"checkpoint {input_dir} holds other trainable weights than this run's model "
                             f"({len(set(state) ^ expected)} names differ): was the config changed?")
        model.load_state_dict(state, strict=False)
        models.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Whole checkpoints, oldest first."""
    found = []
    for path in Path(folder).glob(f"{PREFIX}*"):
        if (path / STATE_FILE).is_file():
            found.append((json.loads((path / STATE_FILE).read_text())["step"], path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, folder: Path, step: int, keep: int,
                    before_commit: Callable[[], None] = lambda: None) -> Path:
    """Every rank takes part; rank 0 commits (`before_commit` first: flush what must be durable by then)."""
    final = Path(folder) / f"{PREFIX}{step:08d}"
    if (final / STATE_FILE).is_file():  # this step is saved already (a "save now", then a stop)
        return final
    temporary = Path(folder) / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        before_commit()
        (temporary / STATE_FILE).write_text(json.dumps({"step": step}))
        os.replace(temporary, final)
        for _, old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
