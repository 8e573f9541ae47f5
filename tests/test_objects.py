"""Objects on S3-compatible storage, against a real SeaweedFS server (tests/s3server.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from s3server import SeaweedFS

from fabric.errors import ConfigError, ObjectStorageError
from fabric.objects import (
    STAGING_PREFIX,
    S3Url,
    check_reachable,
    delete_object,
    fetch,
    list_objects,
    object_size,
    open_object,
    parse_location,
    publish,
)


def test_locations_parse_as_paths_or_objects() -> None:
    assert parse_location("exports/a.parquet") == Path("exports/a.parquet")
    assert parse_location(Path("/x")) == Path("/x")
    url = parse_location("s3://my-bucket/train/a.parquet")
    assert url == S3Url("my-bucket", "train/a.parquet")
    assert isinstance(url, S3Url)
    assert str(url) == "s3://my-bucket/train/a.parquet" and url.suffix == ".parquet"
    assert url.with_name("a.parquet.manifest.json").key == "train/a.parquet.manifest.json"
    assert parse_location("S3://b-1/x", prefix=True) == S3Url("b-1", "x")
    assert parse_location("s3://bucket", prefix=True) / "f.csv" == S3Url("bucket", "f.csv")
    for bad in (
        "s3://Bad_Bucket/x",
        "s3://b/x",
        "s3://bucket",
        "s3://bucket/dir/",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
        "s3://bucket/a?versionId=1",
    ):
        with pytest.raises(ConfigError, match="s3://"):
            parse_location(bad)


def test_publish_fetch_list_and_delete(s3_env: SeaweedFS, tmp_path: Path) -> None:
    bucket = s3_env.make_bucket()
    local = tmp_path / "data.bin"
    payload = os.urandom(3 << 20)
    local.write_bytes(payload)
    url = S3Url(bucket, "train/data.bin")
    assert object_size(url) is None
    publish(local, url)
    assert object_size(url) == len(payload)
    # The staging object is gone: only the destination is left.
    assert s3_env.keys(bucket) == {"train/data.bin": len(payload)}
    fetched = fetch(url, tmp_path)
    assert fetched.read_bytes() == payload and fetched.name == "data.bin"
    assert fetched.stat().st_mode & 0o777 == 0o600
    with open_object(url) as handle:
        assert handle.read(10) == payload[:10]
    listed = list_objects(S3Url(bucket, "train"))
    assert [(u, size) for u, size, _ in listed] == [(url, len(payload))]
    assert listed[0][2] > time.time() - 600
    delete_object(url)
    delete_object(url)  # gone already: no error
    assert s3_env.keys(bucket) == {} and list_objects(S3Url(bucket, "train")) == []


def test_errors_name_the_object_never_the_secret(
    s3_env: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_env.make_bucket()
    url = S3Url(bucket, "a.bin")
    with pytest.raises(ObjectStorageError, match=rf"s3://{bucket}/a.bin: cannot read"):
        fetch(url, tmp_path)
    wrong = "not-the-secret-" + "x" * 20
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(ObjectStorageError, match="cannot look up") as refused:
        check_reachable(url)
    assert wrong not in str(refused.value) and s3_env.secret not in str(refused.value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with pytest.raises(ObjectStorageError, match="NETWORK_CONNECTION"):
        check_reachable(url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL must be http"):
        check_reachable(url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        check_reachable(url)


def test_a_volume_server_killed_mid_upload_leaves_no_partial_object(tmp_path: Path) -> None:
    """The fault of issue 19: one SeaweedFS volume server SIGKILLed while an object is being
    published. The publish fails cleanly or completes; the destination key never holds part
    of the file."""
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(96 << 20))
    size = local.stat().st_size
    outcomes = []
    with SeaweedFS() as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        bucket = server.make_bucket()
        for attempt, delay in enumerate((0.05, 0.3, 0.8)):
            url = S3Url(bucket, f"out/{attempt}.bin")
            killer = threading.Timer(delay, server.kill, args=(f"volume{1 + attempt % 2}",))
            killer.start()
            try:
                publish(local, url)
                outcomes.append("completed")
            except ObjectStorageError as exc:
                assert str(url) in str(exc)
                outcomes.append("failed")
            finally:
                killer.join()
            keys = server.keys(bucket)
            # Whatever happened, the destination holds the whole file or nothing.
            assert keys.get(f"out/{attempt}.bin", size) == size
            assert not any(k.startswith(STAGING_PREFIX) and v for k, v in keys.items()), keys
            server.start_volume(1 + attempt % 2)
            time.sleep(1.0)
    assert len(outcomes) == 3
