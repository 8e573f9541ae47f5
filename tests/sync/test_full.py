"""Sync end to end on SQLite sources: every record of a person ends up in their entity."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from e2e_helpers import DEMO_TABLES, cleanly_linkable_people

from fabric.demo import DemoProject
from fabric.errors import SourceError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.store.sqlite import open_database
from fabric.sync import sync_project


def test_sync_lookup_returns_every_source_record_of_a_person(
    demo_project: Project, demo_dir: Path
) -> None:
    people = cleanly_linkable_people(demo_dir / "sources")
    assert len(people) >= 20, "the generator should produce many cross-system people"
    service = EntityService(demo_project)
    for _pid, records in people[:25]:
        crm = next(r for r in records if r[:2] == ("crm", "customers"))
        entity_id = service.find("customer", "crm", str(crm[2]))
        doc = service.document("customer", entity_id, role="steward")
        found = {
            (system, table, row["id"])
            for (system, table), etable in DEMO_TABLES.items()
            for row in doc["tables"][etable]
        }
        assert found == records


def test_sync_is_idempotent_and_keeps_versions(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        first = sync_project(project, full=True)
        second = sync_project(project)  # incremental: only rows at the watermarks again
        assert first.created > 0 and first.updated == 0
        assert second.mode == "incremental" and second.rows_read < first.rows_read / 10
        assert second.created == second.updated == second.deleted == 0
        rebuilt = sync_project(project, full=True)
        assert rebuilt.updated == first.created and rebuilt.unchanged == 0
        runs = project.catalog.runs()
        assert [(r.status, r.mode) for r in runs] == [
            ("succeeded", "full"),
            ("succeeded", "incremental"),
            ("succeeded", "full"),
        ]
        versions = {r.version for r in project.catalog.entities("customer").values()}
        assert versions == {2}


def test_sync_recovers_when_catalog_lags_the_store(fresh_demo: DemoProject) -> None:
    """A run killed between a store commit and its catalog commit must not block later runs."""
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
    catalog = fresh_demo.directory / "store" / "catalog.db"
    with sqlite3.connect(catalog) as conn:  # the catalog forgets the last write of one entity
        conn.execute(
            "UPDATE entities SET version = 0, fingerprint = 'lost' WHERE entity_id = ?",
            (entity_id,),
        )
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project, full=True)  # no StaleWriteError: the store decides
        assert report.updated == report.entities["customer"]
        record = project.catalog.entity("customer", entity_id)
        stored = project.store.get("customer", entity_id)
        assert record is not None and stored is not None
        assert record.version == stored.version == 2


@pytest.mark.parametrize(
    "change",
    ["UPDATE customers SET id = NULL WHERE id = 3", "UPDATE customers SET id = 2 WHERE id = 3"],
)
def test_sync_refuses_null_or_repeated_keys(fresh_demo: DemoProject, change: str) -> None:
    db = fresh_demo.directory / "sources" / "crm.db"
    with sqlite3.connect(db) as conn:  # the same table without a primary key constraint
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'customers'").fetchone()[0]
        conn.execute("ALTER TABLE customers RENAME TO old")
        conn.execute(ddl.replace("PRIMARY KEY (id)", "UNIQUE (email, id)").replace("NOT NULL", ""))
        conn.execute("INSERT INTO customers SELECT * FROM old")
        conn.execute("DROP TABLE old")
        conn.execute(change)
    with Project.open(fresh_demo.config_path) as project, pytest.raises(SourceError) as info:
        sync_project(project)
    message = str(info.value)
    assert "source 'crm' table 'customers'" in message and "primary_key" in message
    assert not (fresh_demo.directory / "store" / "shards").exists() or (
        Project.open(fresh_demo.config_path).store.stats().entities == 0
    )


def test_sync_entity_ids_are_reproducible(tmp_path: Path, fresh_demo: DemoProject) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fresh_demo.directory, copy)
    ids = []
    for directory in (fresh_demo.directory, copy):
        with Project.open(directory / "fabric.yaml") as project:
            sync_project(project)
            ids.append(set(project.catalog.entities("customer")))
    assert ids[0] == ids[1] and ids[0]


def test_sync_missing_source_table_leaves_store_unchanged(fresh_demo: DemoProject) -> None:
    config = fresh_demo.config_path
    with Project.open(config) as project:
        sync_project(project)
        before = project.store.stats().entities
    text = (
        config.read_text()
        .replace("tickets: {", "ticketz: {")
        .replace("table: tickets}", "table: ticketz}")
    )
    config.write_text(text)
    with Project.open(config) as project, pytest.raises(SourceError) as info:
        sync_project(project)
    message = str(info.value)
    assert "source 'support'" in message and "table 'ticketz' does not exist" in message
    assert "tickets" in message  # names what is there
    with Project.open(config) as project:
        assert project.store.stats().entities == before
        assert project.catalog.runs()[0].status == "succeeded"


def test_sync_missing_column_is_named(fresh_demo: DemoProject) -> None:
    config = fresh_demo.config_path
    config.write_text(
        config.read_text().replace(
            "customers: {primary_key: id, watermark: updated_at}",
            "customers: {primary_key: id, watermark: changed_at}",
        )
    )
    with Project.open(config) as project, pytest.raises(SourceError) as info:
        sync_project(project)
    assert "table 'customers' has no column 'changed_at'" in str(info.value)


def test_sync_never_modifies_sources(fresh_demo: DemoProject) -> None:
    sources = fresh_demo.directory / "sources"
    before = {p.name: p.read_bytes() for p in sources.iterdir()}
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project)
    assert {p.name: p.read_bytes() for p in sources.iterdir()} == before


def test_sync_deletes_entities_gone_from_sources(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project)
        total = project.catalog.count("customer")
        lonely = project.catalog.find_by_source("customer", "support", "tickets", "1")
    # Remove one support ticket whose entity holds nothing else, by editing a copy of the
    # source (sources are the user's; the test owns this one).
    db = fresh_demo.directory / "sources" / "support.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM tickets")
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project, full=True)
        assert report.deleted > 0
        assert project.catalog.count("customer") == total - report.deleted
        assert (
            lonely and project.catalog.find_by_source("customer", "support", "tickets", "1") == []
        )


def test_sync_with_worker_processes_builds_the_same_entities(
    fresh_demo: DemoProject, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(fresh_demo.directory, copy)
    documents, indexes = [], []
    for directory, workers in ((fresh_demo.directory, 1), (copy, 2)):
        with Project.open(directory / "fabric.yaml") as project:
            report = sync_project(project, full=True, workers=workers)
            assert report.created == project.catalog.count("customer") > 0
            service = EntityService(project)
            ids = sorted(project.catalog.entities("customer"))
            documents.append(
                {e: service.document("customer", e, role="steward")["tables"] for e in ids}
            )
            # The identity index, hashed in the workers or here, files records alike (looked
            # at from a connection of the test's own: the catalog lends its to no one).
            with closing(open_database(project.catalog.path, readonly=True)) as conn:
                indexes.append(
                    set(conn.execute("SELECT * FROM identity_keys"))
                    | set(conn.execute("SELECT * FROM identity_records"))
                )
    assert documents[0] == documents[1]
    assert indexes[0] == indexes[1] and len(indexes[0]) > 100


def test_sync_spill_files_are_removed(
    fresh_demo: DemoProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    # The sync spills under a temporary directory of this test's own, so that another sync
    # running at the same time (tests run in parallel) cannot leave or take files from it.
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    before = set(Path(tempfile.gettempdir()).glob("fabric-sync-*"))
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
    assert set(Path(tempfile.gettempdir()).glob("fabric-sync-*")) == before


def test_a_first_sync_trains_one_compression_dictionary_and_later_ones_reuse_it(
    fresh_demo: DemoProject,
) -> None:
    from fabric.store.codec import dictionary_id_of

    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        (dictionary,) = project.catalog.dictionaries()
        entities = project.catalog.count("customer")
        assert dictionary.samples == entities  # a small store: every entity is a sample
        assert dictionary.entity_type == "customer"
        blobs = list(project.store.scan("customer"))
        assert {dictionary_id_of(b.blob) for b in blobs} == {dictionary.dict_id}
        sync_project(project, full=True)
        sync_project(project)
        assert project.catalog.dictionaries() == [dictionary]
    # Another process (the API, say) opens them without being told.
    with Project.open(fresh_demo.config_path) as project:
        entity_id = sorted(project.catalog.entities("customer"))[0]
        doc = EntityService(project).document("customer", entity_id, role="steward")
        assert doc["entity_id"] == entity_id and doc["tables"]["crm_customers"] is not None


def test_a_sync_reads_each_rule_file_once_and_records_the_version_it_ran(
    fresh_demo: DemoProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: dict[str, int] = {}
    read_text = Path.read_text

    def counting(path: Path, *args: object, **kwargs: object) -> str:
        if path.suffix == ".yaml" and path.parent.name == "rules":
            reads[path.name] = reads.get(path.name, 0) + 1
        return read_text(path, *args, **kwargs)  # type: ignore[arg-type]

    with Project.open(fresh_demo.config_path) as project:
        version = project.rules_version()
    reads.clear()
    match = fresh_demo.directory / "rules" / "match.yaml"
    original = match.read_text()
    edited = False

    def progress(stage: str, done: int, total: int | None) -> None:
        # An edit saved mid-run (after every rule file was read): the run goes on with what
        # it read, and records that version.
        nonlocal edited
        if not edited:
            match.write_text(original.replace("normalize: [phone]", "normalize: [phone, trim]"))
            edited = True

    monkeypatch.setattr(Path, "read_text", counting)
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project, full=True, progress=progress)
        recorded = project.catalog.runs(1)[0].rules_version
    assert edited and report.created > 0
    assert set(reads) >= {"match.yaml", "masking.yaml"}
    assert all(count == 1 for count in reads.values()), reads
    assert recorded == version
    monkeypatch.undo()
    with Project.open(fresh_demo.config_path) as project:
        assert project.rules_version() != version  # the edit was one the version tells


def test_partitions_grow_with_entities_so_no_build_task_holds_more_than_its_share(
    fresh_demo: DemoProject, synced_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2e_helpers import stored_entities

    from fabric.sync import full

    built: list[int] = []
    build = full.build_partition

    def recorded(job: full.BuildJob) -> full.PartitionResult:
        result = build(job)
        built.append(len(result.built))
        return result

    monkeypatch.setattr(full, "ENTITIES_PER_PARTITION", 5)
    monkeypatch.setattr(full, "build_partition", recorded)
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True, workers=1)  # inline: the tasks run here
        entities = project.catalog.count("customer")
    # ~120 entities: 25 or more partitions of about 5, not the 8 of ~15 fewer entities get.
    assert len(built) >= entities / 5 > 8 and sum(built) == entities
    assert max(built) < entities / 8  # a hash of the id places them: about evenly
    # The same entities, whatever the partitioning (the template synced with the default).
    assert stored_entities(fresh_demo.config_path) == stored_entities(
        synced_template / "fabric.yaml"
    )
