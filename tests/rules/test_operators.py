"""Each masking operator: what it keeps, what it never gives away, and that it is consistent."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from fabric.errors import TokenError
from fabric.rules.ff1 import DIGITS, FF1
from fabric.rules.freetext import find_pii, luhn_ok
from fabric.rules.names import EntityNames
from fabric.rules.operators import (
    MaskContext,
    MaskFunction,
    MaskingKeys,
    OperatorSpec,
    compile_operator,
)
from fabric.rules.tokens import Tokenizer

KEY = b"k" * 32
OTHER = b"o" * 32
SPEC: TypeAdapter[Any] = TypeAdapter(OperatorSpec)


def op(spec: dict[str, Any], key: bytes = KEY, column: str = "col") -> MaskFunction:
    mask = compile_operator(SPEC.validate_python(spec), MaskingKeys(key), column)
    assert mask is not None
    return mask


CTX = MaskContext("customer", "e1")

# -- tokenize -----------------------------------------------------------------------------


@given(st.lists(st.text(max_size=40), min_size=2, max_size=30, unique=True))
def test_tokenize_is_deterministic_and_injective(values: list[str]) -> None:
    mask = op({"op": "tokenize", "domain": "email"})
    tokens = [mask(v, CTX) for v in values]
    assert tokens == [mask(v, CTX) for v in values]
    assert len(set(tokens)) == len(values)


@given(st.text(max_size=60))
def test_a_token_opens_to_its_value_with_the_key_only(value: str) -> None:
    token = Tokenizer(KEY, "email").tokenize(value)
    assert Tokenizer(KEY, "email").detokenize(token) == value
    with pytest.raises(TokenError, match="another key"):
        Tokenizer(OTHER, "email").detokenize(token)
    with pytest.raises(TokenError, match="domain 'phone'"):
        Tokenizer(KEY, "phone").detokenize(token)


def test_tokens_carry_the_key_id_and_join_across_columns_of_a_domain() -> None:
    a = op({"op": "tokenize"}, column="email")
    b = op({"op": "tokenize", "domain": "email"}, column="contact")
    c = op({"op": "tokenize"}, column="phone")
    token = a("ada@example.com", CTX)
    assert token.startswith(f"tok_{MaskingKeys(KEY).key_id}p_")
    assert token == b("ada@example.com", CTX) != c("ada@example.com", CTX)
    with pytest.raises(TokenError, match="changed"):
        Tokenizer(KEY, "email").detokenize(token[:-2] + ("A" if token[-2] != "A" else "B") + "x")


# -- fpe ----------------------------------------------------------------------------------


@given(st.from_regex(r"\A[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}\Z"))
def test_fpe_keeps_the_format_and_the_last_digits_and_decrypts(card: str) -> None:
    mask = op({"op": "fpe", "alphabet": "digits", "keep_last": 4}, column="card_number")
    masked = mask(card, CTX)
    assert len(masked) == len(card)
    assert [c.isdigit() for c in masked] == [c.isdigit() for c in card]
    assert [c for c in masked if not c.isdigit()] == [c for c in card if not c.isdigit()]
    assert masked[-4:] == card[-4:]
    assert mask(card, CTX) == masked
    # A key holder gets the digits back: FF1 with the column's tweak.
    digits = "".join(c for c in card if c.isdigit())
    out = "".join(c for c in masked if c.isdigit())
    ff1 = FF1(MaskingKeys(KEY).ff1_key, 10)
    assert ff1.decrypt(out[:-4], b"card_number") == digits[:-4]


def test_fpe_masks_values_too_short_for_its_domain_and_refuses_small_domains() -> None:
    mask = op({"op": "fpe", "alphabet": "digits"})
    assert mask("12345", CTX) == "*****"  # 10^5 values: under a million
    assert mask("123456", CTX) != "123456"
    with pytest.raises(ValidationError, match="FPE domain too small: 10\\^5"):
        SPEC.validate_python({"op": "fpe", "alphabet": "digits", "min_length": 5})
    with pytest.raises(ValidationError, match="distinct characters"):
        SPEC.validate_python({"op": "fpe", "alphabet": "aab"})
    lower = op({"op": "fpe", "alphabet": "lower"})
    masked = lower("Hello World", CTX)
    assert masked[0] == "H" and masked[6] == "W" and masked[5] == " "
    assert masked != "Hello World" and masked.islower() is False


# -- fake ---------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=30))
def test_fake_is_deterministic_per_input_and_key_and_never_the_original(value: str) -> None:
    mask = op({"op": "fake", "provider": "first_name"})
    fake = mask(value, CTX)
    assert fake == mask(value, CTX) == op({"op": "fake", "provider": "first_name"})(value, CTX)
    assert fake.lower() != value.strip().lower()


def test_fake_is_never_an_accented_original_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool value with accents, masked, is never handed back as its own fake, even when its
    key lands on its own place in the pool (the pool's values are compared folded, so the
    original must be too)."""
    from fabric.rules.fakes import Fakes, _pool
    from fabric.rules.names import fold

    fakes = Fakes(KEY)
    pool = [v for v, _, _ in _pool("city", "de_DE", fakes._seed)]
    accented = [at for at, v in enumerate(pool) if not v.isascii()]
    assert accented, "the pool holds no accented city to try"
    for at in accented:
        monkeypatch.setattr(Fakes, "_index", lambda self, provider, value, at=at: at)
        assert fold(fakes.value("city", "de_DE", pool[at])) != fold(pool[at]), pool[at]


