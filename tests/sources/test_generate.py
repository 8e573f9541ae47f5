"""Synthetic sources: deterministic, complete, and messy in the ways resolution must handle."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from fabric.errors import SourceError
from fabric.sources.generate import (
    DEFAULT_ANCHOR,
    TABLES,
    GeneratedTable,
    GenerationReport,
    generate_sources,
)
from fabric.sources.urls import engine_url

if TYPE_CHECKING:
    from pgcluster import PostgresCluster

CUSTOMERS = 200
COLUMNS = {
    ("crm", "customers"): [
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "birth_date",
        "street",
        "city",
        "zip",
        "country",
        "created_at",
        "updated_at",
    ],
    ("billing", "accounts"): [
        "id",
        "holder_name",
        "email",
        "phone",
        "card_number",
        "iban",
        "created_at",
        "updated_at",
    ],
    ("billing", "payments"): ["id", "account_id", "amount", "currency", "paid_at", "status"],
    ("shop", "orders"): ["id", "account_id", "total", "status", "ordered_at"],
    ("shop", "order_items"): ["id", "order_id", "sku", "qty", "price"],
    ("support", "tickets"): [
        "id",
        "email",
        "subject",
        "body",
        "channel",
        "opened_at",
        "closed_at",
    ],
}

Rows = dict[tuple[str, str], list[dict[str, Any]]]


def read_tables(report: GenerationReport) -> Rows:
    """Every generated table's rows, ordered by id, as plain dicts."""
    found: Rows = {}
    for table in report.tables:
        engine = sa.create_engine(table.url)
        try:
            with engine.connect() as conn:
                reflected = sa.Table(
                    table.name, sa.MetaData(), schema=table.schema, autoload_with=conn
                )
                query = sa.select(reflected).order_by(reflected.c.id)
                found[table.system, table.table] = [
                    dict(row._mapping) for row in conn.execute(query)
                ]
        finally:
            engine.dispose()
    return found


def read_ground_truth(report: GenerationReport) -> dict[tuple[str, str, int], int]:
    with report.ground_truth.open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == ["source", "table", "record_id", "person_id"]
        return {
            (row["source"], row["table"], int(row["record_id"])): int(row["person_id"])
            for row in reader
        }


def normalise(email: str | None) -> str | None:
    return None if email is None else email.strip().lower()


def luhn_valid(number: str) -> bool:
    digits = [int(ch) for ch in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationReport, Rows]:
    """One run shared by the read-only tests: generation costs about a second."""
    report = generate_sources(tmp_path_factory.mktemp("sources"), customers=CUSTOMERS, seed=7)
    return report, read_tables(report)


@pytest.fixture(scope="module")
def owners(generated: tuple[GenerationReport, Rows]) -> dict[tuple[str, str, int], int]:
    return read_ground_truth(generated[0])


def test_generate_is_deterministic_for_the_same_seed(
    tmp_path: Path, generated: tuple[GenerationReport, Rows]
) -> None:
    report, rows = generated
    again = generate_sources(tmp_path, customers=CUSTOMERS, seed=7)
    assert read_tables(again) == rows
    assert again.ground_truth.read_bytes() == report.ground_truth.read_bytes()


def test_generate_differs_for_another_seed(
    tmp_path: Path, generated: tuple[GenerationReport, Rows]
) -> None:
    other = read_tables(generate_sources(tmp_path, customers=CUSTOMERS, seed=8))
    for key in TABLES:
        assert other[key] != generated[1][key], key


def test_generate_writes_every_table_and_column(generated: tuple[GenerationReport, Rows]) -> None:
    report, rows = generated
    assert report.people == CUSTOMERS
    assert [(t.system, t.table) for t in report.tables] == list(TABLES)
    for table in report.tables:
        assert table.url == f"sqlite:///{report.ground_truth.parent / table.system}.db"
        assert table.name == table.table
        assert table.schema is None
        assert table.rows == len(rows[table.system, table.table]) > 0
        assert list(rows[table.system, table.table][0]) == COLUMNS[table.system, table.table]


def test_generate_ground_truth_covers_every_record(
    generated: tuple[GenerationReport, Rows], owners: dict[tuple[str, str, int], int]
) -> None:
    _, rows = generated
    expected = {(system, table, row["id"]) for (system, table), got in rows.items() for row in got}
    assert set(owners) == expected
    assert set(owners.values()) <= set(range(1, CUSTOMERS + 1))


def test_generate_children_belong_to_their_parents_person(
    generated: tuple[GenerationReport, Rows], owners: dict[tuple[str, str, int], int]
) -> None:
    _, rows = generated
    for payment in rows["billing", "payments"]:
        parent = owners["billing", "accounts", payment["account_id"]]
        assert owners["billing", "payments", payment["id"]] == parent
    for order in rows["shop", "orders"]:
        assert (
            owners["shop", "orders", order["id"]]
            == owners["billing", "accounts", order["account_id"]]
        )
    for item in rows["shop", "order_items"]:
        assert (
            owners["shop", "order_items", item["id"]] == owners["shop", "orders", item["order_id"]]
        )


