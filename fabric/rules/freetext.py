"""Find personal data in free text: emails, phone numbers, card numbers, IBANs, and the
entity's own names.

Each kind is looked for as people type it. Cards: 13 to 19 digits, whole or in groups of three
to six (4-4-4-4, Amex 4-6-5) split by spaces, dashes, dots or slashes, passing the Luhn check.
IBANs: any case, grouped or not, of the length the SWIFT registry gives the country, passing the
ISO 7064 mod-97 check. The checks are what keep order numbers and other long digit runs from
being taken for them. Phone numbers: libphonenumber's matcher for the region, run again with
the international prefixes ``00`` and ``011`` read as ``+`` (``0044 20 7946 0958`` in a US
ticket). Emails: internationalised ones too (``müller@exämple.de``, ``用户@例子.广告``, punycode).
Each detector runs only on text that can hold its kind (an ``@`` for emails, 7 digits for
phones and IBANs, 13 for cards), which many ticket bodies cannot; see ``benchmarks/mask_bench.py``
(``free_text``) for the cost.

Names are the entity's own, with their
nicknames and misspellings (see :mod:`fabric.rules.names`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Literal

import phonenumbers

from fabric.rules.names import EntityNames, find_names

__all__ = ["KINDS", "Kind", "find_pii", "luhn_ok"]

Kind = Literal["email", "phone", "card", "iban", "name"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "name")

_NOT_DIGITS = re.compile(r"\D+")


def _chars(ascii_allowed: str) -> str:
    """A regex class: the ASCII characters given, and every other character but white space.

    Addresses may hold any letter (RFC 6531); the punctuation and symbols outside ASCII that
    this lets in are cut off afterwards (:func:`_email_span`), which is cheaper than a class of
    every letter and mark.
    """
    banned = "".join(chr(c) for c in range(128) if chr(c) not in ascii_allowed)
    return f"[^\\s{re.escape(banned)}]"


_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LOCAL_ASCII = frozenset(_ALNUM + "._%+-")
_LOCAL = _chars(_ALNUM + "._%+-")
_LABEL = _chars(_ALNUM + "-")
#: an address; at most 64 characters before the "@" (RFC 5321's limit), so that a long run of
#: them without one is not read again from each of its characters (a longer local part is
#: taken whole afterwards, see :func:`_email_span`)
_EMAIL = re.compile(f"{_LOCAL}{{1,64}}+@{_LABEL}++(?:\\.{_LABEL}++)+")

#: IBAN length by country, from the SWIFT IBAN registry.
_IBAN_LENGTHS = {
    country: int(length)
    for country, length in re.findall(
        r"([A-Z]{2})([0-9]{2})",
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 "
        "DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 "
        "HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 "
        "MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 "
        "RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 "
        "VA22 VG24 XK20 YE30",
    )
}
#: an IBAN's check digits after its country code (digits first: they are rare in text)
_IBAN_START = re.compile(r"[0-9]{2}(?<=[A-Za-z]{2}[0-9]{2})")
#: the rest of an IBAN of each length, a separator allowed before any character
_IBAN_REST = {
    length: re.compile(f"(?:[ .-]?[A-Za-z0-9]){{{length - 4}}}")
    for length in set(_IBAN_LENGTHS.values())
}
_IBAN_SEPARATORS = re.compile(r"[ .-]")

#: where a card number may be: 13 characters or more of digits and separators
_LONG_NUMBER = re.compile(r"[0-9][0-9 ./-]{12,}")
#: a run of digit groups split by single separators
_NUMBER = re.compile(r"[0-9]+(?:[ ./-][0-9]+)*")
_GROUP = re.compile(r"[0-9]+")

#: international call prefixes: 00 (most of the world) and 011 (North America)
_IDD = re.compile(r"(?:00|011)(?=[ .-]?[1-9])")
#: a date, which the matcher may read as a number: 13-07-2014 is +1 307-2014 without area code
_DATE = re.compile(r"[0-9]{1,2}([./-])[0-9]{1,2}\1(?:19|20)[0-9]{2}")


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
    compact = _IBAN_SEPARATORS.sub("", text)
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _word_char(char: str) -> bool:
    """Whether ``char`` may be in an address: ASCII (the pattern chose those), a letter, a
    mark or a digit."""
    return char.isascii() or unicodedata.category(char)[0] in "LMN"


def _top_level(label: str) -> str:
    """The top-level domain that ``label`` starts with: letters (and marks), or punycode."""
    if label[:4].lower() == "xn--":
        return label if len(label) > 4 and label.isascii() else ""
    if not label[:1].isalpha():
        return ""
    end = 1
    while end < len(label) and (label[end].isalpha() or unicodedata.category(label[end])[0] == "M"):
        end += 1
    return label[:end] if end >= 2 else ""


def _local_char(char: str) -> bool:
    """Whether ``char`` is one that :data:`_EMAIL` takes before an "@"."""
    return char in _LOCAL_ASCII or not (char.isascii() or char.isspace())


def _email_span(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    """The address in a match of :data:`_EMAIL`, without the punctuation around it, or None.

    Punctuation and symbols outside ASCII ("：", "«", "’s") end the address, and so does the
    end of its top-level domain: letters (or punycode), so ``v1.2@3.4`` is no address and
    ``ada@example.com2`` ends at "com". The local part goes back to ``floor`` at most.
    """
    at = text.index("@", start, end)
    while start > floor and _local_char(text[start - 1]):
        start -= 1
    local = text[start:at]
    if not local.isascii():
        for i in range(len(local) - 1, -1, -1):
            if not _word_char(local[i]):
                start += i + 1
                break
    domain = text[at + 1 : end]
    if not domain.isascii():
        for i, char in enumerate(domain):
            if not _word_char(char):
                domain = domain[:i]
                break
    labels = domain.split(".")
    while len(labels) >= 2 and not _top_level(labels[-1]):
        labels.pop()
    if start == at or len(labels) < 2 or not all(labels):
        return None
    labels[-1] = _top_level(labels[-1])
    return start, at + 1 + len(".".join(labels))


def _email_spans(text: str) -> Iterator[tuple[int, int]]:
    # Searched again from where each address ends (or after the "@" of what was none), as a
    # match cut short may hold the start of the next one.
    at = 0
    while (match := _EMAIL.search(text, at)) is not None:
        span = _email_span(text, match.start(), match.end(), at)
        if span is None:
            at = text.index("@", match.start()) + 1
        else:
            yield span
            at = span[1]


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    """IBANs in any case, with or without separators, of their country's length.

    The length ends the IBAN, so a word right after it ("BE68 5390 0754 7034 from") is not
    taken for more of it; the character after must not be a letter or digit.
    """
    for match in _IBAN_START.finditer(text):
        start = match.start() - 2
        if start and text[start - 1].isalnum():
            continue
        length = _IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:
            continue
        rest = _IBAN_REST[length].match(text, match.end())
        if rest is None:
            continue
        end = rest.end()
        if (end == len(text) or not text[end].isalnum()) and _iban_ok(text[start:end]):
            yield start, end


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    """Card numbers: 13 to 19 digits passing Luhn, whole or grouped.

    Groups follow each other with one separator (space, dash, dot, slash) between them; every
    group but the last holds 3 to 6 digits, so dates and times (2-digit groups) never join one.
    From each group, the longest number that passes is taken, so a card followed by its expiry
    ("4111 1111 1111 1111 12/27") is still found whole. No card number starts with 0, nor with
    the group after a "+": those are phone numbers (``0044 ...``, ``+44 ...``).
    """
    numbers = (
        number
        for stretch in _LONG_NUMBER.finditer(text)
        for number in _NUMBER.finditer(text, stretch.start(), stretch.end())
        if number.end() - number.start() >= 13
    )
    for number in numbers:
        groups = [g.span() for g in _GROUP.finditer(text, number.start(), number.end())]
        i = 1 if text[number.start() - 1 : number.start()] == "+" else 0
        while i < len(groups):
            found = None
            if text[groups[i][0]] != "0":
                digits = ""
                for j in range(i, len(groups)):
                    start, end = groups[j]
                    digits += text[start:end]
                    if len(digits) > 19:
                        break
                    if len(digits) >= 13 and (j == i or end - start <= 6) and luhn_ok(digits):
                        found = j
                    if not 3 <= end - start <= 6:
                        break
            if found is None:
                i += 1
            else:
                yield groups[i][0], groups[found][1]
                i = found + 1


def _phone_spans(text: str, region: str) -> list[tuple[int, int]]:
    """Phone numbers by libphonenumber's matcher, longest first where two readings overlap.

    The matcher only knows the region's own international prefix. The text is read a second
    time with every ``00`` and ``011`` prefix written as "+" at the same place (so offsets stay
    the same), and a number found there starts at its prefix. Dates are not numbers.
    """
    leniency = phonenumbers.Leniency.POSSIBLE
    spans = [
        (m.start, m.end)
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency)
        if not _DATE.fullmatch(m.raw_string)
    ]
    prefixes: dict[int, int] = {}  # where each "+" goes -> where its prefix starts
    for prefix in _IDD.finditer(text):
        before = text[prefix.start() - 1] if prefix.start() else " "
        if not before.isalnum() and before not in "+.,_-/":  # not inside another number
            prefixes[prefix.end() - 1] = prefix.start()
    if prefixes:
        as_plus = list(text)
        for plus, start in prefixes.items():
            as_plus[start:plus] = " " * (plus - start)
            as_plus[plus] = "+"
        for m in phonenumbers.PhoneNumberMatcher("".join(as_plus), region, leniency):
            spans.append((prefixes.get(m.start, m.start), m.end))
        spans.sort(key=lambda span: (span[0], -span[1]))
    return spans


def find_pii(
    text: str, names: EntityNames | Sequence[str] = (), region: str = "US"
) -> list[tuple[int, int, Kind]]:
    """Spans ``(start, end, kind)`` of personal data in ``text``, in order, never overlapping.

    ``names`` are the entity's (see :mod:`fabric.rules.names`), or full names to take them from.
    """
    spans: list[tuple[int, int, Kind]] = []
    taken: list[tuple[int, int]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e in taken)

    def add(start: int, end: int, kind: Kind) -> None:
        if free(start, end):
            spans.append((start, end, kind))
            taken.append((start, end))

    # Each detector only where its kind can be: most ticket bodies hold no "@" and few digits.
    digits = len(_NOT_DIGITS.sub("", text))
    if "@" in text:
        for start, end in _email_spans(text):
            add(start, end, "email")
    if digits >= 7:  # an IBAN's check digits and account number hold more
        for start, end in _iban_spans(text):
            add(start, end, "iban")
    if digits >= 13:
        for start, end in _card_spans(text):
            add(start, end, "card")
    if digits >= 7:
        for start, end in _phone_spans(text, region):
            add(start, end, "phone")
    if not isinstance(names, EntityNames):
        names = EntityNames.of(str(n) for n in names)
    for start, end in find_names(text, names):
        add(start, end, "name")
    spans.sort()
    return spans
