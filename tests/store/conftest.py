"""Each store, catalog and online-store test that takes these fixtures runs on every backend:
the embedded files, and PostgreSQL (the session's private cluster, a fresh database per
test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgcluster import PostgresCluster

from fabric.store.base import EntityStore
from fabric.store.catalog import Catalog
from fabric.store.local import LocalShardStore
from fabric.store.postgres import PostgresStore

BACKENDS = ["embedded", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's stores live: a directory, or a fresh PostgreSQL database's URL."""
    if request.param == "embedded":
        return tmp_path
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


@pytest.fixture
def make_store(backend: str | Path) -> Iterator[Callable[[int], EntityStore]]:
    """Opens a store of N partitions on the backend under test (the same one each call)."""
    opened: list[EntityStore] = []

    def factory(partitions: int) -> EntityStore:
        if isinstance(backend, Path):
            opened.append(LocalShardStore(backend / "store", partitions))
        else:
            opened.append(PostgresStore(backend, partitions))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def make_catalog(backend: str | Path) -> Iterator[Callable[[], Catalog]]:
    """Opens the catalog on the backend under test (each call another connection to it)."""
    opened: list[Catalog] = []

    def factory() -> Catalog:
        if isinstance(backend, Path):
            opened.append(Catalog(backend / "catalog.db"))
        else:
            opened.append(Catalog.on_postgres(backend))
        return opened[-1]

    yield factory
    for catalog in opened:
        catalog.close()
