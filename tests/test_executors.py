"""Executors: the same tasks inline, in local worker processes or on Dask, and the failures an
operator must see (a dead worker, an unreachable scheduler) as errors, never hangs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.errors import ExecutorError
from fabric.executors import (
    DaskExecutor,
    InProcessExecutor,
    LocalExecutor,
    check_scheduler_address,
    open_executor,
)


def square(n: int) -> int:
    return n * n


def slow_square(n: int) -> int:
    time.sleep(0.01 * (n % 3))
    return n * n


def die(n: int) -> int:
    if n == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return n


def test_inline_runs_in_order_and_lazily() -> None:
    seen: list[int] = []

    def jobs() -> object:
        for n in range(5):
            seen.append(n)
            yield n

    results = InProcessExecutor().map(square, jobs())  # type: ignore[arg-type]
    assert seen == []  # nothing runs before results are asked for
    assert list(results) == [0, 1, 4, 9, 16]


def test_local_workers_keep_order_or_not_as_asked_and_bound_what_is_in_flight() -> None:
    pulled: list[int] = []

    def jobs() -> object:
        for n in range(40):
            pulled.append(n)
            yield n

    with LocalExecutor(2) as executor:
        results = executor.map(slow_square, jobs(), ahead=3)  # type: ignore[arg-type]
        first = next(results)
        # One result out and at most `ahead` submitted: the input is not read ahead.
        assert first == 0 and len(pulled) <= 4
        assert [first, *results] == [n * n for n in range(40)]
        unordered = executor.map(slow_square, range(40), ordered=False)
        assert sorted(unordered) == [n * n for n in range(40)]
        assert sorted(executor.start(square, range(10), ordered=False)) == [
            n * n for n in range(10)
        ]


def test_a_worker_killed_mid_run_fails_the_run_instead_of_hanging() -> None:
    started = time.perf_counter()
    with LocalExecutor(2) as executor, pytest.raises(ExecutorError, match="worker process died"):
        list(executor.map(die, range(8)))
    assert time.perf_counter() - started < 60


def test_one_local_worker_means_inline() -> None:
    assert isinstance(open_executor("local", 1), InProcessExecutor)


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:8786", "127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786"],
)
def test_loopback_plaintext_addresses_are_accepted(address: str) -> None:
    assert check_scheduler_address(address).endswith(":8786")


def test_plaintext_to_another_machine_is_refused_unless_allowed() -> None:
    with pytest.raises(ExecutorError, match="not on this machine's loopback") as caught:
        check_scheduler_address("tcp://10.1.2.3:8786")
    assert "tls://" in str(caught.value)
    assert check_scheduler_address("tls://10.1.2.3:8786") == "tls://10.1.2.3:8786"
    assert check_scheduler_address("tcp://10.1.2.3:8786", allow_plaintext=True)


@pytest.mark.parametrize("address", ["http://127.0.0.1:8786", "tcp://127.0.0.1", "nonsense"])
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(ExecutorError, match="not a Dask scheduler address"):
        check_scheduler_address(address)


def test_an_unreachable_scheduler_is_one_clear_error_naming_it() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(ExecutorError) as caught:
        DaskExecutor(f"tcp://127.0.0.1:{port}")
    assert str(caught.value).startswith(
        f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"
    )
    assert "\n" not in str(caught.value)
    assert time.perf_counter() - started < 15


def test_a_scheduler_without_workers_is_an_error_not_a_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    import distributed

    from fabric import executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    with distributed.LocalCluster(
        n_workers=0, host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(ExecutorError, match="has no workers") as caught:
            DaskExecutor(address)
    assert f"dask worker {address}" in str(caught.value)


def test_workers_start_under_a_temporary_directory_too_deep_for_a_socket(tmp_path: Path) -> None:
    # In a new process: multiprocessing picks its socket's directory once per process.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    code = (
        "from fabric.executors import LocalExecutor\n"
        "from test_executors import square\n"
        "with LocalExecutor(2) as executor:\n"
        "    print(list(executor.map(square, range(6))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(deep), "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 4, 9, 16, 25]"


@pytest.mark.parametrize("temporary", ["short", "deep"])
def test_workers_end_with_a_run_killed_outright(tmp_path: Path, temporary: str) -> None:
    import psutil
    from e2e_helpers import assert_processes_end

    # Killed with SIGKILL, a run cannot take its workers along itself (forked from the fork
    # server, they are not even its children; under a deep temporary directory, spawned, they
    # are): each must see it gone and end.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    if temporary == "deep":
        deep = tmp_path / ("d" * 60) / ("e" * 60)
        deep.mkdir(parents=True)
        env["TMPDIR"] = str(deep)
    code = (
        "import time\n"
        "from fabric.executors import LocalExecutor\n"
        "from test_executors import square\n"
        "executor = LocalExecutor(2)\n"
        "print(list(executor.map(square, range(6))), flush=True)\n"
        "time.sleep(120)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert run.stdout is not None and run.stdout.readline().strip() == "[0, 1, 4, 9, 16, 25]"
        workers = [
            p
            for p in psutil.Process(run.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())
        ]
        assert len(workers) >= 2  # the two workers (and the fork server)
    finally:
        run.kill()
        run.wait()
    assert_processes_end(workers, "worker processes outlived the killed run")


def _spill_settings() -> tuple[object, object]:
    import dask

    return (
        dask.config.get("distributed.worker.memory.target"),
        dask.config.get("distributed.worker.memory.spill"),
    )


def test_the_cluster_fabric_starts_is_on_loopback_and_never_spills_to_disk() -> None:
    with open_executor("dask", 2) as executor:
        assert isinstance(executor, DaskExecutor)
        assert executor.address.startswith("tcp://127.0.0.1:")
        assert executor.describe() == "dask: 2 workers"
        assert list(executor.map(square, range(5))) == [0, 1, 4, 9, 16]
        settings = executor._client.run(_spill_settings)
    assert len(settings) == 2
    assert set(settings.values()) == {(False, False)}
