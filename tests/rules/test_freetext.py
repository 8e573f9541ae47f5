"""Free-text detectors: the spellings people type are found whole; ordinary numbers are not.

Each kind draws the spellings seen in tickets (separators, groupings, case, international
prefixes, non-ASCII addresses), puts them in a sentence, and checks that one span of the right
kind covers all of the value and that masking leaves none of it. The separators include the ones
a security review got through: tabs, Unicode spaces, doubled spaces, underscores, commas; and
so do full-width characters and zero-width ones inside the value.
"""

from __future__ import annotations

import re
import string
from datetime import date, time

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from fabric.rules.freetext import Kind, find_pii, luhn_ok
from fabric.rules.operators import FreeTextOp, MaskContext, MaskFunction, compile_operator

CTX = MaskContext("customer", "e1")


def free_text(region: str = "US") -> MaskFunction:
    mask = compile_operator(FreeTextOp(op="free_text", region=region), None)
    assert mask is not None
    return mask


def assert_masked_whole(text: str, value: str, kind: Kind, region: str = "US") -> None:
    """One span of ``kind`` covers ``value`` in ``text``, and masking leaves nothing of it."""
    start = text.index(value)
    end = start + len(value)
    spans = find_pii(text, region=region)
    assert len(spans) == 1, f"{value!r} in {text!r}: {spans}"
    found_start, found_end, found_kind = spans[0]
    assert found_kind == kind, f"{value!r} found as {found_kind}"
    assert found_start <= start and end <= found_end, f"{value!r} not covered: {spans}"
    masked = free_text(region)(text, CTX)
    assert masked == f"{text[:found_start]}[{kind.upper()}]{text[found_end:]}"


# -- sentences ------------------------------------------------------------------------------

WORDS = st.lists(
    st.text(alphabet=string.ascii_letters + "éèüßñ'", min_size=1, max_size=9).filter(
        lambda w: w[0] != "'"
    ),
    min_size=0,
    max_size=4,
).map(" ".join)
OPENERS = st.sampled_from([" ", "\n", ": ", " (", ", "])
CLOSERS = st.sampled_from(["", ".", ",", "!", "?", ";", ":", ")"])
ENDINGS = st.sampled_from(["", " ", "\n", "\n\n", "\r\n"])


#: what people (and their keyboards, editors and copy-paste) put between the groups of a number
GROUP_SEPARATORS = [
    *(" ", "-", ".", "/", ""),
    *("\t", "  ", "--", "_", ",", "\u2013"),  # tab, doubled, underscore, comma, en dash
    *("\u00a0", "\u202f", "\u2009", "\u2007", "\u3000"),  # no-break, thin, figure, ideographic
]
#: invisible characters that copy-paste and chat clients leave inside values
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
#: ASCII to its full-width form, as typed with a CJK input method
FULL_WIDTH = str.maketrans({c: chr(ord(c) + 0xFEE0) for c in string.ascii_letters + "0123456789+"})


@st.composite
def with_zero_width(draw: st.DrawFn, value: str) -> str:
    """``value``, sometimes with zero-width characters between its characters."""
    if len(value) < 2 or draw(st.integers(0, 2)):
        return value
    cuts = draw(st.lists(st.integers(1, len(value) - 1), min_size=1, max_size=3, unique=True))
    chars = list(value)
    for cut in sorted(cuts, reverse=True):
        chars.insert(cut, draw(st.sampled_from(ZERO_WIDTH)))
    return "".join(chars)


@st.composite
def sentence(draw: st.DrawFn, value: str) -> str:
    """``value`` with words before and after it, punctuation right after, line breaks."""
    before, after = draw(WORDS), draw(WORDS)
    ending = draw(ENDINGS) if after else ""
    if after and not ending:
        ending = " "
    return f"{before}{draw(OPENERS)}{value}{draw(CLOSERS)}{ending}{after}"


# -- cards ----------------------------------------------------------------------------------

#: how card numbers are grouped when printed: 4-4-4-4, Amex 4-6-5, Diners 4-6-4, 19 and 13 digits
CARD_GROUPINGS = [(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1), (4, 4, 5)]


def with_luhn_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


