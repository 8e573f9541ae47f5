"""Change demo sources the way their systems would, for the incremental sync benchmark.

Updates reformat a column of some rows (email case, phone style, IBAN grouping) and move their
``updated_at`` watermark; inserts copy existing rows under new ids above the maximum, so the
new rows land in entities that already exist. :func:`change_sources` changes a share of every
table's rows; :func:`change_entities` a number of entities, through their crm.customers rows.
Writes go through the standard library's sqlite3, like a foreign application would.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from fabric.sources.generate import GeneratedTable
from fabric.store.sqlite import quote_ident

__all__ = [
    "ENTITY_TABLE",
    "EntityChange",
    "SourceChange",
    "change_entities",
    "change_sources",
    "source_path",
]

#: Tables updated in place (watermark updated_at) -> columns a change may reformat; the
#: first is tried first, others when it is NULL. None of them changes who a record is.
_UPDATED: dict[tuple[str, str], tuple[str, ...]] = {
    ("crm", "customers"): ("city", "email", "phone"),
    ("billing", "accounts"): ("email", "phone", "iban"),
}
#: The table an entity round changes: every customer entity it picks has rows there.
ENTITY_TABLE = ("crm", "customers")
#: Tables that only grow (watermark id): a change inserts copies of existing rows.
_INSERTED = frozenset(
    {("billing", "payments"), ("shop", "orders"), ("shop", "order_items"), ("support", "tickets")}
)
#: How SQLAlchemy stores a DateTime in SQLite; the watermark compares these strings.
_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_PHONE_STYLES = ("({a}) {e}-{l}", "+1 {a} {e} {l}", "{a}.{e}.{l}", "{a}-{e}-{l}")


@dataclass(frozen=True)
class SourceChange:
    """What one round changed in the sources: rows per ``system.table``."""

    updated: dict[str, int]
    inserted: dict[str, int]

    @property
    def rows(self) -> int:
        """Rows changed in all tables."""
        return sum(self.updated.values()) + sum(self.inserted.values())


@dataclass(frozen=True)
class EntityChange:
    """What one entity round changed: how many entities, through how many of their rows."""

    entities: int
    rows: int


def source_path(table: GeneratedTable) -> Path:
    """The SQLite file a generated table was written to."""
    url = make_url(table.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise SystemExit(
            f"the benchmark reads SQLite source files only, got {url.get_backend_name()}"
        )
    return Path(url.database)


def _recase(value: str, rng: random.Random) -> str:
    """Upper-case a value, or lower-case one that already is (email case, city spelling)."""
    return value.upper() if value != value.upper() else value.lower()


def _regroup(value: str, rng: random.Random) -> str:
    """Write an IBAN in groups of four, or without spaces when it already has them."""
    if " " in value:
        return value.replace(" ", "")
    return " ".join(value[at : at + 4] for at in range(0, len(value), 4))


def _reformat_phone(value: str, rng: random.Random) -> str:
    """Write the same US phone number in another style; unchanged when it is not one."""
    digits = re.sub(r"\D", "", value)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return value
    styles = list(_PHONE_STYLES)
    rng.shuffle(styles)
    for style in styles:
        text = style.format(a=digits[:3], e=digits[3:6], l=digits[6:])
        if text != value:
            return text
    return value  # pragma: no cover - the styles differ from each other


_REFORMAT: dict[str, Callable[[str, random.Random], str]] = {
    "phone": _reformat_phone,
    "iban": _regroup,
}


def _update_rows(
    conn: sqlite3.Connection, name: str, columns: Sequence[str], count: int, rng: random.Random
) -> int:
    """Reformat one column of ``count`` random rows and move their updated_at past the newest."""
    ids = [int(r[0]) for r in conn.execute(f"SELECT id FROM {quote_ident(name)}")]
    chosen = sorted(rng.sample(ids, min(count, len(ids))))
    _rewrite(conn, name, columns, chosen, rng)
    return len(chosen)


def _rewrite(
    conn: sqlite3.Connection,
    name: str,
    columns: Sequence[str],
    chosen: Sequence[int],
    rng: random.Random,
) -> None:
    """Reformat one column of the rows ``chosen`` and move their updated_at past the newest.

    The first of ``columns`` that is not NULL and that the reformat changes is rewritten.
    Each row gets its own timestamp, one second apart, so the rows sort as they were written.
    """
    table = quote_ident(name)
    (newest,) = conn.execute(f"SELECT max(updated_at) FROM {table}").fetchone()
    stamp = datetime.fromisoformat(str(newest))
    listed = ", ".join(quote_ident(c) for c in columns)
    updates: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for step, row_id in enumerate(chosen, 1):
        values = conn.execute(f"SELECT {listed} FROM {table} WHERE id = ?", (row_id,)).fetchone()
        written = (stamp + timedelta(seconds=step)).strftime(_STAMP_FORMAT)
        for column, value in zip(columns, values, strict=True):
            if value is None:
                continue
            changed = _REFORMAT.get(column, _recase)(str(value), rng)
            if changed != value:
                updates[column].append((changed, written, row_id))
                break
        else:
            # Nothing to reformat: the row still changes its watermark, as a touch would.
            updates["updated_at"].append((written, written, row_id))
    for column, rows in updates.items():
        conn.executemany(
            f"UPDATE {table} SET {quote_ident(column)} = ?, updated_at = ? WHERE id = ?", rows
        )


def _insert_copies(conn: sqlite3.Connection, name: str, count: int, rng: random.Random) -> int:
    """Insert copies of ``count`` random rows with new ids above the maximum.

    Every other column is copied, parent keys (account_id, order_id) and ticket emails too,
    so the new rows belong to entities that already exist.
    """
    table = quote_ident(name)
    columns = [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
    ids = [int(r[0]) for r in conn.execute(f"SELECT id FROM {table}")]
    chosen = sorted(rng.sample(ids, min(count, len(ids))))
    listed = ", ".join(quote_ident(c) for c in columns)
    conn.executemany(
        f"INSERT INTO {table} (id, {listed}) SELECT ?, {listed} FROM {table} WHERE id = ?",
        [(new_id, old_id) for new_id, old_id in enumerate(chosen, max(ids) + 1)],
    )
    return len(chosen)


def change_sources(
    tables: Sequence[GeneratedTable], rng: random.Random, fraction: float
) -> SourceChange:
    """Change ``fraction`` of the rows of every demo table, as its source system would.

    Writes through the standard library's sqlite3, like a foreign application: apsw
    connections here would switch the source files to WAL, which fabric's read-only
    source connections would then have to cope with.
    """
    updated: dict[str, int] = {}
    inserted: dict[str, int] = {}
    for table in tables:
        key = (table.system, table.table)
        if key not in _UPDATED and key not in _INSERTED:
            continue
        # Of the generated count, so every round changes as many rows.
        count = max(1, round(table.rows * fraction))
        with closing(sqlite3.connect(source_path(table))) as conn, conn:
            label = f"{table.system}.{table.table}"
            if key in _UPDATED:
                updated[label] = _update_rows(conn, table.name, _UPDATED[key], count, rng)
            else:
                inserted[label] = _insert_copies(conn, table.name, count, rng)
    return SourceChange(updated, inserted)


def change_entities(
    tables: Sequence[GeneratedTable],
    members: Mapping[str, Collection[str]],
    rng: random.Random,
    count: int,
) -> EntityChange:
    """Update the ``ENTITY_TABLE`` rows of ``count`` entities, drawn from ``members``.

    ``members`` maps an entity id to the primary keys of its crm.customers rows (the store's
    source map); entities are drawn from it in id order by ``rng``, and every one of their rows
    gets one column reformatted (city case first: it changes neither who a record is nor how
    it matches) and its updated_at moved past the newest, so an incremental sync reads them.
    """
    (table,) = [t for t in tables if (t.system, t.table) == ENTITY_TABLE]
    chosen = rng.sample(sorted(members), min(count, len(members)))
    rows = sorted({int(key) for entity_id in chosen for key in members[entity_id]})
    with closing(sqlite3.connect(source_path(table))) as conn, conn:
        _rewrite(conn, table.name, _UPDATED[ENTITY_TABLE], rows, rng)
    return EntityChange(len(chosen), len(rows))
