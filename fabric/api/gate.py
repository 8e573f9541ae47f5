"""Who may use which route, decided in one place: authentication, role routes, rate limits and
the bound on JSON bodies, before a handler runs or its body is read.

Every route handler declares the role route it needs, ``opt={"route": "entities"}``; the routes
anyone may use are the paths of :data:`PUBLIC`, listed here and nowhere else. :func:`seal`,
run as the app is built, gives every handler its :class:`Door` and refuses to build an app
with a handler that is neither declared nor public: a route cannot be added open by
forgetting a line. An OPTIONS handler (Litestar adds one per path) needs its path's route.

:class:`Gate` is an ASGI middleware of every handler rather than a Litestar guard: Litestar
calls each guard with a copy of the handler (``copy(handler)``, a sizeable part of a hot
lookup: benchmarks/README.md, "Gate"), while the gate reads the handler routing put in the
scope. It runs after routing, inside :class:`~fabric.api.observe.RequestObserver` (so
refusals are counted and logged), and answers its refusals itself, in the one error shape:
401 without a valid key, 429 over the rate limit, 403 when the key's role lacks the route,
then, for a route that takes a JSON body, 413 or 400 for a body too large or nested too
deep. Only then is the body parsed, by the handler's own machinery (Litestar keeps the body
read here for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from fabric.api.context import AppParts, Call
from fabric.api.errors import error_response, refusal
from fabric.api.limits import json_problem
from fabric.api.ratelimit import RateLimit
from fabric.config.models import Route

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler

__all__ = ["PUBLIC", "Door", "Gate", "seal"]

#: The paths (and everything under them) anyone may use without a key: liveness, readiness,
#: Prometheus' scrape, the OpenAPI schema.
PUBLIC = ("/health", "/ready", "/metrics", "/schema")
#: Public paths rate limited by address all the same; probes and scrapes always answer.
_LIMITED_PUBLIC = ("/schema",)

#: Where :func:`seal` puts a handler's :class:`Door`, in its ``opt``.
_DOOR = "fabric.door"


@dataclass(frozen=True, slots=True)
class Door:
    """What a handler asks of a request before it runs."""

    #: the role route the caller's role must have; None for a public route
    route: str | None
    #: whether the request counts against a rate limit
    limited: bool
    #: whether the handler parses a JSON body, whose nesting is bounded first
    json: bool


#: A handler that came after :func:`seal`: open to no key (fail closed).
_UNDECLARED = Door(route="undeclared", limited=True, json=False)


def _is_public(path: str, public: tuple[str, ...] = PUBLIC) -> bool:
    return any(path == p or path.startswith(p + "/") for p in public)


def seal(app: Litestar) -> None:
    """Give every handler of ``app`` its :class:`Door`, from its declared route or
    :data:`PUBLIC`.

    Raises:
        RuntimeError: a handler declares no role route and is not public, declares one that
            is not a role route, or its path's handlers need different routes.
    """
    known = get_args(Route)
    for route in app.routes:
        path = route.path_format
        handlers: dict[str, tuple[Any, Any]] = getattr(route, "route_handler_map", {})
        if not handlers:
            raise RuntimeError(f"{path}: only HTTP routes are served (and gated)")
        declared = {
            h.opt.get("route") for method, (h, _) in handlers.items() if method != "OPTIONS"
        }
        for method, (handler, _) in handlers.items():
            needed = handler.opt.get("route")
            if needed is None and method == "OPTIONS" and len(declared) == 1:
                needed = next(iter(declared))
            if _is_public(path):
                if needed is not None:
                    raise RuntimeError(f"{method} {path} is public (PUBLIC) and declares a route")
                door = Door(None, _is_public(path, _LIMITED_PUBLIC), json=False)
            elif needed not in known:
                raise RuntimeError(
                    f"{method} {path} declares {needed!r}: declare the role route it needs, "
                    f"opt={{'route': ...}} (one of {', '.join(known)}), the same for every "
                    "method of a path, or list the path in fabric.api.gate.PUBLIC"
                )
            else:
                door = Door(needed, True, json="data" in handler.parsed_fn_signature.parameters)
            handler.opt[_DOOR] = door


class Gate:
    """ASGI middleware of every handler: lets a request through to its handler only if the
    handler's :class:`Door` admits it, and keeps its :class:`Call` in its scope."""

    def __init__(self, app: ASGIApp, parts: AppParts, limit: RateLimit | None) -> None:
        self.app = app
        self._parts = parts
        #: shared by every handler's gate (Litestar makes one middleware per handler)
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        door: Door = scope["route_handler"].opt.get(_DOOR, _UNDECLARED)
        try:
            extra = self._admit(scope, door)
            if door.json:
                problem = await _json_problem(scope, receive)
                if problem is not None:
                    await error_response(400, "bad_request", problem)(scope, receive, send)
                    return
        except HTTPException as exc:
            await refusal(exc)(scope, receive, send)
            return
        if extra is not None:
            send = _with_headers(send, extra)
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope, door: Door) -> list[tuple[bytes, bytes]] | None:
        """The rate limit's headers for the answer (None: no limit); raises the refusal."""
        limit = self._limit
        if door.route is None:
            return limit.admit(_address(scope)) if limit is not None and door.limited else None
        parts = self._parts
        services = parts.reloader.current  # once: a reload during the request does not reach it
        try:
            caller = services.authenticate(scope)
        except NotAuthorizedException:
            if limit is not None:
                limit.admit(_address(scope))  # guessing keys is limited too
            raise
        extra = limit.admit("key:" + caller.key_name) if limit is not None else None
        if door.route not in caller.routes:
            raise PermissionDeniedException(f"role '{caller.role}' may not use {door.route} routes")
        Call(caller, services, parts).keep(scope)
        return extra


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return "address:" + (client[0] if client else "unknown")


async def _json_problem(scope: Scope, receive: Receive) -> str | None:
    """Read the body (413 past the route's size limit) and say what is wrong with its
    nesting, if anything. Litestar keeps the body in the scope's state: the handler's request
    reads it from there."""
    call = Call.kept(scope)
    assert call is not None  # admitted above
    handler: HTTPRouteHandler = scope["route_handler"]  # type: ignore[assignment]
    request = handler.resolve_request_class()(scope, receive)
    body = await request.body()
    return json_problem(body, call.project.config.api.max_json_depth)


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Callable[[Message], Any]:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return sending