@st.composite
def card_spellings(draw: st.DrawFn) -> str:
    grouping = draw(st.sampled_from(CARD_GROUPINGS))
    first = draw(st.sampled_from("23456"))
    rest = draw(
        st.text(alphabet=string.digits, min_size=sum(grouping) - 2, max_size=sum(grouping) - 2)
    )
    number = with_luhn_digit(first + rest)
    if draw(st.booleans()):
        number = number.translate(FULL_WIDTH)
    separator = draw(st.sampled_from(GROUP_SEPARATORS))
    groups, at = [], 0
    for size in grouping:
        groups.append(number[at : at + size])
        at += size
    return draw(with_zero_width(separator.join(groups)))


@given(st.data())
def test_find_pii_finds_cards_as_people_type_them(data: st.DataObject) -> None:
    value = data.draw(card_spellings())
    assert_masked_whole(data.draw(sentence(value)), value, "card")


# -- IBANs ----------------------------------------------------------------------------------

#: BBAN formats of the SWIFT IBAN registry: n digits, a capital letters, c either
IBAN_FORMATS = {
    "GB": "4a6n8n",
    "DE": "8n10n",
    "FR": "5n5n11c2n",
    "NL": "4a10n",
    "BE": "3n7n2n",
    "CH": "5n12c",
    "IT": "1a5n5n12c",
    "ES": "4n4n1n1n10n",
    "PL": "8n16n",
    "NO": "4n6n1n",
    "MT": "4a5n18c",
    "BR": "8n5n10n1a1c",
}
IBAN_ALPHABETS = {
    "n": string.digits,
    "a": string.ascii_uppercase,
    "c": string.digits + string.ascii_uppercase,
}


def mod97(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text)) % 97


@st.composite
def iban_spellings(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_FORMATS)))
    bban = "".join(
        draw(st.text(alphabet=IBAN_ALPHABETS[kind], min_size=int(size), max_size=int(size)))
        for size, kind in re.findall(r"(\d+)([nac])", IBAN_FORMATS[country])
    )
    check = 98 - mod97(bban + country + "00")
    iban = f"{country}{check:02d}{bban}"
    assert mod97(iban[4:] + iban[:4]) == 1
    case = draw(st.sampled_from(["upper", "lower", "mixed"]))
    if case == "lower":
        iban = iban.lower()
    elif case == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(iban), max_size=len(iban)))
        iban = "".join(c.lower() if flip else c for c, flip in zip(iban, flips, strict=True))
    if draw(st.booleans()):
        iban = iban.translate(FULL_WIDTH)
    separator = draw(st.sampled_from(GROUP_SEPARATORS))
    groups = [iban[i : i + 4] for i in range(0, len(iban), 4)]
    if separator and draw(st.booleans()):  # the country code apart: GB 82 WEST 1234 ...
        groups[:1] = [iban[:2], iban[2:4]]
    return draw(with_zero_width(separator.join(groups)))


@given(st.data())
def test_find_pii_finds_ibans_as_people_type_them(data: st.DataObject) -> None:
    value = data.draw(iban_spellings())
    assert_masked_whole(data.draw(sentence(value)), value, "iban")


# -- phone numbers --------------------------------------------------------------------------

PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "CH", "ES", "IT", "NL", "MX", "CN"]


@st.composite
def phone_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """A phone number as people type it, and the region to look for it with."""
    value, region = draw(written_phones())
    if draw(st.booleans()):
        value = value.translate(FULL_WIDTH)
    return draw(with_zero_width(value)), region


@st.composite
def written_phones(draw: st.DrawFn) -> tuple[str, str]:
    """A phone number as people write it, and the region to look for it with."""
    region = draw(st.sampled_from(PHONE_REGIONS))
    kind = draw(st.sampled_from([PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE]))
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None
    separator = draw(
        st.sampled_from([" ", "-", ".", "", "\t", "  ", "_", "\u00a0", "\u202f", "\u3000"])
    )
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    prefix = draw(st.sampled_from(["+", "00", "011", "national"]))
    if prefix == "national":  # written for someone in the same region
        if separator:
            national = re.sub(r"(?<=\d)[ -](?=\d)", separator, national)
        return national, region
    international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    country, *groups = re.split(r"[ -]", international.removeprefix("+"))
    style = draw(st.sampled_from(["plain", "area code in parentheses", "trunk prefix (0)"]))
    if not separator or len(groups) < 2:
        style = "plain"
    if style == "area code in parentheses":  # +1 (201) 555-0123
        body = f" ({groups[0]}) " + separator.join(groups[1:])
    elif style == "trunk prefix (0)" and national.startswith("0"):  # +44 (0)20 7946 0958
        body = " (0)" + separator.join(groups)
    else:
        body = separator + separator.join(groups)
    idd = "+" if prefix == "+" else prefix + draw(st.sampled_from(["", " "]))
    # any region reads it, so the prefix is often not its own (0044 read with region US)
    return idd + country + body, draw(st.sampled_from(PHONE_REGIONS))


