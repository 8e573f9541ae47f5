"""What one request works with: its caller, the project served as it started, and the threads
that run its blocking work.

Handlers take this one dependency. Litestar resolves two or more dependencies of a handler
in an anyio task group, which cost about a third of the event loop's time per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fabric.api.auth import Caller
from fabric.api.offload import Offload
from fabric.api.serving import Served, Serving
from fabric.entities import EntityService
from fabric.features.jobs import ExportJobs
from fabric.features.service import FeatureService

__all__ = ["Call"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request's view of the app."""

    caller: Caller
    #: taken once, as the request starts: a reload during the request does not reach it
    served: Served
    serving: Serving
    offload: Offload
    jobs: ExportJobs

    def require(self, route: str) -> None:
        """Raise 403 unless the caller's role may use ``route``."""
        self.caller.require(route)

    @property
    def service(self) -> EntityService:
        """Entity lookups of the project served."""
        return self.served.service

    @property
    def features(self) -> FeatureService:
        """Feature vectors of the project served."""
        return self.served.features

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` off the event loop (see :class:`Offload`)."""
        return await self.offload.run(function, *args, **kwargs)
