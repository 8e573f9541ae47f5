"""Who may use which route, decided in one place (:mod:`fabric.api.gate`): every route of the
app needs a key (401) and its role route (403), except the routes listed as public; a key is
rate limited by its name, a caller without a valid key by its address; a request without a
key is refused before its body is read."""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.api.gate import PUBLIC, seal
from fabric.config.models import Route
from fabric.config.secrets import hash_api_key
from fabric.errors import ConfigError
from fabric.project import Project

ROUTES: tuple[str, ...] = get_args(Route)
DEEP = b"[" * 1000 + b"]" * 1000


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (status, response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


def _with_roles(demo_dir: Path, into: Path, api: str = "") -> tuple[Path, dict[str, str]]:
    """A copy of the demo with a key per test role: no route at all, each route alone, and
    every route but one."""
    shutil.copytree(demo_dir, into)
    roles = {"nothing": []} | {f"only_{r}": [r] for r in ROUTES}
    roles |= {f"all_but_{r}": [o for o in ROUTES if o != r] for r in ROUTES}
    keys = {role: f"fab_test-{role}" for role in roles}
    config = into / "fabric.yaml"
    text = config.read_text()
    role_lines = "".join(
        f"  {role}: {{policy: analyst, routes: [{', '.join(routes)}]}}\n"
        for role, routes in roles.items()
    )
    key_lines = "".join(
        f"    - {{name: {role}, role: {role}, sha256: {hash_api_key(key)}}}\n"
        for role, key in keys.items()
    )
    text = text.replace("\nroles:\n", "\nroles:\n" + role_lines)
    text = text.replace("\n  keys:\n", "\n  keys:\n" + key_lines)
    config.write_text(text.replace("\napi:\n", "\napi:\n" + api))
    return config, keys


@pytest.fixture(scope="module")
def gated(
    tmp_path_factory: pytest.TempPathFactory, demo_dir: Path
) -> Iterator[tuple[Litestar, TestClient[Litestar], dict[str, str]]]:
    config, keys = _with_roles(demo_dir, tmp_path_factory.mktemp("gated") / "p")
    app = create_app(Project.open(config))
    with TestClient(app=app) as client:
        yield app, client, keys


def _public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC)


def test_gate_public_routes_are_listed_in_one_place() -> None:
    assert PUBLIC == ("/health", "/ready", "/metrics", "/schema")


def test_gate_every_route_needs_a_key_and_its_role_route(
    gated: tuple[Litestar, TestClient[Litestar], dict[str, str]],
) -> None:
    app, client, keys = gated
    fill = defaultdict(lambda: "x", entity_type="customer", view="customer_360")
    walked = []
    for route in app.routes:
        handlers = getattr(route, "route_handler_map", {})
        path = route.path_format.format_map(fill)
        if _public(route.path_format):
            for method in handlers:
                if method != "OPTIONS":
                    assert client.request(method, path).status_code in (200, 404), path
            continue
        declared = {h.opt.get("route") for m, (h, _) in handlers.items() if m != "OPTIONS"}
        assert len(declared) == 1 and None not in declared, (route.path_format, declared)
        needed = declared.pop()
        assert needed in ROUTES
        for method in handlers:  # OPTIONS too: it needs the route of its path
            where = (method, route.path_format)
            assert_error(client.request(method, path), 401, "unauthorized")
            assert_error(
                client.request(method, path, headers=auth("fab_nope")), 401, "unauthorized"
            )
            for role in ("nothing", f"all_but_{needed}"):
                refused = client.request(method, path, headers=auth(keys[role]))
                assert_error(refused, 403, "forbidden")
            allowed = client.request(method, path, headers=auth(keys[f"only_{needed}"]))
            assert allowed.status_code not in (401, 403, 500), (where, allowed.text)
            walked.append(where)
    methods = {m for m, _ in walked}
    assert len(walked) >= 20 and {"GET", "POST", "OPTIONS"} <= methods, walked


def test_gate_refuses_to_build_an_app_with_an_undeclared_route() -> None:
    @get("/v1/forgotten", sync_to_thread=False)
    def forgotten() -> dict[str, str]:
        return {}

    @get("/v1/declared", sync_to_thread=False, opt={"route": "catalog"})
    def declared() -> dict[str, str]:
        return {}

    @get("/v1/odd", sync_to_thread=False, opt={"route": "nosuch"})
    def odd() -> dict[str, str]:
        return {}

    @get("/health/deep", sync_to_thread=False, opt={"route": "admin"})
    def public_but_declared() -> dict[str, str]:
        return {}

    seal(Litestar([declared]))  # declared: fine
    with pytest.raises(RuntimeError, match="/v1/forgotten"):
        seal(Litestar([declared, forgotten]))
    with pytest.raises(RuntimeError, match="nosuch"):
        seal(Litestar([odd]))
    with pytest.raises(RuntimeError, match="public"):
        seal(Litestar([public_but_declared]))


