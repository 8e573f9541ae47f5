"""Build the Litestar application over a project.

``create_app`` is what tests (through Litestar's test client) and servers use. The project
(store, catalog, compiled rules) is opened before the app answers and closed in its shutdown.
"""

from __future__ import annotations

import os
from pathlib import Path

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from fabric import __version__
from fabric.api.auth import Authenticator
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
from fabric.entities import EntityService
from fabric.features.jobs import ExportJobs
from fabric.features.service import FeatureService
from fabric.project import Project

__all__ = ["CONFIG_ENV", "app_from_env", "create_app"]

#: How `fabric serve` tells worker processes which project to open.
CONFIG_ENV = "FABRIC_CONFIG"


def create_app(project: Project) -> Litestar:
    """Return the API app serving ``project``; the app closes the project on shutdown."""
    # Compile rules and open the store and catalog now: a broken rule file or store fails at
    # start, not per request.
    project.policies  # noqa: B018
    project.store  # noqa: B018
    project.catalog  # noqa: B018
    project.views()
    service = EntityService(project)
    features = FeatureService(project, service)
    jobs = ExportJobs(project)
    authenticate = Authenticator(project.config)

    def startup() -> None:
        COLLECTOR.attach(project, service)

    def shutdown() -> None:
        COLLECTOR.detach(project)
        jobs.close()
        project.close()

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
        ],
        middleware=[prometheus_config().middleware],
        on_startup=[startup],
        dependencies={
            "service": Provide(lambda: service, use_cache=True, sync_to_thread=False),
            "features": Provide(lambda: features, use_cache=True, sync_to_thread=False),
            "jobs": Provide(lambda: jobs, use_cache=True, sync_to_thread=False),
            "caller": Provide(authenticate, sync_to_thread=False),
        },
        exception_handlers=exception_handlers,
        on_shutdown=[shutdown],
        openapi_config=OpenAPIConfig(title="fabric", version=__version__),
    )


def app_from_env() -> Litestar:
    """App factory for ASGI servers: opens the project named by ``FABRIC_CONFIG``."""
    return create_app(Project.open(Path(os.environ.get(CONFIG_ENV, "fabric.yaml"))))
