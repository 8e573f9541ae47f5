"""Incremental sync: only changed rows are read, and the result equals a full sync."""

from __future__ import annotations

import shutil
import sqlite3
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import pytest
from backends import URL_ENV, on_postgres
from source_changes import LATER, change_sources, execute

from fabric.demo import DemoProject
from fabric.errors import EntityNotFoundError, InvalidRequestError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService
from fabric.store.microdb import EntityContent, MicroDbReader
from fabric.store.sqlite import open_database
from fabric.sync import incremental as incremental_sync
from fabric.sync import sync_project


def assert_fingerprints_describe_images(project: Project) -> None:
    """The catalog's fingerprint of every entity is that of the rows its image holds."""
    reader = MicroDbReader()
    layout = {t.name: list(t.column_names) for t in project.schema("customer").tables}
    records = project.catalog.entities("customer")
    for entity_id, blob in project.store.get_many("customer", sorted(records)).items():
        image = project.codec.decode(blob.blob, "customer", entity_id, blob.version)
        rows, _ = reader.contents(image, layout)
        printed = EntityContent(entity_id, rows, []).fingerprint()
        assert records[entity_id].fingerprint == printed, entity_id
        assert records[entity_id].version == blob.version, entity_id


def index_of(project: Project) -> set[tuple[object, ...]]:
    """The identity index's keys, and its records grouped as entities (ids left out)."""
    groups: dict[str, set[str]] = defaultdict(set)
    # The catalog lends its connection to no one: look at the file from another.
    with closing(open_database(project.catalog.path, readonly=True)) as conn:
        # Every record carries the hash of its values that lets unchanged ones skip resolution.
        assert conn.execute(
            "SELECT count(*) FROM identity_records WHERE values_hash IS NULL"
        ).fetchone() == (0,)
        keys = set(conn.execute("SELECT key_hash, ref FROM identity_keys"))
        for ref, entity_id in conn.execute("SELECT ref, entity_id FROM identity_records"):
            groups[entity_id].add(ref)
    return keys | {tuple(sorted(g)) for g in groups.values()}


def partition(project: Project) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for ref, entity_id in project.catalog.source_map("customer").items():
        groups[entity_id].add(str(ref))
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("workers", [1, 2])
def test_incremental_reads_only_changes_and_matches_a_full_sync(
    fresh_demo: DemoProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # With workers, patches run in worker processes however few entities they touch.
    monkeypatch.setattr(incremental_sync, "_PATCH_IN_WORKERS_FROM", 1)
    with Project.open(fresh_demo.config_path) as project:
        full = sync_project(project, full=True)
    change_sources(fresh_demo.directory / "sources")
    with Project.open(fresh_demo.config_path) as project:
        incremental = sync_project(project, workers=workers)
        assert incremental.mode == "incremental"
        assert incremental.rows_read < full.rows_read / 20
        assert incremental.updated >= 2 and incremental.created == 0
        assert_fingerprints_describe_images(project)
        after_incremental = partition(project)
        index_keys = index_of(project)
    with Project.open(fresh_demo.config_path) as project:
        # Watermarks are inclusive: the newest rows are read again, and found unchanged.
        again = sync_project(project)
        assert again.rows_read > 0 and again.updated == again.created == 0
    copy = tmp_path / "copy"
    shutil.copytree(fresh_demo.directory, copy, ignore=shutil.ignore_patterns("store"))
    with Project.open(copy / "fabric.yaml") as project:
        sync_project(project, full=True)
        assert partition(project) == after_incremental
        # The identity index kept up incrementally files every record as a full sync does.
        assert index_of(project) == index_keys


def test_incremental_reindexes_a_record_whose_keys_changed_in_the_same_entity(
    fresh_demo: DemoProject, tmp_path: Path
) -> None:
    sources = fresh_demo.directory / "sources"
    with sqlite3.connect(sources / "billing.db") as conn:
        conn.execute("ATTACH DATABASE ? AS crm", (str(sources / "crm.db"),))
        (account,) = conn.execute(
            "SELECT a.id FROM accounts a JOIN crm.customers c "
            "ON lower(trim(a.email)) = lower(trim(c.email)) ORDER BY a.id LIMIT 1"
        ).fetchone()
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        holder = project.catalog.find_by_source("customer", "billing", "accounts", str(account))
    # A new phone: the account stays with its customer (same email), under other keys.
    execute(
        sources / "billing.db",
        f"UPDATE accounts SET phone = '+1 415 555 0199', updated_at = '{LATER}' "
        f"WHERE id = {account}",
    )
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project)
        assert report.mode == "incremental" and report.updated >= 1
        assert (
            project.catalog.find_by_source("customer", "billing", "accounts", str(account))
            == holder
        )
        after = index_of(project), partition(project)
    copy = tmp_path / "copy"
    shutil.copytree(fresh_demo.directory, copy, ignore=shutil.ignore_patterns("store"))
    with Project.open(copy / "fabric.yaml") as project:
        sync_project(project, full=True)
        assert (index_of(project), partition(project)) == after


