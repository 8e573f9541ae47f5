"""Shared fixtures.

The PostgreSQL cluster is loaded as a plugin so one private server serves the whole session.
Hypothesis runs a bounded profile in CI (``CI`` set) so the suite's time stays predictable.

Demo projects are generated (and synced) once per session as templates; a test that may
change its project gets a copy of one (``fresh_demo``, ``synced``), not a build of its own.

Tests that take more than about five seconds are marked ``slow``: ``pytest -m "not slow"`` is
the quick loop; ``make test`` (plain ``pytest``) still runs everything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fabric.config.secrets import load_secrets
from fabric.demo import DemoProject, create_demo_project
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.materialize import materialize
from fabric.sync import sync_project

pytest_plugins = ["pgcluster", "s3server", "backends"]

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[str]:
    """A real Dask cluster on loopback (scheduler and two single-threaded worker processes,
    each under a nanny that restarts it if it dies), the one fabric starts; yields the
    scheduler's address."""
    from fabric.executors import start_loopback_cluster

    cluster = start_loopback_cluster(2)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=30)


#: Small enough to build in about a second, large enough for every kind of duplicate.
DEMO_CUSTOMERS = 300


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synced demo project shared by read-only tests. Do not modify it."""
    directory = tmp_path_factory.mktemp("demo")
    created = create_demo_project(directory, customers=DEMO_CUSTOMERS, seed=7)
    with Project.open(created.config_path) as project:
        sync_project(project, full=True)
    return directory


#: The demo of a test's own: small, so a sync of it is quick; the same for every test.
OWN_DEMO_CUSTOMERS, OWN_DEMO_SEED = 120, 11


def _copy_project(template: Path, directory: Path) -> Path:
    """Copy a template project to ``directory`` (modes too: the key file and the store stay
    owner-only); every path in its fabric.yaml is relative, so the copy stands alone."""
    shutil.copytree(template, directory, symlinks=True)
    return directory / "fabric.yaml"


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    """The not yet synced demo that :func:`fresh_demo` copies. Never use it directly."""
    directory = tmp_path_factory.mktemp("template") / "demo"
    return create_demo_project(directory, customers=OWN_DEMO_CUSTOMERS, seed=OWN_DEMO_SEED)


@pytest.fixture(scope="session")
def synced_template(demo_template: DemoProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fully synced copy of :func:`demo_template` that :func:`synced` copies; its directory."""
    directory = tmp_path_factory.mktemp("synced-template") / "demo"
    with Project.open(_copy_project(demo_template.directory, directory)) as project:
        sync_project(project, full=True)
    return directory


@pytest.fixture
def fresh_demo(tmp_path: Path, demo_template: DemoProject) -> DemoProject:
    """A new, not yet synced demo project of the test's own (a copy of the template)."""
    directory = tmp_path / "demo"
    config = _copy_project(demo_template.directory, directory)
    return DemoProject(directory, config, True, demo_template.generation)


@pytest.fixture
def synced(tmp_path: Path, synced_template: Path) -> Path:
    """A new demo project of the test's own, fully synced (a copy of the synced template):
    its fabric.yaml.

    The template was synced a while ago, so the copy's online store is brought up to date as
    of now, as a sync does at its end: vectors whose horizon has passed since (a day count
    ticking over) are computed again, and the copy holds what a sync run now would leave.
    """
    config = _copy_project(synced_template, tmp_path / "demo")
    with Project.open(config) as project:
        materialize(EntityService(project), project.online, project.views())
    return config


@pytest.fixture
def demo_project(demo_dir: Path) -> Iterator[Project]:
    """The shared demo project, opened."""
    with Project.open(demo_dir / "fabric.yaml") as project:
        yield project


@pytest.fixture(scope="session")
def demo_keys(demo_dir: Path) -> dict[str, str]:
    """API keys of the shared demo project, by key name."""
    with Project.open(demo_dir / "fabric.yaml") as project:
        return load_secrets(project.config).api_keys
