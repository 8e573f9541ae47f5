"""Generate synthetic multi-system source data, with the ground truth of who is who.

Four made-up systems (a CRM, billing, a web shop and a support desk) describe the same people
the way real systems do: partly overlapping, with nicknames, typos, email case and whitespace,
phone formats, moved addresses, second email addresses and families sharing one email. The
ground-truth CSV names the person behind every record, so resolution can be scored and masking
has realistic PII (in free text too) to find. The same (customers, seed, anchor) always gives
the same rows: every random choice comes from seeded ``random.Random`` streams, never the clock.
"""

from __future__ import annotations

import csv
import random
import time
from bisect import bisect
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from fabric.errors import SourceError
from fabric.sources._people import (
    Person,
    Pools,
    build_pools,
    card_number,
    format_phone,
    iban,
    make_people,
    ticket_text,
    vary_email,
    vary_name,
    weighted,
)
from fabric.sources.urls import describe_url, engine_url

__all__ = ["DEFAULT_ANCHOR", "TABLES", "GeneratedTable", "GenerationReport", "generate_sources"]

#: The "now" of generated data (naive, meaning UTC): every timestamp lies within about three
#: years before it, never after, so point-in-time features have a fixed reference.
DEFAULT_ANCHOR = datetime(2026, 11, 1, 0, 0, 0)
#: Every generated (system, table), parents before children.
TABLES: tuple[tuple[str, str], ...] = (
    ("crm", "customers"),
    ("billing", "accounts"),
    ("billing", "payments"),
    ("shop", "orders"),
    ("shop", "order_items"),
    ("support", "tickets"),
)
SYSTEMS = ("crm", "billing", "shop", "support")

_HISTORY = timedelta(days=3 * 365)
_BATCH = 10_000
_COUNTRIES, _COUNTRY_WEIGHTS = ("US", "USA", "United States"), (85, 95, 100)
_CURRENCIES, _CURRENCY_WEIGHTS = ("USD", "CAD", "EUR", "GBP"), (85, 91, 96, 100)
_LATE_STATUSES, _LATE_WEIGHTS = ("delivered", "cancelled", "returned"), (86, 92, 100)
_CHANNELS, _CHANNEL_WEIGHTS = ("email", "web", "chat", "phone"), (40, 65, 85, 100)
_TICKET_COUNTS, _TICKET_COUNT_WEIGHTS = ("1", "2", "3", "4", "5"), (50, 75, 87, 95, 100)
# Columns a source system may leave empty; everything else is NOT NULL.
_NULLABLE = frozenset({"email", "phone", "birth_date", "closed_at"})

