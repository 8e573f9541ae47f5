"""PostgreSQL as the shared entity store: many sync workers and API nodes, one database.

Images live in one table, ``fabric.blobs``, list-partitioned on ``part``: the entity key's
stable partition (:func:`fabric.store.base.partition_of`), the hash that also splits a sync's
work, so a task's scan reads one partition and a lookup one index. The table holds what the
embedded shard files hold (the 16-byte key, the type, the id, the version and the image,
compressed and sealed before it leaves the process) and nothing more. Blobs are stored
without PostgreSQL's own compression (``STORAGE EXTERNAL``): sealed bytes do not compress.

Writes check versions as the embedded store does (optimistic concurrency). Unlike its
shard-by-shard commit, a ``put_many`` here is one transaction: every entity moves to its new
version or none does, even across partitions. Rows being replaced are locked
(``SELECT … FOR UPDATE``) before their versions are compared, and new entities are inserted
with ``ON CONFLICT DO NOTHING``, so two writers racing for one entity cannot both win: the
second gets :class:`~fabric.errors.StaleWriteError` and its whole call is rolled back.

Connections come from a pool (psycopg's); each sets ``statement_timeout`` when given one, so
a read the API must give up on is stopped by the server. A server that cannot be reached is
one line naming the host, port and database (never the password).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from fabric.errors import StaleWriteError, StoreError, StoreUnavailableError
from fabric.store.base import EntityStore, StoredBlob, StoreStats, entity_key, partition_of
from fabric.store.database import (
    CONNECT_SECONDS,
    GENERIC_PLANS,
    SCHEMA,
    describe_target,
    driver_reason,
    postgres_conninfo,
)

__all__ = ["PostgresStore"]

#: Rows a scan fetches from the server at a time.
_SCAN_BATCH = 1000


class PostgresStore(EntityStore):
    """Entity blobs in ``fabric.blobs`` on a PostgreSQL server."""

    def __init__(
        self,
        url: str,
        partitions: int = 8,
        *,
        pool_size: int = 4,
        statement_timeout_ms: int | None = None,
    ) -> None:
        self.partitions = partitions
        self._conninfo = postgres_conninfo(url)
        self.target = describe_target(self._conninfo)
        self._timeout_ms = statement_timeout_ms
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] | None = None
        with (
            self._failures("open"),
            psycopg.connect(self._conninfo, connect_timeout=CONNECT_SECONDS) as conn,
        ):
            self._create(conn)
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_SECONDS,
                "options": GENERIC_PLANS,
            },
            configure=self._configure,
            timeout=CONNECT_SECONDS * 2,
            open=True,
            name="fabric-store",
        )

    # -- set-up ----------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if self._timeout_ms is not None:
            conn.execute(f"SET statement_timeout = {int(self._timeout_ms)}")

    def _create(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """Create the table and its partitions, or check they have this store's count.

        One creator at a time (an advisory lock): several processes opening a new database
        at once would otherwise race on the catalogs of PostgreSQL itself.
        """
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('fabric.blobs'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.layout "
                "(name text PRIMARY KEY, value text NOT NULL)"
            )
            row = conn.execute(
                f"SELECT value FROM {SCHEMA}.layout WHERE name = 'partitions'"
            ).fetchone()
            if row is not None and int(row[0]) != self.partitions:
                raise StoreError(
                    f"the entity store at {self.target} was created with {row[0]} partitions "
                    f"but fabric.yaml store.shards says {self.partitions}; the count is fixed "
                    f"once entities are stored (set it back to {row[0]})"
                )
            if row is not None:
                return
            conn.execute(
                f"""CREATE TABLE {SCHEMA}.blobs (
                    part integer NOT NULL,
                    key bytea NOT NULL,
                    entity_type text NOT NULL,
                    entity_id text NOT NULL,
                    version bigint NOT NULL,
                    blob bytea NOT NULL,
                    PRIMARY KEY (part, key)
                ) PARTITION BY LIST (part)"""
            )
            for part in range(self.partitions):
                name = sql.Identifier(f"blobs_{part:04d}")
                conn.execute(
                    sql.SQL("CREATE TABLE {}.{} PARTITION OF {}.blobs FOR VALUES IN ({})").format(
                        sql.Identifier(SCHEMA), name, sql.Identifier(SCHEMA), sql.Literal(part)
                    )
                )
                conn.execute(
                    sql.SQL("ALTER TABLE {}.{} ALTER COLUMN blob SET STORAGE EXTERNAL").format(
                        sql.Identifier(SCHEMA), name
                    )
                )
            conn.execute(
                f"INSERT INTO {SCHEMA}.layout VALUES ('partitions', %s), ('format', '1')",
                (str(self.partitions),),
            )

    @contextlib.contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A pooled connection; driver errors as :class:`StoreError` naming ``what``."""
        if self._pool is None:
            raise StoreError(f"the entity store at {self.target} is closed")
        with self._failures(what), self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        """Driver errors as one line naming ``what`` was done and where: a server that
        cannot be reached is :class:`StoreUnavailableError`."""
        try:
            yield
        except PoolTimeout:
            raise StoreUnavailableError(
                f"cannot {what} the entity store at {self.target}: no connection within "
                f"{CONNECT_SECONDS * 2} s (the server is down or every connection is busy)"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot {what} the entity store at {self.target}: {driver_reason(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot {what} the entity store at {self.target}: {driver_reason(exc)}"
            ) from None

    # -- reads -----------------------------------------------------------------------------

    def _keys(self, entity_type: str, entity_ids: Sequence[str]) -> dict[bytes, str]:
        return {entity_key(entity_type, e): e for e in entity_ids}

    def get(self, entity_type: str, entity_id: str) -> StoredBlob | None:
        key = entity_key(entity_type, entity_id)
        with self._connection("read from") as conn:
            row = conn.execute(
                f"SELECT version, blob FROM {SCHEMA}.blobs WHERE part = %s AND key = %s",
                (partition_of(key, self.partitions), key),
            ).fetchone()
        return None if row is None else StoredBlob(entity_type, entity_id, int(row[0]), row[1])

    def _select(self, keys: dict[bytes, str], what: str) -> list[tuple[Any, ...]]:
        """``(key, *what)`` of each stored entity of ``keys``, in one statement."""
        if not keys:
            return []
        if len(keys) == 1:  # a request's: plain equalities plan and run faster than arrays
            (key,) = keys
            with self._connection("read from") as conn:
                return conn.execute(
                    f"SELECT key, {what} FROM {SCHEMA}.blobs WHERE part = %s AND key = %s",
                    (partition_of(key, self.partitions), key),
                ).fetchall()
        parts = sorted({partition_of(k, self.partitions) for k in keys})
        with self._connection("read from") as conn:
            return conn.execute(
                f"SELECT key, {what} FROM {SCHEMA}.blobs WHERE part = ANY(%s) AND key = ANY(%s)",
                (parts, list(keys)),
            ).fetchall()

    def get_many(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, StoredBlob]:
        keys = self._keys(entity_type, entity_ids)
        return {
            keys[bytes(key)]: StoredBlob(entity_type, keys[bytes(key)], int(version), blob)
            for key, version, blob in self._select(keys, "version, blob")
        }

    def versions(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, int]:
        keys = self._keys(entity_type, entity_ids)
        return {keys[bytes(key)]: int(version) for key, version in self._select(keys, "version")}

    def all_versions(self, entity_type: str) -> dict[str, int]:
        with self._connection("read from") as conn:
            rows = conn.execute(
                f"SELECT entity_id, version FROM {SCHEMA}.blobs WHERE entity_type = %s",
                (entity_type,),
            ).fetchall()
        return {str(entity_id): int(version) for entity_id, version in rows}

    def scan(self, entity_type: str, partition: int | None = None) -> Iterator[StoredBlob]:
        parts = range(self.partitions) if partition is None else [partition]
        for part in parts:
            # A server-side cursor: a partition of a large store is fetched in batches, not
            # held whole in this process.
            with (
                self._connection("scan") as conn,
                conn.transaction(),
                conn.cursor(name=f"fabric_scan_{part}") as cursor,
            ):
                cursor.itersize = _SCAN_BATCH
                cursor.execute(
                    f"SELECT entity_id, version, blob FROM {SCHEMA}.blobs "
                    "WHERE part = %s AND entity_type = %s ORDER BY key",
                    (part, entity_type),
                )
                for entity_id, version, blob in cursor:
                    yield StoredBlob(entity_type, str(entity_id), int(version), blob)

    def stats(self) -> StoreStats:
        with self._connection("measure") as conn:
            row = conn.execute(
                f"SELECT count(*), coalesce(sum(octet_length(blob)), 0) FROM {SCHEMA}.blobs"
            ).fetchone()
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                "FROM pg_partition_tree(%s::regclass)",
                (f"{SCHEMA}.blobs",),
            ).fetchone()
        assert row is not None and size is not None
        return StoreStats(int(row[0]), int(row[1]), int(size[0]), self.partitions)

    # -- writes ----------------------------------------------------------------------------

    def put_many(self, blobs: Sequence[StoredBlob]) -> None:
        if not blobs:
            return
        with self._connection("write to") as conn, conn.transaction():
            self.put_in(conn, blobs)

    def put_in(
        self, conn: psycopg.Connection[tuple[Any, ...]], blobs: Sequence[StoredBlob]
    ) -> None:
        """Write ``blobs`` within the transaction ``conn`` has open (the catalog's too, on
        one database), checking each ``expected_version`` first.

        Raises:
            StaleWriteError: some stored version differs from the expected one; nothing of
                the transaction may be committed.
        """
        by_key = {b.key: b for b in blobs}
        parts = [partition_of(k, self.partitions) for k in by_key]
        # Locked in key order, so two writers of overlapping batches cannot deadlock.
        stored = dict(
            (bytes(key), int(version))
            for key, version in conn.execute(
                f"SELECT key, version FROM {SCHEMA}.blobs WHERE part = ANY(%s) AND key = ANY(%s) "
                "ORDER BY part, key FOR UPDATE",
                (sorted(set(parts)), list(by_key)),
            )
        )
        for item in blobs:
            current = stored.get(item.key, 0)
            if current != item.expected_version:
                raise self._stale(item, current)
        new = [b for b in blobs if b.key not in stored]
        if new:
            inserted = {
                bytes(row[0])
                for row in conn.execute(
                    f"INSERT INTO {SCHEMA}.blobs "
                    "(part, key, entity_type, entity_id, version, blob) "
                    "SELECT * FROM unnest(%s::integer[], %s::bytea[], %s::text[], "
                    "%s::text[], %s::bigint[], %s::bytea[]) "
                    "ON CONFLICT (part, key) DO NOTHING RETURNING key",
                    self._columns(new),
                )
            }
            for item in new:
                if item.key not in inserted:  # another writer created it since the check
                    raise self._stale(item, -1)
        replaced = [b for b in blobs if b.key in stored]
        if replaced:
            conn.execute(
                f"UPDATE {SCHEMA}.blobs AS b SET version = u.version, blob = u.blob "
                "FROM unnest(%s::integer[], %s::bytea[], %s::text[], %s::text[], "
                "%s::bigint[], %s::bytea[]) AS u(part, key, entity_type, entity_id, version, blob) "
                "WHERE b.part = u.part AND b.key = u.key",
                self._columns(replaced),
            )

    def _columns(self, blobs: Sequence[StoredBlob]) -> tuple[list[Any], ...]:
        return (
            [partition_of(b.key, self.partitions) for b in blobs],
            [b.key for b in blobs],
            [b.entity_type for b in blobs],
            [b.entity_id for b in blobs],
            [b.version for b in blobs],
            [b.blob for b in blobs],
        )

    @staticmethod
    def _stale(item: StoredBlob, current: int) -> StaleWriteError:
        now = "was just created by another writer" if current < 0 else f"is at version {current}"
        return StaleWriteError(
            f"entity {item.entity_type} {item.entity_id} {now}, not {item.expected_version}: "
            "another writer changed it; run the sync again"
        )

    def delete_many(self, entity_type: str, entity_ids: Sequence[str]) -> int:
        by_part: dict[int, list[bytes]] = defaultdict(list)
        for entity_id in entity_ids:
            key = entity_key(entity_type, entity_id)
            by_part[partition_of(key, self.partitions)].append(key)
        if not by_part:
            return 0
        with self._connection("delete from") as conn:
            cursor = conn.execute(
                f"DELETE FROM {SCHEMA}.blobs WHERE part = ANY(%s) AND key = ANY(%s)",
                (sorted(by_part), [k for keys in by_part.values() for k in keys]),
            )
            return int(cursor.rowcount)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
