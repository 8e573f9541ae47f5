"""Export jobs over the API: started, watched, fetched; owned by the key that started them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from e2e_helpers import wait_for_export as wait
from litestar import Litestar
from litestar.testing import TestClient
from s3server import SeaweedFS

from fabric.api import create_app
from fabric.config.secrets import load_secrets
from fabric.objects import S3Url, publish
from fabric.project import Project
from fabric.services.export import export_view


@pytest.fixture
def served(synced: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str], Path]]:
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    with TestClient(app=create_app(project)) as client:
        yield client, keys, synced.parent


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def customer_ids(root: Path, count: int) -> list[str]:
    with Project.open(root / "fabric.yaml") as project:
        return sorted(project.catalog.entities("customer"))[:count]


def test_export_job_runs_and_serves_the_same_file_as_the_cli_path(
    served: tuple[TestClient[Litestar], dict[str, str], Path],
) -> None:
    client, keys, root = served
    ids = customer_ids(root, 25)
    (root / "spines").mkdir()
    pq.write_table(
        pa.table({"entity_id": ids, "event_timestamp": ["2026-05-01T00:00:00"] * len(ids)}),
        root / "spines" / "train.parquet",
    )
    steward = keys["steward-demo"]
    started = client.post(
        "/v1/exports",
        json={"view": "customer_360", "spine": "train.parquet"},
        headers=auth(steward),
    )
    assert started.status_code == 202, started.text
    job = started.json()["job"]
    assert started.headers["location"] == f"/v1/exports/{job}"
    status = wait(client, job, steward)
    assert status["state"] == "succeeded" and status["rows"] == len(ids), status
    assert status["rows_done"] == len(ids) and status["stage"] == "writing"
    body = client.get(f"/v1/exports/{job}/file", headers=auth(steward)).content
    with Project.open(root / "fabric.yaml") as project:
        export_view(
            project,
            "customer_360",
            root / "direct.parquet",
            spine=root / "spines" / "train.parquet",
            role="steward",
        )
    assert body == (root / "direct.parquet").read_bytes()
    # Another key, even of a role allowed exports, is told no such job exists.
    other = auth(keys["analyst-demo"])
    assert client.get(f"/v1/exports/{job}", headers=other).status_code == 404
    assert client.get(f"/v1/exports/{job}/file", headers=other).status_code == 404


def test_export_job_errors(served: tuple[TestClient[Litestar], dict[str, str], Path]) -> None:
    client, keys, root = served
    key = auth(keys["analyst-demo"])
    outside = client.post(
        "/v1/exports", json={"view": "customer_360", "spine": "../fabric.yaml"}, headers=key
    )
    assert outside.status_code == 400 and "spines directory" in outside.json()["error"]["message"]
    assert client.post("/v1/exports", json={"view": "nope"}, headers=key).status_code == 404
    assert client.post("/v1/exports", json={"view": "customer_360"}).status_code == 401
    (root / "spines").mkdir()
    (root / "spines" / "bad.csv").write_text("entity_id,event_timestamp\ncrm:1,yesterday\n")
    started = client.post(
        "/v1/exports", json={"view": "customer_360", "spine": "bad.csv"}, headers=key
    ).json()
    status = wait(client, started["job"], keys["analyst-demo"])
    assert status["state"] == "failed"
    assert status["error"].startswith("bad.csv: row 1") and str(root) not in status["error"]
    fetch = client.get(f"/v1/exports/{started['job']}/file", headers=key)
    assert fetch.status_code == 409 and fetch.json()["error"]["code"] == "conflict"
    assert client.get("/v1/exports/no-such-job", headers=key).status_code == 404


def test_an_uploaded_spine_exports_like_a_named_one_and_is_the_uploaders_alone(
    served: tuple[TestClient[Litestar], dict[str, str], Path],
) -> None:
    client, keys, root = served
    ids = customer_ids(root, 20)
    body = "entity_id,event_timestamp,label\n" + "".join(
        f"{e},2026-05-01T00:00:00Z,{i % 2}\n" for i, e in enumerate(ids)
    )
    steward, analyst = keys["steward-demo"], keys["analyst-demo"]
    uploaded = client.post(
        "/v1/exports/spines",
        content=body.encode(),
        headers={**auth(steward), "Content-Type": "text/csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    name = uploaded.json()["spine"]
    assert name.startswith("upload:") and uploaded.json()["bytes"] == len(body)
    # Another key cannot use it, nor guess one.
    for key, spine in ((analyst, name), (steward, "upload:" + "0" * 24)):
        refused = client.post(
            "/v1/exports", json={"view": "customer_360", "spine": spine}, headers=auth(key)
        )
        assert refused.status_code == 400 and "no uploaded spine" in refused.text
    started = client.post(
        "/v1/exports",
        json={"view": "customer_360", "spine": name, "format": "csv"},
        headers=auth(steward),
    )
    assert started.status_code == 202, started.text
    status = wait(client, started.json()["job"], steward)
    assert status["state"] == "succeeded", status
    got = client.get(f"/v1/exports/{started.json()['job']}/file", headers=auth(steward))
    (root / "spine.csv").write_text(body)
    with Project.open(root / "fabric.yaml") as project:
        export_view(
            project,
            "customer_360",
            root / "direct.csv",
            spine=root / "spine.csv",
            fmt="csv",
            role="steward",
        )
    assert got.content == (root / "direct.csv").read_bytes()
    # Uploaded files are private to the server's user.
    uploads = list((root / "exports" / "uploads").iterdir())
    assert uploads and all(p.stat().st_mode & 0o077 == 0 for p in uploads)


def test_spine_uploads_refuse_other_types_empty_bodies_and_oversize(
    synced: Path,
) -> None:
    text = synced.read_text()
    synced.write_text(text.replace("\napi:\n", "\napi:\n  exports: {max_spine_bytes: 2048}\n"))
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    steward = auth(keys["steward-demo"])
    with TestClient(app=create_app(project)) as client:
        wrong = client.post(
            "/v1/exports/spines",
            content=b"x",
            headers={**steward, "Content-Type": "application/json"},
        )
        assert wrong.status_code == 400 and "Content-Type must be one of" in wrong.text
        empty = client.post(
            "/v1/exports/spines", content=b"", headers={**steward, "Content-Type": "text/csv"}
        )
        assert empty.status_code == 400 and "empty" in empty.text
        big = client.post(
            "/v1/exports/spines",
            content=b"a,b\n" * 1000,
            headers={**steward, "Content-Type": "text/csv"},
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        nobody = client.post(
            "/v1/exports/spines", content=b"a", headers={"Content-Type": "text/csv"}
        )
        assert nobody.status_code == 401
    # Refused uploads leave no file behind.
    uploads = synced.parent / "exports" / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())


def test_exports_on_s3_serve_the_same_file_and_sweep_there(synced: Path, s3_env: SeaweedFS) -> None:
    bucket = s3_env.make_bucket()
    config = yaml.safe_load(synced.read_text())
    config.setdefault("api", {})["exports"] = {
        "dir": f"s3://{bucket}/exports",
        "spines": f"s3://{bucket}/spines/",
    }
    synced.write_text(yaml.safe_dump(config))
    root = synced.parent
    ids = customer_ids(root, 20)
    spine = root / "train.csv"
    spine.write_text(
        "entity_id,event_timestamp\n" + "".join(f"{e},2026-04-01T00:00:00\n" for e in ids)
    )
    publish(spine, S3Url(bucket, "spines/week1/train.csv"))
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    steward = auth(keys["steward-demo"])
    with TestClient(app=create_app(project)) as client:
        started = client.post(
            "/v1/exports",
            json={"view": "customer_360", "spine": "week1/train.csv"},
            headers=steward,
        )
        assert started.status_code == 202, started.text
        job = started.json()["job"]
        status = wait(client, job, keys["steward-demo"])
        assert status["state"] == "succeeded" and status["rows"] == 20, status
        answer = client.get(f"/v1/exports/{job}/file", headers=steward)
        assert answer.status_code == 200
        assert answer.headers["content-disposition"] == f'attachment; filename="{job}.parquet"'
        export_view(project, "customer_360", root / "direct.parquet", spine=spine, role="steward")
        assert answer.content == (root / "direct.parquet").read_bytes()
        stored = s3_env.keys(bucket)
        assert (
            f"exports/{job}.parquet" in stored and f"exports/{job}.parquet.manifest.json" in stored
        )
        # The spine fetched for the job is gone from the server's disk once it ended.
        assert not any(client.app.state["fabric"].jobs._local.rglob("train.csv"))  # type: ignore[union-attr]
        for name in ("../train.csv", "week1/../week1/train.csv", "nope.csv", "/spines/x.csv"):
            refused = client.post(
                "/v1/exports", json={"view": "customer_360", "spine": name}, headers=steward
            )
            assert refused.status_code == 400, (name, refused.text)
            assert "spines directory" in refused.json()["error"]["message"]
        # A sweep past keep_hours deletes the files on S3, and the job says it expired.
        jobs = client.app.state["fabric"].jobs
        later = time.time() + jobs.keep_hours * 3600 + 60
        jobs._clock = lambda: later
        assert jobs.sweep() == 2
        assert not any(k.startswith("exports/") for k in s3_env.keys(bucket))
        gone = client.get(f"/v1/exports/{job}/file", headers=steward)
        assert gone.status_code == 404 and "expired" in gone.json()["error"]["message"]
    project.close()


def test_exports_on_s3_that_does_not_answer_fail_without_naming_it(
    synced: Path, s3_env: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_env.make_bucket()
    config = yaml.safe_load(synced.read_text())
    config.setdefault("api", {})["exports"] = {"dir": f"s3://{bucket}/exports"}
    synced.write_text(yaml.safe_dump(config))
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with TestClient(app=create_app(project)) as client:
        started = client.post(
            "/v1/exports", json={"view": "customer_360"}, headers=auth(keys["steward-demo"])
        )
        assert started.status_code == 202, started.text
        status = wait(client, started.json()["job"], keys["steward-demo"])
        assert status["state"] == "failed"
        assert status["error"] == (
            "the export's storage refused it or did not answer; try again later"
        )
        assert bucket not in status["error"] and "127.0.0.1" not in status["error"]
    project.close()
