"""Feature values against plain SQL over the sources, online against offline, and exports."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from s3server import SeaweedFS

from fabric.cli import main
from fabric.errors import BudgetExceededError, ObjectStorageError, SpineError
from fabric.features.formats import FORMATS
from fabric.objects import S3Url, fetch, publish
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.export import export_view
from fabric.services.features import FeatureService

START, END = datetime(2023, 1, 1), datetime(2027, 1, 1)


def _ids(doc: dict[str, Any], table: str) -> list[int]:
    return [int(r["id"]) for r in doc["tables"][table]]


def reference(sources: Path, doc: dict[str, Any], t: datetime) -> dict[str, Any]:
    """customer_360 as of t, by one SQL query per feature over the source databases."""
    at = t.isoformat(sep=" ")
    orders = _ids(doc, "shop_orders")
    payments = _ids(doc, "billing_payments")
    tickets = _ids(doc, "support_tickets")
    out: dict[str, Any] = {}

    def one(db: str, sql: str, ids: list[int], *args: Any) -> Any:
        marks = ",".join("?" * len(ids)) or "NULL"
        with sqlite3.connect(sources / db) as conn:
            return conn.execute(sql.replace("IDS", marks), [*ids, *args]).fetchone()[0]

    window = "datetime(?, ?) <= datetime({c}) AND datetime({c}) < datetime(?)"
    w90 = window.format(c="ordered_at")
    out["order_count_90d"] = one(
        "shop.db",
        f"SELECT count(*) FROM orders WHERE id IN (IDS) AND {w90}",
        orders,
        at,
        "-90 days",
        at,
    )
    out["order_total_90d"] = float(
        one(
            "shop.db",
            f"SELECT coalesce(sum(total), 0) FROM orders WHERE id IN (IDS) AND {w90}",
            orders,
            at,
            "-90 days",
            at,
        )
    )
    avg = one(
        "shop.db",
        "SELECT avg(total) FROM orders WHERE id IN (IDS) AND " + window.format(c="ordered_at"),
        orders,
        at,
        "-365 days",
        at,
    )
    out["avg_order_value_365d"] = None if avg is None else float(avg)
    last = one(
        "shop.db",
        "SELECT max(datetime(ordered_at)) FROM orders WHERE id IN (IDS) AND "
        "datetime(ordered_at) < datetime(?)",
        orders,
        at,
    )
    out["days_since_last_order"] = None if last is None else (t - datetime.fromisoformat(last)).days
    out["payment_failures_30d"] = one(
        "billing.db",
        "SELECT count(*) FROM payments WHERE id IN (IDS) AND status = 'failed' AND "
        + window.format(c="paid_at"),
        payments,
        at,
        "-30 days",
        at,
    )
    out["ticket_count_30d"] = one(
        "support.db",
        "SELECT count(*) FROM tickets WHERE id IN (IDS) AND " + window.format(c="opened_at"),
        tickets,
        at,
        "-30 days",
        at,
    )
    out["open_tickets"] = one(
        "support.db",
        "SELECT count(*) FROM tickets WHERE id IN (IDS) AND "
        "datetime(opened_at) < datetime(?) AND (closed_at IS NULL OR "
        "datetime(closed_at) >= datetime(?))",
        tickets,
        at,
        at,
    )
    return out


@pytest.fixture(scope="module")
def project(demo_dir: Path) -> Any:
    with Project.open(demo_dir / "fabric.yaml") as opened:
        yield opened


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_features_equal_plain_sql_and_online_equals_offline(
    project: Project, demo_dir: Path, data: st.DataObject
) -> None:
    ids = sorted(project.catalog.entities("customer"))
    entity_id = data.draw(st.sampled_from(ids))
    t = data.draw(st.datetimes(min_value=START, max_value=END)).replace(microsecond=0)
    service = FeatureService(project)
    doc = EntityService(project).document("customer", entity_id, role="steward")
    online = service.vector("customer_360", entity_id, as_of=t.isoformat(), role="steward")
    expected = reference(demo_dir / "sources", doc, t)
    if not online["existed"]:
        return  # before the entity's first record: defaults, checked below
    for name, value in expected.items():
        got = online["features"][name]
        if isinstance(value, float):
            assert got == pytest.approx(value), name
        else:
            assert got == value, name


def test_a_row_at_exactly_t_is_excluded_and_before_birth_gives_defaults(
    project: Project,
) -> None:
    service = FeatureService(project)
    entities = EntityService(project)
    for entity_id in sorted(project.catalog.entities("customer")):
        orders = entities.document("customer", entity_id, role="steward")["tables"]["shop_orders"]
        if orders:
            break
    moment = datetime.fromisoformat(str(orders[0]["ordered_at"]))
    at = service.vector("customer_360", entity_id, as_of=moment.isoformat(), role="steward")
    after = service.vector(
        "customer_360",
        entity_id,
        as_of=(moment + timedelta(seconds=1)).isoformat(),
        role="steward",
    )
    assert after["features"]["order_count_90d"] == at["features"]["order_count_90d"] + 1
    early = service.vector("customer_360", entity_id, as_of="1990-01-01T00:00:00Z")
    assert early["existed"] is False
    assert early["features"]["order_count_90d"] == 0 and early["features"]["country"] is None


def test_export_keeps_spine_order_and_labels_and_is_byte_identical(
    project: Project, tmp_path: Path
) -> None:
    ids = sorted(project.catalog.entities("customer"))[:40]
    keys = [*ids, "crm:1", "nobody", ids[0]]
    spine = pa.table(
        {
            "entity_id": keys,
            "event_timestamp": [f"2026-0{1 + i % 9}-1{i % 9}T10:00:00Z" for i in range(len(keys))],
            "label": list(range(len(keys))),
        }
    )
    spine_path = tmp_path / "spine.parquet"
    pq.write_table(spine, spine_path)
    first = export_view(project, "customer_360", tmp_path / "a.parquet", spine=spine_path)
    second = export_view(
        project, "customer_360", tmp_path / "b.parquet", spine=spine_path, workers=2
    )
    # Byte-identical, whether computed here or in two worker processes.
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    out = pq.read_table(tmp_path / "a.parquet").to_pylist()
    assert [r["entity_id"] for r in out] == keys and [r["label"] for r in out] == list(
        range(len(keys))
    )
    assert first.not_found == second.not_found == 1
    missing = next(r for r in out if r["entity_id"] == "nobody")
    assert missing["found"] is False and missing["order_count_90d"] == 0
    assert next(r for r in out if r["entity_id"] == "crm:1")["found"] is True
    # Online equals offline, row by row.
    service = FeatureService(project)
    for row in out[:10]:
        online = service.vector("customer_360", row["entity_id"], as_of=row["event_timestamp"])
        assert {k: row[k] for k in online["features"]} == online["features"]
    manifest = json.loads((tmp_path / "a.parquet.manifest.json").read_text())
    assert manifest["rows"] == 43 and len(manifest["spine_sha256"]) == 64
    last = project.catalog.last_succeeded_run()
    assert last is not None and manifest["store_state"]["sync_run"] == last.id


def test_spine_errors_name_the_file_and_row(project: Project, tmp_path: Path) -> None:
    bad = tmp_path / "spine.csv"
    bad.write_text("entity_id,event_timestamp\ncrm:1,2026-01-01\ncrm:2,yesterday\n")
    with pytest.raises(SpineError, match=r"spine\.csv: row 2: event_timestamp is not an ISO"):
        export_view(project, "customer_360", tmp_path / "x.csv", spine=bad)
    bad.write_text("entity,when\ncrm:1,2026-01-01\n")
    with pytest.raises(SpineError, match="no column 'entity_id', 'event_timestamp'"):
        export_view(project, "customer_360", tmp_path / "x.csv", spine=bad)
    assert not (tmp_path / "x.csv").exists()


def test_cli_export_writes_csv_and_jsonl(demo_dir: Path, tmp_path: Path) -> None:
    spine = tmp_path / "spine.csv"
    spine.write_text("entity_id,event_timestamp,churned\ncrm:1,2026-06-01T00:00:00,1\n")
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"out.{fmt}"
        result = CliRunner().invoke(
            main,
            [
                "export",
                "customer_360",
                "--spine",
                str(spine),
                "--out",
                str(out),
                "-c",
                str(demo_dir / "fabric.yaml"),
            ],
        )
        assert result.exit_code == 0, result.output
        text = out.read_text()
        assert "churned" in text and "order_count_90d" in text
    # --workers reaches the export: the same file from two worker processes.
    many = tmp_path / "many.csv"
    many.write_text(
        "entity_id,event_timestamp\n"
        + "".join(f"crm:{i},2026-0{1 + i % 9}-01T00:00:00\n" for i in range(1, 60))
    )
    files = {}
    for workers in ("1", "2"):
        files[workers] = tmp_path / f"many-{workers}.parquet"
        result = CliRunner().invoke(
            main,
            [
                "export",
                "customer_360",
                "--spine",
                str(many),
                "--out",
                str(files[workers]),
                "--workers",
                workers,
                "-c",
                str(demo_dir / "fabric.yaml"),
            ],
        )
        assert result.exit_code == 0, result.output
        manifest = json.loads(
            files[workers].with_name(files[workers].name + ".manifest.json").read_text()
        )
        assert manifest["workers"] == int(workers)
    assert files["1"].read_bytes() == files["2"].read_bytes()
    unknown = CliRunner().invoke(
        main,
        ["export", "nope", "--out", str(tmp_path / "n.csv"), "-c", str(demo_dir / "fabric.yaml")],
    )
    assert unknown.exit_code == 1 and "unknown feature view" in unknown.output


def test_small_chunks_and_partitions_give_the_same_file(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fabric.services.export as export

    ids = sorted(project.catalog.entities("customer"))
    keys = [ids[(i * 7) % len(ids)] for i in range(500)]
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": keys,
                "event_timestamp": [f"2026-{1 + i % 12:02d}-01T00:00:00" for i in range(500)],
            }
        ),
        spine,
    )
    whole = export_view(project, "customer_360", tmp_path / "whole.parquet", spine=spine)
    # Entities decoded seven at a time, rows read in batches of 64, many small partitions.
    monkeypatch.setattr(export, "_CHUNK_ENTITIES", 7)
    monkeypatch.setattr(export, "_BATCH", 64)
    monkeypatch.setattr(export, "_PARTITION_ROWS", 50)
    monkeypatch.setattr(export, "_KNOWN_KEYS", 100)  # keys forgotten and looked up again
    small = export_view(project, "customer_360", tmp_path / "small.parquet", spine=spine)
    assert whole.entities == small.entities == len(set(keys))
    assert pq.read_table(tmp_path / "whole.parquet").equals(
        pq.read_table(tmp_path / "small.parquet")
    )


def test_spine_times_in_any_iso_form_and_typed_columns(project: Project, tmp_path: Path) -> None:
    entity_id = sorted(project.catalog.entities("customer"))[0]
    # Zoned and unzoned times mixed: read row by row; the same instants, the same features.
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        "entity_id,event_timestamp\n"
        f"{entity_id},2026-03-01T12:00:00\n"
        f"{entity_id},2026-03-01T14:00:00+02:00\n"
        f"{entity_id}, 2026-03-01T12:00:00Z \n"
    )
    export_view(project, "customer_360", tmp_path / "mixed.parquet", spine=mixed)
    rows = pq.read_table(tmp_path / "mixed.parquet").drop_columns(["event_timestamp"]).to_pylist()
    assert rows[0] == rows[1] == rows[2]
    # A Parquet spine whose times are timestamps, not text; keys that are missing.
    typed = tmp_path / "typed.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [entity_id, None],
                "event_timestamp": pa.array(
                    [datetime(2026, 3, 1, 12), datetime(2026, 3, 1, 12)], pa.timestamp("ms")
                ),
            }
        ),
        typed,
    )
    report = export_view(project, "customer_360", tmp_path / "typed.parquet.out", spine=typed)
    out = pq.read_table(tmp_path / "typed.parquet.out").to_pylist()
    assert report.not_found == 1 and out[1]["found"] is False
    assert {k: v for k, v in out[0].items() if k != "event_timestamp"} == {
        k: v for k, v in rows[0].items() if k in out[0] and k != "event_timestamp"
    }


def test_a_bad_time_in_a_later_batch_names_its_row(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fabric.services.export as export

    monkeypatch.setattr(export, "_BATCH", 4)
    lines = ["entity_id,event_timestamp"] + ["crm:1,2026-01-01"] * 9 + ["crm:1,31/12/2026"]
    bad = tmp_path / "spine.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpineError, match=r"row 10: event_timestamp is not an ISO 8601 time"):
        export_view(project, "customer_360", tmp_path / "x.parquet", spine=bad)
    assert not (tmp_path / "x.parquet").exists() and not list(tmp_path.glob(".x.parquet*"))


def test_values_of_masked_columns_never_reach_a_masked_role(
    project: Project, tmp_path: Path
) -> None:
    from fabric.features.compute import compute, compute_many, entity_rows, micros
    from fabric.features.spec import load_views
    from fabric.rules.operators import MaskContext
    from fabric.services.features import mask_attributes, mask_columns, mask_plan

    views = tmp_path / "features.yaml"
    views.write_text(
        "views:\n  leaky:\n    entity: customer\n    features:\n"
        "      first_email: {min: crm_customers.email, timestamp: created_at, type: TEXT}\n"
        "      last_email: {last: crm_customers.email, timestamp: created_at, type: TEXT}\n"
        "      shout: {derive: 'upper(last_email)', type: TEXT}\n"
        "      country: {attribute: crm_customers.country, timestamp: created_at, type: TEXT}\n"
        "      loud_country: {derive: 'upper(country)', type: TEXT}\n"
    )
    schema = project.known_schema()
    assert schema is not None
    view = load_views(views, schema)["leaky"]
    entities = EntityService(project)
    ids = sorted(project.catalog.entities("customer"))[:30]
    analyst, steward = project.policy_for("analyst"), project.policy_for("steward")
    moment = datetime(2030, 1, 1)
    for entity_id in ids:
        doc = entities.document("customer", entity_id, role="steward")
        emails = {r["email"] for r in doc["tables"]["crm_customers"] if r["email"]}
        if not emails:
            continue
        tables = {name: list(rows) for name, rows in doc["tables"].items()}  # the clear rows
        ((_, clear),) = compute(view, tables, [moment])
        assert clear["first_email"] in emails and clear["shout"] is not None
        masked = dict(clear)
        mask_attributes(view, analyst, MaskContext("customer", entity_id), masked)
        assert masked["first_email"] not in emails and masked["last_email"] not in emails
        assert masked["shout"] is None  # derived from a masked value: withheld
        assert masked["loud_country"] == clear["loud_country"]  # country is kept for analysts
        unchanged = dict(clear)
        mask_attributes(view, steward, MaskContext("customer", entity_id), unchanged)
        assert unchanged == clear
        # The batch path masks alike.
        done = compute_many(view, [entity_rows(view, tables)], [0], [micros(moment)])
        mask_columns(
            mask_plan(view, analyst),
            [entity_id],
            done.columns,
            lambda e: MaskContext("customer", e),
        )
        assert done.vector(0)[1] == masked
        break
    else:
        pytest.fail("no entity with an email")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_past_its_byte_budget_stops_at_once_and_keeps_nothing(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    import fabric.services.export as export

    monkeypatch.setattr(export, "_BATCH", 64)
    ids = sorted(project.catalog.entities("customer"))
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [ids[i % len(ids)] for i in range(640)],
                "event_timestamp": ["2026-05-01T00:00:00"] * 640,
            }
        ),
        spine,
    )
    written: list[int] = []

    def progress(stage: str, advance: int, total: int | None) -> None:
        if stage == "export: writing":
            written.append(advance)

    out = tmp_path / f"out.{fmt}"
    with pytest.raises(BudgetExceededError) as raised:
        export_view(
            project, "customer_360", out, spine=spine, fmt=fmt, budget=4096, progress=progress
        )
    # Stopped after the batch that passed it, not after the whole file.
    assert raised.value.budget == 4096 and raised.value.written > 4096
    assert sum(written) < 640 and raised.value.written < 4096 + 64 * 1024
    assert "4,096 bytes" in str(raised.value)
    # Nothing half-written stays: neither the file nor its temporary.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spine.parquet"]
    # Within its budget, the same file as without one.
    export_view(project, "customer_360", out, spine=spine, fmt=fmt, budget=1 << 30)
    export_view(project, "customer_360", tmp_path / f"free.{fmt}", spine=spine, fmt=fmt)
    assert out.read_bytes() == (tmp_path / f"free.{fmt}").read_bytes()


def test_an_export_to_s3_equals_the_local_one_and_reads_its_spine_there(
    project: Project, tmp_path: Path, s3_env: SeaweedFS
) -> None:
    bucket = s3_env.make_bucket()
    ids = sorted(project.catalog.entities("customer"))[:30]
    spine = tmp_path / "spine.csv"
    spine.write_text(
        "entity_id,event_timestamp,label\n"
        + "".join(f"{e},2026-03-0{1 + i % 9}T00:00:00,{i}\n" for i, e in enumerate(ids))
    )
    local = export_view(project, "customer_360", tmp_path / "local.parquet", spine=spine)
    publish(spine, S3Url(bucket, "spines/spine.csv"))
    out = S3Url(bucket, "train/c360.parquet")
    remote = export_view(
        project, "customer_360", out, spine=S3Url(bucket, "spines/spine.csv"), workers=2
    )
    assert remote.out == out and remote.manifest == out.with_name("c360.parquet.manifest.json")
    assert (remote.rows, remote.entities) == (local.rows, local.entities) == (30, 30)
    fetched = fetch(out, tmp_path)
    assert fetched.read_bytes() == (tmp_path / "local.parquet").read_bytes()
    manifest = json.loads(fetch(remote.manifest, tmp_path).read_text())  # type: ignore[arg-type]
    local_manifest = json.loads((tmp_path / "local.parquet.manifest.json").read_text())
    assert manifest["out"] == str(out) and manifest["spine"] == f"s3://{bucket}/spines/spine.csv"
    assert manifest["spine_sha256"] == local_manifest["spine_sha256"]
    assert local_manifest["out"] == str(tmp_path / "local.parquet")
    # Only the three objects: nothing left in staging.
    assert set(s3_env.keys(bucket)) == {
        "spines/spine.csv",
        "train/c360.parquet",
        "train/c360.parquet.manifest.json",
    }
    with pytest.raises(SpineError, match=rf"s3://{bucket}/nope.csv: spine file not found"):
        export_view(project, "customer_360", out, spine=S3Url(bucket, "nope.csv"))


def test_cli_export_to_s3_fails_in_one_line_before_any_work(
    demo_dir: Path, s3_env: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_env.make_bucket()
    config = str(demo_dir / "fabric.yaml")
    out = f"s3://{bucket}/all.csv"
    ok = CliRunner().invoke(main, ["export", "customer_360", "--out", out, "-c", config])
    assert ok.exit_code == 0, ok.output
    assert f"to {out} in" in ok.output and f"manifest {out}.manifest.json" in ok.output
    assert (
        "order_count_90d"
        in s3_env.filesystem()
        .open_input_stream(  # type: ignore[attr-defined]
            f"{bucket}/all.csv"
        )
        .read(4096)
        .decode()
    )
    wrong = "wrong-secret-" + "y" * 24
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    refused = CliRunner().invoke(
        main, ["export", "customer_360", "--out", f"s3://{bucket}/b.csv", "-c", config]
    )
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.startswith(f"error: s3://{bucket}/b.csv: cannot look up: AWS Error")
    assert wrong not in refused.output and s3_env.secret not in refused.output
    assert "b.csv" not in s3_env.keys(bucket)
    bad = CliRunner().invoke(main, ["export", "customer_360", "--out", "s3://x/", "-c", config])
    assert bad.exit_code == 2 and "not a valid S3 bucket name" in bad.output


def test_a_volume_server_killed_during_an_export_leaves_no_partial_object(
    project: Project, tmp_path: Path
) -> None:
    with SeaweedFS() as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        bucket = server.make_bucket()
        local = export_view(project, "customer_360", tmp_path / "all.parquet")
        size = (tmp_path / "all.parquet").stat().st_size

        def kill_on_upload(stage: str, done: int, total: int | None) -> None:
            if stage == "export: uploading":
                server.kill("volume1")

        out = S3Url(bucket, "all.parquet")
        try:
            report = export_view(project, "customer_360", out, progress=kill_on_upload)
            assert report.rows == local.rows
        except ObjectStorageError as exc:
            assert str(out) in str(exc) or str(out.with_name("all.parquet.manifest.json")) in str(
                exc
            )
        keys = server.keys(bucket)
        assert keys.get("all.parquet", size) == size
        # The manifest is published after the file: never one without the other.
        assert "all.parquet.manifest.json" not in keys or "all.parquet" in keys
