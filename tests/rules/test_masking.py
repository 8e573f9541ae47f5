"""Masking policies: operators, privacy by default, strict validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.errors import RuleError
from fabric.rules.masking import load_masking
from fabric.rules.operators import MaskContext, PartialOp, compile_operator

KEY = b"k" * 32

POLICIES = """\
default_policy: analyst
policies:
  analyst:
    customer:
      people:
        id:    {op: keep}
        email: {op: hash, truncate: 16}
        phone: {op: partial, keep_last: 2}
        note:  {op: redact}
        ssn:   {op: "null"}
  steward: {clear: true}
"""
SCHEMA = {"customer": {"people": ["id", "email", "phone", "note", "ssn"]}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "masking.yaml"
    path.write_text(text)
    return path


def rows() -> dict[str, list[dict[str, Any]]]:
    return {
        "people": [
            {
                "id": 1,
                "email": "ada@example.com",
                "phone": "+15551234567",
                "note": "Ada called",
                "ssn": "123-45-6789",
            }
        ]
    }


def test_masking_default_policy_masks_each_column(tmp_path: Path) -> None:
    policies = load_masking(write(tmp_path, POLICIES), KEY, SCHEMA)
    data = rows()
    policies.for_policy(None).apply("customer", data)
    row = data["people"][0]
    assert len(row["email"]) == 16 and row["email"] != "ada@example.com"
    assert row["phone"] == "**********67"
    assert row["note"] == "[REDACTED]" and row["ssn"] is None and row["id"] == 1


@pytest.mark.parametrize(
    ("unlisted", "expected"),
    [(None, None), ("null", None), ("redact", "[REDACTED]"), ("keep", "new")],
)
def test_masking_unlisted_columns_are_hidden_by_default(
    tmp_path: Path, unlisted: str | None, expected: str | None
) -> None:
    text = (
        POLICIES
        if unlisted is None
        else POLICIES.replace("  analyst:\n", f'  analyst:\n    unlisted: "{unlisted}"\n')
    )
    policies = load_masking(write(tmp_path, text), KEY, None)
    data = {"people": [{"id": 1, "added_later": "new"}], "other_table": [{"x": "new"}]}
    policies.for_policy(None).apply("customer", data)
    assert data["people"][0] == {"id": 1, "added_later": expected}
    assert data["other_table"][0] == {"x": expected}


def test_masking_default_policy_must_mask_something(tmp_path: Path) -> None:
    text = """\
default_policy: open
policies:
  open:
    unlisted: keep
    customer:
      people:
        id: {op: keep}