def test_generate_card_numbers_and_ibans_are_valid(
    generated: tuple[GenerationReport, Rows],
) -> None:
    accounts = generated[1]["billing", "accounts"]
    for account in accounts:
        assert re.fullmatch(r"\d{16}", account["card_number"])
        assert luhn_valid(account["card_number"]), account["card_number"]
        assert iban_valid(account["iban"]), account["iban"]
    assert len({account["card_number"] for account in accounts}) == len(accounts)


def test_generate_order_totals_equal_their_items(generated: tuple[GenerationReport, Rows]) -> None:
    _, rows = generated
    cents: dict[int, int] = defaultdict(int)
    for item in rows["shop", "order_items"]:
        cents[item["order_id"]] += item["qty"] * round(item["price"] * 100)
    for order in rows["shop", "orders"]:
        assert round(order["total"] * 100) == cents[order["id"]]


def test_generate_keeps_values_within_their_domains(
    generated: tuple[GenerationReport, Rows],
) -> None:
    _, rows = generated
    assert {p["status"] for p in rows["billing", "payments"]} <= {"paid", "failed", "refunded"}
    statuses = [p["status"] for p in rows["billing", "payments"]]
    assert statuses.count("paid") > len(statuses) / 2
    assert all(re.fullmatch(r"[A-Z]{3}", p["currency"]) for p in rows["billing", "payments"])
    allowed = {"placed", "shipped", "delivered", "cancelled", "returned"}
    assert {o["status"] for o in rows["shop", "orders"]} <= allowed
    assert {t["channel"] for t in rows["support", "tickets"]} <= {"email", "phone", "chat", "web"}
    assert all(item["qty"] >= 1 for item in rows["shop", "order_items"])


def test_generate_timestamps_are_ordered_and_never_after_the_anchor(
    generated: tuple[GenerationReport, Rows],
) -> None:
    _, rows = generated
    earliest = DEFAULT_ANCHOR - timedelta(days=3 * 366)
    for key, table in rows.items():
        for row in table:
            for column, value in row.items():
                if isinstance(value, datetime):
                    assert earliest <= value <= DEFAULT_ANCHOR, (key, column, value)
    for row in rows["crm", "customers"] + rows["billing", "accounts"]:
        assert row["created_at"] <= row["updated_at"]
    opened = {t["id"]: t for t in rows["support", "tickets"]}
    assert any(t["closed_at"] is None for t in opened.values())
    for ticket in opened.values():
        assert ticket["closed_at"] is None or ticket["closed_at"] > ticket["opened_at"]
    accounts = {a["id"]: a["created_at"] for a in rows["billing", "accounts"]}
    for payment in rows["billing", "payments"]:
        assert payment["paid_at"] > accounts[payment["account_id"]]
    for order in rows["shop", "orders"]:
        assert order["ordered_at"] > accounts[order["account_id"]]


def test_generate_honours_another_anchor(tmp_path: Path) -> None:
    anchor = datetime(2020, 3, 1, 12, 0, 0)
    rows = read_tables(generate_sources(tmp_path, customers=50, anchor=anchor))
    stamps = [v for table in rows.values() for row in table for v in row.values()]
    stamps = [v for v in stamps if isinstance(v, datetime)]
    assert max(stamps) <= anchor
    assert min(stamps) >= anchor - timedelta(days=3 * 366)


def test_generate_puts_people_in_several_systems(
    owners: dict[tuple[str, str, int], int],
) -> None:
    systems: dict[int, set[str]] = defaultdict(set)
    for (source, _, _), person in owners.items():
        systems[person].add(source)
    assert len(systems) == CUSTOMERS  # everyone is known somewhere
    counts = [len(found) for found in systems.values()]
    assert sum(count >= 2 for count in counts) > CUSTOMERS / 2
    assert any(count == 1 for count in counts)
    assert any(found == {"support"} for found in systems.values())


def test_generate_varies_emails_by_case_and_whitespace_only(
    generated: tuple[GenerationReport, Rows], owners: dict[tuple[str, str, int], int]
) -> None:
    emails: dict[int, set[str]] = defaultdict(set)
    for key in (("crm", "customers"), ("billing", "accounts"), ("support", "tickets")):
        for row in generated[1][key]:
            if row["email"] is not None:
                emails[owners[(*key, row["id"])]].add(row["email"])
    variants = [
        found
        for found in emails.values()
        if len(found) > 1 and len({normalise(email) for email in found}) == 1
    ]
    assert len(variants) >= 5
    # ...and some people give a genuinely different address in one system.
    assert any(len({normalise(email) for email in found}) > 1 for found in emails.values())


