"""The studio's SQLite store: the one module that knows the schema.

Everything the studio and its job processes remember lives in `<home>/dsd.sqlite`. Each table is
one entry in `SCHEMA`; `Store` creates missing tables and columns when it opens the file, so a
new table (or a new column on an old one) is a new entry there plus a few thin methods here.

Connections: one per call, opened by `_connect`. The file is shared by the studio's worker
threads and by the job processes it starts (training, grids, curation), so the serialisation
that matters is SQLite's own (WAL + busy timeout), not a Python lock; a fresh connection costs
microseconds and is never shared between threads.
"""

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

DB_FILENAME = "dsd.sqlite"
DEFAULT_HOME = "dsd-data"
BUSY_TIMEOUT_MS = 30_000
SECRET_MARKERS = ("key", "token", "secret", "password")
GENERATION_STATUSES = ("ok", "error")


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


def data_home(override: str | Path | None = None) -> Path:
    """The data folder: `--home`, else the environment's DSD_HOME, else ./dsd-data."""
    return Path(override or os.environ.get("DSD_HOME") or DEFAULT_HOME)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def secret_keys(mapping: Any, prefix: str = "") -> list[str]:
    """Dotted paths of keys, at any depth, whose names look like credentials."""
    found = []
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            path = f"{prefix}{key}"
            if any(marker in str(key).lower() for marker in SECRET_MARKERS):
                found.append(path)
            found += secret_keys(value, f"{path}.")
    elif isinstance(mapping, (list, tuple)):
        for index, value in enumerate(mapping):
            found += secret_keys(value, f"{prefix}{index}.")
    return found


