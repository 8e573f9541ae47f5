"""Normalisers and similarity metrics used by match rules."""

from __future__ import annotations

import pytest

from fabric.resolve.compare import METRICS
from fabric.resolve.normalize import is_normaliser, make_normaliser


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("phone", "(415) 555-0134", "+14155550134"),
        ("phone", "415.555.0134", "+14155550134"),
        ("phone", "+44 20 7946 0958", "+442079460958"),
        ("phone", "12", None),
        ("extract_phone", "Call me on 1-206-805-6512 please.", "+12068056512"),
        ("extract_email", "My email is Ada@X.org. Thanks", "Ada@X.org"),
        ("email_user", "ada.lovelace+x@x.org", "adalovelacex"),
        ("date", "19940929", "1994-09-29"),
        ("date", "2024-01-01T10:00:00", "2024-01-01"),
        ("date", "next week", None),
        ("first_name_of", "LOVELACE, Ada", "Ada"),
        ("last_name_of", "Ada King Lovelace", "Lovelace"),
        ("last_name_of", "Ada", None),
        ("signature_name", "Hi,\nthe box was damaged.\nRegards,\nAda Lovelace", "Ada Lovelace"),
        ("signature_name", "Please close my account. Best, Ada Lovelace", "Ada Lovelace"),
        ("signature_name", "Please close my account.", None),
        ("ascii", "Zoë Ñúñez", "Zoe Nunez"),
        ("prefix_3", "lovelace", "lov"),
        ("soundex", "Robert", "R163"),
    ],
)
def test_normalise(name: str, value: str, expected: str | None) -> None:
    assert make_normaliser(name)(value) == expected


def test_normaliser_names() -> None:
    assert is_normaliser("prefix_4") and is_normaliser("phone")
    assert not is_normaliser("prefix_0") and not is_normaliser("upper")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("bob", "robert", True),  # nickname
        ("jim", "jimmy", True),  # two nicknames of James
        ("kevin", "kevni", True),  # typo
        ("cristopher", "chris", True),  # typo of the full name of a nickname
        ("gaary", "gary", True),  # a misspelling is not a name of its own
        ("mark", "mary", False),  # two real names, one letter apart
        ("kate", "catherine", True),  # Kate is Katherine, spelt Catherine here
        ("brian", "brandy", False),
        ("christine", "christopher", False),  # both shorten to Chris, still two names
    ],
)
def test_name_edits_tells_typos_and_nicknames_from_other_names(a: str, b: str, same: bool) -> None:
    assert (METRICS["name_edits"](a, b) == 1.0) is same


def test_metrics_range() -> None:
    for name, metric in METRICS.items():
        assert metric("martha", "marhta") <= 1.0, name
        assert metric("abc", "abc") == 1.0, name
