"""The catalog: which entities exist, at which version, and which source records they hold.

One small SQLite database beside the shards. It is the index for lookups by source key and the
record of sync runs, of what happened to entities (links, merges, splits, aliases), of how far
each source table was read and of the identity index. It never holds source values (only
primary keys, which are not personal data in the demo sources, and keyed hashes), so it needs
no encryption of its own.

This package is the one owner of the catalog's tables: every query on them is a method of
:class:`Catalog`, and no other module sees its connection. The methods come in groups of
tables, one private module each (``_entities``, ``_dictionaries``, ``_runs``, ``_history``,
``_identity``; the schema steps in ``_schema``), mixed into one class over one connection,
so a write of one group joins a transaction another has open.
"""

from __future__ import annotations

from pathlib import Path

from fabric.store.catalog._bulk import BulkRewrite
from fabric.store.catalog._copy import CopyTables
from fabric.store.catalog._dictionaries import DictionaryTables
from fabric.store.catalog._entities import EntityTables
from fabric.store.catalog._history import HistoryTables
from fabric.store.catalog._identity import KEY_HASH_BYTES, IdentityTables
from fabric.store.catalog._records import (
    DictionaryRecord,
    EntityEvent,
    EntityRecord,
    SourceRef,
    StoredLink,
    SyncRunRecord,
    utc_now,
)
from fabric.store.catalog._runs import RunTables
from fabric.store.catalog._schema import open_catalog, open_postgres_catalog
from fabric.store.database import Database, SqliteDb

__all__ = [
    "KEY_HASH_BYTES",
    "BulkRewrite",
    "Catalog",
    "DictionaryRecord",
    "EntityEvent",
    "EntityRecord",
    "SourceRef",
    "StoredLink",
    "SyncRunRecord",
    "utc_now",
]


class Catalog(EntityTables, DictionaryTables, RunTables, HistoryTables, IdentityTables, CopyTables):
    """Every query on ``catalog.db``: one mixin per group of tables, over one connection."""

    def __init__(self, path: Path) -> None:
        self.path: Path | None = path
        #: where the catalog is, for messages
        self.where = str(path)
        self._conn: Database = SqliteDb(open_catalog(path))

    @classmethod
    def on_postgres(cls, url: str, statement_timeout_ms: int | None = None) -> Catalog:
        """The catalog on the PostgreSQL server at ``url`` (tables in schema ``fabric``,
        created on first use).

        Raises:
            StoreError: the server cannot be reached, or a newer fabric made the tables.
        """
        catalog = cls.__new__(cls)
        db = open_postgres_catalog(url, statement_timeout_ms)
        catalog._conn, catalog.path, catalog.where = db, None, db.target
        return catalog

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
