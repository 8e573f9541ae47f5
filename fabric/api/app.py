"""Build the Litestar application over a project.

``create_app`` is what tests (through Litestar's test client) and servers use. The project
(store, catalog, compiled rules) is opened before the app answers and closed in its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.di import NamedDependency, Provide
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig

from fabric import __version__
from fabric.api.admin import reload_config
from fabric.api.auth import Caller
from fabric.api.errors import exception_handlers
from fabric.api.exports import export_file, export_status, start_export
from fabric.api.features import feature_batch, feature_vector
from fabric.api.metrics import COLLECTOR, MetricsController, prometheus_config
from fabric.api.routes import (
    find_entity,
    get_catalog,
    get_entity,
    get_lineage,
    health,
    ready,
)
from fabric.api.serving import Served, Serving
from fabric.entities import EntityService
from fabric.features.jobs import ExportJobs
from fabric.features.service import FeatureService
from fabric.project import Project

__all__ = ["CONFIG_ENV", "app_from_env", "create_app"]

#: How `fabric serve` tells worker processes which project to open.
CONFIG_ENV = "FABRIC_CONFIG"


def create_app(project: Project) -> Litestar:
    """Return the API app serving ``project``; the app closes the project on shutdown."""
    serving = Serving(project)
    jobs = ExportJobs(project)

    def served() -> Served:
        # Taken once per request: a reload during the request does not reach it.
        return serving.current

    def caller(request: Request[Any, Any, Any], served: NamedDependency[Served]) -> Caller:
        return served.authenticate(request)

    def service(served: NamedDependency[Served]) -> EntityService:
        return served.service

    def features(served: NamedDependency[Served]) -> FeatureService:
        return served.features

    def startup() -> None:
        COLLECTOR.attach(serving.current.project, serving.current.service)
        # SIGHUP reloads, as `POST /v1/admin/reload` does (where the app runs in the
        # process's main thread, as under a server; not in a test client's thread).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP,
                lambda: threading.Thread(target=serving.reload_quietly, daemon=True).start(),
            )

    def shutdown() -> None:
        COLLECTOR.detach(serving.current.project)
        jobs.close()
        serving.current.project.close()

    return Litestar(
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
            export_status,
            export_file,
            reload_config,
        ],
        middleware=[
            prometheus_config().middleware,
            *_rate_limit(project.config.api.rate_limit),
        ],
        request_max_body_size=project.config.api.max_body_bytes,
        on_startup=[startup],
        dependencies={
            "served": Provide(served, sync_to_thread=False),
            "serving": Provide(lambda: serving, use_cache=True, sync_to_thread=False),
            "service": Provide(service, sync_to_thread=False),
            "features": Provide(features, sync_to_thread=False),
            "jobs": Provide(lambda: jobs, use_cache=True, sync_to_thread=False),
            "caller": Provide(caller, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        on_shutdown=[shutdown],
        openapi_config=OpenAPIConfig(title="fabric", version=__version__),
    )


def _rate_limit(per_second: int) -> list[Any]:
    """Litestar's rate limit per caller: the SHA-256 of its bearer key (never the key), or
    its address when it sends none. Health, readiness and metrics are not limited."""
    if not per_second:
        return []

    def identify(request: Request[Any, Any, Any]) -> str:
        header = request.headers.get("authorization", "")
        if header:
            return "key:" + hashlib.sha256(header.encode()).hexdigest()
        return "address:" + (request.client.host if request.client else "unknown")

    config = RateLimitConfig(
        rate_limit=("second", per_second),
        identifier_for_request=identify,
        exclude=["/health", "/ready", "/metrics"],
    )
    return [config.middleware]


def app_from_env() -> Litestar:
    """App factory for ASGI servers: opens the project named by ``FABRIC_CONFIG``."""
    return create_app(Project.open(Path(os.environ.get(CONFIG_ENV, "fabric.yaml"))))
