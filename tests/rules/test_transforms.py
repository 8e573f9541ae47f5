"""Transforms at ingest: what is stored, what is refused at load, what stops a sync."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fabric.demo import DemoProject
from fabric.errors import RuleError, SourceError
from fabric.project import Project
from fabric.rules.transforms import load_transforms
from fabric.services.entities import EntityService
from fabric.sync import sync_project

SOURCE = [
    ("id", "INTEGER"),
    ("name", "TEXT"),
    ("email", "TEXT"),
    ("born", "TEXT"),
    ("amount", "TEXT"),
    ("phone", "TEXT"),
    ("notes", "TEXT"),
]
PROTECTED = {"id": "primary key"}


def compile_table(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "transforms.yaml"
    path.write_text(text)
    # As a project loads them: steps are checked with the columns, all problems at once.
    return load_transforms(path, check_steps=False).for_table(
        "customer", "people", SOURCE, PROTECTED
    )


def test_steps_drops_and_derived_columns(tmp_path: Path) -> None:
    table = compile_table(
        tmp_path,
        """
customer:
  people:
    name: [collapse_spaces, title]
    email: [trim, lowercase]
    born: {parse_date: "%d/%m/%Y"}
    amount: [{cast: REAL}, {default: 0.0}]
    phone: {normalize: phone, region: GB}
    notes: drop
    domain: {builtin: email_domain, from: [email], type: TEXT}
    label: {derive: "concat(upper(substr(name, 0, 1)), '-', len(notes or ''))", type: TEXT}
""",
    )
    assert [c for c, _ in table.columns] == [
        "id",
        "name",
        "email",
        "born",
        "amount",
        "phone",
        "domain",
        "label",
    ]
    assert dict(table.columns)["amount"] == "REAL" and dict(table.columns)["born"] == "TEXT"
    row = (7, "  ada   lovelace ", " Ada@Example.COM ", "10/12/1815", None, "020 7946 0958", "x!")
    assert table.apply(row) == (
        7,
        "Ada Lovelace",
        "ada@example.com",
        "1815-12-10",
        0.0,
        "+442079460958",
        "example.com",
        "A-2",
    )


def test_every_problem_of_a_file_is_reported_at_once_with_lines(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        compile_table(
            tmp_path,
            """
customer:
  people:
    id: [trim]
    nmae: [trim]
    email: [lowercsae]
    born: {parse_date: 42}
    amount: {cast: DECIMAL}
    bad: {derive: "name.upper()"}
    worse: {derive: "secret + open(name)"}
    also: {builtin: email_domian, from: [email]}
