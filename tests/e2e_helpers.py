"""Helpers shared by end-to-end tests: ground truth and source rows of a generated project."""

from __future__ import annotations

import contextlib
import csv
import logging
import re
import shutil
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

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
    from fabric.project import Project
    from fabric.services.entities import EntityService

    with Project.open(config) as project:
        service = EntityService(project)
        return {
            entity_id: service.document("customer", entity_id, role="steward")["tables"]
            for entity_id in sorted(project.catalog.entities("customer"))
        }


def stored_entities(config: Path) -> dict[str, Any]:
    """Every customer entity as stored, decrypted: its version, each table's rows and its
    lineage, with the times and run ids of this store's own syncs left out."""
    from fabric.project import Project
    from fabric.store.microdb import MicroDbReader

    reader = MicroDbReader()
    out: dict[str, Any] = {}
    with Project.open(config) as project:
        layout = project.catalog.schemas()["customer"]
        ids = sorted(project.catalog.entities("customer"))
        for entity_id, blob in project.store.get_many("customer", ids).items():
            image = project.codec.decode(blob.blob, "customer", entity_id, blob.version)
            rows, lineage = reader.contents(image, layout)
            # (table, key, source, source table, source key, extracted at, sync run)
            out[entity_id] = (blob.version, rows, sorted(tuple(r[:5]) for r in lineage))
    return out


#: How the generator names the writer of a ticket and signs it (fabric.sources._people.
#: ticket_text): the names of a customer known only from support, which has no name column.
SIGNED = re.compile(
    r"(?:My name is |Thanks,\n|Regards,\n|-- |Thank you!\n|Best, )"
    r"([^\W\d_][\w'-]*) ([^\W\d_][\w'-]*)"
)


def signed_names(tickets: list[dict[str, Any]], shortest: int = 4) -> set[str]:
    """The name words (``shortest`` letters or more) tickets are signed with."""
    return {
        word
        for row in tickets
        for match in SIGNED.finditer(row["body"] or "")
        for word in match.groups()
        if len(word) >= shortest
    }


#: A feature view of the demo's customers that shows personal values (free text, names) and
#: sums payment amounts: appended to a copy's rules/features.yaml by privacy tests.
PEOPLE_VIEW = """
  people:
    entity: customer
    version: 1
    features:
      last_ticket:   {last: support_tickets.body, timestamp: opened_at, type: TEXT}
      first_name:    {attribute: crm_customers.first_name, timestamp: created_at, type: TEXT}
      last_name:     {attribute: crm_customers.last_name, timestamp: created_at, type: TEXT}
      holder:        {attribute: billing_accounts.holder_name, timestamp: created_at, type: TEXT}
      email:         {attribute: billing_accounts.email, timestamp: created_at, type: TEXT}
      card:          {attribute: billing_accounts.card_number, timestamp: created_at, type: TEXT}
      paid_7d:       {sum: billing_payments.amount, timestamp: paid_at, window: 7d, type: REAL}
      avg_paid_7d:   {avg: billing_payments.amount, timestamp: paid_at, window: 7d, type: REAL}
      max_paid_7d:   {max: billing_payments.amount, timestamp: paid_at, window: 7d, type: REAL}
      payments_7d:   {count: billing_payments, timestamp: paid_at, window: 7d, type: INTEGER}
      twice_paid:    {derive: "paid_7d * 2", type: REAL}
"""


def copy_demo_with_people_view(demo: Path, root: Path) -> Path:
    """A copy of a synced demo with :data:`PEOPLE_VIEW`, and an analyst who sees payment
    amounts generalised to ranges of 100; its fabric.yaml."""
    shutil.copytree(demo, root)
    features = root / "rules" / "features.yaml"
    features.write_text(features.read_text() + PEOPLE_VIEW)
    masking = root / "rules" / "masking.yaml"
    text = masking.read_text()
    kept = "        amount:     {op: keep}\n"
    assert kept in text
    masking.write_text(
        text.replace(kept, "        amount:     {op: generalize, to: range, size: 100}\n")
    )
    return root / "fabric.yaml"


@contextlib.contextmanager
def caught_logs(*names: str) -> Iterator[list[str]]:
    """The messages these loggers write at INFO and above while the block runs, caught at
    the loggers themselves (the app's logging configuration replaces the root logger's
    handlers, pytest's among them)."""

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    handler = Lines()
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def wait_for_export(client: Any, job: str, key: str) -> dict[str, Any]:
    """An export job's status once it succeeded or failed (a test client, a key)."""
    for _ in range(600):
        status: dict[str, Any] = client.get(
            f"/v1/exports/{job}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        if status["state"] in ("succeeded", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError("the export did not finish")


def assert_processes_end(processes: list[psutil.Process], what: str, timeout: float = 15) -> None:
    """Wait up to ``timeout`` seconds for ``processes`` to end; kill those that did not and
    fail, naming them by pid (a killed process has no command line left to show)."""
    _, outlived = psutil.wait_procs(processes, timeout=timeout)
    for process in outlived:
        process.kill()
    assert not outlived, f"{what}: {[process.pid for process in outlived]}"
