"""Watching every request: Prometheus figures and the access log, from one timing.

:class:`RequestObserver` runs inside Litestar's router, so the route's path template is known.
It counts requests and times them per route (by template, never by id) and status, under the
names Litestar's Prometheus middleware uses. That middleware built a request object and looked
up four label sets per request (benchmarks/README.md, "Request metrics"); this one keeps
each label set's children.

The access log (logger ``fabric.access``, level INFO, on while ``api.access_log`` is true) has
one line per request::

    127.0.0.1 analyst-demo analyst "GET /v1/entities/customer/3f1c9a2b7d4e" 200 1.3ms

It names the caller by its key's name and role, never the key. It shows the route's template
(``/v1/entities/{entity_type}/{entity_id}``), and the path itself only when a handler answered
2xx to a GET or POST: then every id in it is one of fabric's own (an opaque hash), as the
handler found it. Any other path may be anything a caller typed or pasted (an email as an id,
a card number, ``%0A`` and a forged line); an OPTIONS answer vouches for nothing. The query
string never shows: it may hold a source key such as an email address
(``?source=crm&key=...``). A request that matches no route is not logged at all. Whatever is
written is escaped (``printable``), so no line can end early or forge the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from fabric.api._text import printable
from fabric.api.context import Call

__all__ = ["ACCESS_LOG", "RequestObserver"]

#: The access log's logger.
ACCESS_LOG = logging.getLogger("fabric.access")

_LABELS = ("method", "path", "status_code", "app_name")
_REQUESTS = Counter("fabric_requests_total", "Total requests", _LABELS)
_ERRORS = Counter("fabric_requests_error_total", "Total errors (5xx) in requests", _LABELS)
_DURATION = Histogram("fabric_request_duration_seconds", "Request duration, in seconds", _LABELS)
_IN_PROGRESS = Gauge(
    "fabric_requests_in_progress",
    "Requests in progress",
    ("method", "path", "app_name"),
    multiprocess_mode="livesum",
)
#: Paths never counted: the scrape itself.
_NOT_COUNTED = frozenset({"/metrics"})
#: Methods whose 2xx answers vouch for the ids in their paths.
_VOUCHING = frozenset({"GET", "POST"})


class RequestObserver:
    """ASGI middleware: requests, 5xx errors, latency and requests in progress per method,
    route and status; and a line of the access log per request while ``logging()`` is true
    (read per request, so a reload turns it on or off)."""

    def __init__(self, app: ASGIApp, logging: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self._logging = logging
        #: (method, path template, status) -> (requests, errors or None, duration) children
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._progress: dict[tuple[str, str], Any] = {}

    def _count(self, method: str, path: str, status: int, seconds: float) -> None:
        children = self._children.get((method, path, status))
        if children is None:
            values = (method, path, str(status), "fabric")
            children = self._children[(method, path, status)] = (
                _REQUESTS.labels(*values),
                _ERRORS.labels(*values) if status >= 500 else None,
                _DURATION.labels(*values),
            )
        requests, errors, duration = children
        requests.inc()
        if errors is not None:
            errors.inc()
        duration.observe(seconds)

    @staticmethod
    def _log(scope: Scope, method: str, template: str, status: int, seconds: float) -> None:
        client = scope.get("client")
        call = Call.kept(scope)
        path = scope["path"] if 200 <= status < 300 and method in _VOUCHING else template
        line = '%s %s %s "%s %s" %d %.1fms' % (  # noqa: UP031 (as fast as it gets)
            client[0] if client else "-",
            call.caller.key_name if call else "-",
            call.caller.role if call else "-",
            method,
            path,
            status,
            seconds * 1000,
        )
        ACCESS_LOG.info("%s", printable(line))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope.get("path_template") or "unknown"
        counted = scope["path"] not in _NOT_COUNTED
        progress = self._progress.get((method, path))
        if progress is None:
            progress = self._progress[(method, path)] = _IN_PROGRESS.labels(method, path, "fabric")
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if counted:
            progress.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            seconds = time.perf_counter() - start
            if counted:
                progress.dec()
                self._count(method, path, status, seconds)
            if self._logging() and ACCESS_LOG.isEnabledFor(logging.INFO):
                self._log(scope, method, path, status, seconds)
