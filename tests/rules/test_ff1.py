"""FF1 against NIST SP 800-38G's nine samples, and its properties on generated strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.rules.ff1 import DIGITS, FF1

SAMPLES = json.loads((Path(__file__).parent / "data" / "ff1_nist_samples.json").read_text())[
    "samples"
]


def test_all_nine_nist_samples_are_here() -> None:
    assert [s["n"] for s in SAMPLES] == list(range(1, 10))
    assert {len(bytes.fromhex(s["key"])) for s in SAMPLES} == {16, 24, 32}
    assert {s["radix"] for s in SAMPLES} == {10, 36}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"sample{s['n']}")
def test_nist_sample(sample: dict[str, object]) -> None:
    cipher = FF1(bytes.fromhex(str(sample["key"])), int(str(sample["radix"])))
    tweak = bytes.fromhex(str(sample["tweak"]))
    assert cipher.encrypt(str(sample["plaintext"]), tweak) == sample["ciphertext"]
    assert cipher.decrypt(str(sample["ciphertext"]), tweak) == sample["plaintext"]


@st.composite
def numerals(draw: st.DrawFn) -> tuple[int, str]:
    radix = draw(st.integers(2, 36))
    shortest = FF1(bytes(16), radix).min_length()
    text = draw(st.text(alphabet=DIGITS[:radix], min_size=shortest, max_size=40))
    return radix, text


@given(numerals(), st.binary(max_size=20), st.binary(min_size=32, max_size=32))
def test_decrypt_inverts_encrypt_and_the_format_is_kept(
    case: tuple[int, str], tweak: bytes, key: bytes
) -> None:
    radix, text = case
    cipher = FF1(key, radix)
    encrypted = cipher.encrypt(text, tweak)
    assert len(encrypted) == len(text)
    assert set(encrypted) <= set(DIGITS[:radix])
    assert cipher.decrypt(encrypted, tweak) == text


def test_bad_input_is_refused() -> None:
    cipher = FF1(bytes(16), 10)
    with pytest.raises(ValueError, match="radix 10"):
        cipher.encrypt("12a456")
    with pytest.raises(ValueError, match="or more numerals"):
        cipher.encrypt("1")
    with pytest.raises(ValueError, match="16, 24 or 32"):
        FF1(bytes(10), 10)
    with pytest.raises(ValueError, match="radix"):
        FF1(bytes(16), 37)
