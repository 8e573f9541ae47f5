"""Build the entities of one partition: the part of a full sync that runs in worker processes.

A job carries everything it needs (spill location and key, schema, versions known for its
entities) and returns the encoded images of the entities that changed, so the parent stays
the only writer of the store and catalog. Rows come back grouped by entity, in key order, so
the same content always makes the same image and fingerprint.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.crypto import KeyRing
from fabric.store.codec import BlobCodec, Dictionaries
from fabric.store.microdb import EntityContent, EntitySchema, MicroDbBuilder, TableDef
from fabric.sync.report import key_text
from fabric.sync.spill import read_stream

__all__ = [
    "BuildJob",
    "BuiltEntity",
    "Known",
    "PartitionResult",
    "build_entities",
    "build_partition",
    "lineage_order",
    "new_lineage",
    "partition_contents",
    "row_order",
    "sort_key",
]


def new_lineage(table: TableDef, key: str, started: str, run_id: int) -> tuple[Any, ...]:
    """The ``_lineage`` row of a row extracted in this run (see LINEAGE_COLUMNS)."""
    return (table.name, key, table.source, table.source_table, key, started, run_id)


def sort_key(value: Any) -> tuple[int, Any]:
    """Order keys numerically when they are numbers, as text otherwise, never mixed."""
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


def row_order(key_at: int) -> Any:
    """Sort key for rows whose key is at ``key_at``."""

    def order(row: tuple[Any, ...]) -> tuple[int, Any]:
        return sort_key(row[key_at])

    return order


def lineage_order(lineage: tuple[Any, ...]) -> tuple[str, tuple[int, Any]]:
    """Sort key for lineage rows: table, then key."""
    return (str(lineage[0]), sort_key(lineage[1]))


#: entity id -> (catalog version, stored version, fingerprint, schema version)
Known = dict[str, tuple[int, int, str, str]]


@dataclass(frozen=True)
class BuildJob:
    """One partition's work."""

    partition: int
    #: the partition's spill stream: its file, or its sealed bytes (a remote task's)
    spill: Path | bytes
    spill_key: bytes
    schema: EntitySchema
    keys: KeyRing | None
    full: bool
    run_id: int
    started: str
    built_at: str
    known: Known
    #: the match rules' version, for ``_meta``
    rules_version: str = ""
    #: the compression dictionary new images use (and, patching, the ones they had)
    dictionaries: Dictionaries = field(default_factory=Dictionaries)


@dataclass(frozen=True)
class BuiltEntity:
    """A changed entity, ready to store."""

    entity_id: str
    version: int
    expected_version: int
    fingerprint: str
    blob: bytes
    #: (source, source table, key) of every row (empty when the job did not ask for them)
    refs: list[tuple[str, str, str]]


@dataclass(frozen=True)
class PartitionResult:
    """What a partition produced."""

    partition: int
    built: list[BuiltEntity]
    unchanged: int


def build_entities(
    contents: Iterable[EntityContent],
    schema: EntitySchema,
    codec: BlobCodec,
    known: Known,
    *,
    full: bool,
    run_id: int,
    built_at: str,
    refs: bool = True,
    rules_version: str = "",
) -> tuple[list[BuiltEntity], int]:
    """Build and encode every entity whose content or schema changed; count the others.

    Rows and lineage are put in key order first, so the same content always makes the same
    image and fingerprint. Versions continue from the larger of the catalog's and the
    store's, the store being the commit point for images.
    """
    builder = MicroDbBuilder(schema)
    key_at = {t.name: t.column_names.index(t.key) for t in schema.tables}
    built: list[BuiltEntity] = []
    unchanged = 0
    for content in contents:
        for table_name, table_rows in content.rows.items():
            table_rows.sort(key=row_order(key_at[table_name]))
        content.lineage.sort(key=lineage_order)
        entity_id = content.entity_id
        fingerprint = content.fingerprint()
        catalog_version, stored_version, old_print, old_schema = known.get(
            entity_id, (0, 0, "", "")
        )
        if (
            not full
            and catalog_version
            and old_print == fingerprint
            and old_schema == schema.version
        ):
            unchanged += 1
            continue
        version = max(catalog_version, stored_version) + 1
        image = builder.build(
            content,
            {
                "entity_type": schema.entity_type,
                "entity_id": entity_id,
                "version": version,
                "schema_version": schema.version,
                "rules_version": rules_version,
                "built_at": built_at,
                "sync_run": run_id,
            },
        )
        blob = codec.encode(image, schema.entity_type, entity_id, version)
        keys = [(str(lin[2]), str(lin[3]), str(lin[4])) for lin in content.lineage] if refs else []
        built.append(BuiltEntity(entity_id, version, stored_version, fingerprint, blob, keys))
    return built, unchanged


def partition_contents(job: BuildJob) -> Iterator[EntityContent]:
    """The partition's entities, from its spill stream, with this run's lineage."""
    tables = {t.name: t for t in job.schema.tables}
    key_at = {t.name: t.column_names.index(t.key) for t in job.schema.tables}
    rows: dict[str, dict[str, list[tuple[Any, ...]]]] = defaultdict(lambda: defaultdict(list))
    for chunk in read_stream(job.spill, job.spill_key, str(job.partition)):
        for entity_id, table, row in chunk:
            rows[entity_id][table].append(row)
    for entity_id in sorted(rows):
        content = EntityContent(entity_id, {t: [] for t in tables}, [])
        for table_name, table_rows in rows.pop(entity_id).items():
            table = tables[table_name]
            content.rows[table_name] = table_rows
            for row in table_rows:
                key = key_text(row[key_at[table_name]])
                content.lineage.append(new_lineage(table, key, job.started, job.run_id))
        yield content


def build_partition(job: BuildJob) -> PartitionResult:
    """Group the partition's rows by entity, and build and encode what changed."""
    built, unchanged = build_entities(
        partition_contents(job),
        job.schema,
        BlobCodec(job.keys, job.dictionaries),
        job.known,
        full=job.full,
        run_id=job.run_id,
        built_at=job.built_at,
        rules_version=job.rules_version,
        refs=False,  # the parent wrote every source key as it placed the rows
    )
    return PartitionResult(job.partition, built, unchanged)
