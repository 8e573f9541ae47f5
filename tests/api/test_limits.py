"""Bounds on what a request may be: its target's length (414) and its JSON body's nesting
(400), both checked in bounded time before anything is parsed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from fabric.api import create_app
from fabric.api.limits import json_problem
from fabric.project import Project


@pytest.fixture(scope="module")
def client(demo_dir: Path) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=create_app(Project.open(demo_dir / "fabric.yaml"))) as test_client:
        yield test_client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:200])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == status and body["error"]["code"] == code
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/entities/customer/" + "x" * 20_000,
        "/v1/entities/customer?source=crm&key=" + "1" * 9_000,
        "/" + "jane.doe@example.com/" * 1_000,  # matches no route: still 414, not 404
        "/health?" + "x" * 9_000,
    ],
)
def test_limits_long_urls_are_414_in_the_error_shape(
    client: TestClient[Litestar], demo_keys: dict[str, str], url: str
) -> None:
    for headers in ({}, auth(demo_keys["analyst-demo"])):
        response = client.get(url, headers=headers)
        error = assert_error(response, 414, "uri_too_long")
        assert "8,192" in error["message"] and "jane" not in response.text


def test_limits_urls_up_to_the_limit_are_served(
    client: TestClient[Litestar], demo_keys: dict[str, str]
) -> None:
    url = "/v1/entities/customer?source=crm&key=1&pad="
    url += "x" * (8192 - len(url))
    assert len(url) == 8192
    response = client.get(url, headers=auth(demo_keys["analyst-demo"]))
    assert response.status_code in (200, 404), response.text


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


#: JSON values whose strings are full of brackets, quotes and backslashes.
_TEXT = st.text(alphabet='[]{}"\\ab/\n\u2028', max_size=8)
_VALUES = st.recursive(
    st.none() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=60,
)


@given(value=_VALUES, limit=st.integers(2, 12))
def test_limits_json_depth_is_exact_for_json(value: Any, limit: int) -> None:
    body = json.dumps(value).encode()
    problem = json_problem(body, limit)
    assert (problem is not None) == (_depth(value) > limit), (body, problem)


@given(
    rest=st.binary(max_size=200) | st.text(alphabet='[]{}",:\\ 1a', max_size=200).map(str.encode)
)
def test_limits_a_deep_start_is_refused_whatever_follows(rest: bytes) -> None:
    # A parser goes this deep before it reads anything after: whatever follows (closing
    # brackets, garbage, an open string), the body is refused.
    for start in (b"[" * 5, b'{"k": ' * 5, b'[{"k": ' * 3):
        assert json_problem(start + rest, 4) is not None, start + rest
    assert json_problem(b"[" * 4 + b"1" + b"]" * 4, 4) is None


@pytest.mark.parametrize(
    "body",
    [
        b"[" * (1 << 20),
        b"[]" * (1 << 19),
        (b"[" * 32 + b"]" * 32) * (1 << 14),
        b'"' + b"[" * ((1 << 20) - 2) + b'"',
        b"\\" * (1 << 20),
    ],
)
def test_limits_json_depth_takes_bounded_time(body: bytes) -> None:
    start = time.perf_counter()
    json_problem(body, 32)
    # Generous: a few ms on this machine; the point is no super-linear blow-up.
    assert time.perf_counter() - start < 1.0
