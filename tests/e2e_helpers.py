"""Helpers shared by end-to-end tests: ground truth and source rows of a generated project."""

from __future__ import annotations

import csv
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

#: (system, table) -> entity table of the demo customer
DEMO_TABLES = {
    ("crm", "customers"): "crm_customers",
    ("billing", "accounts"): "billing_accounts",
    ("billing", "payments"): "billing_payments",
    ("shop", "orders"): "shop_orders",
    ("shop", "order_items"): "shop_order_items",
    ("support", "tickets"): "support_tickets",
}
IDENTITY = {("crm", "customers"), ("billing", "accounts"), ("support", "tickets")}


def ground_truth(sources: Path) -> dict[int, set[tuple[str, str, int]]]:
    """person id -> {(system, table, record id)}."""
    people: dict[int, set[tuple[str, str, int]]] = defaultdict(set)
    with (sources / "ground_truth.csv").open() as handle:
        for row in csv.DictReader(handle):
            people[int(row["person_id"])].add((row["source"], row["table"], int(row["record_id"])))
    return people


def source_emails(sources: Path) -> dict[tuple[str, str, int], str]:
    """(system, table, id) -> normalised email, for every identity record."""
    out = {}
    for system, table in IDENTITY:
        with sqlite3.connect(f"file:{sources / (system + '.db')}?mode=ro", uri=True) as conn:
            for rid, email in conn.execute(f"SELECT id, email FROM {table}"):
                out[(system, table, int(rid))] = (email or "").strip().casefold()
    return out


def cleanly_linkable_people(sources: Path) -> list[tuple[int, set[tuple[str, str, int]]]]:
    """People seen in several systems whose identity records share one email no one else has.

    For them, the first resolution slice (same normalised email) must find exactly their
    records: nothing missing, nothing foreign.
    """
    people = ground_truth(sources)
    emails = source_emails(sources)
    owners: dict[str, set[int]] = defaultdict(set)
    for pid, records in people.items():
        for rec in records:
            if rec in emails:
                owners[emails[rec]].add(pid)
    chosen = []
    for pid, records in sorted(people.items()):
        ident = {emails[r] for r in records if r in emails}
        systems = {r[0] for r in records}
        in_crm = any(r[:2] == ("crm", "customers") for r in records)
        if in_crm and len(ident) == 1 and len(systems) >= 3 and owners[next(iter(ident))] == {pid}:
            chosen.append((pid, records))
    return chosen


def clear_tables(config: Path) -> dict[str, Any]:
    """Every customer entity's tables as the clear role reads them (versions, times aside)."""
    from fabric.entities import EntityService
    from fabric.project import Project

    with Project.open(config) as project:
        service = EntityService(project)
        return {
            entity_id: service.document("customer", entity_id, role="steward")["tables"]
            for entity_id in sorted(project.catalog.entities("customer"))
        }