"""
    with pytest.raises(RuleError, match="the default policy masks nothing"):
        load_masking(write(tmp_path, text), KEY, SCHEMA)


def test_masking_clear_policy_changes_nothing(tmp_path: Path) -> None:
    policies = load_masking(write(tmp_path, POLICIES), KEY, SCHEMA)
    data = rows()
    policies.for_policy("steward").apply("customer", data)
    assert data == rows()


def test_masking_hash_is_consistent_and_keyed(tmp_path: Path) -> None:
    path = write(tmp_path, POLICIES)
    a = load_masking(path, KEY).for_policy(None).tables[("customer", "people")]["email"]
    b = load_masking(path, b"z" * 32).for_policy(None).tables[("customer", "people")]["email"]
    assert a is not None and b is not None
    ctx = MaskContext()
    assert a("x@y.z", ctx) == a("x@y.z", ctx) != b("x@y.z", ctx)


def test_masking_errors_name_file_line_and_path(tmp_path: Path) -> None:
    text = POLICIES.replace("{op: hash, truncate: 16}", "{op: hsah}").replace(
        "phone: {op: partial", "phnoe: {op: partial"
    )
    with pytest.raises(RuleError) as info:
        load_masking(write(tmp_path, text), KEY, SCHEMA)
    message = str(info.value)
    assert "masking.yaml:7 policies.analyst.customer.people.email.op: " in message
    assert "unknown op 'hsah'; did you mean 'hash'? (allowed: keep, null, redact" in message
    assert (
        "masking.yaml:8 policies.analyst.customer.people.phnoe: "
        "unknown column; did you mean 'phone'?" in message
    )


def test_masking_hash_without_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="needs the master key"):
        load_masking(write(tmp_path, POLICIES), None)


def test_masking_default_policy_cannot_be_clear(tmp_path: Path) -> None:
    text = POLICIES.replace("default_policy: analyst", "default_policy: steward")
    with pytest.raises(RuleError, match="the default policy must mask"):
        load_masking(write(tmp_path, text), KEY)


def test_masking_demo_rules_compile_against_demo_schema(demo_project: Any) -> None:
    assert set(demo_project.policies.policies) == {"analyst", "steward"}


@given(st.text(min_size=1, max_size=40), st.integers(0, 6), st.integers(0, 6))
def test_partial_never_returns_the_original(value: str, first: int, last: int) -> None:
    mask = compile_operator(PartialOp(op="partial", keep_first=first, keep_last=last), None)
    assert mask is not None
    masked = mask(value, MaskContext())
    assert len(masked) == len(value)
    # Every character is kept or masked, and at least one is always masked. (A value with a
    # "*" where the mask goes can come back unchanged, which reveals nothing.)
    assert all(m in (v, "*") for m, v in zip(masked, value, strict=True))
    assert "*" in masked
    if "*" not in value:
        assert masked != value


def test_operator_parameters_are_checked_with_file_line_and_path(tmp_path: Path) -> None:
    text = """default_policy: analyst
policies:
  analyst:
    customer:
      people:
        phone: {op: fpe, alphabet: digits, min_length: 4}
        email: {op: tokenize, domian: email}
        name: {op: generalize, to: range}
  steward: {clear: true}
"""
    with pytest.raises(RuleError) as info:
        load_masking(write(tmp_path, text), KEY, SCHEMA)
    lines = str(info.value).splitlines()
    assert any(
        "masking.yaml:6 policies.analyst.customer.people.phone: FPE domain too small: 10^4" in line
        for line in lines
    ), lines
    assert any(
        "masking.yaml:7 policies.analyst.customer.people.email.domian: unknown key; "
        "did you mean 'domain'? (allowed: domain, op)" in line
        for line in lines
    ), lines
    assert any(
        "masking.yaml:8 policies.analyst.customer.people.name: to: range needs size" in line
        for line in lines
    ), lines
    faker = text.replace(
        "{op: fpe, alphabet: digits, min_length: 4}", "{op: fake, provider: frist_name}"
    )
    faker = faker.replace("domian", "domain").replace("to: range}", "to: range, size: 10}")
    with pytest.raises(
        RuleError, match=r"masking.yaml:6 .*phone.op: 'fake' unknown Faker provider"
    ):
        load_masking(write(tmp_path, faker), KEY, SCHEMA)


def test_joins_on_masked_data_still_work_across_systems(demo_dir: Path) -> None:
    """The same email in CRM, billing and support masks to the same token in each table."""
    from fabric.project import Project
    from fabric.services.entities import EntityService

    joined = 0
    with Project.open(demo_dir / "fabric.yaml") as project:
        service = EntityService(project)
        for entity_id in sorted(project.catalog.entities("customer"))[:150]:
            clear = service.document("customer", entity_id, role="steward")["tables"]
            masked = service.document("customer", entity_id)["tables"]
            pairs = [
                (row["email"], masked_row["email"])
                for table in ("crm_customers", "billing_accounts", "support_tickets")
                for row, masked_row in zip(clear[table], masked[table], strict=True)
                if row.get("email")
            ]
            for value, token in pairs:
                assert token != value
                same = {t for v, t in pairs if v == value}
                assert same == {token}, "one email, several tokens"
                joined += sum(1 for v, _ in pairs if v == value) > 1
    assert joined > 50  # many people's email is in more than one system
