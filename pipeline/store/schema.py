"""The schema: every table of `<home>/dsd.sqlite`, one `TableSpec` each.

Opening a data folder creates the tables it lacks and adds the columns a newer SCHEMA has and the
file lacks, so a new table (or a new column on an old one) is a new entry here; an old data folder
opens and continues. Columns are never renamed or dropped: that would strand older folders.
"""

from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database


@dataclass(frozen=True)
class TableSpec:
    """One table: columns (name -> Python type), which columns hold JSON, and its indexes."""

    columns: dict[str, type]
    json_columns: frozenset[str] = frozenset()
    not_null: frozenset[str] = frozenset()
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()  # what makes a row "already done": reruns skip it
    foreign_keys: tuple[tuple[str, str, str], ...] = ()  # (column, other table, other column)
    pk: str | tuple[str, ...] = "id"
    defaults: dict[str, Any] = field(default_factory=dict)


SCHEMA: dict[str, TableSpec] = {
    "generations": TableSpec(
        columns={
            "id": int,
            "created_at": str,  # ISO 8601, UTC
            "mode": str,
            "prompt": str,
            "prompt_used": str,  # after template / enhancement
            "model": str,
            "params": str,  # steps, guidance, size, seeds, memory mode, dtype, ...
            "seed": int,  # first seed
            "num_images": int,
            "reference_path": str,
            "output_paths": str,
            "timings": str,  # load_s, encode_s, denoise_s, decode_s, total_s, per_step_s
            "status": str,
            "error": str,
            "notices": str,
        },
        json_columns=frozenset({"params", "output_paths", "timings", "notices"}),
        not_null=frozenset({"created_at", "status"}),
        indexes=(("created_at",),),
    ),
    # The data wheel: captions -> grid prompts -> grids -> panels -> pairs -> verdicts -> reviews.
    # Each stage's unique key is what a rerun checks to skip finished work.
    "captions": TableSpec(
        columns={"id": int, "text": str, "source": str, "keep": int, "filter_reason": str, "created_at": str},
        not_null=frozenset({"text"}),
        unique=(("text",),),
    ),
    "grid_prompts": TableSpec(
        columns={"id": int, "caption_id": int, "layout": str, "subject": str, "panels": str, "text": str,
                 "writer": str, "prompt_version": str, "duplicate_of": int, "created_at": str},
        json_columns=frozenset({"panels"}),
        foreign_keys=(("caption_id", "captions", "id"),),
        unique=(("caption_id",),),
    ),
    "grids": TableSpec(
        columns={"id": int, "prompt_id": int, "seed": int, "path": str, "teacher": str, "width": int,
                 "height": int, "seconds": float, "created_at": str},
        foreign_keys=(("prompt_id", "grid_prompts", "id"),),
        unique=(("prompt_id", "seed"),),
    ),
    "panels": TableSpec(
        columns={"id": int, "grid_id": int, "idx": int, "row": int, "col": int, "box": str, "path": str,
                 "method": str, "problem": str},
        json_columns=frozenset({"box"}),
        foreign_keys=(("grid_id", "grids", "id"),),
        unique=(("grid_id", "idx"),),
    ),
    "pairs": TableSpec(
        columns={"id": int, "grid_id": int, "panel_a": int, "panel_b": int},
        foreign_keys=(("grid_id", "grids", "id"), ("panel_a", "panels", "id"), ("panel_b", "panels", "id")),
        unique=(("panel_a", "panel_b"),),
    ),
    "verdicts": TableSpec(
        columns={"pair_id": int, "status": str, "same": int, "confidence": float, "subject": str,
                 "description_a": str, "description_b": str, "reasoning": str, "caption_target": str,
                 "caption_instruction": str, "judge": str, "prompt_version": str, "input_tokens": int,
                 "output_tokens": int, "cached": int, "error": str, "created_at": str},
        foreign_keys=(("pair_id", "pairs", "id"),),
        pk="pair_id",  # one verdict per pair: a failed one is replaced when a rerun succeeds
    ),
    # A curation's claim on a pair while its judge is asked, so two curations of one data folder never
    # pay for the same pair twice. Held only while the pair is in flight; `owner` is "host:pid:token".
    "pair_claims": TableSpec(
        columns={"pair_id": int, "owner": str, "host": str, "pid": int, "claimed_at": str},
        foreign_keys=(("pair_id", "pairs", "id"),),
        not_null=frozenset({"owner"}),
        pk="pair_id",
    ),
    "reviews": TableSpec(
        columns={"pair_id": int, "decision": str, "note": str, "updated_at": str},
        foreign_keys=(("pair_id", "pairs", "id"),),
        pk="pair_id",
    ),
    # One row per stage run: what it added, and what it cost in tokens (and money, when priced).
    "stage_runs": TableSpec(
        columns={"id": int, "stage": str, "job_id": int, "added": int, "skipped": int, "failed": int,
                 "stopped": int, "details": str, "created_at": str},
        json_columns=frozenset({"details"}),
        indexes=(("stage",),),
    ),
    # Long work (wheel stages, training) runs as a job: a row here and a process of its own.
    "jobs": TableSpec(
        columns={"id": int, "kind": str, "status": str, "args": str, "pid": int, "log_path": str,
                 "done": int, "total": int, "stop_requested": int, "error": str, "created_at": str,
                 "started_at": str, "ended_at": str},
        json_columns=frozenset({"args"}),
        indexes=(("status",),),
    ),
    # Training: a run is a job (kind "train", same id) with its settings here; resuming spawns the same job again.
    "runs": TableSpec(
        columns={"id": int, "name": str, "config": str, "out": str, "devices": str,
                 "save_requested": int, "sample_requested": int, "resumed_from": int, "weights": str,
                 "rank_digests": str, "created_at": str},
        json_columns=frozenset({"config", "rank_digests"}),
        foreign_keys=(("id", "jobs", "id"),),
    ),
    # Written by rank 0 only, in batches; rows past a checkpoint are dropped when a run resumes from it.
    "run_metrics": TableSpec(
        columns={"run_id": int, "step": int, "loss": float, "loss_reference": float, "loss_target": float,
                 "lr": float, "grad_norm": float, "steps_per_s": float, "samples_per_s": float, "created_at": str},
        foreign_keys=(("run_id", "runs", "id"),),
        unique=(("run_id", "step"),),
        pk=("run_id", "step"),
    ),
    "run_samples": TableSpec(
        columns={"run_id": int, "step": int, "idx": int, "prompt": str, "seed": int, "path": str, "created_at": str},
        foreign_keys=(("run_id", "runs", "id"),),
        pk=("run_id", "step", "idx"),
    ),
    # Evaluation (DreamBench++ protocol): an evaluation is one model on one benchmark; its samples,
    # the judge's scores per run, and the feature metrics, each unique per item so reruns skip work.
    "evals": TableSpec(
        columns={"id": int, "name": str, "benchmark": str, "fingerprint": str, "model": str, "per_prompt": int,
                 "seed": int, "size": int, "steps": int, "created_at": str},
        json_columns=frozenset({"model"}),
        unique=(("name",),),
    ),
    "eval_samples": TableSpec(
        columns={"id": int, "eval_id": int, "item_id": str, "k": int, "subject_id": str, "category": str,
                 "kind": str, "prompt": str, "reference": str, "path": str, "seed": int, "created_at": str},
        foreign_keys=(("eval_id", "evals", "id"),),
        unique=(("eval_id", "item_id", "k"),),
    ),
    "eval_judgements": TableSpec(
        columns={"id": int, "eval_id": int, "item_id": str, "k": int, "run": int, "cp": int, "pf": int,
                 "cp_debiased": int, "judge": str, "endpoint": str, "templates_hash": str, "templates_source": str,
                 "replies": str, "errors": str, "created_at": str},
        json_columns=frozenset({"replies", "errors"}),
        foreign_keys=(("eval_id", "evals", "id"),),
        unique=(("eval_id", "item_id", "k", "run", "judge", "templates_hash"),),
    ),
    "eval_metrics": TableSpec(
        columns={"id": int, "eval_id": int, "item_id": str, "k": int, "metric": str, "value": float, "created_at": str},
        foreign_keys=(("eval_id", "evals", "id"),),
        unique=(("eval_id", "item_id", "k", "metric"),),
    ),
    # Replies of paid APIs by request fingerprint, so that a rerun repeats no call.
    "api_cache": TableSpec(
        columns={"key": str, "value": str, "created_at": str},
        json_columns=frozenset({"value"}),
        pk="key",
    ),
}


def ensure_tables(db: Database) -> None:
    """Create missing tables, and add columns that a newer SCHEMA has and the file lacks."""
    for name, spec in SCHEMA.items():
        table = db[name]
        if table.exists():
            for column, kind in spec.columns.items():
                if column not in table.columns_dict:
                    table.add_column(column, kind)
        else:
            table.create(
                spec.columns,
                pk=spec.pk,
                not_null=spec.not_null,
                defaults=spec.defaults,
                foreign_keys=list(spec.foreign_keys),
                if_not_exists=True,
            )
        for columns in spec.indexes:
            table.create_index(columns, if_not_exists=True)
        for columns in spec.unique:
            table.create_index(columns, unique=True, if_not_exists=True)
