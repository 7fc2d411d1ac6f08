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
    foreign_keys: tuple[tuple[str, str, str], ...] = ()  # (column, other table, other column)
    pk: str = "id"
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
}


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

    # generic row access, shared by every table

    def _insert(self, table: str, fields: dict[str, Any]) -> int:
        spec = SCHEMA[table]
        unknown = set(fields) - (set(spec.columns) - {spec.pk})
        if unknown:
            raise ValueError(f"{table} has no writable column(s): {', '.join(sorted(unknown))}")
        row = {
            name: json.dumps(value, ensure_ascii=False) if name in spec.json_columns and value is not None else value
            for name, value in fields.items()
        }
        with self._connect() as db:
            return db[table].insert(row).last_pk

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
