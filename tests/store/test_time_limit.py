"""Time limits on reads: a watched connection's statement stops once this thread's limit
passes; the API answers 503 ``timeout`` in its one error shape."""

from __future__ import annotations

import time

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from fabric.api.context import _limited
from fabric.api.errors import exception_handlers
from fabric.errors import ReadTimeoutError
from fabric.project import Project
from fabric.store.microdb import MicroDbReader
from fabric.store.sqlite import apsw, open_memory, time_limit, watch_time

_SLOW = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"


def test_a_watched_statement_stops_at_the_limit_and_others_run_on() -> None:
    watched, other = open_memory(), open_memory()
    watch_time(watched)
    started = time.monotonic()
    with time_limit(0.05), pytest.raises(apsw.InterruptError):
        watched.execute(_SLOW).fetchall()
    assert time.monotonic() - started < 2
    # Outside the limit (and with none), the same connection runs to the end.
    assert watched.execute("SELECT count(*) FROM (SELECT 1 UNION ALL SELECT 2)").fetchone() == (2,)
    with time_limit(None):
        assert watched.execute("SELECT 1").fetchone() == (1,)
    with time_limit(0.05):
        # An unwatched connection is not stopped; a bounded statement ends by itself.
        assert other.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
            "SELECT max(i) FROM n"
        ).fetchone() == (300000,)


def test_the_connections_entity_reads_use_are_watched(demo_project: Project) -> None:
    entity_id = sorted(demo_project.catalog.entities("customer"))[0]
    demo_project.store.get("customer", entity_id)  # this thread's shard connections open
    reader = MicroDbReader()
    for conn in [*demo_project.store._connections.mine().values(), reader._swap.connection]:
        with time_limit(0.01), pytest.raises(apsw.InterruptError):
            conn.execute(_SLOW).fetchall()


def test_a_stopped_read_becomes_a_timeout_error_naming_the_setting(
    demo_project: Project,
) -> None:
    shard = demo_project.store._conn(0)
    with pytest.raises(ReadTimeoutError, match=r"time limit of 20 ms \(api.read_timeout_ms\)"):
        _limited(20, lambda: shard.execute(_SLOW).fetchall())
    assert _limited(20, lambda: 42) == 42


def test_the_api_answers_a_timeout_as_503_in_its_error_shape() -> None:
    @get("/slow", sync_to_thread=False)
    def slow() -> None:
        raise ReadTimeoutError("the read ran past its time limit of 5000 ms (api.read_timeout_ms)")

    with TestClient(Litestar([slow], exception_handlers=exception_handlers)) as client:
        answer = client.get("/slow")
    assert answer.status_code == 503
    assert answer.json() == {
        "error": {
            "status": 503,
            "code": "timeout",
            "message": "the read ran past its time limit of 5000 ms (api.read_timeout_ms)",
        }
    }
