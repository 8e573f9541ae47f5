"""No raw personal value of the demo sources reaches the default role: every field of every
entity is scanned, free text included."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from fabric.entities import EntityService
from fabric.project import Project

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
            }
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
