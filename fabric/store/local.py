"""The embedded default store: blobs in a fixed number of SQLite shard files.

Each shard is a WAL-mode SQLite database, so readers never block the writer and a crash leaves
every entity at its last committed version. Rows are keyed by a hash of (type, id): file names
are ``shard-0003.db`` and carry no ids, let alone personal data. Connections are cached per
thread (a handful of shards, not thousands of files), which keeps prepared statements warm.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fabric.errors import StaleWriteError, StoreError
from fabric.store.base import EntityStore, StoredBlob, StoreStats, entity_key, partition_of
from fabric.store.sqlite import ThreadConnections, apsw, one_row, open_database, watch_time

__all__ = ["LocalShardStore"]

# A rowid table, not WITHOUT ROWID: the latter keeps only ~1 KB of a row on its leaf page, so
# every image of a few KB spilled into a mostly empty overflow page (files several times the
# blob bytes: benchmarks/README.md, "Shard files"). The unique index on the key is small
# next to the blobs.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    key BLOB NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    blob BLOB NOT NULL
);
"""
_SCHEMA_VERSION = 1


class LocalShardStore(EntityStore):
    """Entity blobs in ``<path>/shard-NNNN.db`` files."""

    def __init__(self, path: Path, shards: int = 8) -> None:
        self.path = path
        self.partitions = shards
        self._connections: ThreadConnections[apsw.Connection] = ThreadConnections()
        self._write_lock = threading.Lock()
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._check_layout()
            for shard in range(shards):
                conn = self._conn(shard)
                if conn.pragma("user_version") < _SCHEMA_VERSION:
                    with conn:
                        conn.execute(_SCHEMA)
                        conn.pragma("user_version", _SCHEMA_VERSION)
        except (OSError, apsw.Error, ValueError, KeyError) as exc:
            self.close()
            raise StoreError(f"cannot open the entity store at {path}: {exc}") from exc

    def _check_layout(self) -> None:
        """Refuse a shard count other than the one the store was created with.

        Entities are placed by ``hash % shards``: opening with another count would make every
        entity unreachable while syncs report them unchanged.
        """
        layout = self.path / "layout.json"
        existing = sorted(self.path.glob("shard-*.db"))
        if layout.exists():
            recorded = int(json.loads(layout.read_text())["shards"])
        elif existing:
            recorded = len(existing)  # a store from before the layout file
        else:
            recorded = self.partitions
        if recorded != self.partitions:
            raise StoreError(
                f"the entity store at {self.path} was created with {recorded} shards but "
                f"fabric.yaml store.shards says {self.partitions}; the shard count is fixed "
                f"once entities are stored (set it back to {recorded}, or delete the store "
                "directory and sync again)"
            )
        if not layout.exists():
            tmp = layout.with_suffix(".tmp")
            tmp.write_text(json.dumps({"format": 1, "shards": self.partitions}))
            tmp.replace(layout)

    def _shard_path(self, shard: int) -> Path:
        return self.path / f"shard-{shard:04d}.db"

    def _conn(self, shard: int) -> apsw.Connection:
        return self._connections.open(shard, self._open_shard, shard)

    def _open_shard(self, shard: int) -> apsw.Connection:
        conn = open_database(self._shard_path(shard))
        watch_time(conn)
        return conn

    def get(self, entity_type: str, entity_id: str) -> StoredBlob | None:
        key = entity_key(entity_type, entity_id)
        conn = self._conn(partition_of(key, self.partitions))
        row = conn.execute("SELECT version, blob FROM blobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return StoredBlob(entity_type, entity_id, int(row[0]), bytes(row[1]))

    def _by_shard(
        self, entity_type: str, entity_ids: Sequence[str], what: str
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """``(entity id, (key, *what))`` of each stored entity of ``entity_ids``.

        One statement per shard: the keys go in as one JSON array of hex, and SQLite probes
        its index for each in C (a statement per entity cost more: benchmarks/README.md,
        "Shard files"). One entity
        is one plain probe, cheaper than the JSON.
        """
        if len(entity_ids) == 1:
            key = entity_key(entity_type, entity_ids[0])
            row = (
                self._conn(partition_of(key, self.partitions))
                .execute(f"SELECT key, {what} FROM blobs WHERE key = ?", (key,))
                .fetchone()
            )
            if row is not None:
                yield entity_ids[0], row
            return
        by_shard: dict[int, dict[bytes, str]] = {}
        for entity_id in entity_ids:
            key = entity_key(entity_type, entity_id)
            by_shard.setdefault(partition_of(key, self.partitions), {})[key] = entity_id
        for shard, keys in by_shard.items():
            rows = self._conn(shard).execute(
                f"SELECT key, {what} FROM blobs "
                "WHERE key IN (SELECT unhex(value) FROM json_each(?))",
                (json.dumps([k.hex() for k in keys]),),
            )
            for row in rows:
                yield keys[bytes(row[0])], row

    def get_many(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, StoredBlob]:
        return {
            entity_id: StoredBlob(entity_type, entity_id, int(version), bytes(blob))
            for entity_id, (_, version, blob) in self._by_shard(
                entity_type, entity_ids, "version, blob"
            )
        }

    def versions(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, int]:
        return {
            entity_id: int(version)
            for entity_id, (_, version) in self._by_shard(entity_type, entity_ids, "version")
        }

    def all_versions(self, entity_type: str) -> dict[str, int]:
        # The version column comes before the blob, so SQLite never reads the images here.
        found: dict[str, int] = {}
        for shard in range(self.partitions):
            for entity_id, version in self._conn(shard).execute(
                "SELECT entity_id, version FROM blobs WHERE entity_type = ?", (entity_type,)
            ):
                found[str(entity_id)] = int(version)
        return found

    def put_many(self, blobs: Sequence[StoredBlob]) -> None:
        by_shard: dict[int, list[StoredBlob]] = defaultdict(list)
        for item in blobs:
            by_shard[partition_of(item.key, self.partitions)].append(item)
        # One writer at a time; every involved shard is locked before anything is checked, so
        # a stale version aborts the whole call with nothing written.
        with self._write_lock:
            begun: list[apsw.Connection] = []
            try:
                for shard in sorted(by_shard):
                    conn = self._conn(shard)
                    conn.execute("BEGIN IMMEDIATE")
                    begun.append(conn)
                    for item in by_shard[shard]:
                        row = conn.execute(
                            "SELECT version FROM blobs WHERE key = ?", (item.key,)
                        ).fetchone()
                        current = 0 if row is None else int(row[0])
                        if current != item.expected_version:
                            raise StaleWriteError(
                                f"entity {item.entity_type} {item.entity_id} is at version "
                                f"{current}, not {item.expected_version}: another writer "
                                "changed it; run the sync again"
                            )
                    conn.executemany(
                        "INSERT INTO blobs (key, entity_type, entity_id, version, blob) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "version = excluded.version, blob = excluded.blob",
                        [
                            (b.key, b.entity_type, b.entity_id, b.version, b.blob)
                            for b in by_shard[shard]
                        ],
                    )
                while begun:
                    begun[0].execute("COMMIT")
                    begun.pop(0)
            except apsw.Error as exc:
                raise StoreError(
                    f"cannot write to the entity store at {self.path}: {exc} "
                    f"({type(exc).__name__}); every entity is at its last committed version"
                ) from exc
            finally:
                for conn in begun:
                    # SQLite may have rolled back already (an I/O error at commit does): the
                    # error that matters is the one raised above, not this one.
                    with contextlib.suppress(apsw.Error):
                        conn.execute("ROLLBACK")

    def delete_many(self, entity_type: str, entity_ids: Sequence[str]) -> int:
        deleted = 0
        by_shard: dict[int, list[bytes]] = defaultdict(list)
        for entity_id in entity_ids:
            key = entity_key(entity_type, entity_id)
            by_shard[partition_of(key, self.partitions)].append(key)
        with self._write_lock:
            for shard, keys in by_shard.items():
                conn = self._conn(shard)
                try:
                    with conn:
                        for key in keys:
                            conn.execute("DELETE FROM blobs WHERE key = ?", (key,))
                            deleted += conn.changes()
                except apsw.Error as exc:
                    raise StoreError(
                        f"cannot delete from the entity store at {self.path}: {exc} "
                        f"({type(exc).__name__})"
                    ) from exc
        return deleted

    def scan(self, entity_type: str, partition: int | None = None) -> Iterator[StoredBlob]:
        shards = range(self.partitions) if partition is None else [partition]
        for shard in shards:
            conn = self._conn(shard)
            rows: list[tuple[Any, ...]] = conn.execute(
                "SELECT entity_id, version, blob FROM blobs WHERE entity_type = ? ORDER BY key",
                (entity_type,),
            ).fetchall()
            for entity_id, version, blob in rows:
                yield StoredBlob(entity_type, str(entity_id), int(version), bytes(blob))

    def stats(self) -> StoreStats:
        entities = blob_bytes = 0
        for shard in range(self.partitions):
            count, size = one_row(
                self._conn(shard), "SELECT count(*), coalesce(sum(length(blob)), 0) FROM blobs"
            )
            entities += int(count)
            blob_bytes += int(size)
        return StoreStats(entities, blob_bytes, self.disk_bytes(), self.partitions)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("shard-*.db*") if p.is_file())

    def close(self) -> None:
        with self._write_lock:
            self._connections.close()
