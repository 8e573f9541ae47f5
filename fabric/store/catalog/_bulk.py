"""Bulk rewrites: how a full sync replaces every row of an entity type in one table."""

from __future__ import annotations

from collections.abc import Iterable

from fabric.store.catalog._upsert import TABLES
from fabric.store.database import Database

__all__ = ["BULK_TABLES", "BulkRewrite"]

#: Tables a full sync rewrites per entity type.
BULK_TABLES = frozenset({"source_keys", "identity_records", "identity_keys", "links"})


class BulkRewrite:
    """One transaction that replaces every row of an entity type in one catalog table.

    Readers see the old rows until it commits. The bulk tables have no secondary indexes
    (keeping one up to date row by row cost a full sync more than the rows themselves). In
    SQLite rows go straight into the table; on PostgreSQL they are copied (``COPY``) into a
    temporary table as they come and moved into the table as it commits
    (:meth:`~fabric.store.database.Database.stage`, ``flush``). No other write may use the
    connection meanwhile.
    """

    def __init__(self, conn: Database, table: str, entity_type: str) -> None:
        self._conn = conn
        self._table = table
        conn.begin()
        try:
            conn.execute(f"DELETE FROM {table} WHERE entity_type = ?", (entity_type,))
        except BaseException:
            conn.rollback()
            raise
        self._open = True

    def add(self, rows: Iterable[tuple[object, ...]]) -> None:
        """Write rows (whole table rows, entity type first)."""
        columns, key = TABLES[self._table]
        self._conn.stage(self._table, columns, key, rows)

    def finish(self) -> None:
        """Commit."""
        if not self._open:
            return
        columns, key = TABLES[self._table]
        try:
            # Every row of the type was deleted in this transaction: none is replaced.
            self._conn.flush(self._table, columns, key, emptied=True)
        except BaseException:
            self.abort()
            raise
        self._conn.commit()
        self._open = False

    def abort(self) -> None:
        """Roll back: the table is as it was."""
        if self._open:
            self._open = False
            self._conn.rollback()

    def __enter__(self) -> BulkRewrite:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()
