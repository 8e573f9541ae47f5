"""Copying a catalog, table by table, into another (``fabric store copy``)."""

from __future__ import annotations

from collections.abc import Callable

from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import TABLES

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
                rows = self._conn.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
                for at in range(0, len(rows), _BATCH):
                    batch = [tuple(row) for row in rows[at : at + _BATCH]]
                    into.load(table, columns, key, batch)
                    progress("copy: catalog", len(batch))
                copied += len(rows)
            for numbered, names in _NUMBERED.items():
                marks = ", ".join("?" * len(names.split(",")))
                copied += self._copy(
                    target,
                    f"SELECT {names} FROM {numbered} ORDER BY id",
                    f"INSERT INTO {numbered} ({names}) VALUES ({marks})",
                    progress,
                )
                into.restart_numbering(numbered, "id")
            copied += self._copy(
                target,
                f"SELECT {_DICTIONARIES} FROM dictionaries "
                f"ORDER BY created_at, {self._conn.insertion_order}",
                f"INSERT INTO dictionaries ({_DICTIONARIES}) VALUES (?, ?, ?, ?, ?, ?)",
                progress,
            )
            copied += self._copy(
                target,
                "SELECT name, value FROM settings",
                "INSERT INTO settings (name, value) VALUES (?, ?)",
                progress,
            )
        return copied

    def _copy(
        self, target: CopyTables, select: str, insert: str, progress: Callable[[str, int], None]
    ) -> int:
        rows = self._conn.execute(select).fetchall()
        for at in range(0, len(rows), _BATCH):
            batch = rows[at : at + _BATCH]
            target._conn.executemany(insert, [tuple(row) for row in batch])
            progress("copy: catalog", len(batch))
        return len(rows)
