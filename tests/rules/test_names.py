"""An entity's names: from everything resolution knows, found in free text with their
nicknames and misspellings, and never masked away where they are only ordinary words."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.project import Project
from fabric.resolve.rules import load_match_rules
from fabric.rules.entity_names import EntityNameFinder, name_fields
from fabric.rules.names import EntityNames, find_names, fold
from fabric.rules.operators import FreeTextOp, MaskContext, compile_operator

DEMO_MATCH = Path(__file__).parents[2] / "rules" / "match.yaml"


def found(text: str, names: EntityNames) -> list[str]:
    return [text[start:end] for start, end in find_names(text, names)]


def test_names_own_words_in_any_case_and_one_typo_away() -> None:
    names = EntityNames.of(["Katie Underwood"])
    text = "KATIE here, katie underwood, Undrwood, Katy? Under wood."
    assert found(text, names) == ["KATIE", "katie", "underwood", "Undrwood"]


def test_names_nicknames_are_found_when_written_as_names() -> None:
    finder = EntityNameFinder({})
    names = finder("customer", {"crm": [{"first_name": "Christopher", "last_name": "Smith"}]})
    masked = compile_operator(FreeTextOp(op="free_text"), None)
    assert masked is not None
    out = masked("Thanks,\nChris Smith", MaskContext("customer", "e1", names=names))
    assert out == "Thanks,\n[NAME] [NAME]"
    william = finder("customer", {"crm": [{"first_name": "William"}]})
    assert found("Will you call? I will. Bill said so; Billy too.", william) == [
        "Will",
        "Bill",
        "Billy",
    ]


def test_names_sign_off_words_are_never_names() -> None:
    names = EntityNames.of(["Thank you", "Dear Support"])
    assert not names
    assert found("Thank you, dear support team", names) == []


def test_names_are_folded_so_accents_do_not_hide_them() -> None:
    names = EntityNames.of(["jose nunez"])  # as match rules normalise them (ascii)
    assert found("Saludos, José Núñez", names) == ["José", "Núñez"]
    assert fold("Ångström") == "angstrom"


def test_name_fields_of_the_demo_rules_are_the_names_and_the_email_user() -> None:
    rules = load_match_rules(DEMO_MATCH, "customer")
    assert set(name_fields(rules)) == {"first_name", "last_name", "email_user"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # A ticket alone: the name it is signed with, and the email's user part.
        (
            {"email": "k.underwood@aol.com", "body": "Hi,\nMy order.\nRegards,\nKatie Underwood"},
            {"katie", "underwood", "kunderwood"},
        ),
        ({"email": None, "body": "Order late. Best, Bill Mccalll"}, {"bill", "mccalll"}),
    ],
)
def test_name_finder_takes_names_from_the_match_rules(
    row: dict[str, str | None], expected: set[str]
) -> None:
    finder = EntityNameFinder({"customer": load_match_rules(DEMO_MATCH, "customer")})
    names = finder("customer", {"support_tickets": [row]})
    assert names.words == expected
    assert "william" in names.variants or "bill" not in expected


def test_name_finder_reads_a_billing_holder_written_last_name_first() -> None:
    finder = EntityNameFinder({"customer": load_match_rules(DEMO_MATCH, "customer")})
    names = finder("customer", {"billing_accounts": [{"holder_name": "UNDERWOOD, Katie"}]})
    assert {"katie", "underwood"} <= names.words
    assert "kate" in names.variants or "kathryn" in names.variants


def test_masking_leaves_no_source_text_in_normaliser_caches(demo_project: Project) -> None:
    """Names are read with the match rules' normalisers, whose caches a sync clears after
    itself; masking, on every lookup, must not fill them with ticket bodies."""
    from fabric.resolve import normalize
    from fabric.services.entities import EntityService

    normalize.clear_caches()
    service = EntityService(demo_project)
    for entity_id in demo_project.catalog.sample_ids("customer", 20):
        service.document("customer", entity_id, role="analyst", tables=["support_tickets"])
    assert normalize._signature_name.cache_info().currsize == 0
    assert normalize._extract_email.cache_info().currsize == 0


@given(
    name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=4, max_size=12),
    edit=st.sampled_from(["insert", "delete", "substitute", "swap"]),
    at=st.integers(min_value=0, max_value=12),
    letter=st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
)
def test_names_every_one_edit_or_swap_misspelling_is_found(
    name: str, edit: str, at: int, letter: str
) -> None:
    """The cheap test that spares most words the edit distance (first or last letter, and
    the length) never turns a real one-edit or one-swap misspelling away."""
    at = min(at, len(name) - (edit != "insert") - (edit == "swap"))
    if edit == "insert":
        typo = name[:at] + letter + name[at:]
    elif edit == "swap":
        typo = name[:at] + name[at + 1] + name[at] + name[at + 2 :]
    elif edit == "delete":
        typo = name[:at] + name[at + 1 :]
    else:
        typo = name[:at] + letter + name[at + 1 :]
    names = EntityNames.from_words([name])
    if len(typo) >= 4 and names.words:
        assert found(f"Thanks, {typo.title()}!", names) == [typo.title()]


def test_names_inside_possessives_and_compounds_are_hidden_whole() -> None:
    finder = EntityNameFinder({})
    names = finder("customer", {"crm": [{"first_name": "Christopher", "last_name": "Swanson"}]})
    text = "About Chris's refund: Chris-Swanson, Swnason and Smiht. Bob's cat."
    assert found(text, names) == ["Chris's", "Chris-Swanson", "Swnason"]
    smith = EntityNames.of(["Ann Smith"])
    assert found("Dear Smiht, Smith-Jones and Smith's dog", smith) == [
        "Smiht",
        "Smith-Jones",
        "Smith's",
    ]
