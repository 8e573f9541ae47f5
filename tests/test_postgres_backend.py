"""The postgres backend end to end: a demo project whose images, catalog and online store
live in PostgreSQL (the session's private cluster, a real server), synced, verified and
served by two API apps at once, against the same project on the embedded store."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from backends import URL_ENV, on_postgres
from click.testing import CliRunner
from e2e_helpers import clear_tables, stored_entities
from litestar.testing import TestClient
from pgcluster import PostgresCluster
from source_changes import change_sources

from fabric.api import create_app
from fabric.cli import main
from fabric.config.secrets import load_secrets
from fabric.demo import DemoProject
from fabric.errors import StoreError
from fabric.project import Project
from fabric.services.verify import verify_store
from fabric.store.catalog import Catalog
from fabric.sync import sync_project


@pytest.fixture
def pg_demo(
    fresh_demo: DemoProject, postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh demo project on the postgres backend (a database of its own): fabric.yaml."""
    on_postgres(fresh_demo.config_path, fresh_ms=100)
    monkeypatch.setenv(URL_ENV, postgres.create_database())
    return fresh_demo.config_path


def test_a_sync_into_postgres_stores_what_the_embedded_store_holds(
    pg_demo: Path, synced_template: Path
) -> None:
    with Project.open(pg_demo) as project:
        sync_project(project, full=True)
        verified = verify_store(project)
        assert verified.faults == [] and verified.checked > 0
        assert project.online.vectors.held(
            ("customer_360", project.views()["customer_360"].definition_hash)
        )
    # Entity by entity: ids, versions, every table's rows and lineage.
    assert stored_entities(pg_demo) == stored_entities(synced_template / "fabric.yaml")
    # Nothing of the store on this machine's disk.
    assert not (pg_demo.parent / "store").exists()
    # A sync that finds nothing new changes nothing.
    with Project.open(pg_demo) as project:
        again = sync_project(project)
        assert (again.created, again.updated, again.deleted) == (0, 0, 0)


def _answers(client: TestClient[Any], key: str, ids: list[str]) -> list[Any]:
    headers = {"Authorization": f"Bearer {key}"}
    out = []
    for entity_id in ids:
        doc = client.get(f"/v1/entities/customer/{entity_id}", headers=headers)
        vector = client.get(f"/v1/features/customer_360/{entity_id}", headers=headers)
        assert doc.status_code == vector.status_code == 200, (doc.text, vector.text)
        features = vector.json()
        features.pop("as_of")
        out.append((doc.json(), features))
    return out


def test_two_api_nodes_serve_the_same_answers_and_a_new_sync_without_restart(
    pg_demo: Path,
) -> None:
    with Project.open(pg_demo) as project:
        sync_project(project, full=True)
        ids = sorted(project.catalog.entities("customer"))[:15]
        keys = load_secrets(project.config).api_keys
    analyst = keys["analyst-demo"]
    first, second = Project.open(pg_demo), Project.open(pg_demo)
    with TestClient(app=create_app(first)) as one, TestClient(app=create_app(second)) as two:
        before = _answers(one, analyst, ids)
        assert before == _answers(two, analyst, ids)
        # Another process's sync (here: a third project object) changes some entities.
        change_sources(pg_demo.parent / "sources")
        with Project.open(pg_demo) as syncing:
            report = sync_project(syncing)
            assert report.updated + report.created > 0
            changed = {
                e
                for e in ids
                if syncing.catalog.entity("customer", e).version > 1  # type: ignore[union-attr]
            }
        time.sleep(0.2)  # api.fresh_ms is 100 in this project
        after_one, after_two = _answers(one, analyst, ids), _answers(two, analyst, ids)
        assert after_one == after_two
        versions = {doc["entity_id"]: doc["version"] for doc, _ in after_one}
        assert {e for e, v in versions.items() if v > 1} == changed
    first.close()
    second.close()


