"""Build and read one entity's SQLite micro-database as an in-memory image.

The K2View layout: every entity is a small SQLite database holding all of its tables plus
lineage. We never create a file per entity (fsync-bound, hundreds per second). Instead one
long-lived in-memory database per worker holds the schema; an entity is inserted in one
transaction, ``serialize``-d to bytes, and deleted again. Readers ``deserialize`` an image into
their own connection. The image is what the store keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fabric.store.sqlite import apsw, one_row, open_memory, quote_ident
from fabric.store.swap import ImageSwap

__all__ = [
    "FINGERPRINT_SCHEME",
    "LINEAGE_COLUMNS",
    "ColumnDef",
    "EntityContent",
    "EntitySchema",
    "MicroDbBuilder",
    "MicroDbPatcher",
    "MicroDbReader",
    "PatchRow",
    "TableDef",
    "UnknownTableError",
    "fingerprint",
    "fingerprint_total",
    "row_digest",
]

#: Small pages keep images of small entities small; entities are read whole anyway.
PAGE_SIZE = 1024

LINEAGE_COLUMNS = (
    "tbl",
    "row_key",
    "source",
    "source_table",
    "source_key",
    "extracted_at",
    "sync_run",
)

SqlValue = int | float | str | bytes | None


@dataclass(frozen=True)
class ColumnDef:
    """A column of an entity table; ``sql_type`` is a SQLite storage class name."""

    name: str
    sql_type: str


@dataclass(frozen=True)
class TableDef:
    """An entity table and the source table that feeds it."""

    name: str
    source: str
    source_table: str
    key: str
    columns: tuple[ColumnDef, ...]
    parent: str | None = None
    foreign_key: str | None = None
    #: the columns read from the source, when transforms make them differ from the stored ones
    source_columns: tuple[str, ...] | None = None

    @cached_property
    def column_names(self) -> tuple[str, ...]:
        """Column names in storage order (cached: asked for on every row of a sync)."""
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class EntitySchema:
    """The micro-database schema of one entity type."""

    entity_type: str
    tables: tuple[TableDef, ...]
    #: the version of the rules that shape stored rows (match rules, transforms at ingest):
    #: part of the schema version, so changing them rebuilds every entity on the next sync
    rules: str = ""

    def table(self, name: str) -> TableDef:
        """Return the table called ``name``."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    def ddl(self) -> list[str]:
        """SQL statements that create the empty micro-database."""
        # auto_vacuum=FULL gives freed pages back at each commit, so a builder that empties
        # its database after an entity starts the next one as small as an empty schema.
        statements = [f"PRAGMA page_size={PAGE_SIZE}", "PRAGMA auto_vacuum=FULL"]
        for table in self.tables:
            cols = ", ".join(f"{quote_ident(c.name)} {c.sql_type}" for c in table.columns)
            statements.append(f"CREATE TABLE {quote_ident(table.name)} ({cols})")
        lineage = ", ".join(LINEAGE_COLUMNS)
        statements.append(f"CREATE TABLE _lineage ({lineage})")
        statements.append("CREATE TABLE _meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
        return statements

    @cached_property
    def version(self) -> str:
        """A short hash of the DDL and the rules: entities built under another schema or other
        ingest rules must be rebuilt."""
        text = "\n".join([*self.ddl(), *([self.rules] if self.rules else [])])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EntityContent:
    """Everything that goes into one entity's image, before it is built."""

    entity_id: str
    rows: dict[str, list[tuple[SqlValue, ...]]]
    lineage: list[tuple[SqlValue, ...]]

    def fingerprint(self) -> str:
        """Hash of the rows: unchanged entities need no new version (see :func:`fingerprint`)."""
        return fingerprint(
            sum(row_digest(table, row) for table, rows in self.rows.items() for row in rows)
        )


#: Fingerprints are sums of row digests modulo this; the prefix names the scheme.
_MODULUS = 1 << 128
FINGERPRINT_SCHEME = "2:"


def row_digest(table: str, row: Sequence[SqlValue]) -> int:
    """One row's share of its entity's fingerprint.

    ``repr`` of ints, floats, strings and None is stable and far cheaper than JSON per row.
    A row's lineage adds nothing: its source, table and key follow from the table and row.
    """
    data = f"{table}\x00{tuple(row)!r}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "big")


def fingerprint(total: int) -> str:
    """The fingerprint of an entity whose row digests add up to ``total``.

    A sum, not a hash of the sorted rows: the same rows give the same fingerprint in any
    order, and an entity patched with a few rows gets its new fingerprint from the old one
    without reading the rest (:class:`MicroDbPatcher`).
    """
    return f"{FINGERPRINT_SCHEME}{total % _MODULUS:032x}"


def fingerprint_total(printed: str) -> int | None:
    """The sum behind a fingerprint, or None for one of an older scheme."""
    if not printed.startswith(FINGERPRINT_SCHEME):
        return None
    return int(printed[len(FINGERPRINT_SCHEME) :], 16)


def _scrubbing_memory() -> apsw.Connection:
    """An in-memory database that zeroes what it deletes.

    A builder empties its database after each entity and reuses the pages; without
    ``secure_delete`` the free space of the next entity's pages still held bytes of the one
    before, so an image carried fragments of another person's data (and compressed to larger
    blobs: benchmarks/README.md, "Micro-database images"). The patcher likewise leaves no old
    value of an updated row behind.
    """
    conn = open_memory()
    conn.pragma("secure_delete", True)
    return conn


class MicroDbBuilder:
    """Build entity images for one schema; one instance per worker (not thread-safe).

    The database keeps its schema between entities and is emptied after each one, instead of
    being reset from an empty image with ``deserialize``: a reset makes SQLite parse the schema
    and prepare every statement again, which cost more than the inserts themselves
    (benchmarks/README.md, "Micro-database images").
    """

    def __init__(self, schema: EntitySchema) -> None:
        self.schema = schema
        self._conn = _scrubbing_memory()
        for statement in schema.ddl():
            self._conn.execute(statement)
        self._inserts = {
            t.name: "INSERT INTO {} VALUES ({})".format(
                quote_ident(t.name), ", ".join("?" * len(t.columns))
            )
            for t in schema.tables
        }
        self._layout = self.layout()
        self._lineage_insert = "INSERT INTO _lineage VALUES ({})".format(
            ", ".join("?" * len(LINEAGE_COLUMNS))
        )
        self._empty = [
            f"DELETE FROM {quote_ident(name)}"
            for name in (*(t.name for t in schema.tables), "_lineage", "_meta")
        ]

    def layout(self) -> str:
        """JSON of ``{table: [columns]}``, kept in ``_meta`` so images describe themselves."""
        return json.dumps({t.name: list(t.column_names) for t in self.schema.tables})

    def build(self, content: EntityContent, meta: Mapping[str, SqlValue]) -> bytes:
        """Return the serialized image of one entity; ``meta`` goes into ``_meta``."""
        conn = self._conn
        with conn:
            for table, rows in content.rows.items():
                if rows:
                    conn.executemany(self._inserts[table], rows)
            if content.lineage:
                conn.executemany(self._lineage_insert, content.lineage)
            conn.executemany(
                "INSERT INTO _meta VALUES (?, ?)", [*meta.items(), ("tables", self._layout)]
            )
        # Serialized between the two transactions: the committed entity, nothing else.
        image: bytes = conn.serialize("main")
        with conn:
            for statement in self._empty:
                conn.execute(statement)
        return image


@dataclass(frozen=True)
class PatchRow:
    """A row to put into an entity's image: new, or replacing the row with its key."""

    table: TableDef
    row: tuple[SqlValue, ...]
    lineage: tuple[SqlValue, ...]
    #: True when the caller knows the image holds no row with this key (no entity held the
    #: source record before): it is inserted without looking for it first.
    new: bool = False


class MicroDbPatcher:
    """Put a few rows into a stored image without rebuilding it; one per worker or thread.

    An incremental sync that adds an order to an entity of thirty rows loads the image,
    inserts (or updates) that row and its lineage, and serializes it again: a handful of
    statements instead of reading every row out and building the image anew.
    """

    def __init__(self) -> None:
        self._conn = _scrubbing_memory()
        self._sql: dict[TableDef, tuple[str, str, str, int]] = {}
        self._lineage_insert = (
            f"INSERT INTO _lineage VALUES ({', '.join('?' * len(LINEAGE_COLUMNS))})"
        )

    def _statements(self, table: TableDef) -> tuple[str, str, str, int]:
        """SELECT by key, INSERT, UPDATE by rowid, and the key's position, for one table."""
        found = self._sql.get(table)
        if found is None:
            name = quote_ident(table.name)
            columns = ", ".join(f"{quote_ident(c)} = ?" for c in table.column_names)
            found = self._sql[table] = (
                f"SELECT rowid, * FROM {name} WHERE {quote_ident(table.key)} = ?",
                f"INSERT INTO {name} VALUES ({', '.join('?' * len(table.columns))})",
                f"UPDATE {name} SET {columns} WHERE rowid = ?",
                table.column_names.index(table.key),
            )
        return found

    def patch(
        self,
        image: bytes,
        rows: Sequence[PatchRow],
        meta: Mapping[str, SqlValue],
        total: int,
    ) -> tuple[bytes, str] | None:
        """Return ``(new image, new fingerprint)``, or None when every row was there already.

        ``total`` is the image's fingerprint sum (:func:`fingerprint_total`); ``meta`` the
        ``_meta`` values to set (version, built_at, sync_run).
        """
        conn = self._conn
        conn.deserialize("main", image)
        conn.pragma("secure_delete", True)  # a pragma of the database, reset by deserialize
        changed = False
        with conn:
            for item in rows:
                table = item.table
                select, insert, update, key_at = self._statements(table)
                if item.new:
                    # Looking for the key scans the table: most of a patch that adds rows.
                    changed = True
                    total += row_digest(table.name, item.row)
                    conn.execute(insert, item.row)
                    conn.execute(self._lineage_insert, item.lineage)
                    continue
                found = conn.execute(select, (item.row[key_at],)).fetchone()
                if found is not None and tuple(found[1:]) == tuple(item.row):
                    continue
                changed = True
                total += row_digest(table.name, item.row)
                if found is None:
                    conn.execute(insert, item.row)
                    conn.execute(self._lineage_insert, item.lineage)
                    continue
                total -= row_digest(table.name, found[1:])
                conn.execute(update, (*item.row, found[0]))
                conn.execute(
                    "UPDATE _lineage SET extracted_at = ?, sync_run = ? "
                    "WHERE tbl = ? AND row_key = ?",
                    (item.lineage[5], item.lineage[6], item.lineage[0], item.lineage[1]),
                )
            if not changed:
                return None
            # Insert or replace: a key an older image lacks (rules_version) is added.
            conn.executemany("INSERT OR REPLACE INTO _meta VALUES (?, ?)", meta.items())
        image_out: bytes = conn.serialize("main")
        return image_out, fingerprint(total)


@dataclass(frozen=True)
class _Plan:
    """One compound query reading ``_meta`` and many tables of an image, for one layout."""

    #: the ``tables`` value of ``_meta`` of the images this plan was made for
    stored: str
    sql: str
    columns: list[tuple[str, list[str]]]

    @classmethod
    def of(cls, stored: str, want: Mapping[str, Sequence[str]], all_meta: bool = True) -> _Plan:
        """Read ``want`` (table -> columns) from images whose ``_meta`` lists ``stored``;
        ``_meta`` whole, or (``all_meta`` False) only its ``tables`` row, which checks the layout.

        Each row comes back as (table position, rowid, its columns, NULL padding), the
        ``_meta`` rows last (position ``len(want)``); tables and columns the image lacks read
        as empty and NULL. The ``_lineage`` table is always there, though ``_meta`` does not
        list it.
        """
        have = {**json.loads(stored), "_lineage": LINEAGE_COLUMNS}
        width = max([len(cols) for cols in want.values()] + [2])
        parts = []
        for at, (name, cols) in enumerate(want.items()):
            if name not in have:
                continue
            picked = [quote_ident(c) if c in have[name] else "NULL" for c in cols]
            picked += ["NULL"] * (width - len(cols))
            parts.append(f"SELECT {at}, rowid, {', '.join(picked)} FROM {quote_ident(name)}")
        padding = ", NULL" * (width - 2)
        only = "" if all_meta else " WHERE key = 'tables'"
        parts.append(f"SELECT {len(want)}, 0, key, value{padding} FROM _meta{only}")
        columns = [(n, list(c)) for n, c in want.items()]
        return cls(stored, " UNION ALL ".join(parts), columns)

    def run(self, conn: apsw.Connection) -> tuple[list[list[tuple[Any, ...]]], dict[str, Any]]:
        """Every wanted table's rows (tuples of its columns), each in rowid order; ``_meta``.

        A compound statement promises no order, and sorting in SQL cost more than the
        reading: rows are put in order here, which is only work when SQLite did not.
        """
        found: list[list[tuple[Any, ...]]] = [[] for _ in self.columns]
        ends = [len(cols) + 2 for _, cols in self.columns]
        rowids: list[list[int]] = [[] for _ in self.columns]
        meta_at = len(self.columns)
        meta: dict[str, Any] = {}
        for row in conn.execute(self.sql):
            at = row[0]
            if at == meta_at:
                meta[row[2]] = row[3]
                continue
            found[at].append(row[2 : ends[at]])
            rowids[at].append(row[1])
        for at, ids in enumerate(rowids):
            if any(a > b for a, b in itertools.pairwise(ids)):
                order = sorted(range(len(ids)), key=ids.__getitem__)
                found[at] = [found[at][i] for i in order]
        return found, meta


class UnknownTableError(KeyError):
    """Tables were asked for that an entity image does not have."""

    def __init__(self, unknown: list[str], known: list[str]) -> None:
        super().__init__(unknown)
        self.unknown = unknown
        self.known = known


class MicroDbReader:
    """Read entity images; one instance per thread (a connection is not shared).

    A read is one ``deserialize`` and, nearly always, one query: ``_meta`` and every wanted
    table through one ``UNION ALL``, each row tagged with its table's position. After
    ``deserialize`` SQLite parses the schema again and prepares every statement anew, a cost
    per statement: the compound statement without a transaction (an image in memory has no
    one to lock out) reads a demo entity in a fraction of the time a statement per table
    plus a read transaction took (benchmarks/README.md, "Micro-database images"). The
    statement is planned for the layout of the last image read; an image of another layout
    (built before a schema change) is read again with a plan of its own.
    """

    def __init__(self) -> None:
        self._conn = open_memory()
        self._swap = ImageSwap()
        #: what was asked -> the plan for the layout last seen with it
        self._plans: dict[Any, _Plan] = {}
        #: id of a layout given to :meth:`flat` -> (that layout, its key in ``_plans``)
        self._asked: dict[int, tuple[Mapping[str, Sequence[str]], Any]] = {}

    def load(self, image: bytes) -> apsw.Connection:
        """Deserialize ``image`` into this reader's connection and return it: a database of
        its own, for checks of the whole file (``PRAGMA integrity_check``)."""
        self._conn.deserialize("main", image)
        return self._conn

    def close(self) -> None:
        """Close the reader's connections."""
        self._swap.close()
        self._conn.close()

    def _read(
        self,
        image: bytes,
        asked: Any,
        want: Callable[[dict[str, list[str]]], Mapping[str, Sequence[str]]],
    ) -> tuple[_Plan, list[list[tuple[Any, ...]]], dict[str, Any]]:
        """Load ``image`` and read it with the plan for ``asked`` (made from ``want`` of the
        image's layout when the last one does not fit)."""
        conn = self._swap.load(image)
        plan = self._plans.get(asked)
        if plan is not None:
            # The plan of the last layout: it fails, or its _meta says, when this image
            # has another (built before a schema change).
            with contextlib.suppress(apsw.SQLError):
                found, meta = plan.run(conn)
                if meta.get("tables") == plan.stored:
                    return plan, found, meta
        plan = self._plan(conn, asked, want, all_meta=True)
        found, meta = plan.run(conn)
        return plan, found, meta

    def _plan(
        self,
        conn: apsw.Connection,
        asked: Any,
        want: Callable[[dict[str, list[str]]], Mapping[str, Sequence[str]]],
        all_meta: bool,
    ) -> _Plan:
        """A new plan for ``asked``, made for the loaded image's layout."""
        stored = str(one_row(conn, "SELECT value FROM _meta WHERE key = 'tables'")[0])
        plan = self._plans[asked] = _Plan.of(stored, want(json.loads(stored)), all_meta)
        return plan

    def flat(self, image: bytes, layout: Mapping[str, Sequence[str]]) -> list[tuple[Any, ...]]:
        """Every row of ``layout``'s tables as one list of tuples ``(table position, rowid,
        *columns)``, columns in the layout's order (padded with NULLs): for computations over
        many entities, which sort rows themselves and pay for nothing more. Tables or columns
        the image lacks read as empty or NULL."""
        known = self._asked.get(id(layout))
        if known is None or known[0] is not layout:
            asked_now = ("flat", tuple((name, tuple(cols)) for name, cols in layout.items()))
            known = self._asked[id(layout)] = (layout, asked_now)
        asked = known[1]
        conn = self._swap.load(image)
        plan = self._plans.get(asked)
        rows = []
        if plan is not None:
            with contextlib.suppress(apsw.SQLError):  # an image of another layout
                rows = conn.execute(plan.sql).fetchall()
        meta_at = len(layout)
        # The one _meta row (the layout the image was built with) says the plan fits.
        if plan is None or not rows or rows[-1][0] != meta_at or rows[-1][3] != plan.stored:
            plan = self._plan(conn, asked, lambda _: layout, all_meta=False)
            rows = conn.execute(plan.sql).fetchall()
            if not rows or rows[-1][0] != meta_at:
                rows = sorted(rows, key=lambda row: row[0] == meta_at)
        rows.pop()
        return rows

    def read_tables(
        self,
        image: bytes,
        tables: Sequence[str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """Return ``(meta, {table: [row dicts]})``, rows in insertion order.

        Raises:
            UnknownTableError: ``tables`` names a table the image does not have.
        """

        def want(layout: dict[str, list[str]]) -> dict[str, list[str]]:
            unknown = [t for t in tables or () if t not in layout]
            if unknown:
                raise UnknownTableError(unknown, list(layout))
            return {name: layout[name] for name in (tables if tables is not None else layout)}

        plan, found, meta = self._read(image, ("tables", tables and tuple(tables)), want)
        out = {
            name: [dict(zip(cols, row, strict=True)) for row in rows]
            for (name, cols), rows in zip(plan.columns, found, strict=True)
        }
        return meta, out

    def contents(
        self, image: bytes, layout: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]:
        """Rows as tuples in ``layout``'s column order, and lineage rows: for rebuilding.

        Plain tuples: an incremental sync reads thousands of images, and dicts per row cost
        more than the queries. Tables or columns the image lacks come back empty or NULL.
        """
        asked = ("contents", tuple((name, tuple(cols)) for name, cols in layout.items()))
        plan, found, _ = self._read(image, asked, lambda _: {**layout, "_lineage": LINEAGE_COLUMNS})
        lineage = found.pop()
        return {name: rows for (name, _), rows in zip(plan.columns, found, strict=False)}, lineage

    def lineage(self, image: bytes) -> list[dict[str, Any]]:
        """Return every lineage row of an image."""
        conn = self._swap.load(image)
        return [
            dict(zip(LINEAGE_COLUMNS, row, strict=True))
            for row in conn.execute("SELECT * FROM _lineage ORDER BY rowid")
        ]
