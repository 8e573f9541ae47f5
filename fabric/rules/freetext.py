"""Find personal data in free text: emails, phone numbers, card numbers, IBANs, and the
entity's own names.

Each kind is looked for as people type it. The detectors read the text as it shows
(:func:`_detection_form`): full-width characters as their ASCII forms (``４１１１``, ``＠``),
every space and tab as a space, and invisible characters (zero-width spaces and joiners) not at
all; what they find is masked in the text as written. Cards: 13 to 19 digits, whole or in
groups of three to six (4-4-4-4, Amex 4-6-5) split by one or two spaces, dashes, dots, slashes or
underscores, or by a comma, passing the Luhn check. IBANs: any case, grouped or not (by the
same separators, the country code apart too: ``GB 82 WEST ...``), of the length the SWIFT
registry gives the country, passing the ISO 7064 mod-97 check. The checks are what keep order
numbers and other long digit runs from being taken for them. Phone numbers: libphonenumber's
matcher for the region, run again with the international prefixes ``00`` and ``011`` read as
``+`` (``0044 20 7946 0958`` in a US ticket). Emails: internationalised ones too
(``müller@exämple.de``, ``用户@例子.广告``, punycode), with any RFC 5322 local part (``o'neil``,
``jsmith&co``, ``"john smith"``) and ideographic full stops for dots (``example。com``). Each
detector runs only on text that can hold its kind (an ``@`` for emails, 7 digits for phones and
IBANs, 13 for cards), which many ticket bodies cannot; see ``benchmarks/mask_bench.py``
(``free_text``) for the cost.

Names are the entity's own, with their nicknames and misspellings (see
:mod:`fabric.rules.names`).
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

#: hyphens and short dashes, read as "-" (not the em dash, which sits between words)
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2212")


#: Characters the detection table keeps at most (it is cleared past this).
_MAX_KNOWN = 1 << 14


class _DetectionTable(dict[str, str]):
    """What each character is in the detection form, filled in as characters are met.

    A character becomes its NFKC form where that is one character (full-width digits and
    letters their ASCII ones, "＠" "@", "．" "."), a space of any width " " (a tab too, see
    :func:`_detection_form`), a decimal digit of any script its ASCII digit, a hyphen or short
    dash "-"; a format character (category Cf: zero-width spaces and joiners, soft hyphens,
    direction marks) nothing, as it is invisible: ``4111\u200b1111`` shows as 41111111.
    """

    def __missing__(self, char: str) -> str:
        category = unicodedata.category(char)
        if category == "Cf":
            value = ""
        elif category == "Zs":
            value = " "
        elif category == "Nd":
            value = str(unicodedata.decimal(char))
        elif char in _DASHES:
            value = "-"
        else:
            folded = unicodedata.normalize("NFKC", char)
            value = folded if len(folded) == 1 else char
        if len(self) >= _MAX_KNOWN:  # text from outside may hold any of Unicode's characters
            self.clear()
        self[char] = value
        return value


_DETECTION = _DetectionTable()
_ASCII = frozenset(map(chr, range(128)))
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")


def _detection_form(text: str) -> tuple[str, list[int] | None]:
    """``text`` as the detectors read it, and where each of its characters is in ``text``.

    The form has a character for each of the text's but the invisible ones, so a span found in
    it is the same span of the text, or (when some were left out: the list, else None) the
    span from where its first character is to where its last one is. Each character that
    changes is replaced throughout at once: few do, and ``str.translate`` costs more per
    character than the detectors of an ASCII text.
    """
    form = text.replace("\t", " ") if "\t" in text else text
    if text.isascii():  # most tickets
        return form, None
    if len(text) - len(text.encode("ascii", "ignore")) < 32:  # accents, quotes: found faster
        chars = set(_NOT_ASCII.findall(text))
    else:
        chars = set(text) - _ASCII
    invisible = set()
    for char in chars:
        value = _DETECTION[char]
        if not value:
            invisible.add(char)
        elif value != char:
            form = form.replace(char, value)
    if not invisible:
        return form, None
    for char in invisible:
        form = form.replace(char, "")
    return form, [i for i, char in enumerate(text) if char not in invisible]


def _chars(ascii_allowed: str, also_banned: str = "") -> str:
    """A regex class: the ASCII characters given, and every other character but white space
    and ``also_banned``.

    Addresses may hold any letter (RFC 6531); the punctuation and symbols outside ASCII that
    this lets in are cut off afterwards (:func:`_email_span`), which is cheaper than a class of
    every letter and mark.
    """
    banned = "".join(chr(c) for c in range(128) if chr(c) not in ascii_allowed) + also_banned
    return f"[^\\s{re.escape(banned)}]"


_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: RFC 5322 atext and dots, and "%" (old source routing: user%host@relay)
_LOCAL_ASCII = frozenset(_ALNUM + ".!#$%&'*+/=?^_`{|}~-")
#: what opens quotes, paths and key=value pairs in prose more often than it starts an address
#: ("'ada@example.com'"): left out of the start of a local part
_LOCAL_OPENERS = ".'`{|/="
_LOCAL = _chars("".join(_LOCAL_ASCII))
#: the ideographic full stop, a domain's dot when typed with an input method (例子。广告)
_IDEOGRAPHIC_STOP = "\u3002"
_LABEL = _chars(_ALNUM + "-", also_banned=_IDEOGRAPHIC_STOP)
_DOMAIN = f"{_LABEL}++(?:[.{_IDEOGRAPHIC_STOP}]{_LABEL}++)+"
#: an address; at most 64 characters before the "@" (RFC 5321's limit), so that a long run of
#: them without one is not read again from each of its characters (a longer local part is
#: taken whole afterwards, see :func:`_email_span`)
_EMAIL = re.compile(f"{_LOCAL}{{1,64}}+@{_DOMAIN}")
#: an address with a quoted local part ("john smith"@example.com): a pattern of its own, as
#: one branch more in :data:`_EMAIL` would slow every text with an "@" (benchmarks/README.md,
#: "Free text")
_QUOTED_EMAIL = re.compile(f'"[^"\\n]{{1,62}}"@{_DOMAIN}')

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
#: what people put between the groups of a card number or an IBAN (in the detection form, where
#: every space is " "): one or two spaces, dashes, dots, slashes or underscores, or one comma
#: (not ", ", which lists years and numbers: "2019, 2020, 2021, 2022" is no card)
_SEPARATOR = r"(?:[ ./_-]{1,2}|,)"
#: an IBAN's check digits after its country code, or after the code and a separator
#: ("GB 82"); digits first: they are rare in text
_IBAN_START = re.compile(
    r"[0-9]{2}(?:(?<=[A-Za-z]{2}[0-9]{2})|(?<=[A-Za-z]{2}[ ./_,-][0-9]{2})"
    r"|(?<=[A-Za-z]{2}[ ./_-]{2}[0-9]{2}))"
)
#: the rest of an IBAN of each length, a separator allowed before any character
_IBAN_REST = {
    length: re.compile(f"(?:{_SEPARATOR}?[A-Za-z0-9]){{{length - 4}}}")
    for length in set(_IBAN_LENGTHS.values())
}
_IBAN_SEPARATORS = re.compile(r"[ ./_,-]")
#: digits an IBAN written with its country code apart ("GB 82 ...") holds after its check
#: digits at least, as every registry format does: words do not ("at 12 we met at the cafe")
_IBAN_APART_DIGITS = 5

#: where a card number may be: 13 characters or more of digits and separators
_LONG_NUMBER = re.compile(r"[0-9][0-9 ./_,-]{12,}")
#: a run of digit groups split by separators
_NUMBER = re.compile(f"[0-9]+(?:{_SEPARATOR}[0-9]+)*")
_GROUP = re.compile(r"[0-9]+")

#: international call prefixes: 00 (most of the world) and 011 (North America)
_IDD = re.compile(r"(?:00|011)(?=[ ._-]{0,2}[1-9])")
#: underscores between digits, which the matcher does not take for separators
_UNDERSCORES = re.compile(r"(?<=[0-9])__?(?=[0-9])")
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


def _letter_or_digit(char: str) -> bool:
    """Whether ``char`` is a letter, a mark or a digit."""
    return char.isalnum() or unicodedata.category(char)[0] == "M"


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
    ``ada@example.com2`` ends at "com". A quoted local part is taken as it is; another goes
    back to ``floor`` at most, and starts after any of :data:`_LOCAL_OPENERS` and after a
    quote that follows a symbol. Ideographic full stops are the dots of a domain written with
    them, and end one written with ASCII dots (``ada@example.com。谢谢``).
    """
    if text[start] == '"':
        at = text.index('"', start + 1) + 1
    else:
        at = text.index("@", start, end)
        while start > floor and _local_char(text[start - 1]):
            start -= 1
        local = text[start:at]
        if not local.isascii():
            for i in range(len(local) - 1, -1, -1):
                if not _word_char(local[i]):
                    start += i + 1
                    break
        while start < at and text[start] in _LOCAL_OPENERS:
            start += 1
        # a quote after a symbol opens a quotation (email='ada@...'); after a letter it is
        # the address's own (o'neil@...)
        quote = max(text.rfind("'", start, at), text.rfind("`", start, at))
        if quote > start and not _letter_or_digit(text[quote - 1]):
            start = quote + 1
    domain = text[at + 1 : end]
    if _IDEOGRAPHIC_STOP in domain:
        head = domain.partition(_IDEOGRAPHIC_STOP)[0]
        domain = head if "." in head else domain.replace(_IDEOGRAPHIC_STOP, ".")
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
    if '"@' in text:  # first, as a quoted local part may hold an address ("ada@home"@...)
        for quoted in _QUOTED_EMAIL.finditer(text):
            span = _email_span(text, quoted.start(), quoted.end(), quoted.start())
            if span is not None:
                yield span
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
    taken for more of it; the character after must not be a letter or digit. One written with
    its country code apart ("GB 82 WEST ...") must hold :data:`_IBAN_APART_DIGITS` digits
    after its check digits, as a word and a number may start the same way ("at 12 ...").
    """
    for match in _IBAN_START.finditer(text):
        check = match.start()
        if text[check - 1].isalpha():
            start = check - 2
        else:
            start = check - 3 if text[check - 2].isalpha() else check - 4
        if start and text[start - 1].isalnum():
            continue
        length = _IBAN_LENGTHS.get(text[start : start + 2].upper())
        if length is None:
            continue
        rest = _IBAN_REST[length].match(text, match.end())
        if rest is None:
            continue
        end = rest.end()
        if end < len(text) and text[end].isalnum():
            continue
        if start != check - 2 and len(_NOT_DIGITS.sub("", rest.group())) < _IBAN_APART_DIGITS:
            continue
        if _iban_ok(text[start:end]):
            yield start, end


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    """Card numbers: 13 to 19 digits passing Luhn, whole or grouped.

    Groups follow each other with a separator (:data:`_SEPARATOR`) between them; every
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
    the same), and a number found there starts at its prefix. Dates are not numbers. Underscores
    between digits are read as spaces (``415_555_0134``), which the matcher takes for separators.
    """
    if "_" in text:
        text = _UNDERSCORES.sub(lambda underscores: " " * len(underscores.group()), text)
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

    # The detectors read the text as it shows; their spans are put back on the text.
    form, kept = _detection_form(text)

    def add_found(start: int, end: int, kind: Kind) -> None:
        if kept is None:
            add(start, end, kind)
        else:
            add(kept[start], kept[end - 1] + 1, kind)

    # Each detector only where its kind can be: most ticket bodies hold no "@" and few digits.
    digits = len(_NOT_DIGITS.sub("", form))
    if "@" in form:
        for start, end in _email_spans(form):
            add_found(start, end, "email")
    if digits >= 7:  # an IBAN's check digits and account number hold more
        for start, end in _iban_spans(form):
            add_found(start, end, "iban")
    if digits >= 13:
        for start, end in _card_spans(form):
            add_found(start, end, "card")
    if digits >= 7:
        for start, end in _phone_spans(form, region):
            add_found(start, end, "phone")
    if not isinstance(names, EntityNames):
        names = EntityNames.of(str(n) for n in names)
    for start, end in find_names(text, names):
        add(start, end, "name")
    spans.sort()
    return spans
