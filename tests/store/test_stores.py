"""What every entity store does, on each backend (``make_store``: tests/backends.py):
the embedded shard files and PostgreSQL (a real server)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest
from pgcluster import PostgresCluster

from fabric.errors import StaleWriteError, StoreError
from fabric.store.base import EntityStore, StoredBlob, entity_key, partition_of
from fabric.store.postgres import PostgresStore

Factory = Callable[[int], EntityStore]


def blob(entity_id: str, version: int, expected: int, data: bytes = b"x") -> StoredBlob:
    return StoredBlob("customer", entity_id, version, data, expected_version=expected)


def test_put_get_roundtrip(make_store: Factory) -> None:
    with make_store(4) as store:
        store.put_many([blob("a", 1, 0, b"one"), blob("b", 1, 0, b"two")])
        got = store.get("customer", "a")
        assert got is not None and got.blob == b"one" and got.version == 1
        assert isinstance(got.blob, bytes)
        assert store.get("customer", "missing") is None
        many = store.get_many("customer", ["a", "b", "zz", "a"])
        assert {k: (v.blob, v.version) for k, v in many.items()} == {
            "a": (b"one", 1),
            "b": (b"two", 1),
        }
        assert store.get_many("customer", []) == {}
        assert store.versions("customer", ["a", "zz"]) == {"a": 1}
        assert store.all_versions("customer") == {"a": 1, "b": 1}
        assert store.all_versions("order") == {}
        # The same id under another type is another entity.
        assert store.get("order", "a") is None


def test_stale_writer_fails_and_writes_nothing(make_store: Factory) -> None:
    with make_store(4) as store:
        store.put_many([blob("a", 1, 0, b"v1")])
        with pytest.raises(StaleWriteError, match="entity customer a is at version 1, not 0"):
            store.put_many([blob("b", 1, 0), blob("a", 1, 0, b"stale")])
        assert store.get("customer", "b") is None  # the whole call was refused
        with pytest.raises(StaleWriteError, match="is at version 0, not 3"):
            store.put_many([blob("c", 4, 3)])
        store.put_many([blob("a", 2, 1, b"v2")])
        got = store.get("customer", "a")
        assert got is not None and got.blob == b"v2" and got.version == 2


def test_scan_partitions_cover_everything_once(make_store: Factory) -> None:
    ids = [f"e{i}" for i in range(60)]
    with make_store(4) as store:
        store.put_many([blob(i, 1, 0) for i in ids])
        seen = [b.entity_id for p in range(4) for b in store.scan("customer", p)]
        assert sorted(seen) == sorted(ids)
        assert sorted(b.entity_id for b in store.scan("customer")) == sorted(ids)
        for p in range(4):
            assert all(
                partition_of(entity_key("customer", b.entity_id), 4) == p
                for b in store.scan("customer", p)
            )
        stats = store.stats()
        assert (stats.entities, stats.blob_bytes, stats.partitions) == (60, 60, 4)
        assert store.delete_many("customer", [*ids[:10], "never-stored"]) == 10
        assert store.delete_many("customer", []) == 0
        assert store.stats().entities == 50
        assert store.get("customer", "e0") is None


def test_a_store_reopened_keeps_its_entities_and_refuses_another_count(
    make_store: Factory,
) -> None:
    with make_store(4) as store:
        store.put_many([blob("a", 1, 0, b"kept")])
    with make_store(4) as store:
        got = store.get("customer", "a")
        assert got is not None and got.blob == b"kept"
    with pytest.raises(StoreError, match=r"created with 4 .*store\.shards says 8"):
        make_store(8)


def test_readers_in_threads_see_whole_versions_while_a_writer_writes(
    make_store: Factory,
) -> None:
    """Readers never wait for the writer, and each read is one committed version."""
    ids = [f"e{i}" for i in range(40)]

    def image(entity_id: str, version: int) -> bytes:
        return f"{entity_id}@{version};".encode() * 200

    with make_store(4) as store:
        store.put_many([blob(e, 1, 0, image(e, 1)) for e in ids])
        done = threading.Event()
        problems: list[str] = []
        reads = [0]

        def read() -> None:
            while not done.is_set():
                for entity_id in ids:
                    got = store.get("customer", entity_id)
                    if got is None or got.blob != image(entity_id, got.version):
                        problems.append(f"{entity_id}: a mixed or missing image")
                    reads[0] += 1

        readers = [threading.Thread(target=read) for _ in range(3)]
        for reader in readers:
            reader.start()
        try:
            for version in range(2, 30):
                store.put_many([blob(e, version, version - 1, image(e, version)) for e in ids])
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert not problems, problems[:3]
        assert reads[0] > len(ids)
        final = store.get("customer", ids[0])
        assert final is not None and final.version == 29


# -- PostgreSQL only ----------------------------------------------------------------------


def _race(
    stores: dict[str, EntityStore], batch: Callable[[str], list[StoredBlob]]
) -> dict[str, str]:
    """Each store writes its ``batch`` at the same moment: who won, who was stale."""
    outcome: dict[str, str] = {}
    start = threading.Barrier(len(stores))

    def write(name: str, store: EntityStore) -> None:
        start.wait()
        try:
            store.put_many(batch(name))
            outcome[name] = "won"
        except StaleWriteError:
            outcome[name] = "stale"

    threads = [threading.Thread(target=write, args=item) for item in stores.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def test_postgres_writers_racing_for_one_entity_cannot_both_win(
    postgres: PostgresCluster,
) -> None:
    """Two stores (two processes' worth of connections) each create the same new entities
    and replace the same old one: per round, exactly one call commits, whole."""
    url = postgres.create_database()
    with PostgresStore(url, 4) as first, PostgresStore(url, 4) as second:
        first.put_many([blob("shared", 1, 0, b"v1")])
        for round_ in range(20):
            news = [f"new-{round_}-{i}" for i in range(30)]
            current = round_ + 1

            def batch(
                name: str, news: list[str] = news, current: int = current
            ) -> list[StoredBlob]:
                return [blob(e, 1, 0, name.encode()) for e in news] + [
                    blob("shared", current + 1, current, name.encode())
                ]

            outcome = _race({"first": first, "second": second}, batch)
            assert sorted(outcome.values()) == ["stale", "won"], outcome
            winner = next(n for n, o in outcome.items() if o == "won").encode()
            written = first.get_many("customer", news)
            assert len(written) == 30 and {b.blob for b in written.values()} == {winner}
            shared = first.get("customer", "shared")
            assert shared is not None and (shared.version, shared.blob) == (current + 1, winner)


def test_postgres_keeps_images_in_hash_partitions_and_nothing_more(
    postgres: PostgresCluster,
) -> None:
    url = postgres.create_database()
    with PostgresStore(url, 4) as store:
        store.put_many([blob(f"e{i}", 1, 0, b"sealed") for i in range(40)])
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        parts = conn.execute(
            "SELECT c.relname, count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN fabric.blobs b ON b.tableoid = c.oid GROUP BY c.relname ORDER BY 1"
        ).fetchall()
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'fabric' AND table_name = 'blobs' ORDER BY ordinal_position"
            )
        ]
    assert [name for name, _ in parts] == [f"blobs_{p:04d}" for p in range(4)]
    assert sum(n for _, n in parts) == 40
    assert columns == ["part", "key", "entity_type", "entity_id", "version", "blob"]


def test_postgres_unreachable_or_wrong_says_where_never_the_password(
    postgres: PostgresCluster,
) -> None:
    secret = "s3cret-pass-word"
    with pytest.raises(StoreError) as refused:
        PostgresStore(f"postgresql://fabric:{secret}@127.0.0.1:1/fabric_db", 4)
    message = str(refused.value)
    assert message.startswith("cannot open the entity store at postgresql://127.0.0.1:1/fabric_db")
    assert secret not in message and "\n" not in message
    with pytest.raises(StoreError, match="must be postgresql://"):
        PostgresStore("mysql://x@h/db", 4)
    url = postgres.create_database()
    with pytest.raises(StoreError, match='database "nope" does not exist'):
        PostgresStore(url.rsplit("/", 1)[0] + "/nope", 4)


def test_postgres_statement_timeout_stops_a_long_read(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    with PostgresStore(url, 2, statement_timeout_ms=200) as store:
        store.put_many([blob("a", 1, 0)])
        with (
            pytest.raises(StoreError, match="canceling statement due to statement timeout"),
            store._connection("read from") as conn,
        ):
            conn.execute("SELECT pg_sleep(2)")
        assert store.get("customer", "a") is not None  # the pool's connection still serves