@given(st.data())
def test_find_pii_finds_phone_numbers_as_people_type_them(data: st.DataObject) -> None:
    value, region = data.draw(phone_spellings())
    assert_masked_whole(data.draw(sentence(value)), value, "phone", region)


# -- emails ---------------------------------------------------------------------------------

LETTERS = st.characters(categories=["L"])
LOCAL_JOINS = "._+-" + "'&!#$%*/=?^`{|}~"
WORD_CHARS = st.characters(categories=["L", "M", "N"])


@st.composite
def unicode_word(draw: st.DrawFn, max_size: int = 8) -> str:
    return draw(LETTERS) + draw(st.text(alphabet=WORD_CHARS, max_size=max_size))


@st.composite
def domain_label(draw: st.DrawFn) -> str:
    label = "-".join(draw(st.lists(unicode_word(), min_size=1, max_size=2)))
    if not label.isascii() and draw(st.booleans()):  # as DNS carries it: punycode
        label = "xn--" + label.encode("punycode").decode("ascii")
    return label


@st.composite
def email_spellings(draw: st.DrawFn) -> str:
    words = draw(st.lists(unicode_word(), min_size=1, max_size=3))
    if draw(st.integers(0, 4)):
        # RFC 5322 atext between the words: john.o'neil, jsmith&co, a/b, x=y
        joins = draw(
            st.lists(st.sampled_from(LOCAL_JOINS), min_size=len(words), max_size=len(words))
        )
        local = "".join(j + w for j, w in zip(joins, words, strict=True))[1:]
    else:  # a quoted local part: "john smith"@example.com
        local = '"' + " ".join(words) + '"'
    labels = draw(st.lists(domain_label(), min_size=1, max_size=3))
    tld = draw(
        st.one_of(
            st.text(alphabet=st.characters(categories=["L"]), min_size=2, max_size=6),
            st.sampled_from(["com", "de", "xn--p1ai", "xn--fiqs8s", "рф", "中国", "भारत"]),
        )
    )
    at = draw(st.sampled_from(["@", "\uff20", "\ufe6b"]))  # ASCII, full-width, small
    dot = draw(st.sampled_from([".", "\u3002", "\uff0e", "\uff61"]))  # ASCII, ideographic
    return draw(with_zero_width(f"{local}{at}{dot.join(labels)}{dot}{tld}"))


@given(st.data())
def test_find_pii_finds_unicode_emails(data: st.DataObject) -> None:
    value = data.draw(email_spellings())
    assert_masked_whole(data.draw(sentence(value)), value, "email")


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("mail ada@example.com2 now", "ada@example.com"),
        ("mail ada@example.co.x now", "ada@example.co"),
        ("mail müller@exämple.de’s inbox", "müller@exämple.de"),
        ("邮箱：用户@例子.广告。谢谢", "用户@例子.广告"),
    ],
)
def test_find_pii_ends_an_email_at_its_top_level_domain(text: str, email: str) -> None:
    assert [text[s:e] for s, e, _ in find_pii(text)] == [email]


def test_find_pii_looks_again_after_a_rejected_email() -> None:
    text = "x@v1.2@example.org and ada@example.com2"
    assert [text[s:e] for s, e, _ in find_pii(text)] == ["v1.2@example.org", "ada@example.com"]


def test_find_pii_takes_a_long_local_part_whole() -> None:
    # The pattern reads 64 characters before an "@" (RFC 5321); the rest is taken afterwards.
    text = "from " + "ü" * 70 + "a" * 30 + "@exämple.de, and ada@example.com2x@bar.org"
    found = [text[s:e] for s, e, _ in find_pii(text)]
    assert found == ["ü" * 70 + "a" * 30 + "@exämple.de", "ada@example.com", "2x@bar.org"]


