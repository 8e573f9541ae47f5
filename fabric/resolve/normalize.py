"""Normalisers applied to match fields before they are compared or used as keys.

Each is a plain ``str -> str | None`` function (None: no usable value), chosen by name in the
match rules and chained in the order written. Parametrised ones are spelled ``prefix_3``.
Phone numbers go to E.164 with Google's libphonenumber port; phonetic codes come from jellyfish.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import unicodedata
from collections.abc import Callable

import jellyfish
import phonenumbers

__all__ = [
    "NORMALIZER_NAMES",
    "Normaliser",
    "clear_caches",
    "is_normaliser",
    "make_normaliser",
]

Normaliser = Callable[[str], str | None]

_SPACES = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D+")
# Every character str.isalpha() accepts, and a few more (superscript digits): a text it finds
# one in only takes libphonenumber's full parse instead of the shortcut.
_LETTER = re.compile(r"[^\W\d_]")
_PUNCT = re.compile(r"[^\w\s]+")
_PARAMETRISED = re.compile(r"^(prefix|suffix)_([1-9][0-9]?)$")
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d.%m.%Y")


def _ascii(text: str) -> str:
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _date(text: str) -> str | None:
    """Any common unambiguous spelling of a date, as YYYY-MM-DD (times are dropped)."""
    text = text.strip()
    head = text[:10] if len(text) >= 10 and text[4:5] == "-" else text
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(head, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def _person_parts(text: str) -> list[str]:
    """Name words in given-name-first order; "LAST, First" is turned around."""
    if "," in text:
        last, _, first = text.partition(",")
        text = f"{first} {last}"
    return [w for w in _SPACES.split(_PUNCT.sub(" ", text).strip()) if w]


def _first_name_of(text: str) -> str | None:
    parts = _person_parts(text)
    return parts[0] if parts else None


def _last_name_of(text: str) -> str | None:
    parts = _person_parts(text)
    return parts[-1] if len(parts) > 1 else None


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SIGNATURE_CUT = re.compile(r"(?:\n|,|!|--|\.)(?!.*(?:\n|,|!|--|\.))", re.DOTALL)
_NAME_WORDS = re.compile(r"^[^\W\d_][\w'-]*(?: [^\W\d_][\w'-]*){1,3}$")


# Several match fields read the same text through the same first step (a ticket body gives
# the email and its user part, the signature gives first and last name): the second call is
# a cache hit instead of another regex scan of the text.
@functools.lru_cache(maxsize=1024)
def _extract_email(text: str) -> str | None:
    """The first email address written in a text (or the text itself if it is one)."""
    match = _EMAIL.search(text)
    return match.group(0) if match else None


@functools.lru_cache(maxsize=1024)
def _signature_name(text: str) -> str | None:
    """The name a message is signed with: the words after its last line break or sign-off.

    "Regards,\nVictor Mills" and "... Best, Joshua Luna" both give the name; anything that
    does not look like two to four words of letters gives nothing.
    """
    pieces = _SIGNATURE_CUT.split(text.strip())
    tail = pieces[-1].strip() if pieces else ""
    return tail if _NAME_WORDS.match(tail) else None


#: A phone-like run: an optional +, then at least seven digits with the usual separators.
_PHONE_LIKE = re.compile(r"\+?\(?\d(?:[\d\s().-]{5,18})\d")
#: Regions of the North American Numbering Plan: a ten-digit national number is +1 and those
#: digits, which spares libphonenumber's full parse, most of a sync's time when every phone
#: went through it (benchmarks/README.md, "Phone numbers").
_NANP = frozenset({"US", "CA"})


def _extract_phone(region: str) -> Normaliser:
    leniency = phonenumbers.Leniency.POSSIBLE
    parse = _phone(region)

    def normalise(text: str) -> str | None:
        candidate = _PHONE_LIKE.search(text)
        if candidate is None:
            return None  # no run of seven digits: no phone number to look for
        # The common spellings parse directly; libphonenumber's matcher (slow) settles the rest.
        quick = parse(candidate.group(0))
        if quick is not None:
            return quick
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
            return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        return None

    return normalise


def _phone(region: str) -> Normaliser:
    nanp = region in _NANP

    def normalise(text: str) -> str | None:
        if _LETTER.search(text) is None:
            digits = _NON_DIGITS.sub("", text)
            international = text.lstrip().startswith("+")
            if nanp and not international and len(digits) == 10 and digits[0] not in "01":
                return "+1" + digits
            if (
                (nanp or international)
                and len(digits) == 11
                and digits[0] == "1"
                and (digits[1] not in "01")
            ):
                return "+" + digits
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    return normalise


_FIXED: dict[str, Normaliser] = {
    "trim": str.strip,
    "lowercase": str.casefold,
    "collapse_spaces": lambda s: _SPACES.sub(" ", s).strip(),
    "digits_only": lambda s: _NON_DIGITS.sub("", s),
    "strip_punctuation": lambda s: _PUNCT.sub("", s),
    "ascii": _ascii,
    "date": _date,
    "first_name_of": _first_name_of,
    "last_name_of": _last_name_of,
    "extract_email": _extract_email,
    "email_user": lambda s: _PUNCT.sub("", s.partition("@")[0]) if "@" in s else None,
    "signature_name": _signature_name,
    "soundex": lambda s: jellyfish.soundex(s) if s.strip() else None,
    "metaphone": lambda s: jellyfish.metaphone(s) if s.strip() else None,
}


def clear_caches() -> None:
    """Forget the texts the normalisers cached (ticket bodies hold personal data)."""
    _extract_email.cache_clear()
    _signature_name.cache_clear()


#: Every normaliser name accepted in match rules (``prefix_N``/``suffix_N`` besides).
NORMALIZER_NAMES = (*_FIXED, "phone", "extract_phone", "prefix_N", "suffix_N")


def is_normaliser(name: str) -> bool:
    """Is ``name`` a normaliser the rules may use?"""
    return (
        name in _FIXED
        or name in ("phone", "extract_phone")
        or _PARAMETRISED.match(name) is not None
    )


def make_normaliser(name: str, *, region: str = "US", cached: bool = True) -> Normaliser:
    """Return the normaliser called ``name`` (``phone`` parses numbers of ``region``).

    Without ``cached``, one that keeps no texts in the shared caches: for reading names
    outside a sync (masking), where no :func:`clear_caches` follows.
    """
    if name in _FIXED:
        found = _FIXED[name]
        return found if cached else getattr(found, "__wrapped__", found)
    if name == "phone":
        return _phone(region)
    if name == "extract_phone":
        return _extract_phone(region)
    match = _PARAMETRISED.match(name)
    if match is None:
        raise KeyError(name)
    size = int(match.group(2))
    if match.group(1) == "prefix":
        return lambda s: s[:size]
    return lambda s: s[-size:]