def test_generate_shares_family_emails_between_people(
    generated: tuple[GenerationReport, Rows], owners: dict[tuple[str, str, int], int]
) -> None:
    people_by_email: dict[str | None, set[int]] = defaultdict(set)
    for row in generated[1]["crm", "customers"] + generated[1]["billing", "accounts"]:
        key = ("crm", "customers") if "first_name" in row else ("billing", "accounts")
        people_by_email[normalise(row["email"])].add(owners[(*key, row["id"])])
    people_by_email.pop(None, None)
    shared = [people for people in people_by_email.values() if len(people) > 1]
    assert shared
    assert len(shared) < CUSTOMERS / 10  # otherwise unique per person


def test_generate_writes_names_nicknames_and_pii_into_ticket_bodies(
    generated: tuple[GenerationReport, Rows], owners: dict[tuple[str, str, int], int]
) -> None:
    _, rows = generated
    last_names = {
        owners["crm", "customers", row["id"]]: row["last_name"] for row in rows["crm", "customers"]
    }
    tickets = rows["support", "tickets"]
    named = [
        ticket
        for ticket in tickets
        if (person := owners["support", "tickets", ticket["id"]]) in last_names
        and last_names[person] in ticket["body"]
    ]
    assert len(named) > 0.8 * sum(
        owners["support", "tickets", t["id"]] in last_names for t in tickets
    )
    bodies = " ".join(ticket["body"] for ticket in tickets)
    assert re.search(r"\(\d{3}\) \d{3}-\d{4}|\d{3}\.\d{3}\.\d{4}|\+1 ?\d{3}", bodies)
    assert re.search(r"@", bodies)
    holders = " ".join(a["holder_name"] for a in rows["billing", "accounts"])
    assert re.search(r"\b[A-Z]{2,}, [A-Z][a-z]+", holders)  # "LAST, First"


def test_generate_into_one_sqlite_url_prefixes_table_names(
    tmp_path: Path, generated: tuple[GenerationReport, Rows]
) -> None:
    url = f"sqlite:///{tmp_path / 'all.db'}"
    report = generate_sources(tmp_path / "out", customers=CUSTOMERS, seed=7, source_url=url)
    assert [t.name for t in report.tables] == [f"{s}_{t}" for s, t in TABLES]
    assert all(t.schema is None and t.url == url for t in report.tables)
    assert read_tables(report) == generated[1]
    assert report.ground_truth == tmp_path / "out" / "ground_truth.csv"
    engine = sa.create_engine(url)
    try:
        assert sorted(sa.inspect(engine).get_table_names()) == sorted(t.name for t in report.tables)
    finally:
        engine.dispose()


def test_generate_rerun_replaces_previous_tables(tmp_path: Path) -> None:
    progress: list[tuple[str, int]] = []
    generate_sources(tmp_path, customers=120)
    report = generate_sources(tmp_path, customers=30, progress=lambda *call: progress.append(call))
    rows = read_tables(report)
    assert {t.rows for t in report.tables if t.table == "customers"} == {
        len(rows["crm", "customers"])
    }
    assert len(rows["crm", "customers"]) < 40
    assert progress[0] == ("people", 30)
    assert [stage for stage, _ in progress[1:]] == [f"{s}.{t}" for s, t in TABLES]


@pytest.mark.parametrize(
    ("url", "mentions"),
    [
        ("postgresql://bob:s3cret@localhost:notaport/shop", "cannot parse"),
        ("postgresql://bob:s3cret@127.0.0.1:1/shop", "127.0.0.1"),
        ("nosuchdb://bob:s3cret@localhost/shop", "driver"),
    ],
)
def test_generate_bad_url_raises_source_error_without_password(
    tmp_path: Path, url: str, mentions: str
) -> None:
    with pytest.raises(SourceError) as caught:
        generate_sources(tmp_path, customers=5, source_url=url)
    message = str(caught.value)
    assert "s3cret" not in message
    assert "bob:***@" in message
    assert mentions in message
    assert "\n" not in message
    assert caught.value.__cause__ is not None


def test_generate_engine_url_picks_psycopg_for_bare_postgresql() -> None:
    assert engine_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg2://u:p@h/db").drivername == "postgresql+psycopg2"
    assert engine_url("sqlite:///x.db").drivername == "sqlite"


@pytest.mark.postgres
def test_generate_into_postgres_uses_one_schema_per_system(
    postgres: PostgresCluster,
    tmp_path: Path,
    generated: tuple[GenerationReport, Rows],
) -> None:
    url = postgres.create_database().replace("postgresql+psycopg://", "postgresql://")
    for _ in range(2):  # the second run must replace, not append to, the first
        report = generate_sources(tmp_path, customers=CUSTOMERS, seed=7, source_url=url)
    assert [(t.schema, t.name) for t in report.tables] == list(TABLES)
    assert all(t.url.startswith("postgresql+psycopg://") for t in report.tables)
    assert read_tables(report) == generated[1]


def test_generate_report_is_printable_without_urls(
    generated: tuple[GenerationReport, Rows],
) -> None:
    table: GeneratedTable = generated[0].tables[0]
    assert "url" not in repr(table)
