"""A sync on a real Dask cluster (a ``LocalCluster`` on loopback): the same store as local
workers build, a worker killed mid-sync changes nothing, an unreachable scheduler is one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import BACKENDS, URL_ENV, on_postgres
from e2e_helpers import clear_tables, stored_entities
from pgcluster import PostgresCluster

from fabric.demo import DemoProject, create_demo_project
from fabric.executors import DaskExecutor
from fabric.project import Project
from fabric.services.verify import verify_store
from fabric.sync import open_sync_executor, sync_project


def _copy(demo: DemoProject, to: Path) -> Path:
    shutil.copytree(demo.directory, to)
    return to / demo.config_path.name


@pytest.mark.slow
def test_dask_builds_the_store_local_workers_build(
    fresh_demo: DemoProject, tmp_path: Path, dask_cluster: str
) -> None:
    local, dask = _copy(fresh_demo, tmp_path / "local"), _copy(fresh_demo, tmp_path / "dask")
    with (
        Project.open(local) as project,
        open_sync_executor(project, kind="local", workers=2) as executor,
    ):
        sync_project(project, full=True, executor=executor)
    with Project.open(dask) as project:
        with open_sync_executor(project, scheduler=dask_cluster) as executor:
            assert isinstance(executor, DaskExecutor) and executor.workers == 2
            report = sync_project(project, full=True, executor=executor)
        assert report.created > 100
    # Entity by entity: ids, versions, every row and every row's lineage.
    assert stored_entities(dask) == stored_entities(local)
    with Project.open(dask) as project:
        assert verify_store(project).ok


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fabric(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_an_unreachable_scheduler_stops_the_sync_with_one_line_and_the_store_unchanged(
    synced: Path,
) -> None:
    with Project.open(synced) as project:
        runs = project.catalog.runs()
    before = {p: p.stat().st_mtime_ns for p in (synced.parent / "store").rglob("*")}
    address = f"tcp://127.0.0.1:{_free_port()}"
    done = _fabric("sync", "-c", str(synced), "--scheduler", address)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot reach the Dask scheduler at {address}: Connection refused"
    ]
    assert "Traceback" not in done.stderr
    after = {p: p.stat().st_mtime_ns for p in (synced.parent / "store").rglob("*")}
    assert after == before
    with Project.open(synced) as project:
        assert project.catalog.runs() == runs


def test_plaintext_to_a_remote_scheduler_is_refused_before_anything_runs(synced: Path) -> None:
    done = _fabric("sync", "-c", str(synced), "--scheduler", "tcp://192.0.2.7:8786")
    assert done.returncode == 1
    assert "tls://" in done.stderr and "Traceback" not in done.stderr


def _worker_pids(address: str) -> set[int]:
    import distributed

    with distributed.Client(address, timeout="10s") as client:
        return set(client.run(os.getpid).values())


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_dask_worker_killed_mid_sync_changes_nothing(
    tmp_path: Path, dask_cluster: str, backend_name: str, request: pytest.FixtureRequest
) -> None:
    """On either store backend (the postgres one: a sync committed by Dask workers' builds
    into PostgreSQL, the reference on a database of its own)."""
    config = create_demo_project(tmp_path / "killed", customers=2000, seed=9).config_path
    shutil.copytree(config.parent, tmp_path / "reference")
    reference = tmp_path / "reference" / config.name
    env = dict(os.environ)
    reference_env = env
    if backend_name == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        on_postgres(config)
        on_postgres(reference)
        env = {**env, URL_ENV: cluster.create_database()}
        reference_env = {**env, URL_ENV: cluster.create_database()}
    done = _fabric("sync", "-c", str(reference), "--workers", "2", env=reference_env)
    assert done.returncode == 0, done.stderr

    pids = _worker_pids(dask_cluster)
    child = subprocess.Popen(
        [sys.executable, "-m", "fabric", "sync", "-c", str(config), "--scheduler", dask_cluster],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env, "FABRIC_PROGRESS": "1"},
    )
    building = threading.Event()
    err: list[bytes] = []

    def watch() -> None:
        assert child.stderr is not None
        while chunk := child.stderr.read1(4096):
            err.append(chunk)
            if b"resolve" in b"".join(err[-2:]):
                building.set()

    threading.Thread(target=watch, daemon=True).start()
    # Once resolution is done, the builds are placed and sent to the workers.
    assert building.wait(timeout=120), b"".join(err).decode()
    time.sleep(0.3)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    assert child.wait(timeout=300) == 0, b"".join(err).decode()[-2000:]

    # The nanny started a new worker in its place: the kill happened.
    deadline = time.monotonic() + 30
    while victim in _worker_pids(dask_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert victim not in _worker_pids(dask_cluster)
    with _environment(env), Project.open(config) as project:
        report = verify_store(project)
        assert report.ok and not report.notices, (report.faults[:5], report.notices)
    with _environment(env):
        killed = clear_tables(config), stored_entities(config).keys()
    with _environment(reference_env):
        uninterrupted = clear_tables(reference), stored_entities(reference).keys()
    assert killed == uninterrupted


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Run with ``env`` as the process's environment (the store URL a project reads)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _shard_files(config: Path) -> dict[Path, bytes]:
    """The shard files' bytes (not their -wal and -shm companions, which readers touch)."""
    directory = config.parent / "store" / "shards"
    return {p: p.read_bytes() for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm"))}


def _start(*command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dask"), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_scheduler_gone_mid_sync_is_one_line_and_no_entity_changes(tmp_path: Path) -> None:
    import distributed

    config = create_demo_project(tmp_path / "gone", customers=2000, seed=3).config_path
    assert _fabric("sync", "-c", str(config)).returncode == 0
    with Project.open(config) as project:
        versions = {e: r.version for e, r in project.catalog.entities("customer").items()}
    shards = _shard_files(config)

    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _start("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1])
    worker = _start("worker", address, "--nthreads", "1", "--no-dashboard")
    try:
        with distributed.Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fabric",
                "sync",
                "--full",
                "-c",
                str(config),
                "--scheduler",
                address,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "FABRIC_PROGRESS": "1"},
        )
        assert child.stderr is not None
        seen = b""
        while b"extract" not in seen and (chunk := child.stderr.read1(4096)):
            seen += chunk
        _stop(scheduler)  # gone while the run sends its first tasks, before any write
        rest = child.stderr.read().decode()
        assert child.wait(timeout=120) == 1
    finally:
        _stop(worker)
        _stop(scheduler)
    # After the progress bar's last line: one error line naming the scheduler, nothing else.
    errors = [line[line.index("error:") :] for line in rest.splitlines() if "error:" in line]
    assert errors == [
        f"error: lost the Dask scheduler at {address} during the run (FutureCancelledError); "
        "the run stopped: run it again"
    ], rest[-2000:]
    assert "Traceback" not in rest and "distributed" not in rest
    with Project.open(config) as project:
        assert {e: r.version for e, r in project.catalog.entities("customer").items()} == versions
        last = project.catalog.runs(1)[0]
        assert last.status == "failed" and address in (last.error or "")
    assert _shard_files(config) == shards
