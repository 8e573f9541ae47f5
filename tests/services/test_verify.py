"""`verify_store`, and what a tampered blob does to readers, verify and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.errors import StoreError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.verify import verify_store
from fabric.store.base import StoredBlob, entity_key, partition_of
from fabric.store.sqlite import one_row, open_database


def _flip_a_byte(project: Project, entity_type: str, entity_id: str) -> None:
    """Change one byte of a stored blob behind the store's back, as a disk fault would."""
    key = entity_key(entity_type, entity_id)
    shard = (
        project.store_dir / "shards" / f"shard-{partition_of(key, project.store.partitions):04d}.db"
    )
    conn = open_database(shard)
    try:
        (blob,) = one_row(conn, "SELECT blob FROM blobs WHERE key = ?", (key,))
        blob = bytearray(blob)
        blob[len(blob) // 2] ^= 0x40
        with conn:
            conn.execute("UPDATE blobs SET blob = ? WHERE key = ?", (bytes(blob), key))
    finally:
        conn.close()


def test_verify_passes_on_a_synced_store(synced: Path) -> None:
    with Project.open(synced) as project:
        report = verify_store(project)
        assert report.ok, report.faults
        assert report.checked == project.catalog.count("customer") > 0
        assert set(report.key_ids) == {"0"}
        assert not report.notices


def test_a_tampered_blob_fails_its_reads_and_verify_and_nothing_else(synced: Path) -> None:
    with Project.open(synced) as project:
        victim, *others = sorted(project.catalog.entities("customer"))
        _flip_a_byte(project, "customer", victim)
    with Project.open(synced) as project:
        service = EntityService(project)
        # The clear view reads the image (a masked document may come from the online
        # store, sealed on its own, materialized before the damage).
        with pytest.raises(StoreError, match=f"stored image of customer {victim} failed its"):
            service.document("customer", victim, role="steward")
        for other in others[:20]:
            assert service.document("customer", other)["entity_id"] == other
        report = verify_store(project)
        assert [(f.entity_id, "integrity" in f.problem) for f in report.faults] == [(victim, True)]
    result = CliRunner().invoke(main, ["store", "verify", "-c", str(synced)])
    assert result.exit_code == 1
    assert f"fault: customer {victim}" in result.output
    assert "1 of" in result.output and "failed verification" in result.output
    assert "Traceback" not in result.output


def test_verify_names_an_image_stored_as_another_entity(synced: Path) -> None:
    # A valid blob of one entity copied onto another: the associated data refuses it.
    with Project.open(synced) as project:
        first, second = sorted(project.catalog.entities("customer"))[:2]
        blob = project.store.get("customer", first)
        target = project.store.get("customer", second)
        assert blob is not None and target is not None
        project.store.put_many(
            [StoredBlob("customer", second, target.version, blob.blob, target.version)]
        )
        faults = verify_store(project).faults
    assert [f.entity_id for f in faults] == [second]


def test_verify_reports_a_catalogued_entity_missing_from_the_store(synced: Path) -> None:
    with Project.open(synced) as project:
        gone = sorted(project.catalog.entities("customer"))[0]
        project.store.delete_many("customer", [gone])
        faults = verify_store(project).faults
    assert [(f.entity_id, f.problem) for f in faults] == [
        (gone, "in the catalog but not in the store")
    ]


def test_verify_counts_an_interrupted_syncs_states_as_notices(synced: Path) -> None:
    # What a crash between the store's commit and the catalog's leaves: an image one version
    # ahead of the catalog, and an image the catalog has already deleted.
    with Project.open(synced) as project:
        ahead, orphan = sorted(project.catalog.entities("customer"))[:2]
        project.catalog.delete_entities("customer", [orphan])
        stored = project.store.get("customer", ahead)
        assert stored is not None
        image = project.codec.decode(stored.blob, "customer", ahead, stored.version)
        from fabric.store.microdb import MicroDbReader

        conn = MicroDbReader().load(image)
        with conn:
            conn.execute("UPDATE _meta SET value = ? WHERE key = 'version'", (stored.version + 1,))
        newer = project.codec.encode(conn.serialize("main"), "customer", ahead, stored.version + 1)
        project.store.put_many(
            [StoredBlob("customer", ahead, stored.version + 1, newer, stored.version)]
        )
        report = verify_store(project)
    assert report.ok, report.faults
    assert sorted(report.notices.values()) == [1, 1]


def test_cli_store_stats(synced: Path) -> None:
    result = CliRunner().invoke(main, ["store", "stats", "-c", str(synced), "--json"])
    assert result.exit_code == 0, result.output
    import json

    figures = json.loads(result.output)
    assert figures["stored_entities"] == figures["entities"]["customer"] > 0
    assert figures["shard_file_bytes"] >= figures["blob_bytes"] > 0
