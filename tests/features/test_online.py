"""The online store: sync materializes current vectors, the API serves them only for the
entity version, view definition and times they hold for, and they are sealed at rest. The
store's own verbs are tested on each backend (``make_online``: tests/backends.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backends import RawSql
from source_changes import change_sources

from fabric.demo import DemoProject
from fabric.errors import StoreError
from fabric.features.compute import micros
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.services import materialize as materialize_module
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService
from fabric.services.materialize import materialize
from fabric.store.base import EntityStore, StoredBlob
from fabric.store.codec import BlobCodec
from fabric.store.online import OnlineStore, OnlineVector
from fabric.sync import sync_project


def _now() -> int:
    return micros(datetime.now(UTC).replace(tzinfo=None))


def _scope(view: FeatureView) -> tuple[str, str]:
    """Which vectors rows of the online store are of ``view``."""
    return (view.name, view.definition_hash)


def _versions(held: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Entity id -> version of rows held (their state starts with the version)."""
    return {entity_id: state[0] for entity_id, state in held.items()}


def test_sync_materializes_every_vector_and_serves_them_equal_to_computed(synced: Path) -> None:
    with Project.open(synced) as project:
        view = project.views()["customer_360"]
        held = project.online.vectors.held(_scope(view))
        ids = sorted(project.catalog.entities("customer"))
        assert sorted(held) == ids
        # Served from the online store: the same answer as computing from the images.
        served = FeatureService(project).vectors("customer_360", ids, role="steward")
        assert project.online.vectors.get(_scope(view), _versions(held), _now())
        object.__setattr__(project.config.api, "vector_cache", 0)
        service = FeatureService(project)
        project.online.path.rename(project.online.path.with_suffix(".away"))
        project.online.close()
        computed = service.vectors("customer_360", ids, role="steward")
        assert service.misses == len(ids)
        served.pop("as_of"), computed.pop("as_of")
        assert served == computed


def test_a_stored_vector_is_used_only_for_its_version_definition_and_time(
    make_online: Callable[[BlobCodec], OnlineStore], demo_project: Project
) -> None:
    view = demo_project.views()["customer_360"]
    online = make_online(demo_project.codec)
    vector = OnlineVector("e1", 3, 1_000, 2_000, True, {"order_count_90d": 7, "country": "DE"})
    vectors = online.vectors
    vectors.write(vectors.rows(_scope(view), [vector]))
    assert vectors.get(_scope(view), {"e1": 3}, 1_000) == {"e1": vector}
    assert vectors.get(_scope(view), {"e1": 3}, 1_999) == {"e1": vector}
    assert vectors.get(_scope(view), {"e1": 3}, 2_000) == {}  # past its horizon
    assert vectors.get(_scope(view), {"e1": 3}, 999) == {}  # before it was computed
    assert vectors.get(_scope(view), {"e1": 4}, 1_500) == {}  # the entity changed since
    redefined = type(view)(view.name, view.entity_type, view.version + 1, view.features, {"x": 1})
    assert vectors.get(_scope(redefined), {"e1": 3}, 1_500) == {}
    assert vectors.prune([_scope(redefined)]) == 1
    assert vectors.get(_scope(view), {"e1": 3}, 1_500) == {}
    other = OnlineVector("e2", 1, 1_000, 2_000, False, {})
    vectors.write(vectors.rows(_scope(view), [vector, other]))
    assert set(vectors.get(_scope(view), {"e1": 3, "e2": 1, "e3": 1}, 1_500)) == {"e1", "e2"}
    vectors.forget([view.name], ["e1", "e9"])
    assert set(vectors.held(_scope(view))) == {"e2"}
    assert vectors.prune([_scope(view)]) == 0