def test_incremental_child_rows_patch_in_and_moved_rows_leave_their_old_entity(
    fresh_demo: DemoProject, tmp_path: Path
) -> None:
    config = fresh_demo.config_path
    # Orders watermarked by time, so an order moved to another account is seen as a change.
    text = config.read_text()
    assert "orders: {primary_key: id, watermark: id}" in text
    config.write_text(
        text.replace(
            "orders: {primary_key: id, watermark: id}",
            "orders: {primary_key: id, watermark: ordered_at}",
        )
    )
    with Project.open(config) as project:
        sync_project(project, full=True)
        old_owner = project.catalog.find_by_source("customer", "shop", "orders", "1")
        target = project.catalog.find_by_source("customer", "billing", "accounts", "7")
        assert old_owner and target and old_owner != target
        links_before = project.catalog.links("customer", target[0])
    shop = fresh_demo.directory / "sources" / "shop.db"
    execute(
        shop,
        # a moved order, and a new order (with an item) for an unchanged account
        f"UPDATE orders SET account_id = 7, ordered_at = '{LATER}' WHERE id = 1",
        "INSERT INTO orders SELECT 100001, 9, 20.0, 'placed', '" + LATER + "' FROM orders "
        "WHERE id = 2",
        "INSERT INTO order_items SELECT 900001, 100001, sku, qty, price FROM order_items "
        "WHERE id = (SELECT min(id) FROM order_items)",
    )
    with Project.open(config) as project:
        report = sync_project(project)
        assert report.mode == "incremental" and report.merged == report.split == 0
        catalog = project.catalog
        assert catalog.find_by_source("customer", "shop", "orders", "1") == target
        owner_9 = catalog.find_by_source("customer", "billing", "accounts", "9")
        assert catalog.find_by_source("customer", "shop", "orders", "100001") == owner_9
        assert catalog.find_by_source("customer", "shop", "order_items", "900001") == owner_9
        service = EntityService(project)
        old = service.document("customer", old_owner[0], role="steward")
        assert 1 not in [row["id"] for row in old["tables"]["shop_orders"]]
        new = service.document("customer", target[0], role="steward")
        assert 1 in [row["id"] for row in new["tables"]["shop_orders"]]
        assert catalog.links("customer", target[0]) == links_before
        assert_fingerprints_describe_images(project)
        after_incremental = partition(project)
    copy = tmp_path / "copy"
    shutil.copytree(fresh_demo.directory, copy, ignore=shutil.ignore_patterns("store"))
    with Project.open(copy / "fabric.yaml") as project:
        sync_project(project, full=True)
        assert partition(project) == after_incremental


