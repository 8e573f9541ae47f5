"""Admin routes: reload the configuration and rules without stopping."""

from __future__ import annotations

from typing import Any

from litestar import Request, post

from fabric.api.context import Call
from fabric.api.schema import BEARER, Reloaded, answers

__all__ = ["reload_config"]


@post(
    "/v1/admin/reload",
    sync_to_thread=True,
    tags=["admin"],
    summary="Reload fabric.yaml and every rule file; the old ones serve until the new pass",
    description=(
        "Everything is opened and compiled before anything changes. A broken file is refused "
        "with every problem named (400) while the old configuration keeps serving; requests "
        "in flight finish on the old one. SIGHUP does the same."
    ),
    status_code=200,
    security=BEARER,
    opt={"route": "admin"},
    responses=answers(
        Reloaded,
        {"status": "reloaded", "rules_version": "5d41402abc4b", "views": ["customer_360"]},
        400,
    ),
)
def reload_config(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Answer ``{status, rules_version, views}``."""
    call = Call.of(request)
    return call.reloader.reload()
