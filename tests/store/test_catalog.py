"""The catalog's bulk rewrite: what a full sync uses for source keys, links and the index."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.store.catalog import Catalog


def keys(catalog: Catalog, entity_type: str) -> set[tuple[str, str, str, str]]:
    return {
        (str(s), str(t), str(k), str(e))
        for s, t, k, e in catalog.connection.execute(
            "SELECT source, source_table, source_key, entity_id FROM source_keys "
            "WHERE entity_type = ?",
            (entity_type,),
        )
    }


def test_rewrite_replaces_one_entity_type_and_keeps_indexes(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.stage("source_keys", [("customer", "crm", "customers", "1", "C1")])
    catalog.stage("source_keys", [("device", "iot", "devices", "1", "D1")])
    catalog.rewrite("source_keys", "customer")
    assert keys(catalog, "customer") == {("crm", "customers", "1", "C1")}
    assert keys(catalog, "device") == set()  # staged, not yet rewritten
    catalog.rewrite("source_keys", "device")
    catalog.stage(
        "source_keys",
        [("customer", "crm", "customers", "2", "C2"), ("customer", "shop", "orders", "7", "C2")],
    )
    catalog.rewrite("source_keys", "customer")
    assert keys(catalog, "customer") == {
        ("crm", "customers", "2", "C2"),
        ("shop", "orders", "7", "C2"),
    }
    assert keys(catalog, "device") == {("iot", "devices", "1", "D1")}
    assert catalog.find_by_source("customer", "shop", "orders", "7") == ["C2"]
    indexes = {
        str(name)
        for (name,) in catalog.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'source_keys' "
            "AND sql IS NOT NULL"
        )
    }
    assert indexes == {"source_keys_by_entity"}
    # Nothing staged: the type is emptied.
    catalog.rewrite("source_keys", "device")
    assert keys(catalog, "device") == set()


def test_unstage_drops_rows_of_a_failed_run(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    catalog.stage("source_keys", [("customer", "crm", "customers", "1", "C1")])
    catalog.unstage("source_keys")
    catalog.rewrite("source_keys", "customer")
    assert keys(catalog, "customer") == set()


def test_only_bulk_tables_can_be_staged(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a table a full sync rewrites"):
        Catalog(tmp_path / "catalog.db").stage("entities", [])
