"""The API against its own OpenAPI schema (schemathesis): no 5xx, responses as documented,
and what the schema calls valid is accepted.

Every operation is called with generated parameters and bodies, with the keys of two roles,
and without a key. Bounded by the Hypothesis profile (``CI`` set: fewer examples).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

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


@pytest.mark.slow
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
                # As the schema documents it: the status among the route's responses, the
                # body of its model (errors too), and schema-valid data accepted (a source
                # among the project's, ids of 1 to 256 characters...). Except an as_of: the
                # schema calls it a string, and it may still be no time (2026-13-45).
                timed = "as_of" in (case.query or {}) or (
                    isinstance(case.body, dict) and "as_of" in case.body
                )
                case.validate_response(
                    response, excluded_checks=[positive_data_acceptance] if timed else []
                )

        check()


def test_schema_documents_auth_models_and_errors(api_schema: Any) -> None:
    spec = api_schema.raw_schema
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    open_routes = {"/health", "/ready", "/metrics"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            success = [s for s in responses if s.startswith("2")]
            assert success, (method, path)
            for status, response in responses.items():
                if status.startswith("4") or status.startswith("5"):
                    content = response["content"]["application/json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
                    example = next(iter(content["examples"].values()))["value"]
                    assert example["error"]["status"] == int(status), (path, status)
            if path in open_routes:
                assert "security" not in operation, path
                continue
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert {"401", "403", "429"} <= set(responses), (method, path)
            if path.startswith("/v1/entities") or path.startswith("/v1/features"):
                assert {"400", "404", "503"} <= set(responses), (method, path)
            if path != "/v1/exports/{job}/file":  # the file itself, not JSON
                schema = responses[success[0]]["content"]["application/json"]["schema"]
                assert schema["$ref"].startswith("#/components/schemas/"), (method, path)


def test_schema_documents_what_the_server_enforces(api_schema: Any, demo_dir: Path) -> None:
    spec = api_schema.raw_schema
    params = _parameters(spec)
    # The project's sources: each system.table, and a system alone where it names one table
    # (shop has two, and neither holds customers' identities).
    assert params[("/v1/entities/{entity_type}", "source")]["enum"] == [
        "billing",
        "billing.accounts",
        "billing.payments",
        "crm",
        "crm.customers",
        "shop.order_items",
        "shop.orders",
        "support",
        "support.tickets",
    ]
    one_to_256 = {"minLength": 1, "maxLength": 256}
    for where in (
        ("/v1/entities/{entity_type}", "key"),
        ("/v1/entities/{entity_type}/{entity_id}", "entity_id"),
        ("/v1/entities/{entity_type}/{entity_id}/lineage", "entity_id"),
        ("/v1/features/{view}/{entity_id}", "entity_id"),
    ):
        assert one_to_256.items() <= params[where].items(), where
    tables = params[("/v1/entities/{entity_type}/{entity_id}", "tables")]
    assert "crm_customers" in tables["pattern"]
    ids = spec["components"]["schemas"]["FeatureBatch"]["properties"]["ids"]
    assert {"minItems": 1, "maxItems": 1000}.items() <= ids.items()
    assert one_to_256.items() <= ids["items"].items()


def _parameters(spec: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {
        (path, p["name"]): p["schema"]
        for path, operations in spec["paths"].items()
        for operation in operations.values()
        for p in operation.get("parameters", [])
    }


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/entities/{entity_type}", "source", "0"),
        ("/v1/entities/{entity_type}", "source", "shop"),  # two tables: name one
        ("/v1/entities/{entity_type}", "key", ""),
        ("/v1/entities/{entity_type}", "key", "a\x00b"),
        ("/v1/entities/{entity_type}/{entity_id}", "entity_id", "x" * 257),
        ("/v1/entities/{entity_type}/{entity_id}", "tables", "nope"),
        ("/v1/entities/{entity_type}/{entity_id}", "tables", "crm_customers,"),
        ("/v1/features/{view}/{entity_id}", "entity_id", ""),
        ("FeatureBatch", "ids", [""]),
        ("FeatureBatch", "ids", []),
        ("FeatureBatch", "ids", ["x" * 257]),
    ],
)
def test_schema_calls_invalid_what_the_server_refuses(
    api_schema: Any, path: str, name: str, value: Any
) -> None:
    # What schemathesis sent as schema-valid and the server refused (400), once.
    spec = api_schema.raw_schema
    if path in spec["components"]["schemas"]:
        schema = spec["components"]["schemas"][path]["properties"][name]
    else:
        schema = _parameters(spec)[(path, name)]
    assert not jsonschema_rs.validator_for(schema).is_valid(value), (path, name, value)
    good = {"source": "crm", "key": "1", "entity_id": "x" * 256, "tables": "crm_customers"}
    if name in good:
        assert jsonschema_rs.validator_for(schema).is_valid(good[name])