# -- the spellings of the issue ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "region"),
    [
        ("4111.1111.1111.1111", "card", "US"),
        ("4111/1111/1111/1111", "card", "US"),
        ("3782-822463-10005", "card", "US"),
        ("gb82-west-1234-5698-7654-32", "iban", "US"),
        ("gb82 west 1234 5698 7654 32", "iban", "US"),
        ("be68 5390 0754 7034", "iban", "US"),
        ("0044 20 7946 0958", "phone", "US"),
        ("011 44 20 7946 0958", "phone", "GB"),
        ("müller@exämple.de", "email", "US"),
        ("用户@例子.广告", "email", "US"),
        ("info@xn--mller-kva.de", "email", "US"),
        ("ada@xn--80ak6aa92e.xn--p1ai", "email", "US"),
        ("संपर्क@डाटामेल.भारत", "email", "US"),
    ],
)
def test_find_pii_finds_the_spellings_of_the_issue(value: str, kind: Kind, region: str) -> None:
    assert_masked_whole(f"Hi, mine is {value}. Thanks from the team", value, kind, region)


def test_find_pii_finds_a_card_followed_by_its_expiry() -> None:
    spans = find_pii("card 4111 1111 1111 1111 12/27 cvv 123")
    assert [kind for *_, kind in spans] == ["card"]
    assert spans[0][0] == 5 and spans[0][1] >= 24


def test_find_pii_takes_an_iban_before_a_following_word() -> None:
    text = "IBAN BE68 5390 0754 7034 from Bob, and be68539007547034 again"
    assert [text[s:e] for s, e, _ in find_pii(text)] == ["BE68 5390 0754 7034", "be68539007547034"]


# -- the spellings of the security review ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("4012\t8888\t8888\t1881", "card"),
        ("4012\u00a08888\u00a08888\u00a01881", "card"),
        ("4012\u202f8888\u202f8888\u202f1881", "card"),
        ("4012\u30008888\u30008888\u30001881", "card"),
        ("5500  0055  5555  5559", "card"),
        ("6011_0009_9013_9424", "card"),
        ("6011,0009,9013,9424", "card"),
        ("４１１１ １１１１ １１１１ １１１１", "card"),
        ("４１１１１１１１１１１１１１１１", "card"),
        ("4111\u200b1111\u200b1111\u200b1111", "card"),
        ("41\u200d11 1111 1111 1111", "card"),
        ("GB 82 WEST 1234 5698 7654 32", "iban"),
        ("gb 82 west 1234 5698 7654 32", "iban"),
        ("GB82\tWEST\t1234\t5698\t7654\t32", "iban"),
        ("GB82\u00a0WEST\u00a01234\u00a05698\u00a07654\u00a032", "iban"),
        ("GB82  WEST  1234  5698  7654  32", "iban"),
        ("GB82_WEST_1234_5698_7654_32", "iban"),
        ("GB82,WEST,1234,5698,7654,32", "iban"),
        ("ＧＢ８２ ＷＥＳＴ １２３４ ５６９８ ７６５４ ３２", "iban"),
        ("GB8\u200b2 WEST 1234 5698 7654 32", "iban"),
        ("415\t555\t0134", "phone"),
        ("415\u00a0555\u00a00134", "phone"),
        ("415  555  0134", "phone"),
        ("415_555_0134", "phone"),
        ("+44_20_7946_0958", "phone"),
        ("0044\t20\t7946\t0958", "phone"),
        ("４１５-５５５-０１３４", "phone"),
        ("415-555\u200b-0134", "phone"),
        ("bob.hatfield＠example.com", "email"),
        ("john.o'neil@example.com", "email"),
        ("jsmith&co@example.com", "email"),
        ('"john smith"@example.com', "email"),
        ('"bob@home"@example.com', "email"),
        ('"bob@home.org"@example.com', "email"),
        ("bob@example。com", "email"),
        ("bob@example．com", "email"),
        ("bob@example｡com", "email"),
        ("bob\u200b.hatfield@example.com", "email"),
        ("bob@exa\u200dmple.com", "email"),
        ("bob@example.co\u2060m", "email"),
        ("bob\ufeff@example.com", "email"),
    ],
)
def test_find_pii_finds_the_spellings_of_the_security_review(value: str, kind: Kind) -> None:
    assert_masked_whole(f"Hi, mine is {value}. Thanks from the team", value, kind)