def test_fake_names_differ_by_key_and_emails_are_built_from_fake_names() -> None:
    names = [f"name{i}" for i in range(50)]
    mine = [op({"op": "fake", "provider": "last_name"})(n, CTX) for n in names]
    theirs = [op({"op": "fake", "provider": "last_name"}, OTHER)(n, CTX) for n in names]
    assert mine != theirs
    email = op({"op": "fake", "provider": "email", "from": {"first_name": "fn", "last_name": "ln"}})
    first = op({"op": "fake", "provider": "first_name"})
    last = op({"op": "fake", "provider": "last_name"})
    row = {"fn": "Ada", "ln": "Lovelace", "email": "ada@lovelace.org"}
    fake = email(row["email"], MaskContext("customer", "e1", row))
    local, domain = fake.split("@")
    assert domain in ("example.com", "example.org", "example.net")
    expected = f"{first('Ada', CTX)}.{last('Lovelace', CTX)}".lower()
    assert local == "".join(c for c in expected if c.isalnum() or c == ".")


def test_fake_rejects_unknown_providers_and_locales() -> None:
    with pytest.raises(ValueError, match="unknown Faker provider 'frist_name'"):
        op({"op": "fake", "provider": "frist_name"})
    with pytest.raises(ValueError, match="unknown Faker locale"):
        op({"op": "fake", "provider": "first_name", "locale": "xx_XX"})


# -- date_shift ---------------------------------------------------------------------------


def test_date_shift_keeps_intervals_within_an_entity_and_moves_every_date() -> None:
    mask = op({"op": "date_shift", "max_days": 30})
    a, b = "2024-03-01", "2024-03-15T10:30:00"
    one = MaskContext("customer", "e1")
    shifted_a, shifted_b = date.fromisoformat(mask(a, one)), mask(b, one)
    assert shifted_a != date.fromisoformat(a)
    assert 0 < abs((shifted_a - date.fromisoformat(a)).days) <= 30
    assert (date.fromisoformat(shifted_b[:10]) - shifted_a).days == 14
    assert shifted_b.endswith("T10:30:00")
    offsets = {date.fromisoformat(mask(a, MaskContext("customer", f"e{i}"))) for i in range(40)}
    assert len(offsets) > 10  # entities get their own offsets
    assert mask("not a date", one) is None


# -- generalize ---------------------------------------------------------------------------


@given(st.dates(min_value=date(1000, 1, 1)))
def test_generalize_dates_never_returns_the_date(day: date) -> None:
    text = day.isoformat()
    assert op({"op": "generalize", "to": "year"})(text, CTX) == text[:4]
    assert op({"op": "generalize", "to": "month"})(text, CTX) == text[:7]
    assert op({"op": "generalize", "to": "decade"})(text, CTX) == f"{text[:3]}0s"


@given(st.text(min_size=1, max_size=20), st.integers(0, 10))
def test_generalize_prefix_never_returns_a_longer_value(value: str, keep: int) -> None:
    masked = op({"op": "generalize", "to": "prefix", "keep": keep})(value, CTX)
    assert (
        len(masked) == len(value)
        and masked[: min(keep, len(value) - 1)] == value[: min(keep, len(value) - 1)]
    )
    assume("*" not in value)
    assert masked != value


def test_generalize_ranges_and_its_checks() -> None:
    mask = op({"op": "generalize", "to": "range", "size": 10})
    assert mask(47, CTX) == "40-50" and mask("5.5", CTX) == "0-10" and mask("x", CTX) is None
    with pytest.raises(ValidationError, match="needs size"):
        SPEC.validate_python({"op": "generalize", "to": "range"})
    with pytest.raises(ValidationError, match="needs keep"):
        SPEC.validate_python({"op": "generalize", "to": "prefix"})


# -- free_text ----------------------------------------------------------------------------


def test_free_text_finds_and_masks_each_kind() -> None:
    text = (
        "Hi, I am Ada Lovelace (ada.l@example.com). Call +1 415 555 0134 or (415) 555-0199. "
        "Card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32. Order 12345678901234."
    )
    kinds = [kind for _, _, kind in find_pii(text, ["Ada", "Lovelace"])]
    assert kinds.count("email") == 1 and kinds.count("card") == 1 and kinds.count("iban") == 1
    assert kinds.count("phone") == 2 and kinds.count("name") == 2
    mask = op({"op": "free_text", "email": {"op": "tokenize", "domain": "email"}})
    masked = mask(text, MaskContext("customer", "e1", names=EntityNames.of(["Ada Lovelace"])))
    for secret in ("Ada", "Lovelace", "ada.l@example.com", "555 0134", "4111", "GB82"):
        assert secret not in masked
    assert "tok_" in masked and "[PHONE]" in masked and "[CARD]" in masked
    assert "Order 12345678901234" in masked  # not a Luhn number: an order id stays


def test_free_text_finds_misspelt_names_and_leaves_ordinary_words() -> None:
    spans = find_pii("Thanks, Lovelase here. I love lace.", ["Ada Lovelace"])
    assert [kind for *_, kind in spans] == ["name"]


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_radix_digits_cover_alphabets() -> None:
    assert DIGITS[:10] == "0123456789" and len(DIGITS) == 36
