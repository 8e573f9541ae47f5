"""Micro-database images: built by one reused builder, self-describing, with lineage."""

from __future__ import annotations

import apsw
import pytest

from fabric.crypto import KeyRing
from fabric.store.codec import BlobCodec
from fabric.store.microdb import (
    ColumnDef,
    EntityContent,
    EntitySchema,
    MicroDbBuilder,
    MicroDbPatcher,
    MicroDbReader,
    PatchRow,
    TableDef,
    fingerprint_total,
)

SCHEMA = EntitySchema(
    "customer",
    (
        TableDef(
            "people",
            "crm",
            "customers",
            "id",
            (ColumnDef("id", "INTEGER"), ColumnDef("name", "TEXT"), ColumnDef("score", "REAL")),
        ),
        TableDef(
            "orders",
            "shop",
            "orders",
            "id",
            (ColumnDef("id", "INTEGER"), ColumnDef("person_id", "INTEGER")),
            parent="people",
            foreign_key="person_id",
        ),
    ),
)


def content(entity_id: str, names: list[str]) -> EntityContent:
    rows = [(i, n, i * 1.5) for i, n in enumerate(names, 1)]
    lineage = [
        ("people", str(i), "crm", "customers", str(i), "2026-01-01T00:00:00", 1)
        for i, _ in enumerate(names, 1)
    ]
    return EntityContent(entity_id, {"people": rows, "orders": [(9, 1)]}, lineage)


def test_microdb_build_and_read_roundtrip() -> None:
    builder = MicroDbBuilder(SCHEMA)
    image = builder.build(content("e1", ["Ada", "Bob"]), {"entity_id": "e1", "version": 3})
    codec = BlobCodec(KeyRing.of_master(b"k" * 32))
    blob = codec.encode(image, "customer", "e1", 3)
    meta, tables = MicroDbReader().read_tables(codec.decode(blob, "customer", "e1", 3))
    assert meta["version"] == 3 and meta["entity_id"] == "e1"
    assert tables["people"] == [
        {"id": 1, "name": "Ada", "score": 1.5},
        {"id": 2, "name": "Bob", "score": 3.0},
    ]
    assert tables["orders"] == [{"id": 9, "person_id": 1}]


def test_microdb_builder_resets_between_entities() -> None:
    builder = MicroDbBuilder(SCHEMA)
    builder.build(content("e1", ["Ada", "Bob", "Cy"]), {"entity_id": "e1"})
    second = builder.build(content("e2", ["Dee"]), {"entity_id": "e2"})
    reader = MicroDbReader()
    _, tables = reader.read_tables(second)
    assert [r["name"] for r in tables["people"]] == ["Dee"]
    assert reader.lineage(second)[0]["source_table"] == "customers"


def test_microdb_builder_shrinks_back_and_survives_a_failed_build() -> None:
    builder = MicroDbBuilder(SCHEMA)
    small = builder.build(content("e1", ["Ada"]), {"entity_id": "e1"})
    builder.build(content("e2", [f"name {i}" * 20 for i in range(300)]), {"entity_id": "e2"})
    bad = content("e3", ["Cy"])
    bad.rows["people"].append((1, "duplicate", 0.0, "one column too many"))
    with pytest.raises(apsw.Error):
        builder.build(bad, {"entity_id": "e3"})
    again = builder.build(content("e1", ["Ada"]), {"entity_id": "e1"})
    # Emptied after the big entity and after the failure: same size, same rows.
    assert len(again) == len(small)
    reader = MicroDbReader()
    assert reader.read_tables(again) == reader.read_tables(small)
    assert reader.load(again).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_microdb_images_hold_no_bytes_of_other_entities_or_old_values() -> None:
    builder = MicroDbBuilder(SCHEMA)
    secret = "Zebediah-Quartermaine"
    builder.build(content("e1", [secret * 3] * 40), {"entity_id": "e1", "sync_run": 1})
    other = builder.build(content("e2", ["Dee"]), {"entity_id": "e2", "sync_run": 1})
    assert secret.encode() not in other
    # An updated row leaves no trace of its old value either.
    image = builder.build(content("e3", [secret]), {"entity_id": "e3", "sync_run": 1})
    people = SCHEMA.tables[0]
    result = MicroDbPatcher().patch(
        image,
        [PatchRow(people, (1, "Ann", 1.5), ("people", "1", "crm", "customers", "1", "t", 2))],
        {"sync_run": 2},
        fingerprint_total(content("e3", [secret]).fingerprint()) or 0,
    )
    assert result is not None
    assert secret.encode() not in result[0]


