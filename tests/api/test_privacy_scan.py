"""A PII scan of everything the least-privileged key can reach over HTTP.

For every entity of a demo: its document by id and by each of its source keys, its lineage,
its feature vectors one by one and in batches at several times (including views that show
names, free text and sums of amounts), its rows of an export, and the catalog. None may hold
a source email, phone number, card number, IBAN, street or name word of that entity, in any
spelling (digits with other separators, IBANs without spaces, names in any case).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from e2e_helpers import copy_demo_with_people_view, signed_names, wait_for_export
from litestar import Litestar
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.project import Project

#: Times the vectors are asked at: before most data, mid-way, and now.
AS_OF = ("2025-01-01T00:00:00Z", "2026-06-01T00:00:00Z", None)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DIGIT_RUN = re.compile(r"\+?\d[\d\s().\-/]{5,}\d")
_NAME_COLUMNS = ("first_name", "last_name", "holder_name")


class Secrets:
    """What an entity's sources know of it that the analyst must never read."""

    def __init__(self, clear: dict[str, Any], kept: set[str]) -> None:
        tables = clear["tables"]
        rows = [row for table in tables.values() for row in table]
        bodies = [row["body"] or "" for row in tables["support_tickets"]]
        self.exact = {
            str(row[c]).strip().casefold()
            for row in rows
            for c in ("email", "street")
            if row.get(c) and len(str(row[c]).strip()) >= 5
        } | {e.casefold() for body in bodies for e in _EMAIL.findall(body)}
        numbers = [str(row[c]) for row in rows for c in ("phone", "card_number") if row.get(c)]
        numbers += [m for body in bodies for m in _DIGIT_RUN.findall(body)]
        # A phone's national number (its last 10 digits); a card's 16.
        self.digits = {re.sub(r"\D", "", n)[-10:] for n in numbers}
        self.digits = {d for d in self.digits if len(d) >= 9}
        self.ibans = {re.sub(r"\W", "", row["iban"]).upper() for row in rows if row.get("iban")}
        self.names = {
            word.casefold()
            for row in rows
            for column in _NAME_COLUMNS
            if isinstance(row.get(column), str)
            for word in re.findall(r"[^\W\d_]{4,}", row[column])
        } | {w.casefold() for w in signed_names(tables["support_tickets"])}
        #: values the analyst sees as they are (a city, an order status): a name word in
        #: them is not a leak of the name
        self.kept = kept

    def leaks(self, strings: list[str]) -> list[str]:
        """What of these strings gives away a secret (a description, never the value)."""
        found = []
        for text in strings:
            folded = text.casefold()
            if any(secret in folded for secret in self.exact):
                found.append("an email or street")
            for run in _DIGIT_RUN.findall(text):
                digits = re.sub(r"\D", "", run)
                if any(d in digits for d in self.digits):
                    found.append("a phone or card number")
            compact = re.sub(r"\W", "", text).upper()
            if any(iban in compact for iban in self.ibans):
                found.append("an IBAN")
            if text in self.kept or text.startswith(("tok_", "key_")):
                continue
            for word in re.findall(r"[^\W\d_]+", folded):
                if word in self.names:
                    found.append("a name")
        return found


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def kept_values(clear: dict[str, Any], project: Project) -> set[str]:
    policy = project.policy_for("analyst")
    return {
        str(value)
        for table, rows in clear["tables"].items()
        for row in rows
        for column, value in row.items()
        if value is not None and policy.op_of("customer", table, column) == "keep"
    }


@pytest.fixture(scope="module")
def served(
    demo_dir: Path, demo_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient[Litestar], Project]]:
    config = copy_demo_with_people_view(demo_dir, tmp_path_factory.mktemp("scan") / "demo")
    project = Project.open(config)
    with TestClient(app=create_app(Project.open(config))) as client:
        yield client, project
    project.close()


