"""Zero-downtime reload: validated whole before it replaces anything; requests never fail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.config.secrets import load_secrets
from fabric.project import Project

EMAIL_RULE = "        email:      {op: tokenize, domain: email}"


@pytest.fixture
def served(synced: Path) -> Iterator[tuple[TestClient[Litestar], dict[str, str], Path, str]]:
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    entity_id = project.catalog.sample_ids("customer", 1)[0]
    with TestClient(app=create_app(project)) as client:
        yield client, keys, synced.parent, entity_id


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_reload_applies_new_rules_and_refuses_broken_ones_while_serving(
    served: tuple[TestClient[Litestar], dict[str, str], Path, str],
) -> None:
    client, keys, root, entity_id = served
    analyst, admin = auth(keys["analyst-demo"]), auth(keys["admin-demo"])
    url = f"/v1/entities/customer/{entity_id}"
    before = client.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"]
    masking = root / "rules" / "masking.yaml"
    good = masking.read_text()
    assert EMAIL_RULE in good
    # A broken rule file: refused with its problem named, the old rules keep serving.
    masking.write_text(good.replace(EMAIL_RULE, "        email:      {op: shred}"))
    refused = client.post("/v1/admin/reload", headers=admin)
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert "masking.yaml" in message and "shred" in message and "old one keeps serving" in message
    assert client.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"] == before
    # A good change: in force for the next request.
    masking.write_text(good.replace(EMAIL_RULE, "        email:      {op: redact}"))
    done = client.post("/v1/admin/reload", headers=admin)
    assert done.status_code == 200 and done.json()["status"] == "reloaded", done.text
    after = client.get(url, headers=analyst).json()["tables"]["crm_customers"][0]["email"]
    assert after != before and after is not None
    # Only the admin role reloads.
    assert client.post("/v1/admin/reload", headers=analyst).status_code == 403


def test_reload_under_load_fails_no_request(
    served: tuple[TestClient[Litestar], dict[str, str], Path, str],
) -> None:
    client, keys, _, entity_id = served
    analyst = auth(keys["analyst-demo"])
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(
                client.get(f"/v1/entities/customer/{entity_id}", headers=analyst).status_code
            )
            statuses.append(
                client.get(f"/v1/features/customer_360/{entity_id}", headers=analyst).status_code
            )

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        reloads = 0
        while reloads < 5 or len(statuses) < 60:  # reloads keep landing among requests
            response = client.post("/v1/admin/reload", headers=auth(keys["admin-demo"]))
            assert response.status_code == 200, response.text
            reloads += 1
            assert reloads < 500
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}