Row = dict[str, Any]
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class GeneratedTable:
    """One table written by :func:`generate_sources`, and where to find it.

    ``url`` keeps any password so callers can connect with it; it is left out of ``repr`` so
    printing a report never shows it.
    """

    system: str
    table: str
    url: str = field(repr=False)
    schema: str | None
    name: str
    rows: int


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate_sources` wrote and how long it took."""

    people: int
    tables: tuple[GeneratedTable, ...]
    ground_truth: Path
    seconds: float


@dataclass(slots=True)
class _Rows:
    """Rows of one table in id order, each with the person it belongs to."""

    rows: list[Row] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)

    def add(self, row: Row, owner: int) -> int:
        """Append ``row`` with the next id (ids follow creation time, like autoincrement)."""
        row["id"] = len(self.rows) + 1
        self.rows.append(row)
        self.owners.append(owner)
        return len(self.rows)


@dataclass(frozen=True, slots=True)
class _Account:
    """What orders and payments need to know about a billing account."""

    id: int
    person_id: int
    created_at: datetime
    currency: str
    card: str


@dataclass(frozen=True, slots=True)
class _World:
    """The people and the time window every record is drawn from."""

    people: list[Person]
    pools: Pools
    start: datetime
    anchor: datetime

    def between(self, rng: random.Random, lo: datetime, hi: datetime | None = None) -> datetime:
        """Draw a whole-second time in [lo, hi] (hi defaults to the anchor)."""
        span = int(((self.anchor if hi is None else hi) - lo).total_seconds())
        return lo + timedelta(seconds=rng.randint(0, span)) if span > 0 else lo


def generate_sources(
    out: Path,
    *,
    customers: int = 1000,
    seed: int = 42,
    source_url: str | None = None,
    anchor: datetime = DEFAULT_ANCHOR,
    progress: Progress | None = None,
) -> GenerationReport:
    """Generate CRM, billing, shop and support data for ``customers`` people, plus ground truth.

    Without ``source_url`` each system becomes an SQLite file in ``out`` (``crm.db``, ...);
    with it, everything goes into that database, one schema per system on PostgreSQL and
    ``{system}_{table}`` tables elsewhere. Generated tables are dropped and recreated, so
    re-running is clean. ``out / "ground_truth.csv"`` maps every record to its person.
    """
    began = time.perf_counter()
    if customers < 1:
        raise SourceError(f"customers must be at least 1, got {customers}: pass --customers N")
    if anchor.tzinfo is not None:
        anchor = anchor.astimezone(UTC).replace(tzinfo=None)
    anchor = anchor.replace(microsecond=0)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"cannot create output directory {out}: {exc.strerror}") from exc

    def stream(name: str) -> random.Random:
        # Strings seed through SHA-512, so each stage has its own stream and changing one
        # stage's draws leaves the others' data unchanged.
        return random.Random(f"fabric.generate:{seed}:{name}")

    pools = build_pools(seed)
    people = make_people(customers, stream("people"), pools, anchor.date())
    if progress is not None:
        progress("people", len(people))
    world = _World(people, pools, anchor - _HISTORY, anchor)
    customers_rows = _crm_customers(world, stream("crm"))
    accounts_rows, accounts = _billing_accounts(world, stream("billing"))
    orders, items, payments, orders_by_person = _commerce(world, accounts, stream("shop"))
    cards = {account.person_id: account.card for account in accounts}
    tickets = _support_tickets(world, stream("support"), orders_by_person, cards)
    tables = (customers_rows, accounts_rows, payments, orders, items, tickets)
    data = dict(zip(TABLES, tables, strict=True))
    written = _write_sources(out, source_url, data, progress)
    ground_truth = out / "ground_truth.csv"
    _write_ground_truth(ground_truth, data)
    return GenerationReport(
        people=customers,
        tables=tuple(written),
        ground_truth=ground_truth,
        seconds=time.perf_counter() - began,
    )


# -- records -----------------------------------------------------------------------------------


def _crm_customers(world: _World, rng: random.Random) -> _Rows:
    """Record every CRM person once, and 5% again later, after moving house.

    The second record is the within-system duplicate a real CRM accumulates: new address,
    often a nickname, same person.
    """
    drafts: list[tuple[datetime, int, bool, Person]] = []
    for person in world.people:
        if "crm" in person.systems:
            created = world.between(rng, world.start, world.anchor - timedelta(days=1))
            drafts.append((created, person.person_id, False, person))
            if rng.random() < 0.05:
                drafts.append((world.between(rng, created), person.person_id, True, person))
    drafts.sort(key=lambda draft: draft[:3])
    table = _Rows()
    for created, _, moved, person in drafts:
        address = world.pools.address(rng) if moved else person.address
        first, last = vary_name(rng, person, 0.15 if moved else 0.03)
        email = person.email_in("crm")
        email = vary_email(rng, email) if rng.random() < 0.08 else email
        table.add(
            {
                "first_name": first,
                "last_name": last,
                "email": None if rng.random() < 0.02 else email,
                "phone": None if rng.random() < 0.04 else format_phone(rng, person.phone, 0, 0.25),
                "birth_date": None if rng.random() < 0.05 else person.birth_date,
                "street": address.street,
                "city": address.city,
                "zip": address.zip,
                "country": weighted(rng, _COUNTRIES, _COUNTRY_WEIGHTS),
                "created_at": created,
                "updated_at": created if rng.random() < 0.3 else world.between(rng, created),
            },
            person.person_id,
        )
    return table


def _billing_accounts(world: _World, rng: random.Random) -> tuple[_Rows, list[_Account]]:
    """Open one account per billing person, two for 10% of them (a second card, a business)."""
    drafts: list[tuple[datetime, int, int, Person]] = []
    for person in world.people:
        if "billing" in person.systems:
            for n in range(2 if rng.random() < 0.1 else 1):
                created = world.between(rng, world.start, world.anchor - timedelta(days=2))
                drafts.append((created, person.person_id, n, person))
    drafts.sort(key=lambda draft: draft[:3])
    table, accounts = _Rows(), []
    for created, _, _, person in drafts:
        first, last = vary_name(rng, person, 0.2)
        # Card schemes print "LAST, First"; people type "First Last".
        holder = f"{last.upper()}, {first}" if rng.random() < 0.35 else f"{first} {last}"
        email = person.email_in("billing")
        card = card_number(rng)
        account_id = table.add(
            {
                "holder_name": holder,
                "email": vary_email(rng, email) if rng.random() < 0.35 else email,
                "phone": None if rng.random() < 0.06 else format_phone(rng, person.phone, 1, 0.3),
                "card_number": card,
                "iban": iban(rng),
                "created_at": created,
                "updated_at": created if rng.random() < 0.4 else world.between(rng, created),
            },
            person.person_id,
        )
        currency = weighted(rng, _CURRENCIES, _CURRENCY_WEIGHTS)
        accounts.append(_Account(account_id, person.person_id, created, currency, card))
    return table, accounts


def _commerce(
    world: _World, accounts: list[_Account], rng: random.Random
) -> tuple[_Rows, _Rows, _Rows, dict[int, list[int]]]:
    """Place orders with items, and charge for them and for some monthly subscriptions.

    Order counts are heavy-tailed (Pareto, capped at 40): most accounts order a few times, a
    few order dozens of times. Totals are summed in integer cents so they equal their items.
    """
    skus = tuple(
        f"{rng.choice(('HOM', 'ELC', 'APP', 'BKS', 'TOY', 'GRD'))}-{n:05d}" for n in range(400)
    )
    prices = tuple(max(199, min(99_999, int(2.7 ** rng.gauss(3.3, 1.0) * 100))) for _ in skus)
    popularity = tuple(accumulate(1000 // (rank + 1) for rank in range(len(skus))))
    drafts: list[tuple[datetime, int, int, _Account, list[tuple[str, int, int]]]] = []
    for account in accounts:
        for _ in range(0 if rng.random() < 0.12 else _order_count(rng)):
            ordered = world.between(
                rng, account.created_at + timedelta(minutes=10), world.anchor - timedelta(hours=1)
            )
            lines = []
            for _ in range(min(8, 1 + int(rng.expovariate(0.9)))):
                pick = bisect(popularity, rng.random() * popularity[-1])
                cents = prices[pick] * 9 // 10 if rng.random() < 0.1 else prices[pick]
                lines.append((skus[pick], 1 if rng.random() < 0.75 else rng.randint(2, 5), cents))
            drafts.append((ordered, account.id, len(drafts), account, lines))
    drafts.sort(key=lambda draft: draft[:3])

    orders, items = _Rows(), _Rows()
    by_person: dict[int, list[int]] = defaultdict(list)
    charges: list[tuple[datetime, int, int, _Account, int, str]] = []
    for when, _, _, account, lines in drafts:
        age = world.anchor - when
        if age < timedelta(days=2):
            status = "placed"
        elif age < timedelta(days=7):
            status = "shipped" if rng.random() < 0.7 else "delivered"
        else:
            status = weighted(rng, _LATE_STATUSES, _LATE_WEIGHTS)
        total = sum(qty * cents for _, qty, cents in lines)
        row = {"account_id": account.id, "total": total / 100, "status": status, "ordered_at": when}
        order_id = orders.add(row, account.person_id)
        by_person[account.person_id].append(order_id)
        for sku, qty, cents in lines:
            row = {"order_id": order_id, "sku": sku, "qty": qty, "price": cents / 100}
            items.add(row, account.person_id)
        if status == "cancelled" and rng.random() < 0.5:
            continue  # cancelled before anyone was charged
        paid = min(when + timedelta(seconds=rng.randint(5, 7200)), world.anchor)
        if rng.random() < 0.05:
            charges.append((paid, account.id, len(charges), account, total, "failed"))
            paid += timedelta(minutes=rng.randint(2, 600))
            if paid > world.anchor:
                continue
        final = "refunded" if status in ("cancelled", "returned") else "paid"
        charges.append((paid, account.id, len(charges), account, total, final))

    for account in accounts:
        if rng.random() < 0.1:
            fee = rng.choice((499, 999, 1499))
            due = world.between(rng, account.created_at)
            for _ in range(36):
                if due > world.anchor:
                    break
                status = "failed" if rng.random() < 0.04 else "paid"
                charges.append((due, account.id, len(charges), account, fee, status))
                due += timedelta(days=30)
    charges.sort(key=lambda charge: charge[:3])
    payments = _Rows()
    for paid, _, _, account, cents, status in charges:
        row = {
            "account_id": account.id,
            "amount": cents / 100,
            "currency": account.currency,
            "paid_at": paid,
            "status": status,
        }
        payments.add(row, account.person_id)
    return orders, items, payments, by_person


def _order_count(rng: random.Random) -> int:
    """Draw from a Pareto tail, redrawing above 40 so no pile-up forms at the cap."""
    while (count := int(rng.paretovariate(1.2))) > 40:
        pass
    return count


def _support_tickets(
    world: _World, rng: random.Random, orders: dict[int, list[int]], cards: dict[int, str]
) -> _Rows:
    """Open one to five tickets per support person, with PII in the free-text body."""
    drafts: list[tuple[datetime, int, int, Person]] = []
    for person in world.people:
        if "support" in person.systems:
            for n in range(int(weighted(rng, _TICKET_COUNTS, _TICKET_COUNT_WEIGHTS))):
                opened = world.between(rng, world.start, world.anchor - timedelta(hours=1))
                drafts.append((opened, person.person_id, n, person))
    drafts.sort(key=lambda draft: draft[:3])
    table = _Rows()
    for opened, person_id, _, person in drafts:
        channel = weighted(rng, _CHANNELS, _CHANNEL_WEIGHTS)
        email = person.email_in("support")
        email = vary_email(rng, email) if rng.random() < 0.3 else email
        closed: datetime | None = None
        recent = world.anchor - opened < timedelta(days=7)
        if not ((recent and rng.random() < 0.5) or rng.random() < 0.03):
            closed = opened + timedelta(seconds=60 + int(rng.expovariate(1 / (36 * 3600))))
            closed = None if closed > world.anchor else closed
        card = cards.get(person_id)
        if card is None or rng.random() < 0.3:
            card = card_number(rng)  # not everyone quotes their own card, or has one with us
        order = rng.choice(orders[person_id]) if person_id in orders else rng.randint(10**4, 10**5)
        subject, body = ticket_text(rng, person, world.pools, order, card)
        row = {
            # Callers on the phone often give no email at all.
            "email": None if channel == "phone" and rng.random() < 0.3 else email,
            "subject": subject,
            "body": body,
            "channel": channel,
            "opened_at": opened,
            "closed_at": closed,
        }
        table.add(row, person_id)
    return table


# -- storage -----------------------------------------------------------------------------------


def _define_tables(metadata: sa.MetaData, layout: str) -> dict[tuple[str, str], sa.Table]:
    """Declare every generated table for ``layout``: "files", "schemas" or "prefixed".

    Foreign keys stay within a system, as between real systems nothing enforces them.
    """

    def table(key: tuple[str, str], *columns: sa.Column[Any]) -> sa.Table:
        system, name = key
        primary = sa.Column("id", sa.Integer, primary_key=True, autoincrement=False)
        schema = system if layout == "schemas" else None
        full_name = f"{system}_{name}" if layout == "prefixed" else name
        return sa.Table(full_name, metadata, primary, *columns, schema=schema)

    def column(name: str, kind: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
        return sa.Column(name, kind, nullable=name in _NULLABLE)

    text, money, stamp = sa.String(100), sa.Numeric(12, 2, asdecimal=False), sa.DateTime()
    email, phone, status = sa.String(255), sa.String(40), sa.String(10)
    customers = table(
        ("crm", "customers"),
        *(column(name, text) for name in ("first_name", "last_name")),
        column("email", email),
        column("phone", phone),
        column("birth_date", sa.Date()),
        column("street", sa.String(200)),
        column("city", text),
        column("zip", sa.String(10)),
        column("country", sa.String(40)),
        column("created_at", stamp),
        column("updated_at", stamp),
    )
    accounts = table(
        ("billing", "accounts"),
        column("holder_name", sa.String(200)),
        column("email", email),
        column("phone", phone),
        column("card_number", sa.String(16)),
        column("iban", sa.String(34)),
        column("created_at", stamp),
        column("updated_at", stamp),
    )
    payments = table(
        ("billing", "payments"),
        sa.Column("account_id", sa.ForeignKey(accounts.c.id), nullable=False, index=True),
        column("amount", money),
        column("currency", sa.String(3)),
        column("paid_at", stamp),
        column("status", status),
    )
    orders = table(
        ("shop", "orders"),
        # A billing account id: billing is another system, so no foreign key.
        sa.Column("account_id", sa.Integer, nullable=False, index=True),
        column("total", money),
        column("status", status),
        column("ordered_at", stamp),
    )
    order_items = table(
        ("shop", "order_items"),
        sa.Column("order_id", sa.ForeignKey(orders.c.id), nullable=False, index=True),
        column("sku", sa.String(20)),
        column("qty", sa.Integer()),
        column("price", money),
    )
    tickets = table(
        ("support", "tickets"),
        column("email", email),
        column("subject", sa.String(200)),
        column("body", sa.Text()),
        column("channel", status),
        column("opened_at", stamp),
        column("closed_at", stamp),
    )
    defined = (customers, accounts, payments, orders, order_items, tickets)
    return dict(zip(TABLES, defined, strict=True))


def _write_sources(
    out: Path, source_url: str | None, data: dict[tuple[str, str], _Rows], progress: Progress | None
) -> list[GeneratedTable]:
    """Write every table: one SQLite file per system, or everything into ``source_url``."""
    if source_url is None:
        tables = _define_tables(sa.MetaData(), "files")
        written: list[GeneratedTable] = []
        for system in SYSTEMS:
            url = sa.URL.create("sqlite", database=str((out / f"{system}.db").resolve()))
            own = {key: table for key, table in tables.items() if key[0] == system}
            written += _write_tables(_open_engine(url), own, (), data, progress)
        return written
    engine = _open_engine(engine_url(source_url))
    # PostgreSQL keeps each system in its own schema, as separate databases would; other
    # databases get the system as a table-name prefix instead.
    postgres = engine.dialect.name == "postgresql"
    tables = _define_tables(sa.MetaData(), "schemas" if postgres else "prefixed")
    return _write_tables(engine, tables, SYSTEMS if postgres else (), data, progress)


def _open_engine(url: sa.URL) -> sa.Engine:
    """Create an engine for ``url``; a missing or unknown driver becomes a SourceError."""
    try:
        return sa.create_engine(url)
    except (NoSuchModuleError, ImportError) as exc:
        raise SourceError(
            f"cannot load a database driver for {describe_url(url)}: {exc}; install the "
            "driver package or use a postgresql:// or sqlite:/// URL"
        ) from exc


def _write_tables(
    engine: sa.Engine,
    tables: dict[tuple[str, str], sa.Table],
    schemas: tuple[str, ...],
    data: dict[tuple[str, str], _Rows],
    progress: Progress | None,
) -> list[GeneratedTable]:
    """Drop and recreate ``tables``, then insert each one in a single transaction."""
    url = engine.url.render_as_string(hide_password=False)
    written = []
    try:
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            metadata = next(iter(tables.values())).metadata
            metadata.drop_all(conn, tables=list(tables.values()))
            metadata.create_all(conn, tables=list(tables.values()))
        for (system, name), table in tables.items():
            rows = data[system, name].rows
            with engine.begin() as conn:
                for start in range(0, len(rows), _BATCH):
                    conn.execute(table.insert(), rows[start : start + _BATCH])
            if progress is not None:
                progress(f"{system}.{name}", len(rows))
            written.append(GeneratedTable(system, name, url, table.schema, table.name, len(rows)))
    except SQLAlchemyError as exc:
        raise SourceError(
            f"cannot write generated sources to {describe_url(engine.url)}: {_reason(exc)}"
        ) from exc
    finally:
        engine.dispose()
    return written


def _reason(exc: SQLAlchemyError) -> str:
    """Return the driver's one-line reason, without SQLAlchemy's statement and help link."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def _write_ground_truth(path: Path, data: dict[tuple[str, str], _Rows]) -> None:
    """Write ``source,table,record_id,person_id`` for every generated record."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(("source", "table", "record_id", "person_id"))
        for system, name in TABLES:
            table = data[system, name]
            writer.writerows(
                (system, name, row["id"], owner)
                for row, owner in zip(table.rows, table.owners, strict=True)
            )
