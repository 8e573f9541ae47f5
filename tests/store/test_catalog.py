"""The catalog: bulk rewrites (a full sync's source keys, links and index), schema steps,
and the queries on its tables that other modules call; on each backend (``make_catalog``:
tests/backends.py) but for the SQLite file's own schema steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from fabric.store.catalog import Catalog, EntityEvent, EntityRecord, StoredLink
from fabric.store.sqlite import apsw, open_database


def keys(catalog: Catalog, entity_type: str) -> set[tuple[str, str, str, str]]:
    return {
        (str(ref.source), str(ref.table), str(ref.key), str(e))
        for ref, e in catalog.source_map(entity_type).items()
    }


def test_rewrite_replaces_one_entity_type(make_catalog: Callable[[], Catalog]) -> None:
    catalog = make_catalog()
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


def test_rewrite_is_one_transaction_that_an_error_rolls_back(
    make_catalog: Callable[[], Catalog],
) -> None:
    catalog = make_catalog()
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add([("customer", "crm", "customers", "1", "C1")])
    writer = catalog.rewrite("source_keys", "customer")
    writer.add([("customer", "crm", "customers", "2", "C2")])
    # Another connection (a server reading) sees the old rows until the rewrite commits.
    reader = make_catalog()
    assert keys(reader, "customer") == {("crm", "customers", "1", "C1")}
    writer.abort()
    assert keys(catalog, "customer") == {("crm", "customers", "1", "C1")}
    with pytest.raises(RuntimeError), catalog.rewrite("source_keys", "customer") as failing:
        failing.add([("customer", "crm", "customers", "3", "C3")])
        raise RuntimeError("the source went away")
    assert keys(reader, "customer") == {("crm", "customers", "1", "C1")}


def test_only_bulk_tables_can_be_rewritten(make_catalog: Callable[[], Catalog]) -> None:
    with pytest.raises(ValueError, match="not a table a full sync rewrites"):
        make_catalog().rewrite("entities", "customer")


def test_delete_entities_removes_their_keys_only(make_catalog: Callable[[], Catalog]) -> None:
    catalog = make_catalog()
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
    Catalog(path).close()
    # The catalog lends its connection to no one: the test opens the file itself.
    conn = open_database(path)
    # As a catalog written before the last six steps: the indexes they drop are still
    # there, the columns and tables they add are not, and the identity index has a record.
    conn.execute("CREATE INDEX identity_by_entity ON identity_records (entity_type, entity_id)")
    conn.execute("CREATE INDEX source_keys_by_entity ON source_keys (entity_type, entity_id)")
    conn.execute("CREATE INDEX identity_keys_by_ref ON identity_keys (entity_type, ref)")
    conn.execute("ALTER TABLE identity_records DROP COLUMN values_hash")
    conn.execute("ALTER TABLE identity_records DROP COLUMN key_hashes")
    conn.execute("INSERT INTO identity_records VALUES ('customer', 'crm.customers:1', 'C1')")
    conn.execute("INSERT INTO identity_keys VALUES ('customer', x'00', 'crm.customers:1')")
    conn.execute("DROP TABLE dictionaries")
    conn.execute("ALTER TABLE sync_runs DROP COLUMN rules_version")
    conn.execute("DROP TABLE settings")
    steps = int(conn.pragma("user_version"))
    conn.pragma("user_version", steps - 6)
    conn.close()
    Catalog(path).close()
    upgraded = open_database(path)
    assert int(upgraded.pragma("user_version")) == steps
    names = {str(n) for (n,) in upgraded.execute("SELECT name FROM sqlite_master")}
    assert not names & {"identity_by_entity", "source_keys_by_entity", "identity_keys_by_ref"}
    columns = {str(c[1]) for c in upgraded.execute("PRAGMA table_info(identity_records)")}
    assert {"values_hash", "key_hashes"} <= columns
    assert "dictionaries" in names and "settings" in names
    runs = {str(c[1]) for c in upgraded.execute("PRAGMA table_info(sync_runs)")}
    assert "rules_version" in runs
    # Records indexed without their key list are dropped: the next sync starts the index again.
    assert upgraded.execute("SELECT count(*) FROM identity_records").fetchone()[0] == 0
    assert upgraded.execute("SELECT count(*) FROM identity_keys").fetchone()[0] == 0


def test_existing_and_entities_in_find_catalogued_ids_in_bulk(
    make_catalog: Callable[[], Catalog],
) -> None:
    catalog = make_catalog()
    for entity_type, ids in (("customer", [f"C{i}" for i in range(1200)]), ("device", ["C5000"])):
        records = [EntityRecord(entity_type, e, 1, "f", "s", "c", "u") for e in ids]
        catalog.apply_batch(records, [], entity_type)
    asked = [f"C{i}" for i in range(0, 5001, 5)] + ['it\'s "quoted"', "C1"]
    expected = {f"C{i}" for i in range(0, 1200, 5)} | {"C1"}
    assert catalog.existing("customer", asked) == expected
    assert set(catalog.entities_in("customer", asked)) == expected  # more than one chunk of ids
    assert catalog.existing("customer", []) == set()


def test_catalog_lends_its_connection_to_no_one(make_catalog: Callable[[], Catalog]) -> None:
    # Every query on the catalog's tables is one of its methods (STYLE habit 14).
    catalog = make_catalog()
    public = [getattr(catalog, name) for name in dir(catalog) if not name.startswith("_")]
    connections = (apsw.Connection, psycopg.Connection)
    assert not [value for value in public if isinstance(value, connections)]


def test_a_write_joins_the_bulk_rewrite_the_caller_has_open(
    make_catalog: Callable[[], Catalog],
) -> None:
    # A full sync seals its new dictionary into the catalog while its source keys are being
    # rewritten: if the run fails, neither is kept.
    catalog = make_catalog()
    writer = catalog.rewrite("source_keys", "customer")
    writer.add([("customer", "crm", "customers", "1", "C1")])
    catalog.put_dictionary("d1", "customer", "s1", 10, b"sealed")
    catalog.set_watermarks({("crm", "customers", "id"): 1}, run_id=1)
    writer.abort()
    assert catalog.dictionaries() == []
    assert catalog.watermark("crm", "customers", "id") is None
    assert keys(catalog, "customer") == set()


def test_watermarks_keep_their_type_and_restart_when_the_column_changes(
    make_catalog: Callable[[], Catalog],
) -> None:
    catalog = make_catalog()
    assert catalog.watermark("crm", "customers", "updated_at") is None
    catalog.set_watermarks(
        {("crm", "customers", "updated_at"): "2024-01-02T03:04:05", ("shop", "orders", "id"): 41},
        run_id=1,
    )
    assert catalog.watermark("crm", "customers", "updated_at") == "2024-01-02T03:04:05"
    assert catalog.watermark("shop", "orders", "id") == 41
    assert catalog.watermark("shop", "orders", "updated_at") is None  # read by another column


def test_runs_by_status_counts_every_recorded_run(make_catalog: Callable[[], Catalog]) -> None:
    catalog = make_catalog()
    assert catalog.runs_by_status() == {}
    for status in ("succeeded", "failed", "succeeded"):
        catalog.finish_run(catalog.start_run("full"), status=status, counts={})
    catalog.start_run("incremental")
    assert catalog.runs_by_status() == {"succeeded": 2, "failed": 1, "running": 1}


def test_history_keeps_links_and_follows_merges_to_the_survivor(
    make_catalog: Callable[[], Catalog],
) -> None:
    catalog = make_catalog()
    link = StoredLink("crm.customers:1", "shop.orders:7", "email", 0.9, {"email": 1.0})
    catalog.replace_links("customer", {"C1": [link], "C2": [link]})
    catalog.replace_links("customer", {"C2": []})
    assert catalog.links("customer", "C1") == [link]
    assert catalog.links("customer", "C2") == []
    merge = EntityEvent("merge", "C1", ["C2"], "email", "2024-01-01T00:00:00+00:00", 1)
    catalog.record_history("customer", [merge], {"C2": "C1"}, 1, current=["C1"])
    catalog.record_history("customer", [], {"C1": "C3"}, 2, current=["C3"])
    assert catalog.alias_target("customer", "C2") == "C3"  # older aliases follow the merge
    assert catalog.alias_target("customer", "C1") == "C3"
    assert catalog.events("customer", "C2") == [merge]
    catalog.record_history("customer", [], {}, 3, current=["C2"])  # a split gave C2 back
    assert catalog.alias_target("customer", "C2") is None


def test_a_copy_of_a_table_larger_than_a_read_batch_is_whole(
    make_catalog: Callable[[], Catalog], tmp_path: Path
) -> None:
    catalog = make_catalog()
    rows = [("customer", "crm", "customers", str(n), f"C{n % 997}") for n in range(12_001)]
    with catalog.rewrite("source_keys", "customer") as writer:
        writer.add(rows)
    into = Catalog(tmp_path / "target" / "catalog.db")
    try:
        batches: list[int] = []
        copied = catalog.copy_to(into, lambda what, n: batches.append(n))
        assert copied == 12_001
        # Streamed from either backend 5,000 rows at a time, each batch written as read.
        assert batches == [5000, 5000, 2001]
        assert keys(into, "customer") == keys(catalog, "customer")
    finally:
        into.close()
