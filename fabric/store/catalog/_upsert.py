"""The catalog's tables as its writes see them: each one's columns and key, and the upsert
that replaces a row (the connection, either backend's: :mod:`fabric.store.database`)."""

from __future__ import annotations

from fabric.store.database import upsert_sql

__all__ = ["TABLES", "upsert"]

#: Every catalog table a row is written to whole: its columns, in order, and its key.
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "entities": (
        (
            "entity_type",
            "entity_id",
            "version",
            "fingerprint",
            "schema_version",
            "created_at",
            "updated_at",
        ),
        ("entity_type", "entity_id"),
    ),
    "source_keys": (
        ("entity_type", "source", "source_table", "source_key", "entity_id"),
        ("entity_type", "source", "source_table", "source_key"),
    ),
    "schemas": (("entity_type", "version", "layout"), ("entity_type",)),
    "links": (
        ("entity_type", "entity_id", "record_a", "record_b", "rule", "score", "comparisons"),
        ("entity_type", "entity_id", "record_a", "record_b"),
    ),
    "aliases": (
        ("entity_type", "alias_id", "entity_id", "created_at", "sync_run"),
        ("entity_type", "alias_id"),
    ),
    "watermarks": (
        ("source", "source_table", "column_name", "value", "sync_run"),
        ("source", "source_table"),
    ),
    "identity_records": (
        ("entity_type", "ref", "entity_id", "values_hash", "key_hashes"),
        ("entity_type", "ref"),
    ),
    "identity_keys": (("entity_type", "key_hash", "ref"), ("entity_type", "key_hash", "ref")),
}


def upsert(table: str) -> str:
    """``INSERT`` of one whole row of ``table`` that replaces the row with its key."""
    columns, key = TABLES[table]
    return upsert_sql(table, columns, key)
