"""The demo sources generated into a real PostgreSQL server and synced from there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_helpers import DEMO_TABLES, ground_truth

from fabric.demo import SOURCE_URL_ENV, create_demo_project
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.sync import sync_project

if TYPE_CHECKING:
    from pgcluster import PostgresCluster

pytestmark = pytest.mark.postgres


def test_postgres_generate_sync_and_lookup(
    postgres: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database()
    created = create_demo_project(tmp_path / "pg", customers=150, seed=5, source_url=url)
    config = created.config_path.read_text()
    assert "schema: crm" in config and "schema: billing" in config
    with Project.open(created.config_path) as project:
        report = sync_project(project, full=True)
        assert report.rows_read == sum(t.rows for t in created.generation.tables)  # type: ignore[union-attr]
        # Every record of the generated ground truth is in exactly one entity.
        people = ground_truth(created.directory / "sources")
        service = EntityService(project)
        catalog = project.catalog
        all_refs = {r for records in people.values() for r in records}
        assert len(catalog.source_map("customer")) == len(all_refs)
        _pid, records = next(
            (p, r) for p, r in sorted(people.items()) if ("crm", "customers") in {x[:2] for x in r}
        )
        crm_id = next(r[2] for r in records if r[:2] == ("crm", "customers"))
        doc = service.document(
            "customer", service.find("customer", "crm", str(crm_id)), role="steward"
        )
        found = {
            (s, t, row["id"]) for (s, t), et in DEMO_TABLES.items() for row in doc["tables"][et]
        }
        assert {r for r in records if r[:2] == ("crm", "customers")} <= found
        # Timestamps from PostgreSQL arrive as ISO 8601 text, as from SQLite.
        assert "T" in doc["tables"]["crm_customers"][0]["created_at"]
    assert os.environ.get(SOURCE_URL_ENV) is None  # the URL had no password to hide


def test_postgres_missing_table_names_schema(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.create_database()
    created = create_demo_project(tmp_path / "pg", customers=20, seed=5, source_url=url)
    config = created.config_path
    config.write_text(
        config.read_text().replace("tickets: {schema: support", "tickets: {schema: helpdesk")
    )
    from fabric.errors import SourceError

    with Project.open(config) as project, pytest.raises(SourceError) as info:
        sync_project(project)
    assert "table 'helpdesk.tickets' does not exist" in str(info.value)


@pytest.mark.slow
def test_postgres_connection_dropped_mid_sync_leaves_the_store_unchanged(
    postgres: PostgresCluster, tmp_path: Path
) -> None:
    """A source that fails while it is being read aborts the run before any write."""
    import psycopg
    from sqlalchemy.engine import make_url

    from fabric.errors import SourceError

    url = postgres.create_database()
    database = make_url(url).database
    created = create_demo_project(tmp_path / "pg", customers=900, seed=8, source_url=url)
    with Project.open(created.config_path) as project:
        sync_project(project, full=True)
        before = {e: r.version for e, r in project.catalog.entities("customer").items()}
        stats_before = project.store.stats()

    def drop_connections(stage: str, advance: int, total: int | None) -> None:
        # Called after each batch a table yields: cut every other session to the database,
        # so the server-side cursor of the table being read dies mid-stream.
        if stage.startswith("extract shop_order_items"):
            with psycopg.connect(postgres.dsn(str(database)), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (database,),
                )

    with Project.open(created.config_path) as project:
        with pytest.raises(SourceError) as info:
            sync_project(project, full=True, progress=drop_connections)
        assert "source 'shop'" in str(info.value)
        assert project.catalog.runs()[0].status == "failed"
        after = {e: r.version for e, r in project.catalog.entities("customer").items()}
        assert after == before
        assert project.store.stats().entities == stats_before.entities
    with Project.open(created.config_path) as project:  # the next run starts over, and works
        assert sync_project(project).mode == "full"
