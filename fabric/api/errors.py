"""One JSON error shape for every failure the API returns.

``{"error": {"status": 404, "code": "not_found", "message": "..."}}``. Messages come from our
own exceptions, which never carry secrets or source values; unexpected errors answer a generic
500 and log only the exception type and the route's template (never its path: a path holds
whatever a caller typed), so nothing a driver put in a message can leak.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.response.base import ASGIResponse
from litestar.serialization import encode_json
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from fabric.api._text import printable
from fabric.errors import (
    EntityNotFoundError,
    FabricError,
    InvalidRequestError,
    JobNotReadyError,
    ObjectStorageError,
    PayloadTooLargeError,
    ReadTimeoutError,
    RevealError,
    StoreUnavailableError,
)

__all__ = ["ERROR_CODES", "error_body", "error_response", "exception_handlers", "refusal"]

log = logging.getLogger("fabric.api")

#: HTTP status -> stable code, for errors raised by the framework itself.
ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

#: Our errors' statuses, by class, the first that matches (a spine too large is also a bad
#: spine: its size answers first); any other error of ours is a fault on our side (500).
_STATUS_OF: list[tuple[type[FabricError], int]] = [
    (PayloadTooLargeError, 413),
    (InvalidRequestError, 400),
    (RevealError, 403),
    (EntityNotFoundError, 404),
    (JobNotReadyError, 409),
    (ReadTimeoutError, 503),
    (ObjectStorageError, 503),
    (StoreUnavailableError, 503),
]


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The JSON error document."""
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> ASGIResponse:
    """The error document as an ASGI response, for those who answer outside a handler."""
    return ASGIResponse(
        body=encode_json(error_body(status, code, message)),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _respond(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    return Response(
        error_body(status, code, message),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _fabric_error(request: Request[Any, Any, Any], exc: FabricError) -> Response[dict[str, Any]]:
    status = next((s for kind, s in _STATUS_OF if isinstance(exc, kind)), 500)
    if status == 500:
        # Our side is at fault: the caller learns nothing about paths or internals; the log
        # gets the exception's type and the route (whose ids are opaque) only.
        log.error("request failed: %s on %s", type(exc).__name__, _route(request))
        return _respond(500, "internal_error", "internal error")
    return _respond(status, exc.code, str(exc).splitlines()[0])


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    return _respond(*_described_http(exc))


def refusal(exc: HTTPException) -> ASGIResponse:
    """The response of ``exc``, as the exception handler would make it."""
    return error_response(*_described_http(exc))


def _described_http(exc: HTTPException) -> tuple[int, str, str, dict[str, str] | None]:
    """Status, code, message and headers of a framework error."""
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else "error"
    if status == 400:
        # Litestar's own text repeats the request's query string, which may hold a caller's
        # key or an email: name the offending parameters, never their values.
        extra = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
        keys = [_described(e) for e in extra if e.get("key")]
        message = f"invalid or missing parameter: {', '.join(keys)}" if keys else "invalid request"
    return status, ERROR_CODES.get(status, "error"), message, exc.headers


def _described(problem: dict[str, Any]) -> str:
    """A parameter's name, and what was expected of it when the validator's words say only
    that (``Expected `array` of length <= 1000``); other messages may quote the value."""
    said = str(problem.get("message", ""))
    expected = said.startswith("Expected `") and "'" not in said and '"' not in said
    return f"{problem['key']} ({said})" if expected else str(problem["key"])


def _route(request: Request[Any, Any, Any]) -> str:
    """The request's method and route template: never its path, which may be anything a
    caller typed (an email as an id, a forged log line)."""
    return f"{printable(request.scope['method'])} {request.scope.get('path_template', '-')}"


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unexpected %s on %s", type(exc).__name__, _route(request))
    return _respond(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error")


exception_handlers: dict[type[Exception] | int, Any] = {
    FabricError: _fabric_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
