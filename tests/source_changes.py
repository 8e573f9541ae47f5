"""Changes to the demo's sources that an incremental sync must pick up (shared by tests)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

LATER = "2026-11-20 10:00:00.000000"


def execute(db: Path, *statements: str) -> None:
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)


def change_sources(sources: Path) -> None:
    """About 1% of rows: new, updated and moved records, new orders and tickets."""
    execute(
        sources / "crm.db",
        # a new CRM record for the holder of billing account 3 (same email)
        "INSERT INTO customers SELECT 100000, first_name, last_name, email, phone, birth_date,"
        " street, city, zip, country, created_at, '" + LATER + "' FROM customers WHERE id = 1",
        f"UPDATE customers SET city = 'Elsewhere', updated_at = '{LATER}' WHERE id = 2",
    )
    execute(
        sources / "shop.db",
        "INSERT INTO orders SELECT 100000, account_id, 12.5, 'placed', ordered_at FROM orders "
        "WHERE id = (SELECT min(id) FROM orders)",
    )
    execute(
        sources / "support.db",
        "INSERT INTO tickets SELECT 100000, email, subject, body, channel, opened_at, NULL "
        "FROM tickets WHERE id = 1",
    )
