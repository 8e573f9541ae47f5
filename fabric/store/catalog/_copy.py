"""Copying a catalog, table by table, into another (``fabric store copy``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import TABLES
from fabric.store.database import Database

__all__ = ["CopyTables"]

#: Tables whose rows keep the ids they were given (``sync_runs``, ``events``), with their
#: columns; ``dictionaries`` and ``settings`` are copied by name.
_NUMBERED = {
    "sync_runs": (
        "id, started_at, finished_at, status, mode, rows_read, created, updated, unchanged, "
        "deleted, error, merged, split, rules_version"
    ),
    "events": "id, entity_type, kind, entity_id, others, reason, at, sync_run",
}
_DICTIONARIES = "dict_id, entity_type, schema_version, samples, created_at, sealed"
#: Rows read and written at a time.
_BATCH = 5000


class CopyTables(Tables):
    """Every row of every table, into another catalog (of either backend)."""

    def copy_to(self, target: CopyTables, progress: Callable[[str, int], None]) -> int:
        """Replace the rows of every table of ``target`` with this catalog's, in one
        transaction of the target; how many rows. Sealed values (dictionaries) are copied
        as they are: nothing is decrypted.
        """
        copied = 0
        into = target._conn
        with into:
            for table in (*TABLES, *_NUMBERED, "dictionaries", "settings"):
                into.execute(f"DELETE FROM {table}")
            for table, (columns, key) in TABLES.items():
                copied += self._copy(
                    f"SELECT {', '.join(columns)} FROM {table}",
                    functools.partial(into.load, table, columns, key),
                    progress,
                )
            for numbered, names in _NUMBERED.items():
                copied += self._copy(
                    f"SELECT {names} FROM {numbered} ORDER BY id",
                    _insert(into, numbered, names),
                    progress,
                )
                into.restart_numbering(numbered, "id")
            copied += self._copy(
                f"SELECT {_DICTIONARIES} FROM dictionaries "
                f"ORDER BY created_at, {self._conn.insertion_order}",
                _insert(into, "dictionaries", _DICTIONARIES),
                progress,
            )
            copied += self._copy(
                "SELECT name, value FROM settings",
                _insert(into, "settings", "name, value"),
                progress,
            )
        return copied

    def _copy(
        self,
        select: str,
        write: Callable[[list[tuple[Any, ...]]], None],
        progress: Callable[[str, int], None],
    ) -> int:
        """Every row ``select`` reads here, handed to ``write`` in batches; how many."""
        copied = 0
        for batch in self._conn.stream(select, _BATCH):
            write(batch)
            progress("copy: catalog", len(batch))
            copied += len(batch)
        return copied


def _insert(into: Database, table: str, names: str) -> Callable[[list[tuple[Any, ...]]], None]:
    """Writes rows of ``names`` (comma-separated columns) into ``table`` of ``into``."""
    marks = ", ".join("?" * len(names.split(",")))
    statement = f"INSERT INTO {table} ({names}) VALUES ({marks})"
    return lambda batch: into.executemany(statement, batch)
