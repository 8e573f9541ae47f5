"""Tokens: deterministic, unique, reversible stand-ins for values, per domain.

A token is AES-SIV (RFC 5297, from ``cryptography``) of the value under a key derived for its
domain, so the same value in the same domain always gives the same token (joins on tokens
work across tables and systems), two values never share one (SIV is a permutation per key),
and a holder of the key can turn a token back into its value.

The value is padded before it is sealed (ISO/IEC 7816-4: a 0x80 byte, then zeros) to the next
multiple of 16 bytes, so a token's length tells only which bucket the value's UTF-8 length
falls in (0-15 bytes, 16-31, ...), not the length itself. 16 bytes is AES's block, so padding
adds no AES work; it puts every short value (country codes, most first names) in one bucket,
and most emails in two (16-31 bytes, 32-47) where their exact length showed before. A wider
bucket would hide more of an email's length but lengthen every token of a short value.

Tokens read ``tok_<key id>p_<base64url>``: the key id lets keys rotate while old tokens stay
reversible; the letter after it names the format (``p``: padded). Tokens fabric made before
padding, ``tok_<key id>_<base64url>``, still open: a key id is eight hex digits, so the ninth
character tells the two formats apart. A token relabelled as the other format does not open:
its plaintext either lacks the padding or ends in a byte that is not UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from fabric.crypto import KeyDeriver
from fabric.errors import TokenError

__all__ = ["TOKEN_BUCKET_BYTES", "TokenError", "Tokenizer", "masking_key_id"]

#: Values are padded to a multiple of this many bytes: a token's length tells only the bucket.
TOKEN_BUCKET_BYTES = 16

_PREFIX = "tok_"
_PADDED = "p"  # the format letter of padded tokens; not a hex digit, so never part of a key id
_URLSAFE = bytes.maketrans(b"+/", b"-_")
#: The padding of a value, by its length modulo the bucket: 0x80, then zeros to the boundary.
_PADS = [b"\x80" + bytes(TOKEN_BUCKET_BYTES - 1 - n) for n in range(TOKEN_BUCKET_BYTES)]


def masking_key_id(master: bytes) -> str:
    """A short public id of a master key: tokens name it, nothing leads back to the key."""
    return hmac.digest(master, b"fabric/key-id", "sha256")[:4].hex()


class Tokenizer:
    """Tokenize and detokenize the values of one domain (``email``, ``customer_id``...)."""

    def __init__(self, master: bytes, domain: str) -> None:
        deriver = KeyDeriver(master)
        key = deriver.derive(f"mask:tokenize:{domain}") + deriver.derive(
            f"mask:tokenize-mac:{domain}"
        )
        self._siv = AESSIV(key)  # 512-bit key: AES-256 for S2V and for CTR
        self.key_id = masking_key_id(master)
        self._head = f"{_PREFIX}{self.key_id}{_PADDED}_"
        self._unpadded_head = f"{_PREFIX}{self.key_id}_"
        self.domain = domain

    def tokenize(self, value: object) -> str:
        """The token of ``value`` (its text)."""
        data = str(value).encode()
        sealed = self._siv.encrypt(data + _PADS[len(data) % TOKEN_BUCKET_BYTES], None)
        # binascii and a translation table: faster per value than urlsafe_b64encode
        # (benchmarks/README.md, "Tokens").
        text = binascii.b2a_base64(sealed, newline=False)
        return self._head + text.translate(_URLSAFE).rstrip(b"=").decode()

    def detokenize(self, token: str) -> str:
        """The value behind a token of this domain and key, padded or made before padding.

        Raises:
            TokenError: not a token, another key's, or changed.
        """
        if not token.startswith(_PREFIX):
            raise TokenError("not a fabric token")
        padded = token.startswith(self._head)
        if not padded and not token.startswith(self._unpadded_head):
            raise TokenError("the token was made under another key (its id does not match)")
        body = token[len(self._head if padded else self._unpadded_head) :]
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._siv.decrypt(sealed, None)
            return (_unpad(plain) if padded else plain).decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise TokenError(
                f"the token does not open in domain '{self.domain}' (changed, or another domain)"
            ) from None


def _unpad(plain: bytes) -> bytes:
    """The value inside padded plaintext; ValueError when the padding is not fabric's."""
    data = plain.rstrip(b"\0")
    if (
        len(plain) % TOKEN_BUCKET_BYTES
        or not data.endswith(b"\x80")
        or len(plain) - len(data) >= TOKEN_BUCKET_BYTES
    ):
        raise ValueError("not padded")
    return data[:-1]
