"""The store's base: the data folder, connections, JSON columns and the row access every area shares.

Connections: one per call, opened by `_connect`. The file is shared by the studio's worker
threads and by the job processes it starts (training, grids, curation), so the serialisation
that matters is SQLite's own (WAL + busy timeout), not a Python lock; a fresh connection costs
microseconds and is never shared between threads.

The public methods here take a table name and plain values, never SQL; the private ones that take
a WHERE clause are for the named queries of each area (generations, wheel, runs, evaluations).
"""

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.db import NotFoundError

from pipeline.errors import UserInputError
from pipeline.store.schema import SCHEMA, ensure_tables

DB_FILENAME = "dsd.sqlite"
DEFAULT_HOME = "dsd-data"
BUSY_TIMEOUT_MS = 30_000


def data_home(override: str | Path | None = None) -> Path:
    """The data folder: `--home`, else the environment's DSD_HOME, else ./dsd-data."""
    return Path(override or os.environ.get("DSD_HOME") or DEFAULT_HOME)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StoreBase:
    """The data folder's database file, and row access by table and primary key."""

    def __init__(self, home: str | Path):
        self.home = Path(home).expanduser()
        self.path = self.home / DB_FILENAME
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserInputError(f"cannot create the data folder {self.home} ({error.strerror}): "
                                 "use a folder you can write to (--home or DSD_HOME)") from None
        with self._connect() as db:
            # WAL is a property of the file: set once, every later connection inherits it.
            db.conn.execute("PRAGMA journal_mode=WAL")
            ensure_tables(db)
            _check_writable(db.conn)

    @contextmanager
    def _connect(self) -> Iterator[Database]:
        try:
            conn = sqlite3.connect(self.path)
        except sqlite3.Error as error:
            raise unusable_database(self.path, error) from None
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough under WAL, much faster
            yield Database(conn)
        except sqlite3.DatabaseError as error:
            if not any(sign in str(error) for sign in UNUSABLE_SIGNS):
                raise
            raise unusable_database(self.path, error) from None
        finally:
            conn.close()

    @contextmanager
    def _writing(self) -> Iterator[Database]:
        """A connection in a write transaction that takes the write lock first (BEGIN IMMEDIATE), committed at
        the end or rolled back. Under WAL a transaction that reads first (sqlite-utils reads the table's
        columns before it writes) and then writes fails at once with "database is locked" when another
        process wrote in between; one that starts by taking the lock waits its turn (the busy timeout)."""
        with self._connect() as db:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.rollback()
                raise
            db.conn.commit()

    def add(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Insert rows whose unique key is new; rows already there are left alone. Returns how many were new."""
        encoded = [encode_row(table, _stamped(table, row)) for row in rows]
        with self._writing() as db:
            # total_changes counts this connection's rows only: other processes may be writing too.
            before = db.conn.total_changes
            db[table].insert_all(encoded, ignore=True)
            return db.conn.total_changes - before

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert one row; returns its id."""
        return self._insert(table, _stamped(table, row))

    def put(self, table: str, row: dict[str, Any]) -> None:
        """Insert or replace the row with this primary key (verdicts, reviews, runs, cache entries)."""
        with self._writing() as db:
            db[table].upsert(encode_row(table, row), pk=SCHEMA[table].pk)

    def get(self, table: str, pk: Any) -> dict[str, Any]:
        """The row with this primary key, JSON columns decoded; KeyError if there is none."""
        with self._connect() as db:
            try:
                return decode_row(table, db[table].get(pk))
            except NotFoundError:
                raise KeyError(f"no row {pk!r} in {table}") from None

    def update(self, table: str, pk: Any, fields: dict[str, Any]) -> None:
        with self._writing() as db:
            db[table].update(pk, encode_row(table, fields))

    def transition(self, table: str, pk: Any, column: str, old: Any, new: Any) -> bool:
        """Set `column` from `old` to `new` atomically; False when it no longer held `old`."""
        with self._connect() as db, db.conn:
            changed = db.conn.execute(f"update [{table}] set [{column}] = ? where [{SCHEMA[table].pk}] = ? and [{column}] = ?",
                                      [new, pk, old]).rowcount
        return changed == 1

    # for the named queries: a WHERE clause and its arguments, written in this package only

    def _insert(self, table: str, fields: dict[str, Any]) -> int:
        spec = SCHEMA[table]
        unknown = set(fields) - (set(spec.columns) - {spec.pk})
        if unknown:
            raise ValueError(f"{table} has no writable column(s): {', '.join(sorted(unknown))}")
        with self._writing() as db:
            return db[table].insert(encode_row(table, fields)).last_pk

    def _rows(self, table: str, where: str | None = None, args: list | None = None, *, order_by: str | None = None,
              limit: int | None = None, offset: int | None = None) -> list[dict[str, Any]]:
        """Rows of `table` (oldest first unless `order_by` says otherwise), JSON columns decoded."""
        with self._connect() as db:
            found = db[table].rows_where(where, args or [], order_by=order_by or _pk_order(table), limit=limit, offset=offset)
            return [decode_row(table, row) for row in found]

    def _first(self, table: str, where: str, args: list, order_by: str | None = None) -> dict[str, Any] | None:
        found = self._rows(table, where, args, order_by=order_by, limit=1)
        return found[0] if found else None

    def _count(self, table: str, where: str | None = None, args: list | None = None) -> int:
        with self._connect() as db:
            return db[table].count_where(where, args or [])

    def _query(self, sql: str, args: list | None = None) -> list[dict[str, Any]]:
        with self._connect() as db:
            return [dict(row) for row in db.query(sql, args or [])]

    def _scalar(self, sql: str, args: list | None = None) -> Any:
        with self._connect() as db:
            return db.execute(sql, args or []).fetchone()[0]


# What SQLite says of a file it cannot use at all (as opposed to a constraint or a busy lock).
UNUSABLE_SIGNS = ("readonly database", "not a database", "malformed", "unable to open")


def unusable_database(path: Path, error: sqlite3.Error) -> UserInputError:
    """One line naming the database file and what to do about it."""
    reason = str(error)
    if "readonly" in reason:
        return UserInputError(f"the database {path} is read-only: make it writable (chmod u+w) or use another "
                              "data folder (--home or DSD_HOME)")
    if "unable to open" in reason:
        return UserInputError(f"cannot open the database {path}: check the data folder's permissions, "
                              "or use another data folder (--home or DSD_HOME)")
    return UserInputError(f"{path} is not a usable database ({reason}): restore it from a backup, or move it "
                          "aside to start an empty one, or use another data folder (--home or DSD_HOME)")


def _check_writable(conn: sqlite3.Connection) -> None:
    """Fail now, before any work, on a file SQLite can read but not write: rewrite a header field to its own
    value inside a transaction that is rolled back (SQLite checks write access only when it writes)."""
    conn.commit()  # whatever ensure_tables left open: the probe is a transaction of its own
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version={int(version)}")
    finally:
        conn.rollback()


def _stamped(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """The row with its creation time, for tables that record one."""
    return {"created_at": utc_now(), **row} if "created_at" in SCHEMA[table].columns else row


def _pk_order(table: str) -> str:
    pk = SCHEMA[table].pk
    return pk if isinstance(pk, str) else ", ".join(pk)


def encode_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    json_columns = SCHEMA[table].json_columns
    return {
        name: json.dumps(value, ensure_ascii=False) if name in json_columns and value is not None else value
        for name, value in row.items()
    }


def decode_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    json_columns = SCHEMA[table].json_columns
    return {
        name: json.loads(value) if name in json_columns and value is not None else value
        for name, value in row.items()
    }
