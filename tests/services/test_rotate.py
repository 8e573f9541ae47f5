"""Key rotation: a new store key, every blob re-sealed under it, the old one retired."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fabric.cli import main
from fabric.errors import ConfigError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.rotate import rotate_store_key
from fabric.services.verify import verify_store
from fabric.store.codec import dictionary_id_of, key_id_of
from fabric.sync import sync_project


def _documents(config: Path) -> dict[str, object]:
    with Project.open(config) as project:
        service = EntityService(project)
        return {
            e: service.document("customer", e, role="steward")
            for e in sorted(project.catalog.entities("customer"))
        }


def _key_ids(config: Path) -> set[str | None]:
    with Project.open(config) as project:
        return {key_id_of(b.blob) for b in project.store.scan("customer")}


def _key_file(config: Path) -> Path:
    return config.parent / "fabric.keys"


def _dictionary_ids(config: Path) -> dict[str, str]:
    with Project.open(config) as project:
        return {b.entity_id: dictionary_id_of(b.blob) for b in project.store.scan("customer")}


def test_rotation_reseals_everything_and_retires_the_old_key(synced: Path) -> None:
    before = _documents(synced)
    compressed_with = _dictionary_ids(synced)
    assert all(compressed_with.values())
    result = CliRunner().invoke(main, ["store", "rotate-key", "-c", str(synced)])
    assert result.exit_code == 0, result.output
    assert "store key k1: re-encrypted" in result.output
    assert _key_ids(synced) == {"k1"}
    assert _documents(synced) == before
    assert _dictionary_ids(synced) == compressed_with  # re-sealed, not recompressed
    # The key file stays private, keeps the master key, and never reached the output.
    key_file = _key_file(synced)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    data = yaml.safe_load(key_file.read_text())
    assert data["master_key"] and [k["id"] for k in data["store_keys"]] == ["k1"]
    assert data["store_keys"][0]["key"] not in result.output
    # A second rotation retires k1 once nothing is sealed under it.
    with Project.open(synced) as project:
        report = rotate_store_key(project)
    assert (report.key_id, report.retired) == ("k2", ["k1"])
    assert _key_ids(synced) == {"k2"}
    assert [k["id"] for k in yaml.safe_load(key_file.read_text())["store_keys"]] == ["k2"]
    assert _documents(synced) == before
    # Syncs go on under the new key.
    with Project.open(synced) as project:
        sync_project(project, full=True)
        assert verify_store(project).ok
    assert _key_ids(synced) == {"k2"}


def test_an_interrupted_rotation_leaves_every_entity_readable_and_resumes(synced: Path) -> None:
    before = _documents(synced)

    class Stop(Exception):
        pass

    done: list[int] = []

    def stop_after_first_batch(stage: str, n: int, total: int | None) -> None:
        done.append(n)
        raise Stop

    text = synced.read_text()
    synced.write_text(text.replace("batch_size: 500", "batch_size: 25"))
    with Project.open(synced) as project:
        assert project.config.store.batch_size == 25
        with pytest.raises(Stop):
            rotate_store_key(project, progress=stop_after_first_batch)
    assert _key_ids(synced) == {"0", "k1"}  # half done: both keys in use, both configured
    assert _documents(synced) == before
    with Project.open(synced) as project:
        assert verify_store(project).ok
        report = rotate_store_key(project, new_key=False)
    assert report.key_id == "k1" and report.already == done[0] > 0
    assert _key_ids(synced) == {"k1"}
    assert _documents(synced) == before


def test_rotation_with_keys_from_the_environment(
    synced: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _documents(synced)
    new = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("FABRIC_STORE_KEYS", f"ops1:{new}")
    with Project.open(synced) as project, pytest.raises(ConfigError, match="--resume"):
        rotate_store_key(project)
    with Project.open(synced) as project:
        report = rotate_store_key(project, new_key=False)
    assert report.key_id == "ops1" and report.unused == []
    assert _key_ids(synced) == {"ops1"}
    assert _documents(synced) == before
    # Without the environment key the blobs cannot open, and the error names only the id.
    monkeypatch.delenv("FABRIC_STORE_KEYS")
    result = CliRunner().invoke(main, ["store", "verify", "-c", str(synced)])
    assert result.exit_code == 1
    assert "store key id 'ops1', which is not configured" in result.output
    assert new not in result.output


def test_bad_store_keys_are_clear_config_errors(
    synced: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_STORE_KEYS", "nocolon")
    with Project.open(synced) as project, pytest.raises(ConfigError, match="expected ID:BASE64"):
        _ = project.secrets
    monkeypatch.setenv("FABRIC_STORE_KEYS", "0:" + base64.b64encode(os.urandom(32)).decode())
    with Project.open(synced) as project, pytest.raises(ConfigError, match="master key's id"):
        _ = project.secrets
    monkeypatch.setenv("FABRIC_STORE_KEYS", "k9:c2hvcnQ=")
    with Project.open(synced) as project, pytest.raises(ConfigError, match="at least 32 bytes"):
        _ = project.secrets
