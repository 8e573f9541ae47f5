"""Match rules files: compiled keys and precise validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.errors import RuleError
from fabric.resolve.rules import load_match_rules

RULES = """\
customer:
  fields:
    email:
      normalize: [trim, lowercase]
      columns: {people: email, accounts: mail}
  rules:
    - name: same_email
      fields: [email]
  never_link:
    email: [shared@example.com]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "match.yaml"
    path.write_text(text)
    return path


def test_match_rules_normalise_and_never_link(tmp_path: Path) -> None:
    rules = load_match_rules(write(tmp_path, RULES), "customer")
    people = rules.key_functions["people"]
    accounts = rules.key_functions["accounts"]
    assert people({"email": "  Ada@Example.COM "}) == accounts({"mail": "ada@example.com"})
    assert people({"email": "Shared@example.com"}) == [None]
    assert people({"email": None}) == [None]


def test_match_rules_unknown_field_in_rule(tmp_path: Path) -> None:
    text = RULES.replace("fields: [email]", "fields: [emial]")
    with pytest.raises(RuleError) as info:
        load_match_rules(write(tmp_path, text), "customer")
    assert "match.yaml:8 customer.rules.0.fields.0: unknown field 'emial'" in str(info.value)


def test_match_rules_unknown_normaliser(tmp_path: Path) -> None:
    text = RULES.replace("[trim, lowercase]", "[trim, upper]")
    with pytest.raises(RuleError) as info:
        load_match_rules(write(tmp_path, text), "customer")
    assert "match.yaml:4 customer.fields.email.normalize.1:" in str(info.value)
    assert "'lowercase'" in str(info.value)


def test_match_rules_checks_columns_against_schema(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        load_match_rules(
            write(tmp_path, RULES),
            "customer",
            {"people": ["id", "email"], "accounts": ["id", "email"]},
        )
    assert (
        "customer.fields.email.columns.accounts: table has no column 'mail' (columns: id, email)"
    ) in str(info.value)


def test_match_rules_missing_entity_type(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no rules for entity type 'device'"):
        load_match_rules(write(tmp_path, RULES), "device")
