"""What the access log and the error log write: route templates and fabric's own ids, never
text a caller typed, and never a line a caller forged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import caught_logs
from litestar import Litestar
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.project import Project
from fabric.services.entities import EntityService

#: What callers put in paths: someone's email, SSN and card number, and a forged log line.
TYPED = ("jane.doe@example.com", "555-12-3456", "4111111111111111", "forged")


@pytest.fixture
def logged() -> Iterator[list[str]]:
    with caught_logs("fabric.access", "fabric.api") as lines:
        yield lines


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(demo_dir: Path) -> Iterator[TestClient[Litestar]]:
    app = create_app(Project.open(demo_dir / "fabric.yaml"), access_log=True)
    with TestClient(app=app) as test_client:
        yield test_client


def test_logs_forged_lines_and_typed_paths_never_reach_the_access_log(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str, logged: list[str]
) -> None:
    key = auth(demo_keys["analyst-demo"])
    forged = "/v1/entities/customer/abc%0AINFO - 2026-12-07 fabric.access - forged%0D%0A"
    typed = "/v1/features/customer_360/555-12-3456 card 4111111111111111"
    email = "/v1/entities/customer/jane.doe@example.com"
    sent = [
        client.request("OPTIONS", forged),
        client.request("OPTIONS", forged, headers=key),
        client.request("OPTIONS", typed, headers=key),
        client.get(forged),
        client.get(forged, headers=key),
        client.get(typed, headers=key),
        client.get(email, headers=key),
        client.get(f"/v1/entities/customer/{entity_id}", headers=key),
    ]
    assert [r.status_code for r in sent] == [401, 204, 204, 401, 404, 404, 404, 200]
    assert len(logged) == len(sent), logged
    for line in logged:
        assert line.isprintable(), line
        assert not any(text in line for text in TYPED), line
    assert '"OPTIONS /v1/entities/{entity_type}/{entity_id}" 204' in logged[1]
    assert '"GET /v1/features/{view}/{entity_id}" 404' in logged[5]
    # An id that answered is one of fabric's own: shown.
    assert f'"GET /v1/entities/customer/{entity_id}" 200' in logged[-1]


def test_logs_unmatched_paths_are_never_logged(
    client: TestClient[Litestar], demo_keys: dict[str, str], logged: list[str]
) -> None:
    key = auth(demo_keys["analyst-demo"])
    assert client.get("/v1/jane.doe@example.com%0Aforged", headers=key).status_code == 404
    assert client.get("/jane.doe@example.com", headers=key).status_code == 404
    assert not any(text in line for line in logged for text in TYPED), logged


def test_logs_server_faults_name_the_route_template_never_the_path(
    client: TestClient[Litestar],
    demo_keys: dict[str, str],
    logged: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(EntityService, "document", fails)
    monkeypatch.setattr(EntityService, "recent_document", lambda *a, **k: None)
    response = client.get(
        "/v1/entities/customer/jane.doe@example.com%0Aforged",
        headers=auth(demo_keys["steward-demo"]),
    )
    assert response.status_code == 500
    errors = [line for line in logged if line.startswith("unexpected")]
    assert errors == ["unexpected RecursionError on GET /v1/entities/{entity_type}/{entity_id}"]
    assert not any(text in line for line in logged for text in TYPED), logged
