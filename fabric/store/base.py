"""The backend-neutral entity store interface.

A store keeps one opaque blob per entity, keyed by a hash of (entity type, entity id) and
carrying a version. Writers pass the version they expect to replace, so a stale writer fails
cleanly instead of overwriting newer work (optimistic concurrency). Partitions come from the
same stable hash, never Python's ``hash()``, so a scale-out backend can split work the same way.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "EntityStore",
    "StoreStats",
    "StoredBlob",
    "entity_key",
    "partition_of",
]


def entity_key(entity_type: str, entity_id: str) -> bytes:
    """Return the 16-byte storage key of an entity: no raw id reaches storage keys or paths."""
    return hashlib.sha256(f"{entity_type}\x00{entity_id}".encode()).digest()[:16]


def partition_of(key: bytes, partitions: int) -> int:
    """Return the stable partition of a storage key."""
    return int.from_bytes(key[:8], "big") % partitions


@dataclass(frozen=True)
class StoredBlob:
    """One entity's stored image, as the backend keeps it."""

    entity_type: str
    entity_id: str
    version: int
    blob: bytes
    #: Version this write replaces (0 for a new entity); ignored on reads.
    expected_version: int = 0

    @property
    def key(self) -> bytes:
        """The storage key."""
        return entity_key(self.entity_type, self.entity_id)


@dataclass(frozen=True)
class StoreStats:
    """Counts and sizes, for `fabric store stats` and metrics."""

    entities: int
    blob_bytes: int
    file_bytes: int
    partitions: int


class EntityStore(abc.ABC):
    """Where entity images live. Each entity's write is atomic; see ``put_many``."""

    partitions: int

    @abc.abstractmethod
    def get(self, entity_type: str, entity_id: str) -> StoredBlob | None:
        """Return the stored blob of one entity, or None."""

    def get_many(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, StoredBlob]:
        """Return the stored blobs of many entities (missing ones are left out)."""
        found = {}
        for entity_id in entity_ids:
            blob = self.get(entity_type, entity_id)
            if blob is not None:
                found[entity_id] = blob
        return found

    def versions(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, int]:
        """Return the stored version of each entity that exists (no blobs are read)."""
        return {e: b.version for e, b in self.get_many(entity_type, entity_ids).items()}

    def all_versions(self, entity_type: str) -> dict[str, int]:
        """Every stored entity of a type and its version."""
        return {b.entity_id: b.version for b in self.scan(entity_type)}

    @abc.abstractmethod
    def put_many(self, blobs: Sequence[StoredBlob]) -> None:
        """Write blobs, checking each ``expected_version`` before anything is written.

        Each entity's write is atomic (readers see its old image or its new one). A backend
        may commit a call in parts (the local store commits shard by shard): a failure
        part-way leaves each entity at its old or its new version, never a mix.

        Raises:
            StaleWriteError: some stored version differs from the expected one.
        """

    @abc.abstractmethod
    def delete_many(self, entity_type: str, entity_ids: Sequence[str]) -> int:
        """Delete entities; return how many existed."""

    @abc.abstractmethod
    def scan(self, entity_type: str, partition: int | None = None) -> Iterator[StoredBlob]:
        """Yield the stored blobs of one type, optionally of one partition only."""

    @abc.abstractmethod
    def stats(self) -> StoreStats:
        """Return counts and sizes."""

    def disk_bytes(self) -> int:
        """Bytes the store takes on this machine's disk (0 where it keeps none here)."""
        return 0

    @abc.abstractmethod
    def close(self) -> None:
        """Release files and connections."""

    def __enter__(self) -> EntityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
