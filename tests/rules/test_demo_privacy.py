"""No raw personal value of the demo sources reaches the default role: every field of every
entity is scanned, free text included."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from e2e_helpers import signed_names

from fabric.project import Project
from fabric.services.entities import EntityService

#: Columns whose values are personal, per source table; names are checked per entity (a fake
#: name may be someone else's real one), the rest against every value of the sources.
GLOBAL = {
    ("crm.db", "customers"): ("email", "phone", "street"),
    ("billing.db", "accounts"): ("email", "phone", "card_number", "iban"),
    ("support.db", "tickets"): ("email",),
}
NAME_COLUMNS = {"first_name", "last_name", "holder_name"}


def _source_values(sources: Path) -> set[str]:
    found: set[str] = set()
    for (db, table), columns in GLOBAL.items():
        with sqlite3.connect(sources / db) as conn:
            for row in conn.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                found.update(str(v).strip() for v in row if v is not None and len(str(v)) >= 7)
    return found


def _fields(document: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[str]:
    return [
        str(value)
        for rows in document["tables"].values()
        for row in rows
        for column, value in row.items()
        if value is not None and column not in skip
    ]


#: Free text: checked whatever the policy does with it.
FREE_TEXT = frozenset({"body", "subject"})


def test_the_default_role_sees_no_raw_personal_value(demo_dir: Path) -> None:
    secrets = _source_values(demo_dir / "sources")
    assert len(secrets) > 1000
    checked = 0
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        for entity_id in sorted(project.catalog.entities("customer")):
            clear = service.document("customer", entity_id, role="steward")
            masked = service.document("customer", entity_id)  # no role: the default one
            fields = _fields(masked)
            text = "\n".join(fields)
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{entity_id}: {len(leaked)} source values in the masked entity"
            own_names = {
                word
                for rows in clear["tables"].values()
                for row in rows
                for column, value in row.items()
                if column in NAME_COLUMNS and isinstance(value, str)
                for word in re.findall(r"[^\W\d_]{4,}", value)
            } | signed_names(clear["tables"]["support_tickets"])
            births = {
                str(row["birth_date"])
                for row in clear["tables"]["crm_customers"]
                if row.get("birth_date")
            }
            # A value the policy keeps as it is (a city named "South Jessica") is no leak of a
            # name, and the source scan above covers every kept field; free text is always
            # checked. Base64 may spell anything: tokens carry no text of their value.
            kept = set(_fields(clear, FREE_TEXT)) & set(fields)
            for field in fields:
                if field.startswith("tok_") or field in kept:
                    continue
                for name in own_names:
                    assert not re.search(rf"(?i)\b{re.escape(name)}\b", field), (
                        f"{entity_id}: its own name is readable in a masked field"
                    )
                assert not any(b in field for b in births), f"{entity_id}: a birth date"
            checked += len(fields)
    assert checked > 10_000


def test_tickets_of_entities_without_a_name_column_hide_their_names(demo_dir: Path) -> None:
    """A customer known only from support tickets has no name column: its names come from
    what resolution knows (the signature, the email's user part)."""
    ticket_only = 0
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        for entity_id in sorted(project.catalog.entities("customer")):
            clear = service.document("customer", entity_id, role="steward")
            if clear["tables"]["crm_customers"] or clear["tables"]["billing_accounts"]:
                continue
            ticket_only += 1
            masked = service.document("customer", entity_id, role="analyst")
            names = signed_names(clear["tables"]["support_tickets"])
            assert names, f"{entity_id}: the generator signs every ticket"
            for row in masked["tables"]["support_tickets"]:
                for name in names:
                    assert not re.search(rf"(?i)\b{re.escape(name)}\b", row["body"]), (
                        f"{entity_id}: a name it signs with is readable in a masked ticket"
                    )
    assert ticket_only >= 5


def _name_words(column: str, value: str) -> list[tuple[str, str]]:
    """(part, word) of each word of a name: a first or a last name's (a family name comes
    before a comma, else last)."""
    if column != "holder_name":
        return [(column, w) for w in value.split()]
    if "," in value:
        last, _, first = value.partition(",")
        return [("last_name", w) for w in last.split()] + [("first_name", w) for w in first.split()]
    words = value.split()
    return [("first_name", w) for w in words[:-1]] + [("last_name", words[-1])]


def test_one_person_has_one_fake_identity_in_every_table(demo_dir: Path) -> None:
    """A real name maps to one fake wherever it is written: split into first and last name
    (CRM) or whole as "LAST, First" (billing): an analyst sees one person, not two."""
    compared = 0
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        for entity_id in sorted(project.catalog.entities("customer")):
            clear = service.document("customer", entity_id, role="steward")["tables"]
            masked = service.document("customer", entity_id, role="analyst")["tables"]
            fakes: dict[tuple[str, str], set[str]] = {}
            for table, columns in (
                ("crm_customers", ("first_name", "last_name")),
                ("billing_accounts", ("holder_name",)),
            ):
                for clear_row, masked_row in zip(clear[table], masked[table], strict=True):
                    for column in columns:
                        if not clear_row[column]:
                            continue
                        pairs = zip(
                            _name_words(column, clear_row[column]),
                            _name_words(column, masked_row[column]),
                            strict=True,
                        )
                        for (part, real), (_, fake) in pairs:
                            fakes.setdefault((part, real.casefold()), set()).add(fake.casefold())
            for (_, real), seen in fakes.items():
                assert len(seen) == 1, f"{entity_id}: one name, {len(seen)} fakes"
                assert real not in seen
            compared += sum(
                1
                for row in clear["billing_accounts"]
                if row["holder_name"]
                and any(
                    w.casefold() in (r["first_name"] or "").casefold()
                    for r in clear["crm_customers"]
                    for w in row["holder_name"].replace(",", " ").split()
                )
            )
    assert compared >= 20  # entities whose billing holder shares a name with their CRM record
