"""Similarity metrics for fuzzy match rules, each returning a score in [0, 1].

The string metrics are rapidfuzz's (C++), not our own: they are the hot loop of resolution.
``name`` is Jaro-Winkler that also knows nicknames (Bob and Robert score 1.0), from the
curated ``nicknames`` data set; ``name_edits`` accepts nicknames and typos only, the better
test of whether two first names *conflict*.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Literal

from nicknames import NickNamer
from rapidfuzz import fuzz
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein

__all__ = ["METRICS", "Metric", "MetricName", "name_variants"]

Metric = Callable[[str, str], float]
MetricName = Literal[
    "exact",
    "jaro_winkler",
    "levenshtein",
    "damerau_levenshtein",
    "token_set",
    "name",
    "name_edits",
]

_namer = NickNamer()


@lru_cache(maxsize=65536)
def _name_group(name: str) -> frozenset[str]:
    """A name with its canonical forms and nicknames."""
    return frozenset({name} | _namer.canonicals_of(name) | _namer.nicknames_of(name))


def _name(a: str, b: str) -> float:
    if a == b or b in _name_group(a) or a in _name_group(b):
        return 1.0
    return float(JaroWinkler.similarity(a, b))


@lru_cache(maxsize=65536)
def name_variants(name: str) -> frozenset[str]:
    """Other ways of writing a first name, lowercased: its nicknames, the full names it is a
    nickname of, and their nicknames (Chris: Christopher, Christine, Kit, Tina...), without
    the name itself. Masking hides these in free text too: a Christopher signs "Chris"."""
    found = set(_name_group(name))
    for canonical in _namer.canonicals_of(name):
        found |= _namer.nicknames_of(canonical)
    found.discard(name)
    return frozenset(found)


@lru_cache(maxsize=65536)
def _canonical_forms(name: str) -> frozenset[str]:
    """A name and the full names it is a nickname of (Jimmy: James)."""
    return frozenset({name} | _namer.canonicals_of(name))


@lru_cache(maxsize=65536)
def _known(name: str) -> bool:
    """Is this a first name of the nickname data set (not a misspelling)?"""
    return bool(_namer.canonicals_of(name) or _namer.nicknames_of(name))


@lru_cache(maxsize=262144)
def _name_edits(a: str, b: str) -> float:
    """1.0 for one name written two ways: nicknames and typos, even both at once; else 0.0.

    Jaro-Winkler rates different names of relatives highly (Brian and Brandy, Christine and
    Christopher), which makes it a poor judge of *conflict*; counting edits does not. Two
    known names are one name only as nicknames (Mark is not Mary); otherwise one of them is a
    misspelling, allowed one edit (two from five letters on: each record may have its own).
    """
    if a == b or b in _name_group(a) or a in _name_group(b):
        return 1.0
    forms_a, forms_b = _canonical_forms(a), _canonical_forms(b)
    # Two nicknames of one name (Jim, Jimmy); two full names that share a nickname (Christine,
    # Christopher: Chris) are *not* one name.
    if forms_a & forms_b:
        return 1.0
    if _known(a) and _known(b):
        # Two real names (Mark, Mary) are two people, not a typo; but the full name behind a
        # nickname may be spelt another way (Kate: Katherine, Catherine).
        for x in forms_a:
            for y in forms_b:
                if (
                    (x, y) != (a, b)
                    and min(len(x), len(y)) >= 5
                    and (DamerauLevenshtein.distance(x, y, score_cutoff=1) <= 1)
                ):
                    return 1.0
        return 0.0
    allowed = 2 if min(len(a), len(b)) >= 5 else 1
    for x in forms_a:
        for y in forms_b:
            if DamerauLevenshtein.distance(x, y, score_cutoff=allowed) <= allowed:
                return 1.0
    return 0.0


METRICS: dict[str, Metric] = {
    "exact": lambda a, b: 1.0 if a == b else 0.0,
    "jaro_winkler": lambda a, b: float(JaroWinkler.similarity(a, b)),
    "levenshtein": lambda a, b: float(Levenshtein.normalized_similarity(a, b)),
    "damerau_levenshtein": lambda a, b: float(DamerauLevenshtein.normalized_similarity(a, b)),
    "token_set": lambda a, b: float(fuzz.token_set_ratio(a, b)) / 100.0,
    "name": _name,
    "name_edits": _name_edits,
}
