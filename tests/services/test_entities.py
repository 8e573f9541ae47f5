"""The read path's cache: decoded once per version, never a stale image, masks never cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.store.codec import BlobCodec
from fabric.sync import sync_project


def test_hot_entities_are_decoded_once_per_version(
    synced: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[tuple[str, int]] = []
    real = BlobCodec.decode

    def counting(self: BlobCodec, blob: bytes, etype: str, eid: str, version: int) -> bytes:
        decoded.append((eid, version))
        return real(self, blob, etype, eid, version)

    monkeypatch.setattr(BlobCodec, "decode", counting)
    with Project.open(synced) as project:
        service = EntityService(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        clear = service.document("customer", entity_id, role="steward")
        masked = service.document("customer", entity_id, role="analyst")
        again = service.document("customer", entity_id, role="steward", tables=["crm_customers"])
        assert len(decoded) == 1
        # Masking one read did not leak into the cached rows, nor the other way round.
        assert again["tables"]["crm_customers"] == clear["tables"]["crm_customers"]
        assert masked["tables"] != clear["tables"]
        # A masked document is kept by version too: the same object again, masked once.
        assert service.document("customer", entity_id, role="analyst") is masked
        # A new version (here: a full sync rewrites every entity) is decoded afresh.
        sync_project(project, full=True)
        first = decoded[0]
        decoded.clear()  # the sync decoded entities too (materializing their vectors)
        newer = service.document("customer", entity_id, role="steward")
        assert newer["version"] == clear["version"] + 1
        assert (
            service.document("customer", entity_id, role="analyst")["version"] == newer["version"]
        )
        assert first == (entity_id, clear["version"])
        assert decoded == [(entity_id, newer["version"])]
        assert service.served == 6


def test_the_cache_can_be_turned_off(synced: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced.write_text(
        synced.read_text().replace("batch_size: 500", "batch_size: 500\n  cache_entities: 0")
    )
    calls = []
    real = BlobCodec.decode
    monkeypatch.setattr(BlobCodec, "decode", lambda self, *a: calls.append(a[2]) or real(self, *a))
    with Project.open(synced) as project:
        service = EntityService(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        for _ in range(3):  # the clear view: read from the image each time
            service.document("customer", entity_id, role="steward")
    assert len(calls) == 3


def test_a_document_served_a_moment_ago_is_served_from_memory_until_fresh_ms(
    synced: Path,
) -> None:
    now = [0.0]  # seconds, by the service's clock
    synced.write_text(synced.read_text().replace("\napi:\n", "\napi:\n  fresh_ms: 300\n"))
    with Project.open(synced) as project:
        service = EntityService(project, clock=lambda: now[0])
        entity_id = sorted(project.catalog.entities("customer"))[0]
        assert service.recent_document("customer", entity_id, "analyst", None) is None
        first = service.document("customer", entity_id, role="analyst")
        assert service.recent_document("customer", entity_id, "analyst", None) is first
        # Another role, or other tables, are other answers.
        assert service.recent_document("customer", entity_id, "steward", None) is None
        assert service.recent_document("customer", entity_id, "analyst", ["crm_customers"]) is None
        sync_project(project, full=True)  # a new version of every entity
        # Within fresh_ms of the check, the answer is served again, new version or not.
        now[0] = 0.299
        assert service.recent_document("customer", entity_id, "analyst", None) is first
        now[0] = 0.35
        # Past fresh_ms, the store is asked again: the new version.
        assert service.recent_document("customer", entity_id, "analyst", None) is None
        newer = service.document("customer", entity_id, role="analyst")
        assert newer["version"] == first["version"] + 1


def test_fresh_ms_0_always_asks_the_store(synced: Path) -> None:
    synced.write_text(synced.read_text().replace("\napi:\n", "\napi:\n  fresh_ms: 0\n"))
    with Project.open(synced) as project:
        service = EntityService(project)
        entity_id = sorted(project.catalog.entities("customer"))[0]
        service.document("customer", entity_id, role="analyst")
        assert service.recent_document("customer", entity_id, "analyst", None) is None
