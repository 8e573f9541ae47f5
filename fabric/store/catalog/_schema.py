"""The catalog's tables: schema steps, and opening the file at the newest step.

Every table of the catalog is created here and nowhere else; the modules beside this one hold
the queries on them, one group of tables each.
"""

from __future__ import annotations

from pathlib import Path

from fabric.errors import StoreError
from fabric.store.database import SCHEMA, PostgresThreads, connect_postgres, driver_reason
from fabric.store.sqlite import apsw, open_database

__all__ = ["POSTGRES_TABLES", "STEPS", "open_catalog", "open_postgres_catalog"]

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
    [
        # Small shared values: how many times a server was told to reload (every server of
        # the store reloads when it changes).
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
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


#: The catalog on PostgreSQL, in schema ``fabric`` beside the store's blobs: the newest shape
#: of the steps above in one (no older database to upgrade yet), columns in the same order so
#: ``SELECT *`` reads the same records. ``dictionaries.seq`` orders rows as SQLite's rowid does.
POSTGRES_TABLES: list[str] = [
    """CREATE TABLE entities (
        entity_type text NOT NULL,
        entity_id text NOT NULL,
        version bigint NOT NULL,
        fingerprint text NOT NULL,
        schema_version text NOT NULL,
        created_at text NOT NULL,
        updated_at text NOT NULL,
        PRIMARY KEY (entity_type, entity_id)
    )""",
    """CREATE TABLE source_keys (
        entity_type text NOT NULL,
        source text NOT NULL,
        source_table text NOT NULL,
        source_key text NOT NULL,
        entity_id text NOT NULL,
        PRIMARY KEY (entity_type, source, source_table, source_key)
    )""",
    """CREATE TABLE sync_runs (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        started_at text NOT NULL,
        finished_at text,
        status text NOT NULL,
        mode text NOT NULL,
        rows_read bigint NOT NULL DEFAULT 0,
        created bigint NOT NULL DEFAULT 0,
        updated bigint NOT NULL DEFAULT 0,
        unchanged bigint NOT NULL DEFAULT 0,
        deleted bigint NOT NULL DEFAULT 0,
        error text,
        merged bigint NOT NULL DEFAULT 0,
        split bigint NOT NULL DEFAULT 0,
        rules_version text
    )""",
    """CREATE TABLE schemas (
        entity_type text PRIMARY KEY,
        version text NOT NULL,
        layout text NOT NULL
    )""",
    """CREATE TABLE links (
        entity_type text NOT NULL,
        entity_id text NOT NULL,
        record_a text NOT NULL,
        record_b text NOT NULL,
        rule text NOT NULL,
        score double precision,
        comparisons text NOT NULL,
        PRIMARY KEY (entity_type, entity_id, record_a, record_b)
    )""",
    """CREATE TABLE aliases (
        entity_type text NOT NULL,
        alias_id text NOT NULL,
        entity_id text NOT NULL,
        created_at text NOT NULL,
        sync_run bigint NOT NULL,
        PRIMARY KEY (entity_type, alias_id)
    )""",
    """CREATE TABLE events (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        entity_type text NOT NULL,
        kind text NOT NULL,
        entity_id text NOT NULL,
        others text NOT NULL,
        reason text NOT NULL,
        at text NOT NULL,
        sync_run bigint NOT NULL
    )""",
    "CREATE INDEX events_by_entity ON events (entity_type, entity_id)",
    """CREATE TABLE watermarks (
        source text NOT NULL,
        source_table text NOT NULL,
        column_name text NOT NULL,
        value text NOT NULL,
        sync_run bigint NOT NULL,
        PRIMARY KEY (source, source_table)
    )""",
    """CREATE TABLE identity_records (
        entity_type text NOT NULL,
        ref text NOT NULL,
        entity_id text NOT NULL,
        values_hash bytea,
        key_hashes bytea,
        PRIMARY KEY (entity_type, ref)
    )""",
    """CREATE TABLE identity_keys (
        entity_type text NOT NULL,
        key_hash bytea NOT NULL,
        ref text NOT NULL,
        PRIMARY KEY (entity_type, key_hash, ref)
    )""",
    """CREATE TABLE dictionaries (
        dict_id text PRIMARY KEY,
        entity_type text NOT NULL,
        schema_version text NOT NULL,
        samples bigint NOT NULL,
        created_at text NOT NULL,
        sealed bytea NOT NULL,
        seq bigint GENERATED ALWAYS AS IDENTITY
    )""",
    "CREATE TABLE settings (name text PRIMARY KEY, value text NOT NULL)",
]
#: The version of :data:`POSTGRES_TABLES`, kept in ``fabric.layout``.
_POSTGRES_VERSION = 1


def open_postgres_catalog(url: str, statement_timeout_ms: int | None = None) -> PostgresThreads:
    """Connect to the catalog on the PostgreSQL server at ``url``, creating its tables (a
    connection per thread from then on).

    Raises:
        StoreError: the server cannot be reached (host, port and database named, never the
            password), or a newer fabric made the tables.
    """
    import psycopg

    threads, db = PostgresThreads.first(
        lambda: connect_postgres(url, "the catalog", statement_timeout_ms)
    )
    try:
        with db:
            db.execute("SELECT pg_advisory_xact_lock(hashtext('fabric.catalog'))")
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS layout (name text PRIMARY KEY, value text NOT NULL)"
            )
            row = db.execute("SELECT value FROM layout WHERE name = 'catalog'").fetchone()
            if row is not None and int(row[0]) > _POSTGRES_VERSION:
                raise StoreError(
                    f"the catalog at {db.target} was written by a newer fabric (schema "
                    f"{row[0]}); upgrade fabric"
                )
            if row is None:
                for statement in POSTGRES_TABLES:
                    db.execute(statement)
                db.execute("INSERT INTO layout VALUES ('catalog', ?)", (str(_POSTGRES_VERSION),))
    except psycopg.Error as exc:
        threads.close()
        raise StoreError(f"cannot open the catalog at {db.target}: {driver_reason(exc)}") from None
    except BaseException:
        threads.close()
        raise
    return threads