def test_gate_no_key_is_401_before_the_body_is_read(
    gated: tuple[Litestar, TestClient[Litestar], dict[str, str]],
) -> None:
    _, client, keys = gated
    json = {"Content-Type": "application/json"}
    for url, body in (
        ("/v1/features/customer_360", b'{"ids": ' + DEEP + b"}"),
        ("/v1/exports", b'{"view": ' + DEEP + b"}"),
        ("/v1/features/customer_360", b'{"ids": ["' + b"x" * (2 << 20) + b'"]}'),  # too big
        ("/v1/features/customer_360", b"{not json"),
    ):
        assert_error(client.post(url, content=body, headers=json), 401, "unauthorized")
        # A key whose role lacks the route: refused before the body too.
        refused = client.post(url, content=body, headers={**json, **auth(keys["nothing"])})
        assert_error(refused, 403, "forbidden")


def test_gate_deep_json_is_400_in_the_error_shape(
    gated: tuple[Litestar, TestClient[Litestar], dict[str, str]], demo_keys: dict[str, str]
) -> None:
    _, client, _ = gated
    key = {**auth(demo_keys["analyst-demo"]), "Content-Type": "application/json"}
    for url, body in (
        ("/v1/features/customer_360", b'{"ids": ' + DEEP + b"}"),
        ("/v1/exports", b'{"view": ' + DEEP + b"}"),
        ("/v1/features/customer_360", b'{"ids": ["x"], "extra": ' + b"{}" * 3 + DEEP + b"}"),
        ("/v1/features/customer_360", b'{"ids": ["x"], "open": ' + b"[" * 1000),
    ):
        error = assert_error(client.post(url, content=body, headers=key), 400, "bad_request")
        assert "deeper than 32" in error["message"] or "pair" in error["message"], error
    # Up to the limit (32 levels, the outer object included) the body is parsed as ever.
    inner = b"[" * 30 + b"]" * 30
    fine = client.post(
        "/v1/features/customer_360",
        content=b'{"ids": ["nobody-at-all"], "extra": {"x": ' + inner + b"}}",
        headers=key,
    )
    assert fine.status_code == 200 and fine.json()["not_found"] == ["nobody-at-all"], fine.text
    over = client.post(
        "/v1/features/customer_360",
        content=b'{"ids": ["nobody-at-all"], "extra": {"x": [' + inner + b"]}}",
        headers=key,
    )
    assert_error(over, 400, "bad_request")
    # Brackets inside strings are not nesting.
    quoted = client.post(
        "/v1/features/customer_360",
        json={"ids": ["[" * 100 + '\\"{' * 50]},
        headers=key,
    )
    assert quoted.status_code == 200 and len(quoted.json()["not_found"]) == 1, quoted.text


@pytest.fixture
def limited(
    tmp_path: Path, demo_dir: Path
) -> Iterator[tuple[TestClient[Litestar], dict[str, str]]]:
    config, keys = _with_roles(demo_dir, tmp_path / "p", api="  rate_limit: 5\n")
    with TestClient(app=create_app(Project.open(config))) as client:
        yield client, keys


def test_gate_rate_limit_keys_on_the_key_not_the_spelling_of_its_header(
    limited: tuple[TestClient[Litestar], dict[str, str]], demo_keys: dict[str, str]
) -> None:
    client, keys = limited
    key = demo_keys["analyst-demo"]
    spellings = [
        f"Bearer {key}",
        f"bearer {key}",
        f"BEARER {key}",
        f"Bearer  {key}",
        f"bEaReR   {key}",
        f"Bearer {key} ",
        f"beareR     {key}",
        f"BeArEr {key}",
    ]
    codes = [
        client.get("/v1/exports/no-such-job", headers={"Authorization": spelling}).status_code
        for spelling in spellings
        for _ in range(6)
    ]
    assert codes.count(404) == 5 and codes.count(429) == len(codes) - 5, codes
    # Another key has its allowance of its own.
    assert (
        client.get("/v1/exports/no-such-job", headers=auth(keys["only_exports"])).status_code == 404
    )


def test_gate_callers_without_a_valid_key_are_limited_by_address(
    limited: tuple[TestClient[Litestar], dict[str, str]], demo_keys: dict[str, str]
) -> None:
    client, _ = limited
    answers = [
        client.get("/v1/catalog", headers=auth(f"fab_guess-{n}") if n % 2 else {}) for n in range(8)
    ]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes
    assert_error(answers[-1], 429, "rate_limited")
    # A valid key is limited by its own name, not by the address it shares.
    assert client.get("/v1/catalog", headers=auth(demo_keys["analyst-demo"])).status_code == 200
    # Health, readiness and metrics answer whatever the count.
    assert all(client.get(p).status_code == 200 for p in ("/health", "/ready", "/metrics") * 3)


def test_gate_key_names_are_unique(tmp_path: Path, demo_dir: Path) -> None:
    config, _ = _with_roles(demo_dir, tmp_path / "p")
    text = config.read_text()
    config.write_text(text.replace("{name: only_admin,", "{name: nothing,"))
    with pytest.raises(ConfigError, match="duplicate key name"):
        Project.open(config)