def test_images_and_catalog_rows_commit_together_or_not_at_all(
    pg_demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync whose catalog write fails after the batch's images were written keeps
    neither: they were one transaction."""
    real = Catalog.apply_batch
    calls = {"n": 0}

    def failing(self: Catalog, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        real(self, *args, **kwargs)
        if calls["n"] == 2:  # the second batch: its images and rows are in the transaction
            raise StoreError("the catalog write failed (test)")

    monkeypatch.setattr(Catalog, "apply_batch", failing)
    doc = yaml.safe_load(pg_demo.read_text())
    doc["store"]["batch_size"] = 20
    pg_demo.write_text(yaml.safe_dump(doc))
    with Project.open(pg_demo) as project, pytest.raises(StoreError, match="failed"):
        sync_project(project, full=True)
    monkeypatch.setattr(Catalog, "apply_batch", real)
    with Project.open(pg_demo) as project:
        catalogued = set(project.catalog.entities("customer"))
        stored = set(project.store.all_versions("customer"))
        # The first batch only: the second's images went with its catalog rows.
        assert 0 < len(catalogued) <= 20 and stored == catalogued
        # The next sync completes and verifies.
        sync_project(project, full=True)
        assert verify_store(project).faults == []
        assert set(project.store.all_versions("customer")) == set(
            project.catalog.entities("customer")
        )


def test_a_server_that_cannot_be_reached_is_one_line_and_exit_1(
    fresh_demo: DemoProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fresh_demo.config_path
    on_postgres(config)
    args = ["sync", "-c", str(config)]
    unset = CliRunner().invoke(main, args, env={URL_ENV: ""})
    assert unset.exit_code == 1 and "Traceback" not in unset.output
    assert f"the environment variable {URL_ENV} is not set" in unset.output
    secret = "not-a-real-password"
    down = CliRunner().invoke(
        main, args, env={URL_ENV: f"postgresql://fabric:{secret}@127.0.0.1:1/fabric"}
    )
    assert down.exit_code == 1 and "Traceback" not in down.output
    assert "at postgresql://127.0.0.1:1/fabric" in down.output
    assert secret not in down.output
    assert len(down.output.strip().splitlines()) == 1, down.output


def test_the_api_answers_503_while_postgres_is_down_and_serves_again_without_a_restart(
    fresh_demo: DemoProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault of issue 19: PostgreSQL stopped as a crash would, under API load. Every
    answer meanwhile is the one error shape (503 ``store_unavailable``), never a 500; once
    the server is back, the same app serves again."""
    config = fresh_demo.config_path
    on_postgres(config, fresh_ms=0)  # every request asks the store
    with PostgresCluster() as cluster:
        monkeypatch.setenv(URL_ENV, cluster.create_database())
        with Project.open(config) as project:
            sync_project(project, full=True)
            ids = sorted(project.catalog.entities("customer"))[:20]
            key = load_secrets(project.config).api_keys["analyst-demo"]
        headers = {"Authorization": f"Bearer {key}"}
        served = Project.open(config)
        with TestClient(app=create_app(served)) as client:
            before = {e: client.get(f"/v1/entities/customer/{e}", headers=headers) for e in ids}
            assert all(r.status_code == 200 for r in before.values())
            statuses: list[int] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    for entity_id in ids:
                        answer = client.get(f"/v1/entities/customer/{entity_id}", headers=headers)
                        statuses.append(answer.status_code)
                        if answer.status_code != 200:
                            body = answer.json()["error"]
                            assert (body["status"], body["code"]) == (503, "store_unavailable")

            loader = threading.Thread(target=load)
            loader.start()
            try:
                time.sleep(0.3)
                cluster.stop_immediately()
                time.sleep(1.0)
                down = client.get(f"/v1/entities/customer/{ids[0]}", headers=headers)
                assert down.status_code == 503, down.text
                assert down.json()["error"]["code"] == "store_unavailable"
                cluster.start_again()
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    again = client.get(f"/v1/entities/customer/{ids[0]}", headers=headers)
                    if again.status_code == 200:
                        break
                    time.sleep(0.2)
                assert again.status_code == 200, again.text
            finally:
                stop.set()
                loader.join()
            assert set(statuses) <= {200, 503} and 503 in statuses, set(statuses)
            after = {e: client.get(f"/v1/entities/customer/{e}", headers=headers) for e in ids}
            assert {e: r.json() for e, r in after.items()} == {
                e: r.json() for e, r in before.items()
            }
        served.close()


def test_a_postgres_crash_in_the_middle_of_a_sync_loses_nothing(
    fresh_demo: DemoProject, synced_template: Path
) -> None:
    """PostgreSQL stopped as a crash would while a sync writes: the sync finishes or fails
    with one line; no entity is half written (store and catalog agree, verify passes) and
    the next sync completes and equals an uninterrupted run."""
    config = fresh_demo.config_path
    on_postgres(config)
    with PostgresCluster() as cluster:
        url = cluster.create_database()
        env = {**os.environ, URL_ENV: url}
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        sync = subprocess.Popen(
            [sys.executable, "-m", "fabric", "sync", "--full", "-c", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Crash the server once the run has written some entities.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sync.poll() is None:
            with contextlib.suppress(psycopg.Error), psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT count(*) FROM fabric.entities").fetchone()
                if row is not None and row[0] > 0:
                    break
            time.sleep(0.02)
        cluster.stop_immediately()
        _, err = sync.communicate(timeout=120)
        cluster.start_again()
        assert sync.returncode in (0, 1), err
        assert "Traceback" not in err
        if sync.returncode == 1:
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        os.environ[URL_ENV] = url
        try:
            with Project.open(config) as project:
                catalogued = set(project.catalog.entities("customer"))
                assert set(project.store.all_versions("customer")) == catalogued
                assert verify_store(project).faults == []
                sync_project(project, full=True)
                assert verify_store(project).faults == []
            # As the embedded store's crash tests compare: every entity's tables as the clear
            # role reads them (an entity the crashed run wrote may be at a later version).
            assert clear_tables(config) == clear_tables(synced_template / "fabric.yaml")
        finally:
            del os.environ[URL_ENV]


def test_a_reload_on_one_node_is_followed_by_the_other(pg_demo: Path) -> None:
    """Two nodes, each with its own copy of the project's files, on one postgres store:
    ``POST /v1/admin/reload`` on the first makes the second reload its own files."""
    with Project.open(pg_demo) as project:
        sync_project(project, full=True)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        keys = load_secrets(project.config).api_keys
    other = pg_demo.parent.parent / "node-b"
    shutil.copytree(pg_demo.parent, other)
    for config in (pg_demo, other / "fabric.yaml"):
        doc = yaml.safe_load(config.read_text())
        doc["api"]["reload_check_ms"] = 100
        config.write_text(yaml.safe_dump(doc))
    analyst, admin = (
        {"Authorization": f"Bearer {keys[name]}"} for name in ("analyst-demo", "admin-demo")
    )
    url = f"/v1/entities/customer/{entity_id}"
    email = "        email:      {op: tokenize, domain: email}"
    first, second = Project.open(pg_demo), Project.open(other / "fabric.yaml")
    with TestClient(app=create_app(first)) as one, TestClient(app=create_app(second)) as two:
        before = two.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"]
        # Both nodes get the new rule file (as a deployment would), one is told to reload.
        for root in (pg_demo.parent, other):
            masking = root / "rules" / "masking.yaml"
            assert email in masking.read_text()
            masking.write_text(
                masking.read_text().replace(email, "        email:      {op: redact}")
            )
        assert two.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"] == (
            before
        )
        assert one.post("/v1/admin/reload", headers=admin).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = two.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"]
            if now != before:
                break
            time.sleep(0.05)
        assert (
            now != before
            and now == (one.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"])
        )
