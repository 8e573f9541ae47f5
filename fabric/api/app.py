"""Build the Litestar application over a project.

``create_app`` is what tests (through Litestar's test client) and servers use. The project
(store, catalog, compiled rules) is opened before the app answers and closed in its shutdown.
Every request passes :class:`FabricApp`'s bound on its target's length, then routing, then
:class:`~fabric.api.observe.RequestObserver` and :class:`~fabric.api.gate.Gate` (who may use
the route), then its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
from pathlib import Path

from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.types import Receive, Scope, Send

from fabric import __version__
from fabric.api.admin import reload_config
from fabric.api.context import AppParts
from fabric.api.errors import error_response, exception_handlers
from fabric.api.exports import export_file, export_status, start_export, upload_spine
from fabric.api.features import feature_batch, feature_vector
from fabric.api.gate import Gate, seal
from fabric.api.jobs import ExportJobs
from fabric.api.limits import target_bytes
from fabric.api.metrics import COLLECTOR, MetricsController
from fabric.api.observe import RequestObserver
from fabric.api.offload import Offload
from fabric.api.ratelimit import RateLimit
from fabric.api.responses import JsonResponses
from fabric.api.routes import (
    find_entity,
    get_catalog,
    get_entity,
    get_lineage,
    health,
    ready,
)
from fabric.api.schema import COMPONENTS, tailor
from fabric.api.serving import Reloader
from fabric.project import Project

__all__ = ["ACCESS_LOG_ENV", "CONFIG_ENV", "FabricApp", "app_from_env", "create_app"]

#: How `fabric serve` tells worker processes which project to open.
CONFIG_ENV = "FABRIC_CONFIG"
#: How `fabric serve --access-log/--no-access-log` overrides ``api.access_log`` ("1"/"0").
ACCESS_LOG_ENV = "FABRIC_ACCESS_LOG"


class FabricApp(Litestar):
    """Litestar, refusing a request whose target (path and query string) is longer than
    ``api.max_url_bytes`` before it is routed (414, in the one error shape): Litestar's router
    keeps the last 1,024 paths it routed, and the access log, metrics and error log never see
    it. Servers refuse longer targets themselves: granian past 64 KiB with an empty 414,
    uvicorn past its parser's limit with a plain-text 400."""

    max_url_bytes = 8192

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # type: ignore[override]
        if scope["type"] == ScopeType.HTTP and target_bytes(scope) > self.max_url_bytes:
            limit = self.max_url_bytes
            message = f"the request target is longer than {limit:,} bytes (api.max_url_bytes)"
            await error_response(414, "uri_too_long", message)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(project: Project, *, access_log: bool | None = None) -> Litestar:
    """Return the API app serving ``project``; the app closes the project on shutdown.

    ``access_log`` overrides ``api.access_log`` (which a reload may change) when given."""
    api = project.config.api
    reloader = Reloader(project)
    jobs = ExportJobs(project)
    # Each thread warms its own connections and code paths before it takes a request.
    offload = Offload(
        initializer=lambda: reloader.current.warm(), ready=lambda: reloader.current.zero_counters()
    )
    parts = AppParts(reloader, offload, jobs, JsonResponses())

    def startup() -> None:
        # Answer nothing before the threads are warm (a few hundred ms; see ProjectServices.warm).
        offload.wait_ready(timeout=60)
        follower.start()
        COLLECTOR.attach(
            reloader.current.project, reloader.current.entities, reloader.current.features
        )
        # What exists now (the project, compiled rules, pools) lives as long as the app:
        # the collector's full passes need not walk it again and again. A request makes
        # and frees thousands of objects, nearly all freed by reference counting: younger
        # passes every 10,000 allocations rather than 700, and full ones far apart, which
        # lowers the p99 of lookups and vectors (benchmarks/README.md, "Collector").
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 100)
        # SIGHUP reloads, as `POST /v1/admin/reload` does (where the app runs in the
        # process's main thread, as under a server; not in a test client's thread).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP,
                lambda: threading.Thread(target=reloader.reload_quietly, daemon=True).start(),
            )

    # Reloads of the other servers of the store (workers of this one, other nodes).
    following = threading.Event()
    follower = threading.Thread(
        target=reloader.follow_every, args=(following,), name="fabric-reloads", daemon=True
    )

    def shutdown() -> None:
        following.set()
        COLLECTOR.detach(reloader.current.project)
        jobs.close()
        offload.close()
        reloader.current.project.close()

    app = FabricApp(
        route_handlers=[
            health,
            ready,
            MetricsController,
            get_entity,
            get_lineage,
            get_catalog,
            find_entity,
            feature_vector,
            feature_batch,
            start_export,
            upload_spine,
            export_status,
            export_file,
            reload_config,
        ],
        middleware=[
            DefineMiddleware(
                RequestObserver,
                logging=(lambda: access_log)
                if access_log is not None
                else lambda: reloader.current.project.config.api.access_log,
            ),
            # One rate limit for every handler's gate (Litestar makes a gate per handler).
            DefineMiddleware(
                Gate, parts=parts, limit=RateLimit(api.rate_limit) if api.rate_limit else None
            ),
        ],
        request_max_body_size=api.max_body_bytes,
        on_startup=[startup],
        state=State(parts.state()),
        exception_handlers=exception_handlers,
        on_shutdown=[shutdown],
        openapi_config=OpenAPIConfig(title="fabric", version=__version__, components=COMPONENTS),
    )
    app.max_url_bytes = api.max_url_bytes
    seal(app)  # every route declares the role route it needs, or is public
    tailor(app.openapi_schema, project.config)
    return app


def app_from_env() -> Litestar:
    """App factory for ASGI servers: opens the project named by ``FABRIC_CONFIG``."""
    access_log = os.environ.get(ACCESS_LOG_ENV)
    return create_app(
        Project.open(Path(os.environ.get(CONFIG_ENV, "fabric.yaml"))),
        access_log=None if access_log is None else access_log == "1",
    )