""",
        )
    message = str(info.value)
    assert "transforms.yaml:4 customer.people.id: is the table's primary key" in message
    assert "transforms.yaml:5 customer.people.nmae: unknown column; did you mean 'name'?" in message
    assert "customer.people.email.0: unknown step 'lowercsae'; did you mean 'lowercase'?" in message
    assert "customer.people.amount.cast: unknown type (types: INTEGER, REAL, TEXT)" in message
    assert "attribute access (x.y) is not allowed" in message
    assert "unknown column(s) secret" in message and "unknown function(s) open" in message
    assert "unknown built-in 'email_domian'; did you mean 'email_domain'?" in message


def test_values_that_do_not_parse_stop_the_sync_or_become_null(tmp_path: Path) -> None:
    strict = compile_table(tmp_path, 'customer:\n  people:\n    born: {parse_date: "%Y-%m-%d"}\n')
    with pytest.raises(SourceError, match=r"people\.born: a value does not match parse_date") as e:
        strict.apply((1, "a", "b", "10/12/1815", "1", "2", "3"))
    assert "10/12/1815" not in str(e.value)  # the value itself is never in a message
    lenient = compile_table(
        tmp_path,
        'customer:\n  people:\n    born: {parse_date: "%Y-%m-%d", invalid: "null"}\n',
    )
    assert lenient.apply((1, "a", "b", "10/12/1815", "1", "2", "3"))[3] is None


def _crm_emails(sources: Path) -> dict[int, str]:
    with sqlite3.connect(sources / "crm.db") as conn:
        return {int(i): str(e) for i, e in conn.execute("SELECT id, email FROM customers")}


def test_a_sync_stores_transformed_rows_and_a_changed_rule_rebuilds(
    fresh_demo: DemoProject,
) -> None:
    emails = _crm_emails(fresh_demo.directory / "sources")
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
        service = EntityService(project)
        entity_id = service.find("customer", "crm", str(next(iter(emails))))
        row = service.document("customer", entity_id, role="steward")["tables"]["crm_customers"][0]
        assert row["email"] == emails[row["id"]].strip().lower()
        domain = row["email"].rsplit("@", 1)[1]
        free = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com")
        assert row["email_provider"] == (domain if domain in free else "other")
        schema_before = project.schema("customer").version
    transforms = fresh_demo.directory / "rules" / "transforms.yaml"
    transforms.write_text(
        transforms.read_text().replace("    first_name:   [collapse_spaces]\n", "")
    )
    with Project.open(fresh_demo.config_path) as project:
        assert project.schema("customer").version != schema_before
        report = sync_project(project)
        assert report.mode == "full"  # other ingest rules: every entity is rebuilt
        assert report.updated == project.catalog.count("customer")


def test_transforms_of_an_unknown_table_are_an_error(fresh_demo: DemoProject) -> None:
    transforms = fresh_demo.directory / "rules" / "transforms.yaml"
    transforms.write_text(transforms.read_text() + "  nowhere:\n    x: drop\n")
    with (
        Project.open(fresh_demo.config_path) as project,
        pytest.raises(RuleError, match="unknown table"),
    ):
        project.schema("customer")


def test_a_file_alone_has_its_steps_checked(tmp_path: Path) -> None:
    """Without sources (`fabric rules check FILE`), steps and expressions are still checked."""
    path = tmp_path / "transforms.yaml"
    path.write_text(
        "customer:\n  people:\n    email: [lowercsae]\n    x: {derive: 'a.b'}\n"
        "    y: {derive: '(lambda q: 1)(email)'}\n"
    )
    with pytest.raises(RuleError) as info:
        load_transforms(path)
    message = str(info.value)
    assert "transforms.yaml:3 customer.people.email.0: unknown step 'lowercsae'" in message
    assert "transforms.yaml:4 customer.people.x.derive: attribute access" in message
    assert "customer.people.y.derive: not allowed in an expression: Lambda" in message


def test_a_derive_sees_transformed_and_dropped_columns_and_a_failure_names_where(
    tmp_path: Path,
) -> None:
    table = compile_table(
        tmp_path,
        """
customer:
  people:
    amount: {cast: REAL}
    notes: drop
    share: {derive: "amount / len(notes)", type: REAL}
    big: {derive: "amount ** 2 > 100 and notes[0] == 'x'", type: INTEGER}
""",
    )
    assert table.apply((1, "a", "b", "c", "12", "p", "xyz")) == (
        1,
        "a",
        "b",
        "c",
        12.0,
        "p",
        4.0,
        1,
    )
    with pytest.raises(SourceError) as caught:
        table.apply((1, "a", "b", "c", "12", "p", ""))  # a division by zero
    message = str(caught.value)
    assert message.startswith("transforms.yaml: customer.people.share: the derive failed on a row")
    assert "ZeroDivisionError" in message and "12" not in message


def test_what_the_language_lacks_is_refused_naming_file_line_and_path(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as caught:
        compile_table(
            tmp_path,
            "customer:\n  people:\n    x: {derive: '[n for n in name]'}\n",
        )
    assert "transforms.yaml:3 customer.people.x.derive: not allowed in an expression: ListComp" in (
        str(caught.value)
    )
