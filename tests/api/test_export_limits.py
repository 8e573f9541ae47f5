"""Exports over the API: what a spine may decode to, bytes held per key, how long files are
kept, and who may read them."""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from e2e_helpers import wait_for_export as wait
from litestar import Litestar
from litestar.testing import TestClient
from spine_helpers import prefix_coded_spine, spine_table

from fabric.api import create_app
from fabric.config.secrets import load_secrets
from fabric.project import Project

PARQUET = "application/vnd.apache.parquet"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def configure(config: Path, exports: str) -> None:
    """Give the project's fabric.yaml these ``api.exports`` settings."""
    text = config.read_text()
    config.write_text(text.replace("\napi:\n", f"\napi:\n  exports: {{{exports}}}\n"))


@pytest.fixture
def limited(synced: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str], Path]]:
    configure(
        synced,
        "max_spine_rows: 1000, max_spine_decoded_bytes: 524288, max_spine_value_bytes: 1024",
    )
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    with TestClient(app=create_app(project)) as client:
        yield client, keys, synced.parent


def parquet(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def upload(client: TestClient[Litestar], key: str, body: bytes, content_type: str = PARQUET) -> Any:
    return client.post(
        "/v1/exports/spines", content=body, headers={**auth(key), "Content-Type": content_type}
    )


def error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert set(body["error"]) == {"status", "code", "message"}
    message: str = body["error"]["message"]
    return message


def test_uploads_over_a_decode_limit_are_refused_at_once(
    limited: tuple[TestClient[Litestar], dict[str, str], Path],
) -> None:
    client, keys, root = limited
    steward = keys["steward-demo"]
    # A few kilobytes that decode to 4 MiB: one value.
    huge = parquet(spine_table(["crm:1"], label=["x" * (4 << 20)]), compression="zstd")
    assert len(huge) < 8192
    message = error(upload(client, steward, huge), 413)
    assert "api.exports.max_spine_decoded_bytes (524,288)" in message
    assert message.startswith("upload:") and str(root) not in message
    # A tiny file of many constant rows.
    rows = parquet(spine_table(["crm:1"] * 1_001), compression="zstd")
    assert "api.exports.max_spine_rows (1,000)" in error(upload(client, steward, rows), 413)
    csv = ("entity_id,event_timestamp\n" + "crm:1,2026-05-01\n" * 1_001).encode()
    assert "max_spine_rows" in error(upload(client, steward, csv, "text/csv"), 413)
    # One value over the value limit, and a dictionary that repeats a value into megabytes.
    value = parquet(spine_table(["crm:1"], label=["y" * 2048]))
    assert "max_spine_value_bytes (1,024 bytes)" in error(upload(client, steward, value), 413)
    rows_n = 900
    repeated = pa.DictionaryArray.from_arrays(
        pa.array([0] * rows_n, pa.int32()), pa.array(["z" * 1000])
    )
    bomb = parquet(spine_table(["crm:1"] * rows_n, label=repeated), store_schema=False)
    assert "max_spine_decoded_bytes" in error(upload(client, steward, bomb), 413)
    # Columns are checked too: a spine with two entity_id columns says so.
    two = pa.Table.from_arrays(
        [pa.array(["crm:1"]), pa.array(["2026-05-01"]), pa.array(["crm:2"])],
        names=["entity_id", "event_timestamp", "entity_id"],
    )
    assert "2 columns named 'entity_id'" in error(upload(client, steward, parquet(two)), 400)
    # Nothing refused is kept.
    assert not list((root / "exports" / "uploads").iterdir())
    fine = upload(client, steward, parquet(spine_table(["crm:1"] * 10)))
    assert fine.status_code == 201, fine.text


def test_named_spines_are_checked_when_the_export_starts(
    limited: tuple[TestClient[Litestar], dict[str, str], Path],
) -> None:
    client, keys, root = limited
    key = auth(keys["analyst-demo"])
    (root / "spines").mkdir()
    pq.write_table(spine_table(["crm:1"] * 1_001), root / "spines" / "many.parquet")
    started = client.post(
        "/v1/exports", json={"view": "customer_360", "spine": "many.parquet"}, headers=key
    )
    message = error(started, 413)
    assert message.startswith("many.parquet: ") and "max_spine_rows" in message
    # A column named like a feature is refused before the job is queued, named.
    pq.write_table(spine_table(["crm:1"], country=["x"]), root / "spines" / "clash.parquet")
    clash = client.post(
        "/v1/exports", json={"view": "customer_360", "spine": "clash.parquet"}, headers=key
    )
    assert "'country'" in error(clash, 400)
    uploaded = upload(client, keys["analyst-demo"], parquet(spine_table(["crm:1"], found=[True])))
    assert "'found'" in error(uploaded, 400)


def test_bytes_held_per_key_are_bounded(synced: Path) -> None:
    configure(synced, "max_bytes_per_key: 8192")
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    body = ("entity_id,event_timestamp\n" + "crm:1,2026-05-01T00:00:00\n" * 200).encode()
    assert 4096 < len(body) < 8192
    with TestClient(app=create_app(project)) as client:
        steward, analyst = keys["steward-demo"], keys["analyst-demo"]
        assert upload(client, steward, body, "text/csv").status_code == 201
        message = error(upload(client, steward, body, "text/csv"), 413)
        assert "api.exports.max_bytes_per_key (8,192 bytes)" in message
        # Another key holds its own bytes.
        assert upload(client, analyst, body, "text/csv").status_code == 201
        big = ("entity_id,event_timestamp\n" + "crm:1,2026-05-01T00:00:00\n" * 150).encode()
        assert upload(client, analyst, big, "text/csv").status_code == 413
        # An export whose file would take the key past its quota fails; nothing is kept.
        full = client.post(
            "/v1/exports", json={"view": "customer_360", "format": "jsonl"}, headers=auth(steward)
        )
        assert full.status_code == 202, full.text
        status = wait(client, full.json()["job"], steward)
        assert status["state"] == "failed" and "max_bytes_per_key" in status["error"]
        assert not list((synced.parent / "exports").glob("*.jsonl*"))


def test_files_expire_after_keep_hours(synced: Path) -> None:
    exports = synced.parent / "exports"
    (exports / "uploads").mkdir(parents=True)
    old = time.time() - 25 * 3600
    stale = [
        exports / ("a" * 24 + ".parquet"),
        exports / ("a" * 24 + ".parquet.manifest.json"),
        exports / ("." + "b" * 24 + ".csv.x1y2.tmp"),
        exports / "uploads" / ("c" * 24 + ".csv"),
    ]
    for path in stale:
        path.write_bytes(b"old")
        os.utime(path, (old, old))
    fresh = exports / ("d" * 24 + ".jsonl")
    fresh.write_bytes(b"new")
    foreign = exports / "notes.txt"  # not fabric's: never touched
    foreign.write_bytes(b"mine")
    os.utime(foreign, (old, old))
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    steward = keys["steward-demo"]
    with TestClient(app=create_app(project)) as client:
        # Swept as the server starts.
        assert not any(p.exists() for p in stale)
        assert fresh.exists() and foreign.exists()
        started = client.post("/v1/exports", json={"view": "customer_360"}, headers=auth(steward))
        job = started.json()["job"]
        assert wait(client, job, steward)["state"] == "succeeded"
        name = upload(client, steward, parquet(spine_table(["crm:1"]))).json()["spine"]
        # A day later (files aged by hand), the next sweep deletes them.
        for path in [*exports.glob(f"{job}*"), *(exports / "uploads").iterdir()]:
            os.utime(path, (old, old))
        swept = client.post("/v1/exports", json={"view": "customer_360"}, headers=auth(steward))
        assert swept.status_code == 202
        assert not list(exports.glob(f"{job}*")) and not list((exports / "uploads").iterdir())
        status = client.get(f"/v1/exports/{job}", headers=auth(steward)).json()
        assert status["state"] == "expired"
        message = error(client.get(f"/v1/exports/{job}/file", headers=auth(steward)), 404)
        assert "expired" in message and "api.exports.keep_hours (24" in message
        gone = client.post(
            "/v1/exports", json={"view": "customer_360", "spine": name}, headers=auth(steward)
        )
        assert "expired" in error(gone, 404)
        wait(client, swept.json()["job"], steward)


def test_export_files_are_owner_only(synced: Path) -> None:
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    steward = keys["steward-demo"]
    old = os.umask(0o022)
    try:
        with TestClient(app=create_app(project)) as client:
            job = client.post(
                "/v1/exports", json={"view": "customer_360"}, headers=auth(steward)
            ).json()["job"]
            assert wait(client, job, steward)["state"] == "succeeded"
            exports = synced.parent / "exports"
            assert stat.S_IMODE(exports.stat().st_mode) == 0o700
            files = list(exports.glob(f"{job}*"))
            assert len(files) == 2  # the file and its manifest
            assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    finally:
        os.umask(old)
    # Once the server stops, nobody can ask for them: they are deleted.
    assert not list(exports.glob(f"{job}*"))


def test_an_export_stops_as_soon_as_its_file_would_pass_the_keys_quota(
    synced: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fabric.services.export as export

    monkeypatch.setattr(export, "_BATCH", 16)  # batches of 16 rows: stopped long before the end
    configure(synced, "max_bytes_per_key: 8192")
    project = Project.open(synced)
    steward = load_secrets(project.config).api_keys["steward-demo"]
    with TestClient(app=create_app(project)) as client:
        started = client.post(
            "/v1/exports", json={"view": "customer_360", "format": "jsonl"}, headers=auth(steward)
        )
        assert started.status_code == 202, started.text
        status = wait(client, started.json()["job"], steward)
        assert status["state"] == "failed", status
        assert "api.exports.max_bytes_per_key (8,192 bytes)" in status["error"]
        assert "stopped" in status["error"]
        assert status["stage"] == "writing" and status["rows_done"] < status["rows_total"]
        # Nothing half-written stays.
        assert not [p for p in (synced.parent / "exports").iterdir() if p.name != "uploads"]
        # What the key holds is unchanged: a spine that fills the quota is still taken.
        header = b"entity_id,event_timestamp\n"
        line = b"crm:1,2026-05-01T00:00:00\n"
        rows, rest = divmod(8192 - len(header), len(line))
        full = header + line * (rows - 1) + b"crm:1," + b"2" * (len(line) - 7 + rest) + b"\n"
        assert len(full) == 8192
        assert upload(client, steward, full, "text/csv").status_code == 201
        # With nothing left, an export fails before it computes anything.
        again = client.post("/v1/exports", json={"view": "customer_360"}, headers=auth(steward))
        status = wait(client, again.json()["job"], steward)
        assert status["state"] == "failed" and status["stage"] is None
        assert "nothing is left under api.exports.max_bytes_per_key" in status["error"]


def test_uploads_of_the_reviews_findings_are_refused(
    limited: tuple[TestClient[Litestar], dict[str, str], Path],
) -> None:
    client, keys, root = limited
    steward = keys["steward-demo"]
    # A prefix-coded (DELTA_BYTE_ARRAY) label: its size says nothing of what it decodes to.
    sink = io.BytesIO()
    prefix_coded_spine(sink, groups=1, rows=1_000, length=1000)
    message = error(upload(client, steward, sink.getvalue()), 400)
    assert "column 'label'" in message and "DELTA_BYTE_ARRAY" in message
    assert "PLAIN or dictionary" in message and message.startswith("upload:")
    # A CSV value over max_spine_value_bytes.
    long = ("entity_id,event_timestamp,note\ncrm:1,2026-05-01," + "y" * 4096 + "\n").encode()
    message = error(upload(client, steward, long, "text/csv"), 413)
    assert "column 'note' holds a value of 4,096 bytes" in message
    assert "max_spine_value_bytes (1,024 bytes)" in message and "yyy" not in message
    # A label named like a column the export writes, but for its case.
    found = error(upload(client, steward, parquet(spine_table(["crm:1"], Found=[True]))), 400)
    assert "'Found'" in found and "case" in found
    assert not list((root / "exports" / "uploads").iterdir())