def test_microdb_patch_inserts_and_updates_rows_and_keeps_the_fingerprint_exact() -> None:
    builder = MicroDbBuilder(SCHEMA)
    before = content("e1", ["Ada", "Bob"])
    image = builder.build(before, {"entity_id": "e1", "version": 1, "sync_run": 1})
    people, orders = SCHEMA.tables
    rows = [
        PatchRow(orders, (10, 2), ("orders", "10", "shop", "orders", "10", "2026-02-01", 2)),
        PatchRow(people, (2, "Bobby", 3.0), ("people", "2", "crm", "customers", "2", "t", 2)),
    ]
    total = fingerprint_total(before.fingerprint())
    assert total is not None
    patcher = MicroDbPatcher()
    result = patcher.patch(image, rows, {"version": 2, "sync_run": 2}, total)
    assert result is not None
    patched, printed = result
    after = EntityContent(
        "e1",
        {"people": [(1, "Ada", 1.5), (2, "Bobby", 3.0)], "orders": [(9, 1), (10, 2)]},
        [],
    )
    # The same fingerprint as a build of the same rows, in whatever order.
    assert printed == after.fingerprint()
    after.rows["orders"].reverse()
    assert printed == after.fingerprint()
    meta, tables = MicroDbReader().read_tables(patched)
    assert meta["version"] == 2 and meta["sync_run"] == 2 and meta["entity_id"] == "e1"
    assert tables["people"][1] == {"id": 2, "name": "Bobby", "score": 3.0}
    assert [r["id"] for r in tables["orders"]] == [9, 10]
    lineage_rows = MicroDbReader().lineage(patched)
    assert {(r["tbl"], r["row_key"]) for r in lineage_rows} == {
        ("people", "1"),
        ("people", "2"),
        ("orders", "10"),
    }
    bob = next(r for r in lineage_rows if r["row_key"] == "2")
    assert bob["sync_run"] == 2 and bob["extracted_at"] == "t"
    # Patching with rows it already has changes nothing.
    assert patcher.patch(patched, rows, {"version": 3}, fingerprint_total(printed) or 0) is None


def test_microdb_patch_of_rows_known_new_inserts_them_without_looking() -> None:
    builder = MicroDbBuilder(SCHEMA)
    before = content("e1", ["Ada"])
    image = builder.build(before, {"entity_id": "e1", "version": 1, "sync_run": 1})
    orders = SCHEMA.tables[1]
    lineage = ("orders", "10", "shop", "orders", "10", "2026-02-01", 2)
    total = fingerprint_total(before.fingerprint())
    assert total is not None
    patcher = MicroDbPatcher()
    looked = patcher.patch(image, [PatchRow(orders, (10, 2), lineage)], {"version": 2}, total)
    blind = patcher.patch(
        image, [PatchRow(orders, (10, 2), lineage, new=True)], {"version": 2}, total
    )
    assert looked is not None and blind is not None
    assert blind[1] == looked[1]
    assert MicroDbReader().read_tables(blind[0]) == MicroDbReader().read_tables(looked[0])
    # Known new means not looked for: the caller's word is taken, even when it is wrong.
    again = patcher.patch(blind[0], [PatchRow(orders, (10, 2), lineage, new=True)], {}, total)
    assert again is not None
    assert [r["id"] for r in MicroDbReader().read_tables(again[0])[1]["orders"]] == [9, 10, 10]


def test_microdb_reads_selected_tables_only() -> None:
    image = MicroDbBuilder(SCHEMA).build(content("e1", ["Ada"]), {"entity_id": "e1"})
    _, tables = MicroDbReader().read_tables(image, ["orders"])
    assert list(tables) == ["orders"]


def test_microdb_flat_reads_rows_in_one_list_and_follows_each_image_layout() -> None:
    reader = MicroDbReader()
    layout = {"orders": ["person_id", "missing"], "people": ["name"], "nowhere": ["x"]}
    image = MicroDbBuilder(SCHEMA).build(content("e1", ["Ada", "Bob"]), {"entity_id": "e1"})
    rows = reader.flat(image, layout)
    # (table position in the layout, rowid, columns...): NULL for what the image lacks.
    assert sorted(r[:3] for r in rows) == [(0, 1, 1), (1, 1, "Ada"), (1, 2, "Bob")]
    assert all(r[3] is None for r in rows if r[0] == 0)
    # An image of another layout (built before the orders table existed) is read right.
    older = EntitySchema("customer", SCHEMA.tables[:1])
    only_people = EntityContent("e2", {"people": [(1, "Cy", 1.0)]}, [])
    old_image = MicroDbBuilder(older).build(only_people, {"entity_id": "e2"})
    assert [r[:3] for r in reader.flat(old_image, layout)] == [(1, 1, "Cy")]
    assert sorted(r[:3] for r in reader.flat(image, layout)) == sorted(r[:3] for r in rows)
    # So are whole reads, from one layout to the other and back.
    for each in (image, old_image, image):
        assert "people" in reader.read_tables(each)[1]
    assert list(reader.read_tables(old_image)[1]) == ["people"]


def test_microdb_schema_version_changes_with_schema() -> None:
    other = EntitySchema("customer", SCHEMA.tables[:1])
    assert other.version != SCHEMA.version


def test_microdb_fingerprint_ignores_extraction_time_and_run() -> None:
    a = content("e1", ["Ada", "Bob"])
    b = EntityContent(
        "e1",
        {"people": list(a.rows["people"]), "orders": [(9, 1)]},
        [(*r[:5], "2030-01-01T00:00:00", 7) for r in a.lineage],
    )
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != content("e1", ["Ada", "Bo"]).fingerprint()
