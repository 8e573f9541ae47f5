"""The HTTP API through Litestar's test client on create_app(): auth, masking, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import caught_logs
from litestar import Litestar
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.project import Project


@pytest.fixture(scope="module")
def client(demo_dir: Path) -> Iterator[TestClient[Litestar]]:
    project = Project.open(demo_dir / "fabric.yaml")
    with TestClient(app=create_app(project)) as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def test_api_health_needs_no_key(client: TestClient[Litestar]) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_api_entity_masked_for_analyst_clear_for_steward(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    masked = client.get(
        f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["analyst-demo"])
    ).json()
    clear = client.get(
        f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["steward-demo"])
    ).json()
    assert masked["entity_id"] == clear["entity_id"] == entity_id
    assert masked["policy"] == "analyst" and clear["policy"] == "steward"
    clear_row = clear["tables"]["crm_customers"][0]
    masked_row = masked["tables"]["crm_customers"][0]
    assert "@" in clear_row["email"] and "@" not in masked_row["email"]
    assert masked_row["id"] == clear_row["id"]
    # No clear value of any masked column shows through for the analyst.
    for table in ("crm_customers", "billing_accounts", "support_tickets"):
        for clear_r, masked_r in zip(clear["tables"][table], masked["tables"][table], strict=True):
            for column in ("email", "phone", "card_number", "iban", "body", "street"):
                if clear_r.get(column):
                    assert masked_r[column] != clear_r[column]


def test_api_find_by_source_key(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    doc = client.get(
        f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["steward-demo"])
    ).json()
    crm_id = doc["tables"]["crm_customers"][0]["id"]
    found = client.get(
        "/v1/entities/customer",
        params={"source": "crm", "key": str(crm_id)},
        headers=auth(demo_keys["analyst-demo"]),
    )
    assert found.status_code == 200 and found.json()["entity_id"] == entity_id
    order = doc["tables"]["shop_orders"]
    if order:
        by_table = client.get(
            "/v1/entities/customer",
            params={"source": "shop.orders", "key": str(order[0]["id"])},
            headers=auth(demo_keys["analyst-demo"]),
        )
        assert by_table.json()["entity_id"] == entity_id


def test_api_tables_parameter_limits_tables(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    response = client.get(
        f"/v1/entities/customer/{entity_id}?tables=crm_customers",
        headers=auth(demo_keys["analyst-demo"]),
    )
    assert list(response.json()["tables"]) == ["crm_customers"]
    bad = client.get(
        f"/v1/entities/customer/{entity_id}?tables=nope", headers=auth(demo_keys["analyst-demo"])
    )
    assert_error(bad, 400, "bad_request")


def test_api_no_key_is_401(client: TestClient[Litestar], entity_id: str) -> None:
    error = assert_error(client.get(f"/v1/entities/customer/{entity_id}"), 401, "unauthorized")
    assert "Bearer" in error["message"]


def test_api_wrong_key_is_401_and_not_echoed(client: TestClient[Litestar], entity_id: str) -> None:
    response = client.get(f"/v1/entities/customer/{entity_id}", headers=auth("fab_not-a-real-key"))
    assert_error(response, 401, "unauthorized")
    assert "fab_not-a-real-key" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/entities/customer/000000000000",
        "/v1/entities/device/abc",
        "/v1/entities/customer?source=crm&key=99999999",
        "/v1/nowhere",
    ],
)
def test_api_unknown_is_404(
    client: TestClient[Litestar], demo_keys: dict[str, str], path: str
) -> None:
    assert_error(client.get(path, headers=auth(demo_keys["analyst-demo"])), 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/entities/customer?source=crm",
        "/v1/entities/customer?source=nosuch&key=1",
        "/v1/entities/customer?source=crm.nosuch&key=1",
        "/v1/entities/customer/" + "x" * 300,
    ],
)
def test_api_bad_parameters_are_400(
    client: TestClient[Litestar], demo_keys: dict[str, str], path: str
) -> None:
    assert_error(client.get(path, headers=auth(demo_keys["analyst-demo"])), 400, "bad_request")


@pytest.mark.parametrize(
    "entity", ["..%2F..%2Fetc%2Fpasswd", "%00", "1%27%20OR%201%3D1", "%E2%98%83"]
)
def test_api_hostile_ids_never_500(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity: str
) -> None:
    response = client.get(
        f"/v1/entities/customer/{entity}", headers=auth(demo_keys["analyst-demo"])
    )
    assert response.status_code in (400, 404)


def test_api_role_without_route_is_403(
    tmp_path: Path, demo_dir: Path, demo_keys: dict[str, str]
) -> None:
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(demo_dir, copy)
    config = copy / "fabric.yaml"
    config.write_text(
        config.read_text().replace(
            "analyst: {policy: analyst, routes: [entities, lineage, features, exports, catalog]}",
            "analyst: {policy: analyst, routes: [features]}",
        )
    )
    with TestClient(app=create_app(Project.open(config))) as test_client:
        response = test_client.get(
            "/v1/entities/customer/abc", headers=auth(demo_keys["analyst-demo"])
        )
        assert_error(response, 403, "forbidden")


def test_api_openapi_schema_lists_routes(client: TestClient[Litestar]) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {
        "/health",
        "/v1/entities/{entity_type}/{entity_id}",
        "/v1/entities/{entity_type}",
    } <= set(paths)


def test_api_ambiguous_source_asks_for_a_table(
    client: TestClient[Litestar], demo_keys: dict[str, str]
) -> None:
    response = client.get(
        "/v1/entities/customer",
        params={"source": "shop", "key": "1"},
        headers=auth(demo_keys["analyst-demo"]),
    )
    error = assert_error(response, 400, "bad_request")
    assert "source=shop.TABLE" in error["message"]


def test_api_errors_never_echo_query_values(
    client: TestClient[Litestar], demo_keys: dict[str, str]
) -> None:
    response = client.get(
        "/v1/entities/customer",
        params={"source": "ada@example.com"},
        headers=auth(demo_keys["analyst-demo"]),
    )
    assert_error(response, 400, "bad_request")
    assert "ada@example.com" not in response.text


def test_api_server_faults_are_generic(
    tmp_path: Path, demo_dir: Path, demo_keys: dict[str, str]
) -> None:
    import shutil

    from fabric.store.base import entity_key, partition_of

    copy = tmp_path / "p"
    shutil.copytree(demo_dir, copy)
    with Project.open(copy / "fabric.yaml") as project:
        entity_id = project.catalog.sample_ids("customer", 1)[0]
        shards = project.config.store.shards
    shard = (
        copy
        / "store"
        / "shards"
        / f"shard-{partition_of(entity_key('customer', entity_id), shards):04d}.db"
    )
    import sqlite3

    with sqlite3.connect(shard) as conn:  # damage the stored image of one entity
        conn.execute("UPDATE blobs SET blob = x'00112233' WHERE entity_id = ?", (entity_id,))
    with TestClient(app=create_app(Project.open(copy / "fabric.yaml"))) as test_client:
        # The clear view reads the image (a masked one may come from the online store,
        # materialized before the damage, for the same version).
        response = test_client.get(
            f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["steward-demo"])
        )
        error = assert_error(response, 500, "internal_error")
        assert error["message"] == "internal error" and str(copy) not in response.text
        lineage = test_client.get(
            f"/v1/entities/customer/{entity_id}/lineage", headers=auth(demo_keys["analyst-demo"])
        )
        assert_error(lineage, 500, "internal_error")


def test_api_feature_vector_online_equals_batch_and_masks_per_role(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    analyst, steward = auth(demo_keys["analyst-demo"]), auth(demo_keys["steward-demo"])
    at = "2026-06-01T00:00:00Z"
    one = client.get(f"/v1/features/customer_360/{entity_id}?as_of={at}", headers=steward)
    assert one.status_code == 200, one.text
    vector = one.json()
    assert vector["entity_id"] == entity_id and vector["as_of"] == "2026-06-01T00:00:00"
    assert set(vector["features"]) >= {"order_count_90d", "country", "days_since_last_order"}
    rows = client.post(
        "/v1/features/customer_360",
        json={"ids": [entity_id, "nobody-at-all"], "as_of": at},
        headers=steward,
    )
    assert rows.status_code == 200, rows.text
    body = rows.json()
    assert body["not_found"] == ["nobody-at-all"]
    assert body["vectors"] == [
        {"entity_id": entity_id, "existed": vector["existed"], "features": vector["features"]}
    ]
    columns = client.post(
        "/v1/features/customer_360",
        json={"ids": [entity_id], "as_of": at, "layout": "columns"},
        headers=steward,
    ).json()
    assert columns["entity_ids"] == [entity_id]
    assert {k: v[0] for k, v in columns["features"].items()} == vector["features"]
    # The analyst's country is masked like the entity read masks it; numbers are the same.
    masked = client.get(f"/v1/features/customer_360/{entity_id}?as_of={at}", headers=analyst)
    doc = client.get(f"/v1/entities/customer/{entity_id}", headers=analyst).json()
    countries = {r["country"] for r in doc["tables"]["crm_customers"]}
    features = masked.json()["features"]
    assert features["country"] is None or features["country"] in countries
    assert features["order_count_90d"] == vector["features"]["order_count_90d"]


def test_api_feature_errors(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    key = auth(demo_keys["analyst-demo"])
    assert_error(client.get(f"/v1/features/customer_360/{entity_id}"), 401, "unauthorized")
    assert_error(client.get(f"/v1/features/nope/{entity_id}", headers=key), 404, "not_found")
    assert_error(client.get("/v1/features/customer_360/nobody", headers=key), 404, "not_found")
    bad_time = client.get(f"/v1/features/customer_360/{entity_id}?as_of=yesterday", headers=key)
    assert "ISO 8601" in assert_error(bad_time, 400, "bad_request")["message"]
    too_many = client.post("/v1/features/customer_360", json={"ids": ["x"] * 1001}, headers=key)
    message = assert_error(too_many, 400, "bad_request")["message"]
    assert message == "invalid or missing parameter: ids (Expected `array` of length <= 1000)"
    # The validator's words that quote a value are left out.
    bad_layout = client.post(
        "/v1/features/customer_360",
        json={"ids": [entity_id], "layout": "someone@example.com"},
        headers=key,
    )
    message = assert_error(bad_layout, 400, "bad_request")["message"]
    assert message == "invalid or missing parameter: layout"
    assert_error(
        client.post("/v1/features/customer_360", json={"ids": []}, headers=key), 400, "bad_request"
    )
    assert_error(
        client.post("/v1/features/customer_360", json={"id": "x"}, headers=key),
        400,
        "bad_request",
    )
    layout = client.post(
        "/v1/features/customer_360", json={"ids": [entity_id], "layout": "sideways"}, headers=key
    )
    assert_error(layout, 400, "bad_request")


def test_api_ready_and_metrics_after_traffic(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    assert client.get("/ready").json() == {"status": "ready"}
    key = auth(demo_keys["analyst-demo"])
    for _ in range(3):
        assert client.get(f"/v1/entities/customer/{entity_id}", headers=key).status_code == 200
    client.get("/v1/entities/customer/nobody-at-all", headers=key)
    text = client.get("/metrics").text
    # Requests per route template and status, with latency histograms; never an id.
    assert 'path="/v1/entities/{entity_type}/{entity_id}"' in text
    assert 'status_code="404"' in text and "fabric_request_duration_seconds_bucket" in text
    assert entity_id not in text and "nobody-at-all" not in text
    served = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("fabric_entities_served_total")
    )
    assert served >= 3
    assert 'fabric_entity_cache_reads_total{result="hit"}' in text
    assert 'fabric_sync_runs_total{status="succeeded"}' in text
    assert 'fabric_entities{entity_type="customer"}' in text
    assert "fabric_store_file_bytes" in text


def test_api_warms_up_uncounted_and_serves_current_vectors_from_its_cache(
    synced: Path, entity_id: str
) -> None:
    from fabric.config.secrets import load_secrets

    def figure(text: str, name: str) -> float:
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    project = Project.open(synced)
    demo_keys = load_secrets(project.config).api_keys
    with TestClient(app=create_app(project)) as fresh:
        # The warm-up read entities and computed vectors; none of it is counted as served.
        text = fresh.get("/metrics").text
        assert figure(text, "fabric_entities_served_total") == 0
        assert figure(text, 'fabric_vector_cache_reads_total{result="miss"}') == 0
        url = f"/v1/features/customer_360/{entity_id}"
        first = fresh.get(url, headers=auth(demo_keys["analyst-demo"]))
        second = fresh.get(url, headers=auth(demo_keys["steward-demo"]))
        assert first.status_code == second.status_code == 200
        assert first.json()["features"] == second.json()["features"]  # masks keep this view
        text = fresh.get("/metrics").text
        hits = figure(text, 'fabric_vector_cache_reads_total{result="hit"}')
        online = figure(text, 'fabric_vector_cache_reads_total{result="online"}')
        misses = figure(text, 'fabric_vector_cache_reads_total{result="miss"}')
        # The second is a hit at least (the warm-up may have cached the first already;
        # else the sync materialized it).
        assert hits + online + misses == 2 and hits >= 1 and misses == 0


def test_api_lineage_names_sources_and_hashes_keys_for_masked_roles(
    client: TestClient[Litestar], demo_keys: dict[str, str], entity_id: str
) -> None:
    url = f"/v1/entities/customer/{entity_id}/lineage"
    clear = client.get(url, headers=auth(demo_keys["steward-demo"]))
    masked = client.get(url, headers=auth(demo_keys["analyst-demo"]))
    assert clear.status_code == masked.status_code == 200, masked.text
    clear_doc, masked_doc = clear.json(), masked.json()
    assert clear_doc["entity_id"] == masked_doc["entity_id"] == entity_id
    assert clear_doc["rows"] and len(clear_doc["rows"]) == len(masked_doc["rows"])
    entity = client.get(
        f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["steward-demo"])
    ).json()
    assert len(clear_doc["rows"]) == sum(len(rows) for rows in entity["tables"].values())
    for plain, hidden in zip(clear_doc["rows"], masked_doc["rows"], strict=True):
        assert {k: v for k, v in plain.items() if "key" not in k} == {
            k: v for k, v in hidden.items() if "key" not in k
        }
        assert hidden["source_key"].startswith("key_")
        assert len(hidden["source_key"]) == 36 and hidden["source_key"] != str(plain["source_key"])
    for link in masked_doc["links"]:
        assert all(":key_" in record for record in link["records"]) and link["rule"]
    assert_error(client.get(url), 401, "unauthorized")
    assert_error(
        client.get("/v1/entities/customer/nobody/lineage", headers=auth(demo_keys["analyst-demo"])),
        404,
        "not_found",
    )


def test_api_catalog_describes_columns_per_role_without_values_or_secrets(
    client: TestClient[Litestar], demo_keys: dict[str, str], demo_dir: Path
) -> None:
    response = client.get("/v1/catalog", headers=auth(demo_keys["analyst-demo"]))
    assert response.status_code == 200, response.text
    doc = response.json()
    customers = doc["entity_types"]["customer"]
    assert customers["entities"] > 0 and customers["synced"]
    email = next(c for c in customers["tables"]["crm_customers"]["columns"] if c["name"] == "email")
    assert email["pii_class"] == "email"
    assert email["operators"]["steward"] == "clear" and email["operators"]["analyst"] != "keep"
    assert "order_count_90d" in doc["feature_views"]["customer_360"]["features"]
    assert doc["last_sync"]["run"] >= 1
    assert set(doc["sources"]) and all(set(s) == {"kind"} for s in doc["sources"].values())
    text = response.text
    for secret in demo_keys.values():
        assert secret not in text
    assert str(demo_dir) not in text  # no paths, no URLs
    assert_error(client.get("/v1/catalog"), 401, "unauthorized")


@pytest.mark.parametrize(
    "hostile",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "x" * 10_000,
        "a%00b",
        "1' OR '1'='1",
        "%E2%80%AE%F0%9F%98%80",
        "..",
        "%252e%252e%252f",
    ],
)
def test_api_hostile_ids_get_400_or_404_never_500(
    client: TestClient[Litestar], demo_keys: dict[str, str], hostile: str
) -> None:
    key = auth(demo_keys["steward-demo"])
    for url in (
        f"/v1/entities/customer/{hostile}",
        f"/v1/entities/customer/{hostile}/lineage",
        f"/v1/features/customer_360/{hostile}",
        f"/v1/entities/{hostile}/x",
        f"/v1/entities/customer?source=crm&key={hostile}",
        f"/v1/exports/{hostile}",
    ):
        response = client.get(url, headers=key)
        # 414 for a URL over api.max_url_bytes (8 KiB)
        expected = (414,) if len(url) > 8192 else (400, 404)
        assert response.status_code in expected, (url[:80], response.status_code)
        assert set(response.json()) == {"error"}
    batch = client.post(
        "/v1/features/customer_360", json={"ids": [hostile.replace("%", "")]}, headers=key
    )
    assert batch.status_code in (200, 400), batch.text


def test_api_body_size_is_bounded(client: TestClient[Litestar], demo_keys: dict[str, str]) -> None:
    big = client.post(
        "/v1/features/customer_360",
        content=b'{"ids": ["' + b"x" * (2 << 20) + b'"]}',
        headers={**auth(demo_keys["analyst-demo"]), "Content-Type": "application/json"},
    )
    assert_error(big, 413, "payload_too_large")


def test_api_rate_limit_per_key(synced: Path) -> None:
    from fabric.config.secrets import load_secrets

    text = synced.read_text()
    assert "\napi:\n" in text
    synced.write_text(text.replace("\napi:\n", "\napi:\n  rate_limit: 5\n"))
    project = Project.open(synced)
    keys = load_secrets(project.config).api_keys
    with TestClient(app=create_app(project)) as limited:
        analyst, steward = auth(keys["analyst-demo"]), auth(keys["steward-demo"])
        answers = [limited.get("/v1/catalog", headers=analyst) for _ in range(8)]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        # The IETF draft's headers: the allowance, and what is left of it.
        assert answers[0].headers["RateLimit-Limit"] == "5"
        assert [a.headers["RateLimit-Remaining"] for a in answers[:5]] == ["4", "3", "2", "1", "0"]
        refused = limited.get("/v1/catalog", headers=analyst)
        assert_error(refused, 429, "rate_limited")
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert keys["analyst-demo"] not in refused.text
        # Another key has its own allowance; health is never limited.
        assert limited.get("/v1/catalog", headers=steward).status_code == 200
        assert all(limited.get("/health").status_code == 200 for _ in range(8))


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    with caught_logs("fabric.access") as lines:
        yield lines


def test_api_access_log_names_keys_and_never_shows_keys_queries_or_refused_ids(
    demo_dir: Path, demo_keys: dict[str, str], entity_id: str, access_lines: list[str]
) -> None:
    key = demo_keys["analyst-demo"]
    app = create_app(Project.open(demo_dir / "fabric.yaml"), access_log=True)
    with TestClient(app=app) as fresh:
        assert fresh.get(f"/v1/entities/customer/{entity_id}", headers=auth(key)).status_code == 200
        steward = fresh.get(
            f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["steward-demo"])
        ).json()
        email = steward["tables"]["crm_customers"][0]["email"]
        crm_id = steward["tables"]["crm_customers"][0]["id"]
        found = fresh.get(
            "/v1/entities/customer", params={"source": "crm", "key": crm_id}, headers=auth(key)
        )
        assert found.status_code == 200
        # An id that is someone's email: refused, and not written down.
        assert fresh.get(f"/v1/entities/customer/{email}", headers=auth(key)).status_code == 404
        assert fresh.get("/v1/catalog", headers=auth("not-a-key")).status_code == 401
    lines = access_lines
    assert len(lines) == 5
    assert f'analyst-demo analyst "GET /v1/entities/customer/{entity_id}" 200' in lines[0]
    assert 'steward-demo steward "GET' in lines[1]
    assert lines[2].endswith("ms") and '"GET /v1/entities/customer" 200' in lines[2]
    assert '"GET /v1/entities/{entity_type}/{entity_id}" 404' in lines[3]
    assert ' - - "GET /v1/catalog" 401' in lines[4]
    text = "\n".join(lines)
    assert key not in text and demo_keys["steward-demo"] not in text
    assert email not in text and f"key={crm_id}" not in text and "not-a-key" not in text


def test_api_access_log_is_off_by_default(
    demo_dir: Path, demo_keys: dict[str, str], entity_id: str, access_lines: list[str]
) -> None:
    app = create_app(Project.open(demo_dir / "fabric.yaml"))
    with TestClient(app=app) as fresh:
        response = fresh.get(
            f"/v1/entities/customer/{entity_id}", headers=auth(demo_keys["analyst-demo"])
        )
        assert response.status_code == 200
    assert access_lines == []