def test_versions_and_the_rows_made_for_them_are_read_in_one_statement_beside_the_images(
    make_store: Callable[[int], EntityStore],
    make_online: Callable[..., OnlineStore],
    backend: str | Path,
    demo_project: Project,
) -> None:
    view = demo_project.views()["customer_360"]
    store = make_store(4)
    store.put_many(
        [
            StoredBlob("customer", "e1", 3, b"x", expected_version=0),
            StoredBlob("customer", "e2", 2, b"x", expected_version=0),
            StoredBlob("customer", "e3", 1, b"x", expected_version=0),
        ]
    )
    online = make_online(demo_project.codec, beside_images=4)
    vectors, scope = online.vectors, _scope(view)
    current = OnlineVector("e1", 3, 1_000, 2_000, True, {"country": "DE"})
    stale = OnlineVector("e2", 1, 1_000, 2_000, True, {"country": "FR"})  # e2 is at 2 now
    vectors.write(vectors.rows(scope, [current, stale]))
    joined = vectors.with_versions(scope, "customer", ["e1", "e2", "e3", "e9"], 1_500)
    if isinstance(backend, Path):
        assert joined is None  # other files: the caller asks the store, then the table
        return
    # Every stored entity's version; a row only where it was made for that version.
    assert joined == ({"e1": 3, "e2": 2, "e3": 1}, {"e1": current})
    assert vectors.with_versions(scope, "customer", ["e1"], 1_500) == ({"e1": 3}, {"e1": current})
    assert vectors.with_versions(scope, "customer", ["e1"], 2_000) == ({"e1": 3}, {})  # expired
    assert vectors.with_versions(scope, "customer", ["e9"], 1_500) == ({}, {})
    # Without the images' partition count, nothing is joined.
    assert make_online(demo_project.codec).vectors.with_versions(scope, "customer", ["e1"]) is None


def test_vectors_are_sealed_at_rest_and_a_changed_row_is_not_served(
    make_online: Callable[[BlobCodec], OnlineStore], raw_sql: RawSql, demo_project: Project
) -> None:
    view = demo_project.views()["customer_360"]
    online = make_online(demo_project.codec)
    vector = OnlineVector("e1", 1, 0, 10, True, {"country": "Atlantis"})
    online.vectors.write(online.vectors.rows(_scope(view), [vector]))
    assert online.vectors.get(_scope(view), {"e1": 1}, 5) == {"e1": vector}
    ((payload,),) = raw_sql("SELECT payload FROM vectors", ())
    assert b"Atlantis" not in bytes(payload)
    # A row moved to another entity fails its associated data.
    raw_sql("UPDATE vectors SET entity_id = 'e2'", ())
    assert make_online(demo_project.codec).vectors.get(_scope(view), {"e2": 1}, 5) == {}
    # Without the key, nothing is read at all.
    assert make_online(BlobCodec(None)).vectors.get(_scope(view), {"e2": 1}, 5) == {}


def test_documents_are_sealed_for_their_own_purpose_and_rows_sealed_before_still_served(
    make_online: Callable[[BlobCodec], OnlineStore], raw_sql: RawSql, demo_project: Project
) -> None:
    codec = demo_project.codec
    assert codec.keys is not None
    key = codec.keys.current
    online = make_online(codec)
    scope = ("customer", "analyst", "f" * 16)
    document = {"entity_type": "customer", "entity_id": "e1", "version": 2, "tables": {}}
    online.documents.write(online.documents.rows(scope, [document]))
    # The associated data of a document row, as it has always been.
    aad = "\x00".join(("doc", *scope, "e1", "2")).encode()
    ((key_id, sealed),) = raw_sql("SELECT key_id, payload FROM documents", ())
    sealed = bytes(sealed)
    # New rows: under the documents' own purpose, and marked so in key_id.
    assert key_id == f"{key}/documents"
    sealer, first = codec.sealer(key, "online documents"), codec.sealer(key, "online vectors")
    assert sealer is not None and first is not None
    plain = sealer.open(sealed, aad, what="a new document row")
    with pytest.raises(StoreError):
        first.open(sealed, aad, what="a new document row")
    assert online.documents.held(scope) == {"e1": (2,)}
    # A row written before documents had their own purpose: under the vectors' purpose, its
    # key_id the bare key id. It is still served...
    raw_sql("UPDATE documents SET key_id = ?, payload = ?", (key, first.seal(plain, aad)))
    assert online.documents.get(scope, {"e1": 2}) == {"e1": document}
    # ... but counts as missing, so the next sync seals it again under the new purpose.
    assert online.documents.held(scope) == {}
    # The mark alone does not open a row of the old purpose: purposes are never confused.
    raw_sql("UPDATE documents SET key_id = ?", (f"{key}/documents",))
    assert online.documents.get(scope, {"e1": 2}) == {}