def _export_rows(client: TestClient[Litestar], key: dict[str, str], ids: list[str]) -> list[Any]:
    lines = ["entity_id,event_timestamp"]
    lines += [f"{e},{t or '2031-01-01T00:00:00Z'}" for e in ids for t in AS_OF]
    upload = client.post(
        "/v1/exports/spines",
        content="\n".join(lines).encode() + b"\n",
        headers={**key, "Content-Type": "text/csv"},
    )
    assert upload.status_code == 201, upload.text
    rows: list[Any] = []
    for view in ("customer_360", "people"):
        started = client.post(
            "/v1/exports", json={"view": view, "spine": upload.json()["spine"]}, headers=key
        )
        assert started.status_code == 202, started.text
        job = started.json()["job"]
        status = wait_for_export(client, job, key["Authorization"].removeprefix("Bearer "))
        assert status["state"] == "succeeded", status
        got = client.get(f"/v1/exports/{job}/file", headers=key)
        assert got.status_code == 200
        rows.extend(pq.read_table(io.BytesIO(got.content)).to_pylist())
    return rows


@pytest.mark.slow
def test_nothing_the_analyst_reaches_holds_a_personal_value(
    served: tuple[TestClient[Litestar], Project], demo_keys: dict[str, str]
) -> None:
    client, project = served
    analyst = {"Authorization": f"Bearer {demo_keys['analyst-demo']}"}
    steward = {"Authorization": f"Bearer {demo_keys['steward-demo']}"}
    ids = sorted(project.catalog.entities("customer"))
    exported: dict[str, list[str]] = {}
    for row in _export_rows(client, analyst, ids):
        exported.setdefault(row["entity_id"], []).extend(strings(row))
    every: list[Secrets] = []
    seen_in_clear: set[str] = set()
    reads = 0
    for entity_id in ids:
        clear = client.get(f"/v1/entities/customer/{entity_id}", headers=steward).json()
        secrets = Secrets(clear, kept_values(clear, project))
        every.append(secrets)
        # The scan can fail: the clear view gives away what it looks for.
        seen_in_clear.update(Secrets(clear, set()).leaks(strings(clear)))
        answers = [client.get(f"/v1/entities/customer/{entity_id}", headers=analyst)]
        answers.append(client.get(f"/v1/entities/customer/{entity_id}/lineage", headers=analyst))
        for table, source in (
            ("crm_customers", "crm"),
            ("billing_accounts", "billing.accounts"),
            ("support_tickets", "support"),
        ):
            for row in clear["tables"][table]:
                answers.append(
                    client.get(
                        "/v1/entities/customer",
                        params={"source": source, "key": str(row["id"])},
                        headers=analyst,
                    )
                )
        for view in ("customer_360", "people"):
            for as_of in AS_OF:
                params = {} if as_of is None else {"as_of": as_of}
                answers.append(
                    client.get(f"/v1/features/{view}/{entity_id}", params=params, headers=analyst)
                )
        for answer in answers:
            assert answer.status_code == 200, answer.text
        found = [s for answer in answers for s in strings(answer.json())]
        found += exported.get(entity_id, [])
        leaks = secrets.leaks(found)
        assert not leaks, f"{entity_id}: the analyst reads {sorted(set(leaks))}"
        reads += len(answers)
    # Batches of many entities at once, at each time, in both layouts.
    for view in ("customer_360", "people"):
        for as_of in AS_OF:
            for layout in ("rows", "columns"):
                batch = client.post(
                    f"/v1/features/{view}",
                    json={"ids": ids, "as_of": as_of, "layout": layout},
                    headers=analyst,
                )
                assert batch.status_code == 200, batch.text
                body = batch.json()
                if layout == "rows":
                    for vector in body["vectors"]:
                        secrets = every[ids.index(vector["entity_id"])]
                        assert not secrets.leaks(strings(vector)), vector["entity_id"]
                else:
                    for at, entity_id in enumerate(body["entity_ids"]):
                        values = [v[at] for v in body["features"].values()]
                        assert not every[ids.index(entity_id)].leaks(strings(values)), entity_id
    catalog = client.get("/v1/catalog", headers=analyst)
    assert catalog.status_code == 200
    text = strings(catalog.json())
    for secrets in every:
        secrets.kept = set()
        assert not secrets.leaks(text)
    assert reads > 10 * len(ids) and len(exported) == len(ids)
    assert seen_in_clear == {"an email or street", "a phone or card number", "an IBAN", "a name"}
    assert json.dumps(catalog.json())  # a plain JSON document
