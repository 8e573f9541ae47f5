"""Find personal data in free text: emails, phone numbers, card numbers, IBANs, and the
entity's own names.

Cards must pass the Luhn check and IBANs the ISO 7064 mod-97 check, so order numbers and other
long digit runs are not taken for them. Phone numbers are found by libphonenumber's matcher
(only run on text holding seven digits or more). Names are the entity's own (from its rows),
matched as whole words, case-insensitively, or within a small edit distance for words of four
letters or more, so a misspelt name in a ticket is found too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import phonenumbers
from rapidfuzz.distance import Levenshtein

__all__ = ["KINDS", "Kind", "find_pii", "luhn_ok"]

Kind = Literal["email", "phone", "card", "iban", "name"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "name")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
_DIGITS = re.compile(r"\d")


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a digit string (card numbers)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _name_parts(names: Iterable[str]) -> set[str]:
    parts = set()
    for name in names:
        for word in _WORD.findall(str(name)):
            if len(word) >= 2:
                parts.add(word.lower())
    return parts


def find_pii(
    text: str, names: Sequence[str] = (), region: str = "US"
) -> list[tuple[int, int, Kind]]:
    """Spans ``(start, end, kind)`` of personal data in ``text``, in order, never overlapping."""
    spans: list[tuple[int, int, Kind]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(start: int, end: int, kind: Kind) -> None:
        if free(start, end):
            spans.append((start, end, kind))
            taken.append((start, end))

    for match in _EMAIL.finditer(text):
        add(match.start(), match.end(), "email")
    for match in _IBAN.finditer(text):
        if _iban_ok(match.group()):
            add(match.start(), match.end(), "iban")
    for match in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            add(match.start(), match.end(), "card")
    if len(_DIGITS.findall(text)) >= 7:
        for found in phonenumbers.PhoneNumberMatcher(text, region, phonenumbers.Leniency.POSSIBLE):
            add(found.start, found.end, "phone")
    parts = _name_parts(names)
    if parts:
        for match in _WORD.finditer(text):
            word = match.group().lower()
            if word in parts or (
                len(word) >= 4
                and any(
                    len(p) >= 4 and Levenshtein.distance(word, p, score_cutoff=1) <= 1
                    for p in parts
                )
            ):
                add(match.start(), match.end(), "name")
    spans.sort()
    return spans
