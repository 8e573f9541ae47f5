"""The catalog: which entities exist, at which version, and which source records they hold.

One small SQLite database beside the shards. It is the index for lookups by source key and the
record of sync runs. It never holds source values (only primary keys, which are not personal
data in the demo sources), so it needs no encryption of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from fabric.errors import StoreError
from fabric.store.sqlite import apsw, one_row, open_database

__all__ = [
    "BulkRewrite",
    "Catalog",
    "DictionaryRecord",
    "EntityRecord",
    "SourceRef",
    "SyncRunRecord",
    "utc_now",
]

# Schema steps: step N brings a catalog from user_version N to N + 1. Never edit a step that
# has shipped; append a new one.
_STEPS: list[list[str]] = [
    [
        """CREATE TABLE entities (
        entity_type TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        schema_version TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (entity_type, entity_id)
    ) WITHOUT ROWID""",
        """CREATE TABLE source_keys (
        entity_type TEXT NOT NULL,
        source TEXT NOT NULL,
        source_table TEXT NOT NULL,
        source_key TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        PRIMARY KEY (entity_type, source, source_table, source_key)
    ) WITHOUT ROWID""",
        "CREATE INDEX source_keys_by_entity ON source_keys (entity_type, entity_id)",
        """CREATE TABLE sync_runs (
        id INTEGER PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        mode TEXT NOT NULL,
        rows_read INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0,
        unchanged INTEGER NOT NULL DEFAULT 0,
        deleted INTEGER NOT NULL DEFAULT 0,
        error TEXT
    )""",
    ],
    [
        """CREATE TABLE schemas (
            entity_type TEXT PRIMARY KEY,
            version TEXT NOT NULL,
            layout TEXT NOT NULL
        )""",
    ],
    [
        # Why records share an entity: the links resolution used (similarities, no values).
        """CREATE TABLE links (
            entity_type TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            record_a TEXT NOT NULL,
            record_b TEXT NOT NULL,
            rule TEXT NOT NULL,
            score REAL,
            comparisons TEXT NOT NULL,
            PRIMARY KEY (entity_type, entity_id, record_a, record_b)
        ) WITHOUT ROWID""",
        # Ids of entities merged into another: lookups by them answer with the survivor.
        """CREATE TABLE aliases (
            entity_type TEXT NOT NULL,
            alias_id TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            sync_run INTEGER NOT NULL,
            PRIMARY KEY (entity_type, alias_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            entity_type TEXT NOT NULL,
            kind TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            others TEXT NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL,
            sync_run INTEGER NOT NULL
        )""",
        "CREATE INDEX events_by_entity ON events (entity_type, entity_id)",
        """CREATE TABLE watermarks (
            source TEXT NOT NULL,
            source_table TEXT NOT NULL,
            column_name TEXT NOT NULL,
            value TEXT NOT NULL,
            sync_run INTEGER NOT NULL,
            PRIMARY KEY (source, source_table)
        ) WITHOUT ROWID""",
        # The identity index for incremental resolution: each record's entity and keyed
        # hashes of its match keys. No personal data, in clear or otherwise.
        """CREATE TABLE identity_records (
            entity_type TEXT NOT NULL,
            ref TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            PRIMARY KEY (entity_type, ref)
        ) WITHOUT ROWID""",
        "CREATE INDEX identity_by_entity ON identity_records (entity_type, entity_id)",
        """CREATE TABLE identity_keys (
            entity_type TEXT NOT NULL,
            key_hash BLOB NOT NULL,
            ref TEXT NOT NULL,
            PRIMARY KEY (entity_type, key_hash, ref)
        ) WITHOUT ROWID""",
        "CREATE INDEX identity_keys_by_ref ON identity_keys (entity_type, ref)",
    ],
    [
        "ALTER TABLE sync_runs ADD COLUMN merged INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sync_runs ADD COLUMN split INTEGER NOT NULL DEFAULT 0",
    ],
    [
        # No query looks identity records up by entity; keeping the index cost every write.
        "DROP INDEX identity_by_entity",
    ],
    [
        # A keyed hash of each record's match values (NULL until the next sync writes it).
        "ALTER TABLE identity_records ADD COLUMN values_hash BLOB",
    ],
    [
        # Two indexes a full sync rebuilt over every source key and every identity key, for
        # deletes only. Deleting entities' source keys is now one statement that scans the
        # type once; each identity record lists its own key hashes, so forgetting it needs
        # no index of keys by record. Records indexed before have no list: the identity
        # index starts again, and the next sync of each entity type runs as a full sync.
        "DROP INDEX source_keys_by_entity",
        "DROP INDEX identity_keys_by_ref",
        "ALTER TABLE identity_records ADD COLUMN key_hashes BLOB",
        "DELETE FROM identity_records",
        "DELETE FROM identity_keys",
    ],
    [
        # zstd dictionaries images are compressed with, sealed (they hold fragments of the
        # images they were trained on); blobs name theirs by id.
        """CREATE TABLE dictionaries (
            dict_id TEXT PRIMARY KEY,
            entity_type TEXT NOT NULL,
            schema_version TEXT NOT NULL,
            samples INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            sealed BLOB NOT NULL
        )""",
    ],
    [
        # The rule set (match, masking) each run ran under: changing a rule changes it.
        "ALTER TABLE sync_runs ADD COLUMN rules_version TEXT",
    ],
]


#: Page cache of the catalog connection, in KiB.
_CACHE_KIB = 128 * 1024

#: Tables a full sync rewrites per entity type.
_BULK_TABLES = frozenset({"source_keys", "identity_records", "identity_keys", "links"})


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


#: Many ids as one parameter (a JSON array): one statement whatever their number, each id an
#: index probe in C.
_JSON_IDS = "(SELECT value FROM json_each(?))"


class SourceRef(NamedTuple):
    """One source record: which system, table and primary key.

    A named tuple rather than a frozen dataclass: a sync hashes and compares refs millions of
    times (dict keys of resolution and the identity index), and a tuple does both in C, three
    to four times faster than the dataclass's generated methods (same hash values).
    """

    source: str
    table: str
    key: str

    def __str__(self) -> str:
        return f"{self.source}.{self.table}:{self.key}"


@dataclass(frozen=True)
class EntityRecord:
    """The catalog's row for one entity."""

    entity_type: str
    entity_id: str
    version: int
    fingerprint: str
    schema_version: str
    created_at: str
    updated_at: str


@dataclass(frozen=True, repr=False)
class DictionaryRecord:
    """A compression dictionary as the catalog keeps it (sealed)."""

    dict_id: str
    entity_type: str
    schema_version: str
    samples: int
    created_at: str
    sealed: bytes

    def __repr__(self) -> str:
        return f"DictionaryRecord({self.dict_id!r}, {self.entity_type!r}, samples={self.samples})"


@dataclass(frozen=True)
class SyncRunRecord:
    """One sync run, as recorded."""

    id: int
    started_at: str
    finished_at: str | None
    status: str
    mode: str
    rows_read: int
    created: int
    updated: int
    unchanged: int
    deleted: int
    error: str | None
    merged: int = 0
    split: int = 0
    rules_version: str | None = None


def _dictionary(row: Sequence[Any]) -> DictionaryRecord:
    """A ``dictionaries`` row as a record."""
    dict_id, entity_type, version, samples, created, sealed = row
    return DictionaryRecord(
        str(dict_id), str(entity_type), str(version), int(samples), str(created), bytes(sealed)
    )


class BulkRewrite:
    """One transaction that replaces every row of an entity type in one catalog table.

    Readers see the old rows until it commits. The bulk tables have no secondary indexes
    (keeping one up to date row by row cost a full sync more than the rows themselves), and
    rows go straight into the table instead of through a staging copy. No other write may
    use the connection meanwhile.
    """

    def __init__(self, conn: apsw.Connection, table: str, entity_type: str) -> None:
        self._conn = conn
        (width,) = one_row(conn, "SELECT count(*) FROM pragma_table_info(?)", (table,))
        self._insert = f"INSERT OR REPLACE INTO main.{table} VALUES ({', '.join('?' * width)})"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DELETE FROM main.{table} WHERE entity_type = ?", (entity_type,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._open = True

    def add(self, rows: Iterable[tuple[object, ...]]) -> None:
        """Write rows (whole table rows, entity type first)."""
        self._conn.executemany(self._insert, rows)

    def finish(self) -> None:
        """Commit."""
        if not self._open:
            return
        self._conn.execute("COMMIT")
        self._open = False

    def abort(self) -> None:
        """Roll back: the table is as it was."""
        if self._open:
            self._open = False
            self._conn.execute("ROLLBACK")

    def __enter__(self) -> BulkRewrite:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


class Catalog:
    """Entity index, source-key map and sync-run log in ``catalog.db``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = open_database(path)
            current = int(self._conn.pragma("user_version"))
            if current > len(_STEPS):
                raise StoreError(
                    f"the catalog at {path} was written by a newer fabric "
                    f"(schema {current}); upgrade fabric"
                )
            # The catalog's indexes are far larger than SQLite's 2 MiB default cache on a big
            # store; a full sync's index writes ran several times slower without this.
            self._conn.pragma("cache_size", -_CACHE_KIB)
            for step in range(current, len(_STEPS)):
                with self._conn:
                    for statement in _STEPS[step]:
                        self._conn.execute(statement)
                    self._conn.pragma("user_version", step + 1)
        except (OSError, apsw.Error) as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise StoreError(f"cannot open the catalog at {path}: {exc}") from exc

    @property
    def connection(self) -> apsw.Connection:
        """The catalog's connection, for the modules that keep their tables here."""
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- entities ---------------------------------------------------------------------------

    def entity(self, entity_type: str, entity_id: str) -> EntityRecord | None:
        """Return one entity's catalog row."""
        row = self._conn.execute(
            "SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?",
            (entity_type, entity_id),
        ).fetchone()
        return None if row is None else EntityRecord(*row)

    def entities(self, entity_type: str) -> dict[str, EntityRecord]:
        """Return every entity of a type by id."""
        return {
            row[1]: EntityRecord(*row)
            for row in self._conn.execute(
                "SELECT * FROM entities WHERE entity_type = ?", (entity_type,)
            )
        }

    def entities_in(self, entity_type: str, entity_ids: Iterable[str]) -> dict[str, EntityRecord]:
        """Return the given entities' rows (missing ones are left out)."""
        return {
            row[1]: EntityRecord(*row)
            for row in self._conn.execute(
                f"SELECT * FROM entities WHERE entity_type = ? AND entity_id IN {_JSON_IDS}",
                (entity_type, json.dumps(sorted(set(entity_ids)))),
            )
        }

    def existing(self, entity_type: str, entity_ids: Sequence[str]) -> set[str]:
        """Which of ``entity_ids`` are catalogued: one query (the ids go in as one JSON
        array), so a spine's hundred thousand keys cost one index probe each, in C."""
        rows = self._conn.execute(
            f"SELECT entity_id FROM entities WHERE entity_type = ? AND entity_id IN {_JSON_IDS}",
            (entity_type, json.dumps(list(entity_ids))),
        )
        return {row[0] for row in rows}

    def count(self, entity_type: str | None = None) -> int:
        """Number of entities (of one type, or all)."""
        if entity_type is None:
            return int(one_row(self._conn, "SELECT count(*) FROM entities")[0])
        return int(
            one_row(
                self._conn, "SELECT count(*) FROM entities WHERE entity_type = ?", (entity_type,)
            )[0]
        )

    def first_ids(self, entity_type: str, limit: int) -> list[str]:
        """Up to ``limit`` entity ids, the first by the index."""
        return [
            str(row[0])
            for row in self._conn.execute(
                "SELECT entity_id FROM entities WHERE entity_type = ? LIMIT ?",
                (entity_type, limit),
            )
        ]

    def sample_ids(self, entity_type: str, limit: int = 3) -> list[str]:
        """A few entity ids, largest entities first (for examples in the demo)."""
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT entity_id FROM source_keys WHERE entity_type = ? GROUP BY entity_id "
                "ORDER BY count(DISTINCT source) DESC, count(*) DESC, entity_id LIMIT ?",
                (entity_type, limit),
            )
        ]

    def apply_batch(
        self,
        records: Sequence[EntityRecord],
        refs: Iterable[tuple[str, SourceRef]],
        entity_type: str,
        *,
        previous: Mapping[str, Iterable[SourceRef]] | None = None,
    ) -> None:
        """Record new entity versions and their source keys in one transaction.

        Without ``previous`` the given keys are added (a patch adds rows; a full sync writes
        no keys here, it rewrites them all with :meth:`rewrite`). With ``previous`` (entity id
        -> its source keys before) the entities' keys are replaced by writing only the
        difference, so a record that moved to another entity is found under its new one only,
        and an entity that gained one order of thirty records gets one key written.
        """
        new: dict[str, set[SourceRef]] = {r.entity_id: set() for r in records}
        for entity_id, ref in refs:
            new.setdefault(entity_id, set()).add(ref)
        before = previous or {}
        with self._conn:
            if previous is not None:
                # Guarded by the entity id: a key that moved to another entity may already
                # have been written for that one.
                self._conn.executemany(
                    "DELETE FROM source_keys WHERE entity_type = ? AND source = ? AND "
                    "source_table = ? AND source_key = ? AND entity_id = ?",
                    [
                        (entity_type, ref.source, ref.table, ref.key, entity_id)
                        for entity_id, keys in new.items()
                        for ref in set(before.get(entity_id, ())) - keys
                    ],
                )
            added = [(e, ref) for e, keys in new.items() for ref in keys - set(before.get(e, ()))]
            self._conn.executemany(
                "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.entity_type,
                        r.entity_id,
                        r.version,
                        r.fingerprint,
                        r.schema_version,
                        r.created_at,
                        r.updated_at,
                    )
                    for r in records
                ],
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO source_keys VALUES (?, ?, ?, ?, ?)",
                [
                    (entity_type, ref.source, ref.table, ref.key, entity_id)
                    for entity_id, ref in added
                ],
            )

    def delete_entities(self, entity_type: str, entity_ids: Sequence[str]) -> None:
        """Forget entities and their source keys."""
        with self._conn:
            params = [(entity_type, e) for e in entity_ids]
            self._conn.executemany(
                "DELETE FROM entities WHERE entity_type = ? AND entity_id = ?", params
            )
            # One statement, one pass over the type's keys: they are not indexed by entity.
            self._conn.execute(
                "DELETE FROM source_keys WHERE entity_type = ? AND entity_id IN "
                "(SELECT value FROM json_each(?))",
                (entity_type, json.dumps(list(entity_ids))),
            )

    # -- bulk rewrites (full syncs) ---------------------------------------------------------

    def rewrite(self, table: str, entity_type: str) -> BulkRewrite:
        """Start replacing every row of one entity type in ``table`` (see :class:`BulkRewrite`).

        Use it as a context manager (committed on success, rolled back on error), or call
        ``finish``/``abort`` yourself when the rows arrive over a longer stretch of work.
        """
        if table not in _BULK_TABLES:
            raise ValueError(f"not a table a full sync rewrites: {table}")
        return BulkRewrite(self._conn, table, entity_type)

    # -- source keys ------------------------------------------------------------------------

    def find_by_source(
        self, entity_type: str, source: str, table: str | None, key: str
    ) -> list[str]:
        """Return the entity ids holding a source record (usually exactly one)."""
        if table is None:
            rows = self._conn.execute(
                "SELECT DISTINCT entity_id FROM source_keys WHERE entity_type = ? AND source = ?"
                " AND source_key = ?",
                (entity_type, source, key),
            )
        else:
            rows = self._conn.execute(
                "SELECT entity_id FROM source_keys WHERE entity_type = ? AND source = ? AND "
                "source_table = ? AND source_key = ?",
                (entity_type, source, table, key),
            )
        return [str(r[0]) for r in rows]

    def source_map(
        self, entity_type: str, tables: Iterable[tuple[str, str]] | None = None
    ) -> dict[SourceRef, str]:
        """Every known source record of a type (or of some source tables) and its entity id."""
        if tables is None:
            return {
                SourceRef(s, t, k): e
                for s, t, k, e in self._conn.execute(
                    "SELECT source, source_table, source_key, entity_id FROM source_keys "
                    "WHERE entity_type = ?",
                    (entity_type,),
                )
            }
        found: dict[SourceRef, str] = {}
        for source, table in tables:
            for key, entity_id in self._conn.execute(
                "SELECT source_key, entity_id FROM source_keys "
                "WHERE entity_type = ? AND source = ? AND source_table = ?",
                (entity_type, source, table),
            ):
                found[SourceRef(source, table, str(key))] = str(entity_id)
        return found

    # -- schemas ----------------------------------------------------------------------------

    def record_schema(self, entity_type: str, version: str, layout: dict[str, list[str]]) -> None:
        """Remember the table layout entities of a type were last built with."""
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO schemas VALUES (?, ?, ?)",
                (entity_type, version, json.dumps(layout)),
            )

    def schema_version(self, entity_type: str) -> str | None:
        """The schema version entities of a type were last built with (None: never built)."""
        row = self._conn.execute(
            "SELECT version FROM schemas WHERE entity_type = ?", (entity_type,)
        ).fetchone()
        return None if row is None else str(row[0])

    def schemas(self) -> dict[str, dict[str, list[str]]]:
        """Entity type -> table -> columns, as of the last sync."""
        return {
            str(t): json.loads(str(layout))
            for t, layout in self._conn.execute("SELECT entity_type, layout FROM schemas")
        }

    # -- compression dictionaries ------------------------------------------------------------

    def put_dictionary(
        self, dict_id: str, entity_type: str, schema_version: str, samples: int, sealed: bytes
    ) -> None:
        """Keep a sealed dictionary (joins a transaction the caller has open)."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO dictionaries VALUES (?, ?, ?, ?, ?, ?)",
                (dict_id, entity_type, schema_version, samples, utc_now(), sealed),
            )

    def reseal_dictionary(self, dict_id: str, sealed: bytes) -> None:
        """Replace a dictionary's sealed bytes (a key rotation)."""
        with self._conn:
            self._conn.execute(
                "UPDATE dictionaries SET sealed = ? WHERE dict_id = ?", (sealed, dict_id)
            )

    def dictionaries(self) -> list[DictionaryRecord]:
        """Every dictionary, oldest first."""
        return [
            _dictionary(row)
            for row in self._conn.execute("SELECT * FROM dictionaries ORDER BY created_at, rowid")
        ]

    def latest_dictionary(self, entity_type: str, schema_version: str) -> DictionaryRecord | None:
        """The newest dictionary of one entity type and schema."""
        row = self._conn.execute(
            "SELECT * FROM dictionaries WHERE entity_type = ? AND schema_version = ? "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (entity_type, schema_version),
        ).fetchone()
        return None if row is None else _dictionary(row)

    def dictionary(self, dict_id: str) -> bytes | None:
        """One dictionary's sealed bytes."""
        row = self._conn.execute(
            "SELECT sealed FROM dictionaries WHERE dict_id = ?", (dict_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    # -- sync runs --------------------------------------------------------------------------

    def start_run(self, mode: str, rules_version: str | None = None) -> int:
        """Record the start of a sync run (under a rule-set version) and return its id."""
        with self._conn:
            self._conn.execute(
                "INSERT INTO sync_runs (started_at, status, mode, rules_version) "
                "VALUES (?, 'running', ?, ?)",
                (utc_now(), mode, rules_version),
            )
            run_id = int(self._conn.last_insert_rowid())
        return run_id

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        counts: dict[str, int],
        error: str | None = None,
        mode: str | None = None,
    ) -> None:
        """Record the end of a sync run (and the mode it really ran in, when given)."""
        with self._conn:
            if mode is not None:
                self._conn.execute("UPDATE sync_runs SET mode = ? WHERE id = ?", (mode, run_id))
            self._conn.execute(
                "UPDATE sync_runs SET finished_at = ?, status = ?, rows_read = ?, created = ?, "
                "updated = ?, unchanged = ?, deleted = ?, error = ?, merged = ?, split = ? "
                "WHERE id = ?",
                (
                    utc_now(),
                    status,
                    counts.get("rows_read", 0),
                    counts.get("created", 0),
                    counts.get("updated", 0),
                    counts.get("unchanged", 0),
                    counts.get("deleted", 0),
                    error,
                    counts.get("merged", 0),
                    counts.get("split", 0),
                    run_id,
                ),
            )
        self._conn.pragma("optimize")  # what apsw's best practice did on every open

    def last_succeeded_run(self) -> SyncRunRecord | None:
        """The latest sync run that succeeded: the state the store is in."""
        row = self._conn.execute(
            "SELECT * FROM sync_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else SyncRunRecord(*row)

    def runs(self, limit: int = 10) -> list[SyncRunRecord]:
        """The latest sync runs, newest first."""
        return [
            SyncRunRecord(*row)
            for row in self._conn.execute(
                "SELECT * FROM sync_runs ORDER BY id DESC LIMIT ?", (limit,)
            )
        ]
