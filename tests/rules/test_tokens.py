"""Tokens: padded to buckets, deterministic, reversible, and older tokens still open."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from legacy_tokens import legacy_token

from fabric.errors import TokenError
from fabric.rules.tokens import TOKEN_BUCKET_BYTES, Tokenizer, masking_key_id

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def bucket(value: str) -> int:
    return len(value.encode()) // TOKEN_BUCKET_BYTES


def test_tokens_bucket_is_16_bytes() -> None:
    assert TOKEN_BUCKET_BYTES == 16


@given(st.text(max_size=70), st.text(max_size=70))
def test_tokens_length_tells_only_the_bucket(a: str, b: str) -> None:
    tokenizer = Tokenizer(KEY, "email")
    same_length = len(tokenizer.tokenize(a)) == len(tokenizer.tokenize(b))
    assert same_length == (bucket(a) == bucket(b))


@pytest.mark.parametrize(
    ("values", "length"),
    [
        (["FR", "USA", "", "ada@example.c"], 57),  # 0 to 15 bytes: one bucket
        (["ada@example.com1", "jonathan.hamilton@example.net"], 78),  # 16 to 31 bytes
    ],
)
def test_tokens_of_short_values_and_emails_share_a_length_per_bucket(
    values: list[str], length: int
) -> None:
    tokenizer = Tokenizer(KEY, "country")
    assert {len(tokenizer.tokenize(v)) for v in values} == {length}


@given(st.text())
def test_tokens_round_trip_any_text(value: str) -> None:
    assert Tokenizer(KEY, "notes").detokenize(Tokenizer(KEY, "notes").tokenize(value)) == value


@given(st.text(max_size=40))
def test_tokens_are_deterministic_across_instances(value: str) -> None:
    assert Tokenizer(KEY, "email").tokenize(value) == Tokenizer(KEY, "email").tokenize(value)


@given(st.lists(st.text(max_size=40), min_size=2, max_size=30, unique=True))
def test_tokens_of_distinct_values_differ(values: list[str]) -> None:
    tokenizer = Tokenizer(KEY, "email")
    assert len({tokenizer.tokenize(v) for v in values}) == len(values)


def test_tokens_name_their_format_after_the_key_id() -> None:
    token = Tokenizer(KEY, "email").tokenize("ada@example.com")
    assert token.startswith(f"tok_{masking_key_id(KEY)}p_")


@given(st.text(max_size=60))
def test_tokens_made_before_padding_still_open(value: str) -> None:
    old = legacy_token(KEY, "email", value)
    assert Tokenizer(KEY, "email").detokenize(old) == value
    with pytest.raises(TokenError, match="another key"):
        Tokenizer(OTHER, "email").detokenize(old)
    with pytest.raises(TokenError, match="domain 'phone'"):
        Tokenizer(KEY, "phone").detokenize(old)


@given(st.text(max_size=60))
def test_tokens_relabelled_to_the_other_format_do_not_open(value: str) -> None:
    tokenizer = Tokenizer(KEY, "email")
    key_id = masking_key_id(KEY)
    new, old = tokenizer.tokenize(value), legacy_token(KEY, "email", value)
    as_old = new.replace(f"tok_{key_id}p_", f"tok_{key_id}_", 1)
    as_new = old.replace(f"tok_{key_id}_", f"tok_{key_id}p_", 1)
    for token in (as_old, as_new):
        with pytest.raises(TokenError, match="does not open"):
            tokenizer.detokenize(token)


@pytest.mark.parametrize("token", ["tok_", "tok_zz", "tok_0123456_x", "tok_01234567q_AAAA"])
def test_tokens_not_of_this_key_are_refused(token: str) -> None:
    with pytest.raises(TokenError, match="another key"):
        Tokenizer(KEY, "email").detokenize(token)


def test_tokens_that_are_not_tokens_are_refused() -> None:
    with pytest.raises(TokenError, match="not a fabric token"):
        Tokenizer(KEY, "email").detokenize("ada@example.com")
