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


def test_rewrite_replaces_one_entity_type(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add([("customer", "crm", "customers", "1", "C1")])
    with catalog.rewrite("source_keys", "device") as writer:
        writer.add([("device", "iot", "devices", "1", "D1")])
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add([("customer", "crm", "customers", "2", "C2")])
        writer.add([("customer", "shop", "orders", "7", "C2")])
    assert keys(catalog, "customer") == {
        ("crm", "customers", "2", "C2"),
        ("shop", "orders", "7", "C2"),
    }
    assert keys(catalog, "device") == {("iot", "devices", "1", "D1")}
    assert catalog.find_by_source("customer", "shop", "orders", "7") == ["C2"]
    with catalog.rewrite("source_keys", "device"):
        pass  # nothing written: the type is emptied
    assert keys(catalog, "device") == set()


def test_rewrite_is_one_transaction_that_an_error_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add([("customer", "crm", "customers", "1", "C1")])
    writer = catalog.rewrite("source_keys", "customer")
    writer.add([("customer", "crm", "customers", "2", "C2")])
    # Another connection (a server reading) sees the old rows until the rewrite commits.
    reader = Catalog(path)
    assert keys(reader, "customer") == {("crm", "customers", "1", "C1")}
    writer.abort()
    assert keys(catalog, "customer") == {("crm", "customers", "1", "C1")}
    with pytest.raises(RuntimeError), catalog.rewrite("source_keys", "customer") as failing:
        failing.add([("customer", "crm", "customers", "3", "C3")])
        raise RuntimeError("the source went away")
    assert keys(reader, "customer") == {("crm", "customers", "1", "C1")}


def test_only_bulk_tables_can_be_rewritten(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a table a full sync rewrites"):
        Catalog(tmp_path / "catalog.db").rewrite("entities", "customer")


def test_delete_entities_removes_their_keys_only(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add(
            [
                ("customer", "crm", "customers", "1", "C1"),
                ("customer", "shop", "orders", "7", "C1"),
                ("customer", "crm", "customers", "2", "C2"),
                ("customer", "crm", "customers", "3", "C'3"),
            ]
        )
    catalog.delete_entities("customer", ["C1", "C'3", "C9"])
    assert keys(catalog, "customer") == {("crm", "customers", "2", "C2")}


def test_catalog_upgrades_an_older_schema_in_place(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    conn = Catalog(path).connection
    # As a catalog written before the last five steps: the indexes they drop are still
    # there, the columns and table they add are not, and the identity index has a record.
    conn.execute("CREATE INDEX identity_by_entity ON identity_records (entity_type, entity_id)")
    conn.execute("CREATE INDEX source_keys_by_entity ON source_keys (entity_type, entity_id)")
    conn.execute("CREATE INDEX identity_keys_by_ref ON identity_keys (entity_type, ref)")
    conn.execute("ALTER TABLE identity_records DROP COLUMN values_hash")
    conn.execute("ALTER TABLE identity_records DROP COLUMN key_hashes")
    conn.execute("INSERT INTO identity_records VALUES ('customer', 'crm.customers:1', 'C1')")
    conn.execute("INSERT INTO identity_keys VALUES ('customer', x'00', 'crm.customers:1')")
    conn.execute("DROP TABLE dictionaries")
    conn.execute("ALTER TABLE sync_runs DROP COLUMN rules_version")
    steps = int(conn.pragma("user_version"))
    conn.pragma("user_version", steps - 5)
    conn.close()
    upgraded = Catalog(path).connection
    assert int(upgraded.pragma("user_version")) == steps
    names = {str(n) for (n,) in upgraded.execute("SELECT name FROM sqlite_master")}
    assert not names & {"identity_by_entity", "source_keys_by_entity", "identity_keys_by_ref"}
    columns = {str(c[1]) for c in upgraded.execute("PRAGMA table_info(identity_records)")}
    assert {"values_hash", "key_hashes"} <= columns
    assert "dictionaries" in names
    runs = {str(c[1]) for c in upgraded.execute("PRAGMA table_info(sync_runs)")}
    assert "rules_version" in runs
    # Records indexed without their key list are dropped: the next sync starts the index again.
    assert upgraded.execute("SELECT count(*) FROM identity_records").fetchone()[0] == 0
    assert upgraded.execute("SELECT count(*) FROM identity_keys").fetchone()[0] == 0


def test_existing_and_entities_in_find_catalogued_ids_in_bulk(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    with catalog.connection:
        catalog.connection.executemany(
            "INSERT INTO entities VALUES (?, ?, 1, 'f', 's', 'c', 'u')",
            [("customer", f"C{i}") for i in range(1200)] + [("device", "C5000")],
        )
    asked = [f"C{i}" for i in range(0, 5001, 5)] + ['it\'s "quoted"', "C1"]
    expected = {f"C{i}" for i in range(0, 1200, 5)} | {"C1"}
    assert catalog.existing("customer", asked) == expected
    assert set(catalog.entities_in("customer", asked)) == expected  # more than one chunk of ids
    assert catalog.existing("customer", []) == set()
