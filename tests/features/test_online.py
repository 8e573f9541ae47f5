"""The online store: sync materializes current vectors, the API serves them only for the
entity version, view definition and times they hold for, and they are sealed at rest."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from source_changes import change_sources

from fabric.demo import DemoProject
from fabric.features.compute import micros
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService
from fabric.services.materialize import materialize
from fabric.store.codec import BlobCodec
from fabric.store.online import OnlineStore, OnlineVector
from fabric.sync import sync_project


def _now() -> int:
    return micros(datetime.now(UTC).replace(tzinfo=None))


def test_sync_materializes_every_vector_and_serves_them_equal_to_computed(synced: Path) -> None:
    with Project.open(synced) as project:
        view = project.views()["customer_360"]
        held = project.online.held(view)
        ids = sorted(project.catalog.entities("customer"))
        assert sorted(held) == ids
        # Served from the online store: the same answer as computing from the images.
        served = FeatureService(project).vectors("customer_360", ids, role="steward")
        assert project.online.get_many(view, {e: v for e, (v, _) in held.items()}, _now())
        object.__setattr__(project.config.api, "vector_cache", 0)
        service = FeatureService(project)
        project.online.path.rename(project.online.path.with_suffix(".away"))
        project.online.close()
        computed = service.vectors("customer_360", ids, role="steward")
        assert service.misses == len(ids)
        served.pop("as_of"), computed.pop("as_of")
        assert served == computed


def test_a_stored_vector_is_used_only_for_its_version_definition_and_time(
    tmp_path: Path, demo_project: Project
) -> None:
    view = demo_project.views()["customer_360"]
    online = OnlineStore(tmp_path / "online.db", demo_project.codec)
    vector = OnlineVector("e1", 3, 1_000, 2_000, True, {"order_count_90d": 7, "country": "DE"})
    online.put_many(view, [vector])
    assert online.get_many(view, {"e1": 3}, 1_000) == {"e1": vector}
    assert online.get_many(view, {"e1": 3}, 1_999) == {"e1": vector}
    assert online.get_many(view, {"e1": 3}, 2_000) == {}  # past its horizon
    assert online.get_many(view, {"e1": 3}, 999) == {}  # before it was computed
    assert online.get_many(view, {"e1": 4}, 1_500) == {}  # the entity changed since
    redefined = type(view)(view.name, view.entity_type, view.version + 1, view.features, {"x": 1})
    assert online.get_many(redefined, {"e1": 3}, 1_500) == {}
    assert online.prune({view.name: redefined}) == 1
    online.close()


def test_vectors_are_sealed_at_rest_and_a_changed_row_is_not_served(
    tmp_path: Path, demo_project: Project
) -> None:
    view = demo_project.views()["customer_360"]
    path = tmp_path / "online.db"
    online = OnlineStore(path, demo_project.codec)
    online.put_many(view, [OnlineVector("e1", 1, 0, 10, True, {"country": "Atlantis"})])
    online.close()
    assert b"Atlantis" not in path.read_bytes()
    with sqlite3.connect(path) as conn:
        # A row moved to another entity fails its associated data.
        conn.execute("UPDATE vectors SET entity_id = 'e2'")
    online = OnlineStore(path, demo_project.codec)
    assert online.get_many(view, {"e2": 1}, 5) == {}
    # Without the key, nothing is read at all.
    assert OnlineStore(path, BlobCodec(None)).get_many(view, {"e2": 1}, 5) == {}
    online.close()


def test_materialize_rewrites_only_what_changed_expired_or_went(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        view = project.views()["customer_360"]
        before = project.online.held(view)
    change_sources(fresh_demo.config_path.parent / "sources")
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project)
        entities = project.catalog.entities("customer")
        changed = {e for e, r in entities.items() if before.get(e, (None,))[0] != r.version}
        assert changed and report.materialized == {"customer_360": len(changed)}
        held = project.online.held(view)
        assert {e: v for e, (v, _) in held.items()} == {e: r.version for e, r in entities.items()}
        # Nothing is due now; a row past its horizon is, and an entity gone is dropped.
        service = EntityService(project)
        again = materialize(service, project.online, project.views())
        assert again.written == {"customer_360": 0} and again.dropped == 0
        some = sorted(held)[:2]
        with sqlite3.connect(project.online.path) as conn:
            conn.execute("UPDATE vectors SET until = 1 WHERE entity_id = ?", (some[0],))
            conn.execute(
                "INSERT INTO vectors SELECT view, 'no-such-entity', definition, version, "
                "computed_at, until, key_id, payload FROM vectors WHERE entity_id = ?",
                (some[1],),
            )
        again = materialize(service, project.online, project.views())
        assert again.written == {"customer_360": 1} and again.dropped == 1


def test_materialize_cli_names_unknown_views_and_refreshes_all(synced: Path) -> None:
    from click.testing import CliRunner

    from fabric.cli import main

    runner = CliRunner()
    bad = runner.invoke(main, ["materialize", "-c", str(synced), "--view", "nope"])
    assert bad.exit_code == 1 and "unknown feature view(s) nope" in bad.output
    assert "Traceback" not in bad.output
    done = runner.invoke(main, ["materialize", "-c", str(synced), "--all"])
    assert done.exit_code == 0, done.output
    with Project.open(synced) as project:
        count = project.catalog.count("customer")
    assert f"materialized {count} customer_360" in done.output


@pytest.mark.parametrize("as_of", [None, "now", "400 days ago"])
def test_vectors_of_now_are_read_and_of_a_given_time_computed(
    synced: Path, as_of: str | None
) -> None:
    with Project.open(synced) as project:
        service = FeatureService(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        days = 400 if as_of == "400 days ago" else 0
        when = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S")
        first = service.vector("customer_360", entity_id, as_of=None if as_of is None else when)
        # Now is served from the online store; a time asked for is computed (and not kept).
        assert (service.online_hits, service.misses) == ((1, 0) if as_of is None else (0, 1))
        if as_of == "now":
            assert first["features"] == service.vector("customer_360", entity_id)["features"]


def test_sync_materializes_masked_documents_equal_to_masking_on_request(synced: Path) -> None:
    with Project.open(synced) as project:
        ids = sorted(project.catalog.entities("customer"))
        fingerprint = project.masking_fingerprint
        held = project.online.held_documents("customer", "analyst", fingerprint)
        assert sorted(held) == ids
        # Clear documents are not copied: reading the image is all they cost.
        assert project.online.held_documents("customer", "steward", fingerprint) == {}
        served = [EntityService(project).document("customer", e, role="analyst") for e in ids]
        assert project.online.path.read_bytes().count(b'"policy"') == 0  # sealed at rest
    with Project.open(synced) as project:
        # Another fingerprint (new masking rules or key): masked on request instead.
        object.__setattr__(project, "masking_fingerprint", "0" * 16)
        service = EntityService(project)
        computed = [service.document("customer", e, role="analyst") for e in ids]
        assert service.cache_misses == len(ids)
    assert served == computed


def test_changed_masking_rules_rematerialize_every_document(synced: Path) -> None:
    masking = synced.parent / "rules" / "masking.yaml"
    rules = masking.read_text()
    assert "city:       {op: keep}" in rules
    masking.write_text(rules.replace("city:       {op: keep}", "city:       {op: redact}"))
    with Project.open(synced) as project:
        done = materialize(EntityService(project), project.online, project.views())
        count = project.catalog.count("customer")
        assert done.documents == {"analyst": count} and done.dropped == count
        service = EntityService(project)
        cities = {
            row["city"]
            for entity_id in sorted(project.catalog.entities("customer"))[:20]
            for row in service.document("customer", entity_id, role="analyst")["tables"].get(
                "crm_customers", []
            )
        }
        assert cities == {"[REDACTED]"}  # the new rule, from the rematerialized documents
        assert service.cache_misses == 0


def test_materializing_in_worker_processes_writes_what_one_process_writes(synced: Path) -> None:
    with Project.open(synced) as project:
        service = EntityService(project)
        view = project.views()["customer_360"]
        ids = sorted(project.catalog.entities("customer"))
        versions = {e: r.version for e, r in project.catalog.entities("customer").items()}

        def contents() -> tuple[object, object]:
            now = _now()
            vectors = {
                e: (v.existed, v.values)
                for e, v in project.online.get_many(view, versions, now).items()
            }
            stored = project.store.get_many("customer", ids)
            documents = [
                project.online.get_document("analyst", project.masking_fingerprint, stored[e])
                for e in ids
            ]
            return vectors, documents

        one = contents()
        done = materialize(service, project.online, project.views(), everything=True, workers=2)
        assert done.written == {"customer_360": len(ids)}
        assert done.documents == {"analyst": len(ids)}
        assert contents() == one and all(d is not None for d in one[1])  # type: ignore[union-attr]


def test_after_a_store_key_rotation_the_online_store_is_sealed_again(synced: Path) -> None:
    from fabric.services.rotate import rotate_store_key

    with Project.open(synced) as project:
        rotate_store_key(project, new_key=True)
    with Project.open(synced) as project:
        view = project.views()["customer_360"]
        count = project.catalog.count("customer")
        # Rows sealed under the retired key count as missing, and are written again.
        assert project.online.held(view) == {}
        done = materialize(EntityService(project), project.online, project.views())
        assert done.written == {"customer_360": count} and done.documents == {"analyst": count}
        assert len(project.online.held(view)) == count


def test_a_current_vector_checked_a_moment_ago_is_answered_from_memory(synced: Path) -> None:
    import time

    synced.write_text(synced.read_text().replace("\napi:\n", "\napi:\n  fresh_ms: 200\n"))
    with Project.open(synced) as project:
        service = FeatureService(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        assert service.recent_vector("customer_360", entity_id, "analyst") is None
        first = service.vector("customer_360", entity_id, role="analyst")
        again = service.recent_vector("customer_360", entity_id, "steward")
        assert again is not None and again["policy"] == "steward"
        assert again["features"]["order_count_90d"] == first["features"]["order_count_90d"]
        # A vector as of a given time is not kept; past fresh_ms the store is asked again.
        service.vector(
            "customer_360", sorted(project.catalog.entities("customer"))[1], as_of="2026-01-01"
        )
        assert (
            service.recent_vector(
                "customer_360", sorted(project.catalog.entities("customer"))[1], None
            )
            is None
        )
        time.sleep(0.25)
        assert service.recent_vector("customer_360", entity_id, "analyst") is None


def test_kept_vectors_are_not_tracked_by_the_garbage_collector(synced: Path) -> None:
    import gc

    with Project.open(synced) as project:
        service = FeatureService(project)
        ids = sorted(project.catalog.entities("customer"))
        first = service.vectors("customer_360", ids, role="analyst")
        stored = project.online.get_many(
            project.views()["customer_360"],
            {e: v for e, (v, _) in project.online.held(project.views()["customer_360"]).items()},
            _now(),
        )
        # A tuple is let go of once the tuples inside it are: two passes at most.
        gc.collect()
        gc.collect()
        entries = list(service._cache.values())
        assert len(entries) == len(ids)
        # Flat tuples of plain values: the collector's older passes never walk them.
        assert not any(gc.is_tracked(entry) for entry in entries)
        # ... and they answer as the online store's vectors do.
        again = service.vectors("customer_360", ids, role="analyst")
        assert service.hits == len(ids)
        first.pop("as_of"), again.pop("as_of")
        assert again == first
        assert {e[0]: dict(zip(e[5], e[6], strict=True)) for e in entries} == {
            e: v.values for e, v in stored.items()
        }
