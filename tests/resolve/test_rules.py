"""Match rules files: compiled extractors and precise validation errors."""

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
      columns: {people: email, accounts: mail, tickets: [mail, body]}
    first:
      normalize: [trim, lowercase]
      columns:
        people: first
        accounts: {column: holder, before: [first_name_of]}
  rules:
    - name: same_email
      equal: [email]
    - name: similar_first
      equal: [email]
      similar:
        first: {metric: jaro_winkler, min: 0.9}
  never_link:
    email: [shared@example.com]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "match.yaml"
    path.write_text(text)
    return path


def test_match_rules_extract_normalise_and_never_link(tmp_path: Path) -> None:
    rules = load_match_rules(write(tmp_path, RULES), "customer")
    people = rules.extractor("people")
    accounts = rules.extractor("accounts")
    assert people is not None and accounts is not None
    assert people({"email": "  Ada@Example.COM ", "first": "Ada"}) == {
        "email": "ada@example.com",
        "first": "ada",
    }
    assert accounts({"mail": "ada@example.com", "holder": "LOVELACE, Ada"}) == {
        "email": "ada@example.com",
        "first": "ada",
    }
    assert people({"email": "Shared@example.com", "first": None}) == {"email": None, "first": None}
    assert rules.extractor("orders") is None


def test_match_rules_column_lists_take_the_first_value(tmp_path: Path) -> None:
    rules = load_match_rules(write(tmp_path, RULES), "customer")
    tickets = rules.extractor("tickets")
    assert tickets is not None
    assert tickets({"mail": None, "body": "Me@x.org"})["email"] == "me@x.org"
    assert tickets({"mail": "a@b.c", "body": "Me@x.org"})["email"] == "a@b.c"


def test_match_rules_unknown_field_in_rule(tmp_path: Path) -> None:
    text = RULES.replace(
        "equal: [email]\n    - name: similar", "equal: [emial]\n    - name: similar"
    )
    with pytest.raises(RuleError) as info:
        load_match_rules(write(tmp_path, text), "customer")
    assert "match.yaml:13 customer.rules.0.equal.0: unknown field 'emial'" in str(info.value)


def test_match_rules_unknown_normaliser_and_metric(tmp_path: Path) -> None:
    text = RULES.replace("[trim, lowercase]", "[trim, upper]", 1).replace(
        "jaro_winkler", "jarowinkler"
    )
    with pytest.raises(RuleError) as info:
        load_match_rules(write(tmp_path, text), "customer")
    message = str(info.value)
    assert "match.yaml:4 customer.fields.email.normalize.1: " in message
    assert "unknown normaliser 'upper'" in message
    assert "customer.rules.1.similar.first.metric" in message and "'jaro_winkler'" in message


def test_match_rules_fuzzy_rule_needs_blocking(tmp_path: Path) -> None:
    text = RULES.replace(
        """    - name: similar_first
      equal: [email]
""",
        """    - name: similar_first
""",
    )
    with pytest.raises(RuleError, match="needs `block_on` keys"):
        load_match_rules(write(tmp_path, text), "customer")


def test_match_rules_similar_needs_min(tmp_path: Path) -> None:
    text = RULES.replace("{metric: jaro_winkler, min: 0.9}", "{metric: jaro_winkler}")
    with pytest.raises(RuleError, match=r"similar\.first needs `min`"):
        load_match_rules(write(tmp_path, text), "customer")


def test_match_rules_checks_columns_against_schema(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        load_match_rules(
            write(tmp_path, RULES),
            "customer",
            {
                "people": ["id", "email", "first"],
                "accounts": ["id", "email", "holder"],
                "tickets": ["mail", "body"],
            },
        )
    assert (
        "customer.fields.email.columns.accounts: table has no column 'mail' "
        "(columns: id, email, holder)"
    ) in str(info.value)


def test_match_rules_missing_entity_type(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="no rules for entity type 'device'"):
        load_match_rules(write(tmp_path, RULES), "device")


def test_match_rules_single_section_needs_no_name(tmp_path: Path) -> None:
    assert load_match_rules(write(tmp_path, RULES)).entity_type == "customer"