def test_find_pii_takes_a_full_width_at_for_an_address_not_for_a_name() -> None:
    # The name detector found "hatfield" and left "bob." and "＠example.com" in the clear.
    text = "mail bob.hatfield＠example.com please"
    assert find_pii(text, ["Bob Hatfield"]) == [(5, 29, "email")]


def test_find_pii_ends_an_ascii_address_at_an_ideographic_full_stop() -> None:
    # "。" is a domain's dot in an address typed with it, a sentence's end after one typed with "."
    text = "邮箱 ada@example.com。谢谢，用户@例子。广告"
    assert [text[s:e] for s, e, _ in find_pii(text)] == ["ada@example.com", "用户@例子。广告"]


def test_find_pii_leaves_quotes_around_an_address() -> None:
    text = "write to 'ada@example.com' or `bob@example.org`, email='eve@example.net'"
    found = [text[s:e] for s, e, _ in find_pii(text)]
    assert found == ["ada@example.com", "bob@example.org", "eve@example.net"]


# -- what is not personal data --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111.1111.1111.1112",
        "Order 12345678901234 shipped",
        "GB82 WEST 1234 5698 7654 33",  # fails mod 97
        "gb82-west-1234-5698-7654-33",
        "ab12 this that with from here",
        "GB 82 WEST 1234 5698 7654 33",
        "4012\t8888\t8888\t1882",
        "４１１１ １１１１ １１１１ １１１２",
    ],
)
def test_find_pii_keeps_the_checks(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.parametrize(
    "text",
    [
        # "AT14 WITH THEW RONG ITEM" passes mod 97 and has Austria's length
        "Hi, the courier came at 14 with the wrong item inside.",
        "Hi, I will be there at 25 on Monday and again on Friday.",
    ],
)
def test_find_pii_takes_no_words_after_a_country_code_for_an_iban(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.parametrize(
    "day", ["13.03.2003", "13-07-2014", "12/05/2025", "2026-11-27", "1.12.2030"]
)
def test_find_pii_takes_no_date_for_a_phone_number(day: str) -> None:
    # "13-07-2014" reads as +1 307-2014 to libphonenumber (a US number without its area code)
    assert find_pii(f"delivered on {day}, thanks") == []


def _date_spellings(day: date) -> st.SearchStrategy[str]:
    formats = ["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d %b %Y"]
    return st.sampled_from([day.strftime(f) for f in formats])


def _time_spellings(moment: time) -> st.SearchStrategy[str]:
    return st.sampled_from([moment.strftime(f) for f in ("%H:%M", "%H:%M:%S", "%I:%M %p")])


ORDINARY_NUMBERS = st.one_of(
    st.integers(1, 999_999).map(lambda n: f"#{n}"),  # order numbers
    st.dates(date(1990, 1, 1), date(2040, 12, 31)).flatmap(_date_spellings),
    st.integers(0, 99_999_999).map(lambda cents: f"{cents / 100:,.2f}"),  # 1,234.56
    st.integers(0, 99_999_999).map(  # 1.234,56 €
        lambda cents: f"{cents / 100:,.2f}".translate(str.maketrans(",.", ".,")) + " €"
    ),
    st.integers(0, 99_999_999).map(lambda cents: f"${cents / 100:,.2f}"),
    st.times().flatmap(_time_spellings),
    st.integers(0, 999_999).map(str),  # short digit runs
    st.integers(1, 99).map(lambda n: f"{n}x"),
    # lists of years and numbers: ", " joins no card's groups ("2019, 2020, 2021, 2022")
    st.lists(st.integers(1000, 9999).map(str), min_size=4, max_size=5).map(", ".join),
)


@given(
    st.lists(
        st.tuples(WORDS.filter(bool), ORDINARY_NUMBERS, st.sampled_from(["", ".", ",", ";", "!"])),
        min_size=1,
        max_size=12,
    )
)
def test_find_pii_finds_nothing_in_ordinary_numbers(parts: list[tuple[str, str, str]]) -> None:
    text = " ".join(f"{words} {number}{punctuation}" for words, number, punctuation in parts)
    assert find_pii(text) == []
