"""Backends as a fixture parameter: each store, catalog and online-store test that takes
these fixtures runs on every backend, the embedded files and PostgreSQL (the session's
private cluster, a fresh database per test). A pytest plugin (tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from pgcluster import PostgresCluster

from fabric.store.base import EntityStore
from fabric.store.catalog import Catalog
from fabric.store.codec import BlobCodec
from fabric.store.local import LocalShardStore
from fabric.store.online import OnlineStore
from fabric.store.postgres import PostgresStore

BACKENDS = ["embedded", "postgres"]
#: The variable the tests' projects on the postgres backend take their URL from.
URL_ENV = "FABRIC_TEST_STORE_URL"


def on_postgres(config: Path, **api: Any) -> None:
    """Point a project's store at the postgres backend (its URL in :data:`URL_ENV`), and
    set ``api`` settings."""
    doc = yaml.safe_load(config.read_text())
    doc["store"] = {**doc.get("store", {}), "backend": "postgres", "url_env": URL_ENV}
    if api:
        doc["api"] = {**doc.get("api", {}), **api}
    config.write_text(yaml.safe_dump(doc))


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


@pytest.fixture
def make_online(backend: str | Path) -> Iterator[Callable[[BlobCodec], OnlineStore]]:
    """Opens the online store on the backend under test with a codec (each call another
    set of connections to the same tables); ``beside_images``: the partition count of the
    store beside it (``make_store``'s), whose images PostgreSQL's reads then join."""
    opened: list[OnlineStore] = []

    def factory(codec: BlobCodec, beside_images: int | None = None) -> OnlineStore:
        if isinstance(backend, Path):
            opened.append(OnlineStore(backend / "online.db", codec))
        else:
            opened.append(OnlineStore.on_postgres(backend, codec, beside_images=beside_images))
        return opened[-1]

    yield factory
    for online in opened:
        online.close()


RawSql = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


@pytest.fixture
def raw_sql(backend: str | Path) -> RawSql:
    """Runs one statement on the online store's tables as someone with the database itself
    would (sqlite3 on ``online.db``; psycopg in schema ``fabric``), committed; its rows.
    ``?`` placeholders on both."""

    def run(statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if isinstance(backend, Path):
            with sqlite3.connect(backend / "online.db") as conn:
                return conn.execute(statement, params).fetchall()
        dsn = backend.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, options="-c search_path=fabric") as conn:
            cursor = conn.execute(statement.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    return run