def test_incremental_merge_keeps_the_older_id_and_the_alias_resolves(
    fresh_demo: DemoProject, backend: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(backend, str):
        on_postgres(fresh_demo.config_path)
        monkeypatch.setenv(URL_ENV, backend)
    sources = fresh_demo.directory / "sources"
    # Two records of one made-up person that nothing links yet: different emails, no phone.
    execute(
        sources / "crm.db",
        "INSERT INTO customers SELECT 200001, 'Zebulon', 'Quigley', 'zq1@example.org', NULL,"
        " birth_date, street, city, zip, country, created_at, updated_at FROM customers "
        "WHERE id = 1",
        "INSERT INTO customers SELECT 200002, 'Zebulon', 'Quigley', 'zq2@example.org', NULL,"
        " birth_date, street, city, zip, country, created_at, updated_at FROM customers "
        "WHERE id = 1",
    )
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        service = EntityService(project)
        older = service.find("customer", "crm.customers", "200001")
        newer = service.find("customer", "crm.customers", "200002")
        assert older != newer
        created = {e: r.created_at for e, r in project.catalog.entities("customer").items()}
    # An update gives the second record the first one's email, which links the two entities.
    execute(
        sources / "crm.db",
        f"UPDATE customers SET email = 'zq1@example.org', updated_at = '{LATER}' WHERE id = 200002",
    )
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project)
        assert report.merged == 1
        assert project.catalog.runs()[0].merged == 1
        service = EntityService(project)
        survivor = service.find("customer", "crm.customers", "200002")
        expected = min((older, newer), key=lambda e: (created[e], e))
        assert survivor == expected
        gone = newer if survivor == older else older
        doc = service.document("customer", gone, role="steward")
        assert doc["entity_id"] == survivor and doc["merged_from"] == gone
        # The materialized paths (a masked document, a vector) follow the alias too.
        masked = service.document("customer", gone, role="analyst")
        assert masked == {
            **service.document("customer", survivor, role="analyst"),
            "merged_from": gone,
        }
        vector = FeatureService(project, service).vector("customer_360", gone, role="analyst")
        assert vector["entity_id"] == survivor and vector["merged_from"] == gone
        # Lookups coalesced by the API: read together, each answered as alone, each error
        # its own; a malformed id among them does not fail the others.
        together = EntityService(project).document_batch(
            [
                ("customer", gone, "analyst", None),
                ("customer", "no-such-entity", "analyst", None),
                ("customer", survivor, "analyst", None),
                ("customer", gone, "steward", None),
                ("customer", survivor, "analyst", ["crm_customers"]),
            ]
        )
        assert together[0] == masked
        assert isinstance(together[1], EntityNotFoundError)
        assert together[2] == service.document("customer", survivor, role="analyst")
        assert together[3] == doc
        assert together[4] == service.document(
            "customer", survivor, role="analyst", tables=["crm_customers"]
        )
        malformed = EntityService(project).document_batch(
            [("customer", "x" * 300, "analyst", None), ("customer", gone, "analyst", None)]
        )
        assert isinstance(malformed[0], InvalidRequestError) and malformed[1] == masked
        # One asked entity's document is in the service's cache, the other's is not.
        other = next(e for e in sorted(created) if e not in (older, newer))
        mixed = service.document_batch(
            [("customer", gone, "analyst", None), ("customer", other, "analyst", None)]
        )
        assert mixed == [masked, EntityService(project).document("customer", other, role="analyst")]
        events = project.catalog.events("customer", survivor)
        assert events[-1].kind == "merge" and gone in events[-1].others
        assert "same_email" in events[-1].reason
        links = project.catalog.links("customer", survivor)
        assert any(link.rule == "same_email" for link in links)


def test_incremental_split_keeps_the_id_with_the_larger_part(fresh_demo: DemoProject) -> None:
    sources = fresh_demo.directory / "sources"
    execute(
        sources / "crm.db",
        "INSERT INTO customers SELECT 300001 + rowid % 3, 'Yolanda', 'Xu', 'yx@example.org',"
        " NULL, birth_date, street, city, zip, country, created_at, updated_at "
        "FROM customers WHERE id IN (1, 2, 3)",
    )
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        entity = EntityService(project).find("customer", "crm.customers", "300001")
        assert EntityService(project).find("customer", "crm.customers", "300003") == entity
    execute(
        sources / "crm.db",
        f"UPDATE customers SET email = 'other@example.org', updated_at = '{LATER}' "
        "WHERE id = 300003",
    )
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project)
        assert report.split == 1
        service = EntityService(project)
        assert service.find("customer", "crm.customers", "300001") == entity
        assert service.find("customer", "crm.customers", "300003") != entity
        events = project.catalog.events("customer", entity)
        assert events[-1].kind == "split"


def test_sync_leaves_no_plaintext_at_rest(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        sync_project(project)
    secrets: set[bytes] = set()
    sources = fresh_demo.directory / "sources"
    with sqlite3.connect(sources / "crm.db") as conn:
        for email, phone in conn.execute("SELECT email, phone FROM customers"):
            secrets.update(v.strip().encode() for v in (email, phone) if v and len(v) > 6)
    with sqlite3.connect(sources / "billing.db") as conn:
        for (card,) in conn.execute("SELECT card_number FROM accounts"):
            secrets.add(card.encode())
    assert len(secrets) > 100
    store = fresh_demo.directory / "store"
    files = [p for p in store.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") or p.suffix == ".db" for p in files)
    for path in files:
        data = path.read_bytes()
        leaked = [s for s in secrets if s in data]
        assert not leaked, f"{path.name} holds {len(leaked)} source values in clear"


def test_sync_after_a_failed_run_is_full(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        run_id = project.catalog.start_run("incremental")
        project.catalog.finish_run(run_id, status="failed", counts={}, error="interrupted")
        report = sync_project(project)
        assert report.mode == "full" and report.updated == project.catalog.count("customer")
        assert sync_project(project).mode == "incremental"
