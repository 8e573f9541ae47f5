"""Feature values are masked as strongly as documents: free text with the entity's names,
aggregates over columns a role does not see in clear withheld, one fake identity per name;
online and in exports alike."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from e2e_helpers import copy_demo_with_people_view, signed_names

from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.export import export_view
from fabric.services.features import FeatureService


@pytest.fixture(scope="module")
def project(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """A copy of the demo with a view of names, free text and payment amounts, and an
    analyst who sees amounts generalised to ranges of 100."""
    config = copy_demo_with_people_view(demo_dir, tmp_path_factory.mktemp("masked") / "demo")
    with Project.open(config) as opened:
        yield opened


def _signed(tickets: list[dict[str, Any]]) -> set[str]:
    return signed_names(tickets, shortest=3)


def _has_word(text: str, words: set[str]) -> bool:
    return any(re.search(rf"(?i)\b{re.escape(w)}\b", text) for w in words)


def test_free_text_features_hide_the_names_documents_hide(project: Project) -> None:
    entities = EntityService(project)
    features = FeatureService(project, entities)
    checked = 0
    for entity_id in sorted(project.catalog.entities("customer")):
        clear = entities.document("customer", entity_id, role="steward")["tables"]
        names = _signed(clear["support_tickets"])
        if not names:
            continue
        vector = features.vector("people", entity_id, role="analyst")["features"]
        assert vector["last_ticket"] is not None
        assert not _has_word(vector["last_ticket"], names), entity_id
        # The same text as the document shows for that ticket.
        masked = entities.document("customer", entity_id, role="analyst")["tables"]
        assert vector["last_ticket"] in {row["body"] for row in masked["support_tickets"]}
        checked += 1
    assert checked >= 50


def test_sums_and_averages_over_a_generalised_column_are_withheld(project: Project) -> None:
    entities = EntityService(project)
    features = FeatureService(project, entities)
    checked = 0
    for entity_id in sorted(project.catalog.entities("customer"))[:80]:
        payments = entities.document("customer", entity_id, role="steward")["tables"][
            "billing_payments"
        ]
        for payment in payments[:2]:
            # Just past one payment: a 7-day sum would be that payment's exact amount.
            as_of = (datetime.fromisoformat(payment["paid_at"]) + timedelta(seconds=1)).isoformat()
            clear = features.vector("people", entity_id, as_of=as_of, role="steward")["features"]
            masked = features.vector("people", entity_id, as_of=as_of, role="analyst")["features"]
            assert clear["paid_7d"] is not None and clear["payments_7d"] >= 1
            assert masked["paid_7d"] is None and masked["avg_paid_7d"] is None
            assert masked["twice_paid"] is None  # derived from a withheld feature
            assert masked["payments_7d"] == clear["payments_7d"]  # a count of rows passes
            low = int(clear["max_paid_7d"] // 100 * 100)
            assert masked["max_paid_7d"] == f"{low}-{low + 100}"  # shown as the column is
            checked += 1
    assert checked >= 40


def _fake_identity(values: dict[str, Any], clear: dict[str, Any]) -> None:
    """Where the billing holder is the CRM person, the fakes are one person too."""
    holder, first, last = clear["holder"], clear["first_name"], clear["last_name"]
    if not (holder and first and last) or "," not in holder:
        return
    real_last, _, real_first = holder.partition(",")
    if (real_first.strip().casefold(), real_last.strip().casefold()) != (
        first.casefold(),
        last.casefold(),
    ):
        return
    fake_last, _, fake_first = values["holder"].partition(",")
    assert fake_first.strip().casefold() == values["first_name"].casefold()
    assert fake_last.strip().casefold() == values["last_name"].casefold()
    assert values["first_name"].casefold() != first.casefold()


def test_exports_mask_features_as_the_api_does(project: Project, tmp_path: Path) -> None:
    entities = EntityService(project)
    ids = sorted(project.catalog.entities("customer"))
    spine_rows = [(entity_id, "2031-01-01T00:00:00") for entity_id in ids]
    for entity_id in ids[:60]:
        for payment in entities.document("customer", entity_id, role="steward")["tables"][
            "billing_payments"
        ][:1]:
            moment = datetime.fromisoformat(payment["paid_at"]) + timedelta(seconds=1)
            spine_rows.append((entity_id, moment.isoformat()))
    spine = tmp_path / "spine.parquet"
    pq.write_table(
        pa.table(
            {
                "entity_id": [e for e, _ in spine_rows],
                "event_timestamp": [t for _, t in spine_rows],
            }
        ),
        spine,
    )
    masked_file, clear_file = tmp_path / "analyst.parquet", tmp_path / "steward.parquet"
    export_view(project, "people", masked_file, spine=spine, role="analyst")
    export_view(project, "people", clear_file, spine=spine, role="steward")
    masked, clear = pq.read_table(masked_file).to_pylist(), pq.read_table(clear_file).to_pylist()
    identities = 0
    for (entity_id, _), row, clear_row in zip(spine_rows, masked, clear, strict=True):
        assert row["paid_7d"] is None and row["avg_paid_7d"] is None
        if row["last_ticket"] is not None:
            tickets = entities.document("customer", entity_id, role="steward")["tables"][
                "support_tickets"
            ]
            assert not _has_word(row["last_ticket"], _signed(tickets)), entity_id
        _fake_identity(row, clear_row)
        identities += bool(clear_row["holder"] and clear_row["first_name"])
    assert any(r["paid_7d"] is not None for r in clear)
    assert identities >= 20


def test_features_over_times_a_role_does_not_see_are_withheld(
    demo_dir: Path, tmp_path: Path
) -> None:
    """Asked as of times a caller picks, a count over date-shifted orders would tell when each
    order was (a binary search over as_of): withheld, with ``existed``."""
    root = tmp_path / "demo"
    shutil.copytree(demo_dir, root)
    masking = root / "rules" / "masking.yaml"
    kept = "        ordered_at: {op: keep}\n"
    assert kept in masking.read_text()
    masking.write_text(masking.read_text().replace(kept, "        ordered_at: {op: date_shift}\n"))
    with Project.open(root / "fabric.yaml") as opened:
        features = FeatureService(opened)
        entity_id = sorted(opened.catalog.entities("customer"))[0]
        for as_of in (None, "2026-06-01T00:00:00Z"):
            clear = features.vector("customer_360", entity_id, as_of=as_of, role="steward")
            masked = features.vector("customer_360", entity_id, as_of=as_of, role="analyst")
            assert isinstance(clear["existed"], bool) and masked["existed"] is None
            for name in ("order_count_90d", "order_total_90d", "days_since_last_order"):
                assert masked["features"][name] is None, name
            # Times the analyst sees in clear still count.
            assert masked["features"]["ticket_count_30d"] == clear["features"]["ticket_count_30d"]
            batch = features.vectors("customer_360", [entity_id], as_of=as_of, role="analyst")
            assert batch["vectors"][0]["existed"] is None
            assert batch["vectors"][0]["features"]["order_count_90d"] is None
        # Exports alike.
        export_view(opened, "customer_360", tmp_path / "a.parquet", role="analyst")
        export_view(opened, "customer_360", tmp_path / "s.parquet", role="steward")
        masked_rows = pq.read_table(tmp_path / "a.parquet").to_pylist()
        clear_rows = pq.read_table(tmp_path / "s.parquet").to_pylist()
        assert all(r["existed"] is None and r["order_count_90d"] is None for r in masked_rows)
        assert any(r["existed"] for r in clear_rows)
        assert any(r["order_count_90d"] for r in clear_rows)
