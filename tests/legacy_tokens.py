"""Tokens as fabric made them before padding, computed from the same primitives.

Kept apart from fabric on purpose: these tests check that today's code still opens tokens of
the old format, so the old format must not come from today's code.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from fabric.crypto import KeyDeriver
from fabric.rules.tokens import masking_key_id

__all__ = ["legacy_token"]


def legacy_token(master: bytes, domain: str, value: str) -> str:
    """``tok_<key id>_<base64url>``: AES-SIV of the bare value, as made before padding."""
    deriver = KeyDeriver(master)
    key = deriver.derive(f"mask:tokenize:{domain}") + deriver.derive(f"mask:tokenize-mac:{domain}")
    sealed = AESSIV(key).encrypt(value.encode(), None)
    body = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    return f"tok_{masking_key_id(master)}_{body}"
