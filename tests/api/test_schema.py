"""The API against its own OpenAPI schema (schemathesis): no 5xx, responses as documented.

Every operation is called with generated parameters and bodies, with the keys of two roles,
and without a key. Bounded by the Hypothesis profile (``CI`` set: fewer examples).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from fabric.api import create_app
from fabric.config.secrets import load_secrets
from fabric.project import Project


@pytest.fixture(scope="module")
def keys(demo_dir: Path) -> dict[str, str]:
    with Project.open(demo_dir / "fabric.yaml") as project:
        return load_secrets(project.config).api_keys


@pytest.fixture(scope="module")
def api_schema(demo_dir: Path) -> Iterator[Any]:
    project = Project.open(demo_dir / "fabric.yaml")
    app = create_app(project)
    # Exports would write into the shared demo project: the schema is checked without them.
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", app).exclude(
        path_regex="^/v1/(exports|admin)"
    )
    yield loaded
    project.close()


def test_no_server_error_for_any_role(api_schema: Any, keys: dict[str, str]) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9  # every route but exports and admin
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            for who in ("analyst-demo", "steward-demo", None):
                headers = {} if who is None else {"Authorization": f"Bearer {keys[who]}"}
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.operation.label, response.text)
                if response.status_code >= 400:
                    body = response.json()
                    assert set(body) == {"error"}, case.operation.label
                    assert set(body["error"]) == {"status", "code", "message"}
                else:
                    case.validate_response(response)  # as the schema documents it

        check()
