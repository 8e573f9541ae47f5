"""Key derivation, keyed hashes and sealing."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from fabric.crypto import KeyDeriver, Sealer, derive_key
from fabric.errors import StoreError


@given(master=st.binary(min_size=16, max_size=64), purpose=st.text(max_size=80))
def test_derived_keys_are_hkdf_sha256_byte_for_byte(master: bytes, purpose: str) -> None:
    # Keys already in use (stored images, index hashes) must not change with the shortcut.
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"fabric/v1", info=purpose.encode()
    ).derive(master)
    assert KeyDeriver(master).derive(purpose) == expected == derive_key(master, purpose)


def test_keys_differ_by_purpose_and_master() -> None:
    one, other = KeyDeriver(b"m" * 32), KeyDeriver(b"n" * 32)
    assert one.derive("entity\x00customer\x00a") != one.derive("entity\x00customer\x00b")
    assert one.derive("x") != other.derive("x")


def test_a_sealed_value_opens_only_with_its_key_and_associated_data() -> None:
    sealer = Sealer(derive_key(b"m" * 32, "a"))
    sealed = sealer.seal(b"secret", b"here")
    assert sealer.open(sealed, b"here", what="it") == b"secret"
    with pytest.raises(StoreError, match="it failed its integrity check"):
        sealer.open(sealed, b"elsewhere", what="it")
    with pytest.raises(StoreError, match="failed its integrity check"):
        Sealer(derive_key(b"m" * 32, "b")).open(sealed, b"here", what="it")
