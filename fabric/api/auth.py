"""Bearer-key authentication.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest` against every configured
key, so timing reveals neither which key nor how much of it matched. The caller is identified
by the key's *name* from then on (in the access log, the rate limit, export jobs); the key
itself is never stored, logged or echoed. :mod:`fabric.api.gate` decides what a caller may
use.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from litestar.exceptions import NotAuthorizedException
from litestar.types import Scope

from fabric.config.models import ProjectConfig

__all__ = ["Authenticator", "Caller"]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: key name, role, and the role's routes."""

    key_name: str
    role: str
    routes: frozenset[str]


class Authenticator:
    """Maps bearer keys to callers using the hashes in fabric.yaml."""

    def __init__(self, config: ProjectConfig) -> None:
        self._keys = [
            (
                bytes.fromhex(k.sha256),
                Caller(k.name, k.role, frozenset(config.roles[k.role].routes)),
            )
            for k in config.api.keys
        ]

    def __call__(self, scope: Scope) -> Caller:
        """The caller of the request of ``scope``, from its ``Authorization`` header (the
        scheme in any case, then spaces, then the key).

        Raises:
            NotAuthorizedException: no key, or one that is not configured (401).
        """
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise NotAuthorizedException(
                "missing API key: send 'Authorization: Bearer <key>'", headers=dict(_CHALLENGE)
            )
        digest = hashlib.sha256(token).digest()
        found: Caller | None = None
        for stored, caller in self._keys:
            if hmac.compare_digest(stored, digest):
                found = caller
        if found is None:
            raise NotAuthorizedException("invalid API key", headers=dict(_CHALLENGE))
        return found
