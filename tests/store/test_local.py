"""The embedded shard store: no ids in paths, a fixed shard count, private files (what every
backend does is in test_stores.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.store.base import StoredBlob, entity_key
from fabric.store.local import LocalShardStore


def blob(entity_id: str, version: int, expected: int, data: bytes = b"x") -> StoredBlob:
    return StoredBlob("customer", entity_id, version, data, expected_version=expected)


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
