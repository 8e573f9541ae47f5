"""Crash safety: a sync killed with SIGKILL at random moments leaves a store that verifies, and
the next sync ends where an uninterrupted one does.

The sync runs in a child process (`fabric sync`, as an operator runs it) over a few thousand
entities; the kill moments are drawn from the duration of an uninterrupted run of the same
sources, with a fixed seed, so the test is repeatable and bounded in time.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2e_helpers import clear_tables

from fabric.demo import create_demo_project
from fabric.project import Project
from fabric.services.verify import verify_store

CUSTOMERS = 2000
KILLS = 5


def _sync(config: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fabric", "sync", "-c", str(config), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Stage names on stderr, to aim at; a killed sync leaves its spill directory behind,
        # so it goes under the test's own directory rather than the machine's /tmp.
        env={**os.environ, "FABRIC_PROGRESS": "1", "TMPDIR": str(config.parent)},
    )


def _when_storing(child: subprocess.Popen[bytes]) -> threading.Event:
    """An event set once the child's progress shows it writing entities to the store."""
    storing = threading.Event()

    def watch() -> None:
        assert child.stderr is not None
        seen = b""
        while chunk := child.stderr.read1(4096):
            seen = (seen + chunk)[-64:]
            if b"store" in seen:
                storing.set()

    threading.Thread(target=watch, daemon=True).start()
    return storing


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_sigkill_at_random_moments_leaves_a_consistent_store(
    tmp_path: Path, executor: str, request: pytest.FixtureRequest
) -> None:
    # Local: two worker processes (killed with the sync, as its children). Dask: a cluster
    # that outlives the killed sync, with its tasks in flight.
    options = (
        ("--workers", "2")
        if executor == "local"
        else ("--scheduler", request.getfixturevalue("dask_cluster"))
    )
    project_dir = tmp_path / "killed"
    config = create_demo_project(project_dir, customers=CUSTOMERS, seed=5).config_path
    # Small write batches: many commits, so kills land between them as well as inside.
    config.write_text(config.read_text().replace("batch_size: 500", "batch_size: 50"))
    reference_dir = tmp_path / "reference"
    shutil.copytree(project_dir, reference_dir)
    reference = reference_dir / "fabric.yaml"

    started = time.perf_counter()
    uninterrupted = _sync(reference, *options)
    _, err = uninterrupted.communicate(timeout=300)
    duration = time.perf_counter() - started
    assert uninterrupted.returncode == 0, err.decode()
    expected = clear_tables(reference)
    assert len(expected) > CUSTOMERS * 0.9

    # The first kill at a random moment of reading and resolving; the others at a random
    # moment of writing entities (a short part of the run, and the one that matters).
    moments = random.Random(20261126)
    killed = 0
    states = []
    for kill in range(KILLS):
        child = _sync(config, *options)
        storing = _when_storing(child)
        if kill == 0:
            time.sleep(moments.uniform(0.15, 0.5) * duration)
        else:
            storing.wait(timeout=duration * 3)
            time.sleep(moments.uniform(0.0, 0.15) * duration)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait(timeout=60)
        with Project.open(config) as project:
            report = verify_store(project)
        assert report.ok, [str(f) for f in report.faults[:5]]
        states.append((report.checked, dict(report.notices)))
    print("entities stored after each kill:", states)
    assert killed >= KILLS // 2, "the sync outran every kill: nothing was tested"

    final = _sync(config, *options)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    with Project.open(config) as project:
        report = verify_store(project)
        assert report.ok and not report.notices, (report.faults[:5], report.notices)
    assert clear_tables(config) == expected
