"""The catalog's tables: schema steps, and opening the file at the newest step.

Every table of the catalog is created here and nowhere else; the modules beside this one hold
the queries on them, one group of tables each.
"""

from __future__ import annotations

from pathlib import Path

from fabric.errors import StoreError
from fabric.store.sqlite import apsw, open_database

__all__ = ["STEPS", "open_catalog"]

# Schema steps: step N brings a catalog from user_version N to N + 1. Never edit a step that
# has shipped; append a new one.
STEPS: list[list[str]] = [
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


def open_catalog(path: Path) -> apsw.Connection:
    """Open (or create) the catalog at ``path`` and bring its schema to the newest step.

    Raises:
        StoreError: the file cannot be opened or upgraded, or a newer fabric wrote it.
    """
    conn: apsw.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_database(path)
        current = int(conn.pragma("user_version"))
        if current > len(STEPS):
            raise StoreError(
                f"the catalog at {path} was written by a newer fabric "
                f"(schema {current}); upgrade fabric"
            )
        # The catalog's indexes are far larger than SQLite's 2 MiB default cache on a big
        # store; a full sync's index writes ran several times slower without this.
        conn.pragma("cache_size", -_CACHE_KIB)
        for step in range(current, len(STEPS)):
            with conn:
                for statement in STEPS[step]:
                    conn.execute(statement)
                conn.pragma("user_version", step + 1)
    except (OSError, apsw.Error) as exc:
        if conn is not None:
            conn.close()
        raise StoreError(f"cannot open the catalog at {path}: {exc}") from exc
    return conn
