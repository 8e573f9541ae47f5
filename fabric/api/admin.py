"""Admin routes: reload the configuration and rules without stopping."""

from __future__ import annotations

from typing import Any

from litestar import post
from litestar.di import NamedDependency

from fabric.api.context import Call

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
)
def reload_config(call: NamedDependency[Call]) -> dict[str, Any]:
    """Answer ``{status, rules_version, views}``."""
    call.require("admin")
    return call.serving.reload()
