"""What the catalog hands out: its rows as records, and the clock it stamps them with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = [
    "DictionaryRecord",
    "EntityEvent",
    "EntityRecord",
    "SourceRef",
    "StoredLink",
    "SyncRunRecord",
    "utc_now",
]


def utc_now() -> str:
    """Current UTC time as ISO 8601 with seconds."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class SourceRef(NamedTuple):
    """One source record: which system, table and primary key.

    A named tuple rather than a frozen dataclass: a sync hashes and compares refs millions of
    times (dict keys of resolution and the identity index), and a tuple does both in C, far
    faster than the dataclass's generated methods (same hash values; benchmarks/README.md,
    "Source refs").
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


@dataclass(frozen=True)
class StoredLink:
    """Why two records of an entity belong together."""

    record_a: str
    record_b: str
    rule: str
    score: float | None
    comparisons: dict[str, float]


@dataclass(frozen=True)
class EntityEvent:
    """A merge or a split, with when, why and which other entity ids took part."""

    kind: str
    entity_id: str
    others: list[str]
    reason: str
    at: str
    sync_run: int
