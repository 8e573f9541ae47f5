"""Fixtures of the API tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.project import Project


@pytest.fixture(scope="session")
def entity_id(demo_dir: Path) -> str:
    """An entity of the shared demo project."""
    with Project.open(demo_dir / "fabric.yaml") as project:
        return project.catalog.sample_ids("customer", 1)[0]