class Store:
    """The data folder's database. Safe to share between threads and processes."""

    def __init__(self, home: str | Path):
        self.home = Path(home).expanduser()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / DB_FILENAME
        with self._connect() as db:
            # WAL is a property of the file: set once, every later connection inherits it.
            db.conn.execute("PRAGMA journal_mode=WAL")
            _ensure_tables(db)

    @contextmanager
    def _connect(self) -> Iterator[Database]:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL, much faster
            yield Database(conn)
        finally:
            conn.close()

    def journal_mode(self) -> str:
        with self._connect() as db:
            return db.conn.execute("PRAGMA journal_mode").fetchone()[0]

    # generations

    def record_generation(self, **fields: Any) -> int:
        """Insert one generation; dict/list fields are stored as JSON. Returns its id."""
        leaked = secret_keys(fields.get("params") or {})
        if leaked:
            raise ValueError(
                f"refusing to store params that look like secrets: {', '.join(leaked)}; "
                "pass credentials to the provider, not into the generation record"
            )
        fields.setdefault("created_at", utc_now())
        fields.setdefault("status", "ok")
        if fields["status"] not in GENERATION_STATUSES:
            raise ValueError(f"status must be one of {GENERATION_STATUSES}, got {fields['status']!r}")
        return self._insert("generations", fields)

    def get_generation(self, generation_id: int) -> dict[str, Any]:
        """The generation with JSON fields decoded; KeyError if there is none."""
        return self._get("generations", generation_id)

    def list_generations(self, limit: int = 50, offset: int = 0, search: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `search` keeps prompts containing it (case-insensitive)."""
        where, args = _prompt_filter(search)
        with self._connect() as db:
            rows = db["generations"].rows_where(
                where, args, order_by="created_at desc, id desc", limit=limit, offset=offset
            )
            return [_decode("generations", row) for row in rows]

    def count_generations(self, search: str | None = None) -> int:
        where, args = _prompt_filter(search)
        with self._connect() as db:
            return db["generations"].count_where(where, args)

    def delete_generation(self, generation_id: int) -> None:
        """Delete the row (not the image files); KeyError if there is none."""
        self._delete("generations", generation_id)

    # the data wheel: every stage writes its rows with `add` (a finished row is skipped) and finds
    # its work with `pending`

    def add(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Insert rows whose unique key is new; rows already there are left alone. Returns how many were new."""
        spec = SCHEMA[table]
        encoded = [_encode(table, {"created_at": utc_now(), **row} if "created_at" in spec.columns else row) for row in rows]
        with self._connect() as db:
            # total_changes counts this connection's rows only: other processes may be writing too.
            before = db.conn.total_changes
            db[table].insert_all(encoded, ignore=True)
            return db.conn.total_changes - before

    def rows(self, table: str, where: str | None = None, args: list | None = None, *, order_by: str | None = None,
             limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """Rows of `table` (oldest first unless `order_by` says otherwise), JSON columns decoded."""
        with self._connect() as db:
            found = db[table].rows_where(where, args or [], order_by=order_by or _pk_order(table), limit=limit, offset=offset)
            return [_decode(table, row) for row in found]

    def count(self, table: str, where: str | None = None, args: list | None = None) -> int:
        with self._connect() as db:
            return db[table].count_where(where, args or [])

    def update(self, table: str, pk: Any, fields: dict[str, Any]) -> None:
        with self._connect() as db:
            db[table].update(pk, _encode(table, fields))

    def pending(self, stage: str, limit: int | None = None, args: list | None = None) -> list[dict[str, Any]]:
        """Rows of the previous stage that `stage` has not handled yet, oldest first."""
        source, where = PENDING[stage]
        return self.rows(source, where, args, limit=limit)

    def put(self, table: str, row: dict[str, Any]) -> None:
        """Insert or replace the row with this primary key (verdicts, reviews, cache entries)."""
        with self._connect() as db:
            db[table].upsert(_encode(table, row), pk=SCHEMA[table].pk)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        return self._insert(table, {"created_at": utc_now(), **row} if "created_at" in SCHEMA[table].columns else row)

    def get(self, table: str, pk: Any) -> dict[str, Any]:
        return self._get(table, pk)

    def add_grid_split(self, grid_id: int, panels: list[dict[str, Any]], pairs: list[tuple[int, int]]) -> int:
        """A grid's panels and its pairs (by panel index) in one transaction: all or nothing. Returns new pairs."""
        with self._connect() as db, db.conn:
            db["panels"].insert_all([_encode("panels", {**panel, "grid_id": grid_id}) for panel in panels], ignore=True)
            ids = {row["idx"]: row["id"] for row in db["panels"].rows_where("grid_id = ?", [grid_id])}
            before = db.conn.total_changes
            db["pairs"].insert_all(
                [{"grid_id": grid_id, "panel_a": ids[a], "panel_b": ids[b]} for a, b in pairs], ignore=True
            )
            return db.conn.total_changes - before

    def pair_pictures(self, where: str | None = None, args: list | None = None, limit: int | None = None,
                      offset: int | None = None) -> list[dict[str, Any]]:
        """Pairs with their panel files, grid, verdict and review, newest grids first (the review view)."""
        query = PAIR_VIEW + (f" where {where}" if where else "") + " order by pairs.id"
        query += f" limit {int(limit)}" if limit is not None else ""
        query += f" offset {int(offset)}" if offset is not None else ""
        with self._connect() as db:
            return [dict(row) for row in db.query(query, args or [])]

    def review_queue(self, verdict: str = "all", min_confidence: float = 0, review: str = "all",
                     disagreement: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Pairs for a person to review, by the judge's verdict, its confidence, the review state, and
        whether the person and the judge disagree. Unknown filter names raise ValueError."""
        if verdict not in VERDICT_FILTERS or review not in REVIEW_FILTERS:
            raise ValueError(f"verdict filter must be one of {', '.join(VERDICT_FILTERS)}; "
                             f"review filter one of {', '.join(REVIEW_FILTERS)}")
        clauses = [c for c in (VERDICT_FILTERS[verdict], REVIEW_FILTERS[review]) if c]
        clauses += [DISAGREEMENT] if disagreement else []
        args = []
        if min_confidence:
            clauses.append("coalesce(verdicts.confidence, 0) >= ?")
            args.append(float(min_confidence))
        return self.pair_pictures(" and ".join(f"({c})" for c in clauses) or None, args, limit=limit)

    def pairs_by_id(self, pair_ids: list[int]) -> list[dict[str, Any]]:
        return self.pair_pictures("pairs.id in (select value from json_each(?))", [json.dumps(list(pair_ids))])

    def jobs(self, kind_prefix: str, job_id: int | None = None, running: bool = False,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Jobs of a kind (e.g. "wheel:"), newest first; one of them by id, or only the running ones."""
        where, args = ["kind like ?"], [f"{kind_prefix}%"]
        if job_id is not None:
            where.append("id = ?")
            args.append(int(job_id))
        if running:
            where.append("status = 'running'")
        return self.rows("jobs", " and ".join(where), args, order_by="id desc", limit=limit)

    def accepted_pairs(self, reviewed_only: bool = False) -> list[dict[str, Any]]:
        """Pairs the judge called the same subject and no person rejected (only accepted ones if asked)."""
        where = "verdicts.status = 'ok' and verdicts.same = 1 and coalesce(reviews.decision, '') != 'reject'"
        if reviewed_only:
            where += " and reviews.decision = 'accept'"
        return self.pair_pictures(where)

    def wheel_counts(self) -> dict[str, Any]:
        """Rows per stage and the rates `dsd wheel stats` reports."""
        with self._connect() as db:
            one = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
            counts = {table: db[table].count for table in ("captions", "grid_prompts", "grids", "panels", "pairs", "reviews")}
            counts["duplicate_prompts"] = one("select count(*) from grid_prompts where duplicate_of is not null")
            counts["usable_panels"] = one("select count(*) from panels where problem is null")
            counts["verdicts"] = one("select count(*) from verdicts where status = 'ok'")
            counts["failed_verdicts"] = one("select count(*) from verdicts where status != 'ok'")
            counts["same"] = one("select count(*) from verdicts where status = 'ok' and same = 1")
            counts["grids_with_accepted_pair"] = one(
                "select count(distinct pairs.grid_id) from pairs join verdicts on verdicts.pair_id = pairs.id "
                "left join reviews on reviews.pair_id = pairs.id where verdicts.status = 'ok' and verdicts.same = 1 "
                "and coalesce(reviews.decision, '') != 'reject'"
            )
            counts["reviewed_with_verdict"] = one(
                "select count(*) from reviews join verdicts using (pair_id) "
                "where verdicts.status = 'ok' and reviews.decision in ('accept', 'reject')"
            )
            counts["review_agrees"] = one(
                "select count(*) from reviews join verdicts using (pair_id) where verdicts.status = 'ok' and "
                "((reviews.decision = 'accept' and verdicts.same = 1) or (reviews.decision = 'reject' and verdicts.same = 0))"
            )
            return counts

    def transition(self, table: str, pk: Any, column: str, old: Any, new: Any) -> bool:
        """Set `column` from `old` to `new` atomically; False when it no longer held `old`."""
        with self._connect() as db, db.conn:
            changed = db.conn.execute(f"update [{table}] set [{column}] = ? where [{SCHEMA[table].pk}] = ? and [{column}] = ?",
                                      [new, pk, old]).rowcount
        return changed == 1

    def delete_where(self, table: str, where: str, args: list | None = None) -> int:
        """Delete the rows that match; returns how many."""
        with self._connect() as db:
            before = db.conn.total_changes
            db[table].delete_where(where, args or [])
            return db.conn.total_changes - before

    def runs(self, run_id: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Training runs with their job's state (status, pid, step, log), newest first."""
        query = RUN_VIEW + (" where runs.id = ?" if run_id is not None else "") + " order by runs.id desc"
        query += f" limit {int(limit)}" if limit is not None else ""
        with self._connect() as db:
            found = [_decode("runs", dict(row)) for row in db.query(query, [] if run_id is None else [int(run_id)])]
        return [{**run, "args": json.loads(run["args"]) if run["args"] else None} for run in found]

    def cache_get(self, key: str) -> Any:
        with self._connect() as db:
            try:
                return _decode("api_cache", db["api_cache"].get(key))["value"]
            except NotFoundError:
                return None

    def cache_put(self, key: str, value: Any) -> None:
        self.put("api_cache", {"key": key, "value": value, "created_at": utc_now()})

    # generic row access, shared by every table

    def _insert(self, table: str, fields: dict[str, Any]) -> int:
        spec = SCHEMA[table]
        unknown = set(fields) - (set(spec.columns) - {spec.pk})
        if unknown:
            raise ValueError(f"{table} has no writable column(s): {', '.join(sorted(unknown))}")
        with self._connect() as db:
            return db[table].insert(_encode(table, fields)).last_pk

    def _get(self, table: str, pk: int) -> dict[str, Any]:
        with self._connect() as db:
            try:
                return _decode(table, db[table].get(pk))
            except NotFoundError:
                raise KeyError(f"no row {pk!r} in {table}") from None

    def _delete(self, table: str, pk: int) -> None:
        with self._connect() as db:
            try:
                db[table].delete(pk)
            except NotFoundError:
                raise KeyError(f"no row {pk!r} in {table}") from None


def _ensure_tables(db: Database) -> None:
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


# stage -> (the table it reads, the rows of it still to do)
PENDING = {
    "prompts": ("captions", "coalesce(keep, 1) = 1 and id not in (select caption_id from grid_prompts)"),
    "grids": ("grid_prompts", "duplicate_of is null and (select count(*) from grids where prompt_id = grid_prompts.id) < ?"),
    "pairs": ("grids", "id not in (select grid_id from panels)"),
    "curate": ("pairs", "id not in (select pair_id from verdicts where status = 'ok')"),
}


# The review filters: the judge's verdict, a person's decision, and where the two disagree.
VERDICT_FILTERS = {
    "all": None,
    "same": "verdicts.status = 'ok' and verdicts.same = 1",
    "not same": "verdicts.status = 'ok' and verdicts.same = 0",
    "failed": "verdicts.status = 'failed'",
    "none yet": "verdicts.pair_id is null",
}
REVIEW_DECISIONS = {"accept": "accepted", "reject": "rejected", "flag": "flagged"}
REVIEW_FILTERS = {"all": None, "unreviewed": "reviews.decision is null",
                  **{label: f"reviews.decision = '{decision}'" for decision, label in REVIEW_DECISIONS.items()}}
DISAGREEMENT = ("verdicts.status = 'ok' and ((verdicts.same = 1 and reviews.decision = 'reject') "
                "or (verdicts.same = 0 and reviews.decision = 'accept'))")

RUN_VIEW = """
select runs.*, jobs.status, jobs.pid, jobs.done as step, jobs.total as total_steps, jobs.stop_requested,
       jobs.error, jobs.log_path, jobs.args, jobs.started_at, jobs.ended_at
from runs join jobs on jobs.id = runs.id"""

PAIR_VIEW = """
select pairs.id as pair_id, pairs.grid_id, a.path as reference_path, b.path as target_path,
       grids.path as grid_path, grid_prompts.text as grid_prompt, grid_prompts.subject as prompt_subject,
       verdicts.status as verdict_status, verdicts.same, verdicts.confidence, verdicts.subject,
       verdicts.description_a, verdicts.description_b, verdicts.reasoning, verdicts.caption_target,
       verdicts.caption_instruction, verdicts.judge, verdicts.prompt_version, verdicts.error as verdict_error,
       reviews.decision, reviews.note
from pairs
join panels a on a.id = pairs.panel_a
join panels b on b.id = pairs.panel_b
join grids on grids.id = pairs.grid_id
left join grid_prompts on grid_prompts.id = grids.prompt_id
left join verdicts on verdicts.pair_id = pairs.id
left join reviews on reviews.pair_id = pairs.id"""


def _pk_order(table: str) -> str:
    pk = SCHEMA[table].pk
    return pk if isinstance(pk, str) else ", ".join(pk)


def _encode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    json_columns = SCHEMA[table].json_columns
    return {
        name: json.dumps(value, ensure_ascii=False) if name in json_columns and value is not None else value
        for name, value in row.items()
    }


def _decode(table: str, row: dict[str, Any]) -> dict[str, Any]:
    json_columns = SCHEMA[table].json_columns
    return {
        name: json.loads(value) if name in json_columns and value is not None else value
        for name, value in row.items()
    }


def _prompt_filter(search: str | None) -> tuple[str | None, list[str]]:
    # instr(lower(...)) rather than LIKE: no wildcard escaping, and '%' or '_' in a prompt match literally.
    if not search:
        return None, []
    return "instr(lower(prompt), lower(?)) > 0", [search]
