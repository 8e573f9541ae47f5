"""Shared fixtures.

The PostgreSQL cluster is loaded as a plugin so one private server serves the whole session.
Hypothesis runs a bounded profile in CI (``CI`` set) so the suite's time stays predictable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fabric.config.secrets import load_secrets
from fabric.demo import DemoProject, create_demo_project
from fabric.project import Project
from fabric.sync import sync_project

pytest_plugins = ["pgcluster"]

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

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


@pytest.fixture
def fresh_demo(tmp_path: Path) -> DemoProject:
    """A new, not yet synced demo project of the test's own."""
    return create_demo_project(tmp_path / "demo", customers=120, seed=11)


@pytest.fixture
def synced(fresh_demo: DemoProject) -> Path:
    """A new demo project of the test's own, fully synced: its fabric.yaml."""
    with Project.open(fresh_demo.config_path) as project:
        sync_project(project, full=True)
    return fresh_demo.config_path


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
