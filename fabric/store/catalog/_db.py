"""The catalog's one connection, on either backend: SQLite (``catalog.db``) or PostgreSQL.

The catalog's queries are written once, in the SQL both speak: ``?`` placeholders (turned into
psycopg's ``%s`` here), upserts as ``INSERT … ON CONFLICT (key) DO UPDATE`` (SQLite 3.24 and
later take them), ``RETURNING``. What still differs is a method or an attribute of the
connection: a list of ids passed as one JSON parameter (``ids``), the column that orders rows
by insertion (``insertion_order``), beginning a transaction that takes the write lock at once
(``begin``), and SQLite's ``PRAGMA optimize``.

``with db:`` is a transaction; nested, a savepoint, so a write of one group of tables joins
a transaction another has open (a full sync's bulk rewrite), on both backends.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from fabric.store.sqlite import apsw

__all__ = ["TABLES", "CatalogDb", "PostgresDb", "Rows", "SqliteDb", "upsert"]

#: Every catalog table a row is written to whole: its columns, in order, and its key.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "entities": (
        (
            "entity_type",
            "entity_id",
            "version",
            "fingerprint",
            "schema_version",
            "created_at",
            "updated_at",
        ),
        ("entity_type", "entity_id"),
    ),
    "source_keys": (
        ("entity_type", "source", "source_table", "source_key", "entity_id"),
        ("entity_type", "source", "source_table", "source_key"),
    ),
    "schemas": (("entity_type", "version", "layout"), ("entity_type",)),
    "links": (
        ("entity_type", "entity_id", "record_a", "record_b", "rule", "score", "comparisons"),
        ("entity_type", "entity_id", "record_a", "record_b"),
    ),
    "aliases": (
        ("entity_type", "alias_id", "entity_id", "created_at", "sync_run"),
        ("entity_type", "alias_id"),
    ),
    "watermarks": (
        ("source", "source_table", "column_name", "value", "sync_run"),
        ("source", "source_table"),
    ),
    "identity_records": (
        ("entity_type", "ref", "entity_id", "values_hash", "key_hashes"),
        ("entity_type", "ref"),
    ),
    "identity_keys": (("entity_type", "key_hash", "ref"), ("entity_type", "key_hash", "ref")),
}


def upsert(table: str) -> str:
    """``INSERT`` of one whole row of ``table`` that replaces the row with its key."""
    columns, key = TABLES[table]
    marks = ", ".join("?" * len(columns))
    head = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)})"
    )
    rest = [c for c in columns if c not in key]
    if not rest:
        return f"{head} DO NOTHING"
    return f"{head} DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}"


class Rows(Protocol):
    """What a query answers: rows to iterate, or to fetch."""

    def __iter__(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class CatalogDb(Protocol):
    """The catalog's connection, whichever the backend."""

    #: A subquery of the ids in one JSON array parameter (``… IN {ids}``).
    ids: str
    #: The column that orders a table's rows as they were inserted.
    insertion_order: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def begin(self) -> None:
        """Start a transaction that holds the write lock until :meth:`commit`."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def optimize(self) -> None:
        """Let the database refresh its planner statistics (after a run)."""

    def close(self) -> None: ...

    def __enter__(self) -> CatalogDb: ...

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any: ...


class SqliteDb:
    """``catalog.db`` through apsw (its ``with`` is a savepoint when nested)."""

    ids = "(SELECT value FROM json_each(?))"
    insertion_order = "rowid"

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        rows: Rows = self._conn.execute(sql, params)
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")

    def optimize(self) -> None:
        self._conn.pragma("optimize")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SqliteDb:
        self._conn.__enter__()
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any:
        return self._conn.__exit__(kind, error, trace)


# A ``?`` placeholder outside quotes (the catalog's SQL quotes only plain words).
_PLACEHOLDER = re.compile(r"\?")


class PostgresDb:
    """The catalog's tables on PostgreSQL (schema ``fabric``), through one psycopg connection
    in autocommit mode: ``with db:`` and :meth:`begin` open transactions explicitly."""

    ids = "(SELECT jsonb_array_elements_text(?::jsonb))"
    insertion_order = "seq"

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sql: dict[str, str] = {}
        self._transactions: list[Any] = []
        # One connection serves every thread of the process (as the SQLite one does): a
        # transaction is one thread's at a time.
        self._lock = threading.RLock()

    def _translate(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        return found

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        rows: Rows = self._conn.execute(self._translate(sql), params)
        return rows

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if batch:
            with self._conn.cursor() as cursor:
                cursor.executemany(self._translate(sql), batch)

    def begin(self) -> None:
        self._lock.acquire()
        self._conn.execute("BEGIN")

    def commit(self) -> None:
        try:
            self._conn.execute("COMMIT")
        finally:
            self._lock.release()

    def rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        finally:
            self._lock.release()

    def optimize(self) -> None:
        """Nothing: PostgreSQL's autovacuum keeps statistics."""

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PostgresDb:
        self._lock.acquire()
        transaction = self._conn.transaction()
        transaction.__enter__()
        self._transactions.append(transaction)
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> Any:
        try:
            return self._transactions.pop().__exit__(kind, error, trace)
        finally:
            self._lock.release()
