"""An entity's own names, and finding them in free text.

Masking hides an entity's names wherever they are written: ``free_text`` replaces them in
ticket bodies and notes, and ``fake`` never hands an entity a fake that is one of them. Which
names an entity has is not for this module to know: the project gives each policy a function
from an entity's rows to its :class:`EntityNames` (from everything resolution knows, see
:mod:`fabric.rules.entity_names`); without one, the names are the text values of the columns
whose name ends in "name" (:func:`column_names`).

Names are compared folded (case and accents aside): ``José`` in a ticket is the ``jose`` that
normalised match values hold. An entity's own words are found in any case, and one edit (or
one swap of neighbouring letters) away for words of four letters or more (a misspelt name is
still the name), alone or as part of a word ("Chris's", "Smith-Jones"); their *variants*
(nicknames, the full names they stand for) only when written with a capital, as names are:
a William's "Will" is hidden, "I will call" is not.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA

__all__ = [
    "NOT_NAMES",
    "EntityNames",
    "NamesOf",
    "column_names",
    "find_names",
    "fold",
    "name_words",
]

#: A word of a name: letters, with inner apostrophes and hyphens (O'Brien, Smith-Jones).
WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_LETTERS = re.compile(r"[^\W\d_]+")
_closest = process.extractOne
#: Edits and swaps of neighbouring letters ("Smiht"), each counted once.
_EDITS = OSA.distance

#: Words that a sign-off or an email address yields but that are nobody's name: a ticket
#: ending "... please. Thank you" gives the "name" *thank you* to the match rules' signature
#: step, and masking "you" in every ticket of that entity would hide nothing but meaning.
NOT_NAMES = frozenset(
    {
        "admin",
        "and",
        "best",
        "cheers",
        "contact",
        "dear",
        "dr",
        "hello",
        "hi",
        "info",
        "jr",
        "kind",
        "mail",
        "miss",
        "mr",
        "mrs",
        "ms",
        "no",
        "noreply",
        "please",
        "regards",
        "reply",
        "sales",
        "sincerely",
        "sir",
        "sr",
        "support",
        "team",
        "thank",
        "thanks",
        "the",
        "warm",
        "you",
        "yours",
    }
)


def fold(text: str) -> str:
    """Casefolded, without accents: how names are compared."""
    text = text.casefold()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def name_words(text: str) -> set[str]:
    """The folded words of a name worth hiding: whole (``o'brien``) and in parts (``brien``),
    two letters or more, none of :data:`NOT_NAMES`."""
    folded = fold(text)
    if folded.isalpha():  # one plain word, as most names are
        return {folded} if len(folded) >= 2 and folded not in NOT_NAMES else set()
    found: set[str] = set()
    for word in WORD.findall(folded):
        found.add(word)
        found.update(_LETTERS.findall(word))
    return {w for w in found if len(w) >= 2 and w not in NOT_NAMES}


@dataclass(frozen=True)
class EntityNames:
    """One entity's names: its own words, and their variants (nicknames...), all folded."""

    words: frozenset[str] = frozenset()
    variants: frozenset[str] = frozenset()

    @classmethod
    def of(cls, names: Iterable[str], variants: Iterable[str] = ()) -> EntityNames:
        """The names of these full names (``"Ada Lovelace"``), and these variant words."""
        return cls.from_words({w for name in names for w in name_words(name)}, variants)

    @classmethod
    def from_words(cls, words: Iterable[str], variants: Iterable[str] = ()) -> EntityNames:
        """The names of these folded words, and these variant words."""
        own = frozenset(w for w in words if len(w) >= 2 and w not in NOT_NAMES)
        extra = frozenset(v for v in variants if len(v) >= 2 and v not in NOT_NAMES) - own
        return cls(own, extra)

    # Made when first asked for: an entity masked without free text or fakes never needs them.

    @functools.cached_property
    def avoid(self) -> frozenset[str]:
        """Every word that stands for the entity: ``fake`` never hands it one of them."""
        return self.words | self.variants

    @functools.cached_property
    def long_words(self) -> tuple[str, ...]:
        """The own words of four letters or more: a word one edit from one is the name
        misspelt."""
        return tuple(sorted(w for w in self.words if len(w) >= 4))

    @functools.cached_property
    def near(self) -> frozenset[tuple[str, int]]:
        """(first letter, length) and (last letter, length) a word one edit (or one swap of
        neighbours) from a long own word can have: such an edit leaves its first or its last
        letter as it was (four letters or more), and changes its length by one at most.
        Other words are not compared at all."""
        return frozenset(
            {
                (end, len(w) + d)
                for w in self.long_words
                for end in (w[0], "$" + w[-1])
                for d in (-1, 0, 1)
            }
        )

    def __bool__(self) -> bool:
        return bool(self.words or self.variants)


#: From an entity's type and tables (its rows, unmasked) to its names.
NamesOf = Callable[[str, Mapping[str, list[dict[str, Any]]]], EntityNames]


def column_names(entity_type: str, tables: Mapping[str, list[dict[str, Any]]]) -> EntityNames:
    """The names in an entity's columns whose name ends in "name" (``first_name``,
    ``holder_name``): the names a project without match rules has."""
    return EntityNames.of(
        value
        for rows in tables.values()
        for row in rows
        for column, value in row.items()
        if isinstance(value, str) and column.lower().endswith("name")
    )


def find_names(text: str, names: EntityNames) -> list[tuple[int, int]]:
    """Spans of ``text`` that are one of the entity's names (see the module's docstring).

    A word joined to others by an apostrophe or a hyphen ("Chris's", "Smith-Jones") is
    hidden whole when any of its parts is a name.
    """
    if not names:
        return []
    spans: list[tuple[int, int]] = []
    for match in WORD.finditer(text):
        word = match.group()
        if _is_name(word, names) or (
            ("'" in word or "-" in word)
            and any(_is_name(part, names) for part in _LETTERS.findall(word))
        ):
            spans.append((match.start(), match.end()))
    return spans


def _is_name(word: str, names: EntityNames) -> bool:
    """Is ``word`` (as written) one of the entity's own words, one written as a name (with a
    capital) of their variants, or an own word of four letters or more misspelt by one edit
    or two letters swapped (OSA distance, in C)?"""
    folded = word.casefold() if word.isascii() else fold(word)
    if folded in names.words or (word[0].isupper() and folded in names.variants):
        return True
    if len(folded) < 4:
        return False
    near, size = names.near, len(folded)
    return ((folded[0], size) in near or ("$" + folded[-1], size) in near) and _closest(
        folded, names.long_words, scorer=_EDITS, score_cutoff=1
    ) is not None