def test_materialize_rewrites_only_what_changed_expired_or_went(fresh_demo: DemoProject) -> None:
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        view = project.views()["customer_360"]
        before = project.online.vectors.held(_scope(view))
    change_sources(fresh_demo.config_path.parent / "sources")
    with Project.open(fresh_demo.config_path) as project:
        report = sync_project(project)
        entities = project.catalog.entities("customer")
        changed = {e for e, r in entities.items() if before.get(e, (None,))[0] != r.version}
        assert changed and report.materialized == {"customer_360": len(changed)}
        held = project.online.vectors.held(_scope(view))
        assert _versions(held) == {e: r.version for e, r in entities.items()}
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
        held = project.online.documents.held(("customer", "analyst", fingerprint))
        assert sorted(held) == ids
        # Clear documents are not copied: reading the image is all they cost.
        assert project.online.documents.held(("customer", "steward", fingerprint)) == {}
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


def test_materializing_in_worker_processes_writes_what_one_process_writes(
    synced: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers start however few entities there are (the demo is small).
    monkeypatch.setattr(materialize_module, "_IN_WORKERS_FROM", 1)
    with Project.open(synced) as project:
        service = EntityService(project)
        view = project.views()["customer_360"]
        ids = sorted(project.catalog.entities("customer"))
        versions = {e: r.version for e, r in project.catalog.entities("customer").items()}

        def contents() -> tuple[object, object]:
            now = _now()
            vectors = {
                e: (v.existed, v.values)
                for e, v in project.online.vectors.get(_scope(view), versions, now).items()
            }
            stored = project.store.get_many("customer", ids)
            scope = ("customer", "analyst", project.masking_fingerprint)
            documents = [
                project.online.documents.get(scope, {e: stored[e].version}).get(e) for e in ids
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
        assert project.online.vectors.held(_scope(view)) == {}
        done = materialize(EntityService(project), project.online, project.views())
        assert done.written == {"customer_360": count} and done.documents == {"analyst": count}
        assert len(project.online.vectors.held(_scope(view))) == count


def test_a_current_vector_checked_a_moment_ago_is_answered_from_memory(synced: Path) -> None:
    now = [0.0]  # seconds, by the service's clock
    synced.write_text(synced.read_text().replace("\napi:\n", "\napi:\n  fresh_ms: 200\n"))
    with Project.open(synced) as project:
        service = FeatureService(project, clock=lambda: now[0])
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
        now[0] = 0.199  # still within fresh_ms of the check
        assert service.recent_vector("customer_360", entity_id, "analyst") is not None
        now[0] = 0.25
        assert service.recent_vector("customer_360", entity_id, "analyst") is None


def test_kept_vectors_are_not_tracked_by_the_garbage_collector(synced: Path) -> None:
    import gc

    with Project.open(synced) as project:
        service = FeatureService(project)
        ids = sorted(project.catalog.entities("customer"))
        first = service.vectors("customer_360", ids, role="analyst")
        scope = _scope(project.views()["customer_360"])
        stored = project.online.vectors.get(
            scope, _versions(project.online.vectors.held(scope)), _now()
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
