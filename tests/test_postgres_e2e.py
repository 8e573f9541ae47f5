"""The demo sources generated into a real PostgreSQL server and synced from there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from e2e_helpers import DEMO_TABLES, ground_truth

from fabric.demo import SOURCE_URL_ENV, create_demo_project
from fabric.entities import EntityService
from fabric.project import Project
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
