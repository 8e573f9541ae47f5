"""Patch stored entity images with a few new or changed rows, in batches a worker can run.

An incremental sync that adds an order here and a payment there patches every entity it
touches: decrypt, decompress, load the image, insert the rows, serialize, compress, encrypt.
That is all CPU work on data the batch carries, so with ``--workers`` it runs in worker
processes while the parent writes finished batches; the parent stays the only writer of the
store and the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric.crypto import KeyRing
from fabric.store.codec import BlobCodec, Dictionaries
from fabric.store.microdb import EntitySchema, MicroDbPatcher, PatchRow
from fabric.sync.build import BuiltEntity

__all__ = ["PatchBatch", "PatchItem", "patch_batch"]


@dataclass(frozen=True)
class PatchItem:
    """One entity to patch: its stored image and the rows to put into it."""

    entity_id: str
    blob: bytes
    #: the stored version (the patched image gets the next one)
    version: int
    #: the fingerprint sum of the stored image (see ``fingerprint_total``)
    total: int
    #: (table name, row, lineage row, known new) of each row to put in
    rows: list[tuple[str, tuple[Any, ...], tuple[Any, ...], bool]]
    #: (source, source table, key) of each row, for the catalog
    refs: list[tuple[str, str, str]]


@dataclass(frozen=True)
class PatchBatch:
    """Entities of one type to patch, with what their ``_meta`` gets."""

    schema: EntitySchema
    keys: KeyRing | None
    built_at: str
    run_id: int
    items: Sequence[PatchItem]
    #: the match rules' version, for ``_meta``
    rules_version: str = ""
    #: the compression dictionary new images use (and, patching, the ones they had)
    dictionaries: Dictionaries = field(default_factory=Dictionaries)


def patch_batch(batch: PatchBatch) -> tuple[list[BuiltEntity], int]:
    """Patch every entity of the batch; returns the changed ones, encoded, and how many
    already held every row."""
    entity_type = batch.schema.entity_type
    tables = {t.name: t for t in batch.schema.tables}
    codec = BlobCodec(batch.keys, batch.dictionaries)
    patcher = MicroDbPatcher()
    built: list[BuiltEntity] = []
    unchanged = 0
    for item in batch.items:
        version = item.version + 1
        result = patcher.patch(
            codec.decode(item.blob, entity_type, item.entity_id, item.version),
            [
                PatchRow(tables[name], row, lineage, new=new)
                for name, row, lineage, new in item.rows
            ],
            {
                "version": version,
                "rules_version": batch.rules_version,
                "built_at": batch.built_at,
                "sync_run": batch.run_id,
            },
            item.total,
        )
        if result is None:
            unchanged += 1
            continue
        image, printed = result
        built.append(
            BuiltEntity(
                item.entity_id,
                version,
                item.version,
                printed,
                codec.encode(image, entity_type, item.entity_id, version),
                item.refs,
            )
        )
    return built, unchanged
