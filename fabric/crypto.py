"""Keys derived from the master key, keyed hashes and authenticated encryption.

One master key (from the environment or the key file) yields a separate key per purpose with
HKDF, so a key used to hash identity keys can never decrypt anything, and vice versa. Sealed
values are AES-256-GCM with a random nonce and caller-given associated data, which binds a
ciphertext to where it belongs: moved elsewhere, it fails to open.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fabric.errors import ConfigError, StoreError

__all__ = [
    "MASTER_KEY_ID",
    "KeyDeriver",
    "KeyRing",
    "KeyedHasher",
    "Sealer",
    "derive_key",
    "require_master_key",
]

_NONCE = 12


def require_master_key(master: bytes | None, purpose: str) -> bytes:
    """Return the master key, or explain where to put one."""
    if not master:
        raise ConfigError(
            f"{purpose} needs the master key: set the environment variable named by "
            "secrets.master_key_env, or name a key file in fabric.yaml secrets.file "
            "(`fabric demo` writes one)"
        )
    return master


_SALT = b"fabric/v1"


class KeyDeriver:
    """HKDF-SHA256 (RFC 5869) keys of 256 bits from one master key, for many purposes.

    HKDF's extract step depends only on the master key, so it runs once here; each key is
    then its expand step, which for a 32-byte key is a single HMAC block. A new HKDF object
    per entity (as ``cryptography`` needs) cost more than the AES-GCM the key was for. The
    keys are HKDF's own, byte for byte (a test checks them against ``cryptography``'s HKDF).
    """

    def __init__(self, master: bytes) -> None:
        self._prk = hmac.digest(_SALT, master, "sha256")

    def derive(self, purpose: str) -> bytes:
        """The key for ``purpose``."""
        return hmac.digest(self._prk, purpose.encode() + b"\x01", "sha256")


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from the master key with HKDF-SHA256."""
    return KeyDeriver(master).derive(purpose)


#: The id of the master key when it also encrypts the store (no store keys configured).
MASTER_KEY_ID = "0"


@dataclass(frozen=True, repr=False)
class KeyRing:
    """The keys that encrypt the store at rest: the current one, and older ones still read.

    Every blob names the id of the key it was sealed under, so a rotation can re-seal blobs
    one batch at a time while the others keep opening under their old key. ``repr`` hides
    the keys so no log line can carry them.
    """

    current: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"the current key id {self.current!r} is not in the key ring")

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, ids={sorted(self.keys)!r})"

    @classmethod
    def of_master(cls, master: bytes) -> KeyRing:
        """The ring of a project with no store keys: the master key alone, as key "0"."""
        return cls(MASTER_KEY_ID, {MASTER_KEY_ID: master})


class KeyedHasher:
    """HMAC-SHA256, truncated: equal inputs give equal outputs, nothing leads back."""

    def __init__(self, key: bytes, size: int = 16) -> None:
        self._key = key
        self._size = size

    def __call__(self, data: str) -> bytes:
        # The one-shot C path: a copied HMAC object cost three Python-level calls per hash.
        return hmac.digest(self._key, data.encode(), "sha256")[: self._size]


class Sealer:
    """AES-256-GCM: ``seal`` and ``open`` with associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate; the nonce is stored in front."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes, *, what: str) -> bytes:
        """Decrypt and check; ``what`` names the item in the error message."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except (InvalidTag, ValueError) as exc:
            raise StoreError(
                f"{what} failed its integrity check (wrong key, or the data was changed)"
            ) from exc
