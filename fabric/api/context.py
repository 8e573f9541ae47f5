"""What one request works with: its caller, the project served as it started, and the threads
that run its blocking work.

:class:`fabric.api.gate.Gate` makes a request's :class:`Call` once it has authenticated and
authorized it, and keeps it in the request's scope; handlers take it from there
(``Call.of``). Litestar's dependency injection did the same at a cost per request (its
resolution machinery), and with two or more dependencies it resolved them in an anyio task
group, a large share of the event loop's time (benchmarks/README.md, "Dependencies").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from litestar import Request
from litestar.exceptions import NotAuthorizedException
from litestar.types import Scope

from fabric.api.auth import Caller
from fabric.api.jobs import ExportJobs
from fabric.api.offload import Offload
from fabric.api.responses import JsonResponses
from fabric.api.serving import ProjectServices, Reloader
from fabric.errors import ReadTimeoutError
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService
from fabric.store.sqlite import apsw, time_limit

__all__ = ["AppParts", "Call"]

T = TypeVar("T")


#: Where the app keeps its :class:`AppParts` in its state.
_STATE_KEY = "fabric"
#: Where a request's :class:`Call` is kept in its ASGI scope.
_SCOPE_KEY = "fabric.call"


@dataclass(frozen=True, slots=True)
class AppParts:
    """What an app makes once and every request uses."""

    reloader: Reloader
    offload: Offload
    jobs: ExportJobs
    json: JsonResponses

    def state(self) -> dict[str, Any]:
        """The app state that holds these (``Litestar(state=State(parts.state()))``)."""
        return {_STATE_KEY: self}

    @staticmethod
    def of(request: Request[Any, Any, Any]) -> AppParts:
        """The parts of the app serving ``request``."""
        parts: AppParts = request.app.state[_STATE_KEY]
        return parts


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request's view of the app."""

    caller: Caller
    #: taken once, as the request starts: a reload during the request does not reach it
    services: ProjectServices
    parts: AppParts

    @staticmethod
    def of(request: Request[Any, Any, Any]) -> Call:
        """The call of ``request``, as the gate admitted it.

        Raises:
            NotAuthorizedException: the gate did not admit the request (a handler of a
                public route asked; fail closed).
        """
        call = Call.kept(request.scope)
        if call is None:
            raise NotAuthorizedException("this route takes no key")
        return call

    def keep(self, scope: Scope) -> None:
        """Keep this call in the request's scope, for its handler and the access log."""
        scope[_SCOPE_KEY] = self  # type: ignore[literal-required]

    @staticmethod
    def kept(scope: Scope) -> Call | None:
        """The call kept in a request's scope, or None (not admitted, or public)."""
        return scope.get(_SCOPE_KEY)  # type: ignore[return-value]

    @property
    def reloader(self) -> Reloader:
        return self.parts.reloader

    @property
    def offload(self) -> Offload:
        return self.parts.offload

    @property
    def jobs(self) -> ExportJobs:
        return self.parts.jobs

    @property
    def json(self) -> JsonResponses:
        """Dict answers as ASGI responses (see :mod:`fabric.api.responses`)."""
        return self.parts.json

    @property
    def project(self) -> Project:
        """The project served to this call."""
        return self.services.project

    @property
    def entities(self) -> EntityService:
        """Entity lookups of the project served."""
        return self.services.entities

    @property
    def features(self) -> FeatureService:
        """Feature vectors of the project served."""
        return self.services.features

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` off the event loop (see :class:`Offload`), its
        reads limited to ``api.read_timeout_ms``."""
        limit = self.services.project.config.api.read_timeout_ms
        return await self.offload.run(_limited, limit, function, *args, **kwargs)

    async def gather(
        self, key: Hashable, function: Callable[[list[Any]], Sequence[Any]], item: Any
    ) -> Any:
        """``function`` over ``item`` and others of ``key`` waiting with it (see
        :meth:`Offload.gather`), its reads limited to ``api.read_timeout_ms``."""
        limit = self.services.project.config.api.read_timeout_ms
        return await self.offload.gather(key, functools.partial(_limited, limit, function), item)


def _limited(limit_ms: int, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` with its SQLite reads stopped once they run ``limit_ms`` (0: none)."""
    with time_limit(limit_ms / 1000):
        try:
            return function(*args, **kwargs)
        except apsw.InterruptError:
            raise ReadTimeoutError(
                f"the read ran past its time limit of {limit_ms} ms (api.read_timeout_ms)"
            ) from None
