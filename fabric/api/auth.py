"""Bearer-key authentication and role-based route access.

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest` against every configured
key, so timing reveals neither which key nor how much of it matched. The caller is identified
by the key's *name* from then on; the key itself is never stored, logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, cast

from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.types import Scope

from fabric.config.models import ProjectConfig

__all__ = ["Authenticator", "Caller", "caller_of"]

#: Where an authenticated request's :class:`Caller` is kept in its ASGI scope (for the
#: access log, which runs outside the handler).
_SCOPE_KEY = "fabric.caller"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: key name and role."""

    key_name: str
    role: str
    routes: frozenset[str]

    def require(self, route: str) -> None:
        """Raise 403 unless the caller's role may use ``route``."""
        if route not in self.routes:
            raise PermissionDeniedException(f"role '{self.role}' may not use {route} routes")


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

    def __call__(self, request: Request[Any, Any, Any]) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthorizedException(
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Caller | None = None
        for stored, caller in self._keys:
            if hmac.compare_digest(stored, digest):
                found = caller
        if found is None:
            raise NotAuthorizedException("invalid API key", headers={"WWW-Authenticate": "Bearer"})
        request.scope[_SCOPE_KEY] = found  # type: ignore[literal-required]
        return found


def caller_of(scope: Scope) -> Caller | None:
    """The caller a request authenticated as, or None (not yet, or not at all)."""
    return cast("Caller | None", scope.get(_SCOPE_KEY))
