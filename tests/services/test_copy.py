"""`fabric store copy`: embedded to postgres and back, sealed all the way, resumable,
verified; against a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from e2e_helpers import clear_tables, stored_entities
from pgcluster import PostgresCluster

from fabric.cli import main
from fabric.errors import StoreError
from fabric.project import Project
from fabric.services import copy as copy_module
from fabric.services.copy import copy_store
from fabric.sync import sync_project


def _variant(config: Path, name: str, store: dict[str, Any]) -> Path:
    """A copy of ``config`` (file ``name`` beside it) with other store settings."""
    doc = yaml.safe_load(config.read_text())
    doc["store"] = {**doc["store"], **store}
    path = config.with_name(name)
    path.write_text(yaml.safe_dump(doc))
    return path


def _catalog(config: Path) -> dict[str, Any]:
    with Project.open(config) as project:
        catalog = project.catalog
        ids = sorted(catalog.entities("customer"))
        view = project.views()["customer_360"]
        return {
            "entities": catalog.entities("customer"),
            "keys": catalog.source_map("customer"),
            "runs": catalog.runs(20),
            "links": {e: catalog.links("customer", e) for e in ids[:40]},
            "dictionaries": catalog.dictionaries(),
            "schemas": catalog.schemas(),
            "vectors": project.online.vectors.held((view.name, view.definition_hash)),
        }


def test_a_store_goes_to_postgres_and_back_whole_and_sealed(
    synced: Path, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database()
    monkeypatch.setenv("COPY_TARGET", url)
    with Project.open(synced) as project:
        report = copy_store(project, url)
    assert report.verified.ok and report.verified.checked == report.images > 0
    assert report.partitions_skipped == 0 and report.catalog_rows > report.images
    on_postgres = _variant(
        synced, "fabric-pg.yaml", {"backend": "postgres", "url_env": "COPY_TARGET"}
    )
    assert stored_entities(on_postgres) == stored_entities(synced)
    assert _catalog(on_postgres) == _catalog(synced)
    assert clear_tables(on_postgres) == clear_tables(synced)
    # And back, from the postgres store into a new directory.
    back_dir = synced.parent / "store-back"
    with Project.open(on_postgres) as project:
        back = copy_store(project, str(back_dir))
    assert back.verified.ok and back.images == report.images
    back_config = _variant(synced, "fabric-back.yaml", {"path": str(back_dir)})
    assert stored_entities(back_config) == stored_entities(synced)
    assert _catalog(back_config) == _catalog(synced)
    # A sync after the move writes on from where the store was: its run numbered after the
    # copied ones, nothing created or deleted.
    with Project.open(on_postgres) as project:
        again = sync_project(project)
        assert (again.created, again.deleted) == (0, 0)
        latest, before = project.catalog.runs(2)
        assert latest.id == before.id + 1 == again.run_id


def test_a_copy_stopped_midway_is_taken_up_where_it_stopped(
    synced: Path, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database()
    real, calls = copy_module._put, {"n": 0}

    def failing(*args: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("the connection went away (test)")
        return real(*args)

    monkeypatch.setattr(copy_module, "_put", failing)
    with Project.open(synced) as project, pytest.raises(StoreError, match="went away"):
        copy_store(project, url)
    monkeypatch.setattr(copy_module, "_put", real)
    with Project.open(synced) as project:
        report = copy_store(project, url)
    assert report.verified.ok and report.partitions_skipped >= 2
    monkeypatch.setenv("COPY_TARGET", url)
    on_postgres = _variant(
        synced, "fabric-pg.yaml", {"backend": "postgres", "url_env": "COPY_TARGET"}
    )
    assert stored_entities(on_postgres) == stored_entities(synced)
    # Done: the target holds a store now, and a second copy into it is refused.
    with Project.open(synced) as project, pytest.raises(StoreError, match="already holds"):
        copy_store(project, url)


def test_cli_copy_names_its_target_never_the_password(
    synced: Path, postgres: PostgresCluster
) -> None:
    config = str(synced)
    both = CliRunner().invoke(main, ["store", "copy", "-c", config])
    assert both.exit_code == 1 and "--to or --to-env" in both.output
    own = CliRunner().invoke(
        main, ["store", "copy", "-c", config, "--to", str(synced.parent / "store")]
    )
    assert own.exit_code == 1 and "the project's own store" in own.output
    secret = "hunter2-not-real"
    down = CliRunner().invoke(
        main,
        ["store", "copy", "-c", config, "--to-env", "TARGET"],
        env={"TARGET": f"postgresql://fabric:{secret}@127.0.0.1:1/nowhere"},
    )
    assert down.exit_code == 1 and "Traceback" not in down.output
    assert "postgresql://127.0.0.1:1/nowhere" in down.output and secret not in down.output
    url = postgres.create_database()
    done = CliRunner().invoke(
        main, ["store", "copy", "-c", config, "--to-env", "TARGET"], env={"TARGET": url}
    )
    assert done.exit_code == 0, done.output
    assert "verified:" in done.output and "fabric@" not in done.output
