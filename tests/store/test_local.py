"""The embedded shard store: versions, optimistic concurrency, partitions, no ids in paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.errors import StaleWriteError
from fabric.store.base import StoredBlob, entity_key, partition_of
from fabric.store.local import LocalShardStore


def blob(entity_id: str, version: int, expected: int, data: bytes = b"x") -> StoredBlob:
    return StoredBlob("customer", entity_id, version, data, expected_version=expected)


def test_local_put_get_roundtrip(tmp_path: Path) -> None:
    with LocalShardStore(tmp_path, shards=4) as store:
        store.put_many([blob("a", 1, 0, b"one"), blob("b", 1, 0, b"two")])
        got = store.get("customer", "a")
        assert got is not None and got.blob == b"one" and got.version == 1
        assert store.get("customer", "missing") is None
        many = store.get_many("customer", ["a", "b", "zz", "a"])
        assert {k: (v.blob, v.version) for k, v in many.items()} == {
            "a": (b"one", 1),
            "b": (b"two", 1),
        }
        assert store.get_many("customer", []) == {}


def test_local_stale_writer_fails_and_writes_nothing(tmp_path: Path) -> None:
    with LocalShardStore(tmp_path, shards=4) as store:
        store.put_many([blob("a", 1, 0, b"v1")])
        with pytest.raises(StaleWriteError, match="entity customer a is at version 1, not 0"):
            store.put_many([blob("b", 1, 0), blob("a", 1, 0, b"stale")])
        assert store.get("customer", "b") is None  # the whole call was refused
        store.put_many([blob("a", 2, 1, b"v2")])
        got = store.get("customer", "a")
        assert got is not None and got.blob == b"v2"


def test_local_scan_partitions_cover_everything_once(tmp_path: Path) -> None:
    ids = [f"e{i}" for i in range(60)]
    with LocalShardStore(tmp_path, shards=4) as store:
        store.put_many([blob(i, 1, 0) for i in ids])
        seen = [b.entity_id for p in range(4) for b in store.scan("customer", p)]
        assert sorted(seen) == sorted(ids)
        for p in range(4):
            assert all(
                partition_of(entity_key("customer", b.entity_id), 4) == p
                for b in store.scan("customer", p)
            )
        assert store.stats().entities == 60
        assert store.delete_many("customer", ids[:10]) == 10
        assert store.stats().entities == 50


def test_local_file_names_never_contain_ids(tmp_path: Path) -> None:
    hostile = "../../etc/passwd"
    with LocalShardStore(tmp_path / "s", shards=2) as store:
        store.put_many([blob(hostile, 1, 0)])
        assert store.get("customer", hostile) is not None
    names = [p.name for p in (tmp_path / "s").iterdir()]
    assert all(n.startswith("shard-") or n == "layout.json" for n in names)
    assert not (tmp_path / "etc").exists()


def test_entity_key_is_stable() -> None:
    # A fixed value: partitioning must never change between runs or Python versions.
    assert entity_key("customer", "42").hex() == "d6609f321c621a9c4ae4da9b52e658c0"


def test_local_refuses_another_shard_count(tmp_path: Path) -> None:
    from fabric.errors import StoreError

    with LocalShardStore(tmp_path, shards=4) as store:
        store.put_many([blob("a", 1, 0)])
    with pytest.raises(StoreError, match=r"created with 4 shards but fabric\.yaml store\.shards"):
        LocalShardStore(tmp_path, shards=8)


def test_local_files_are_private(tmp_path: Path) -> None:
    import stat

    with LocalShardStore(tmp_path / "s", shards=2) as store:
        store.put_many([blob("a", 1, 0)])
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in (tmp_path / "s").iterdir()
            if p.suffix.startswith(".db")
        }
    assert modes and all(mode & 0o077 == 0 for mode in modes.values()), modes
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) & 0o077 == 0


def test_local_readers_in_threads_see_whole_versions_while_a_writer_writes(
    tmp_path: Path,
) -> None:
    """WAL: readers never wait for the writer, and each read is one committed version."""
    import threading

    ids = [f"e{i}" for i in range(40)]

    def image(entity_id: str, version: int) -> bytes:
        return f"{entity_id}@{version};".encode() * 200

    with LocalShardStore(tmp_path, shards=4) as store:
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
