"""Crash safety: a sync killed with SIGKILL at random moments leaves a store that verifies, and
the next sync ends where an uninterrupted one does.

The sync runs in a child process (`fabric sync`, as an operator runs it) over a few thousand
entities; the kill moments are drawn from the duration of an uninterrupted run of the same
sources, with a fixed seed, so the test is repeatable and bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from e2e_helpers import assert_processes_end, clear_tables

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


def _descendants(pid: int) -> list[psutil.Process]:
    """The processes a process started, and theirs (none, once it has ended)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).children(recursive=True)
    return []


class Watched:
    """A sync's progress as it runs: when it began writing entities to the store, and what
    it printed."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.storing = threading.Event()
        self.storing_at = 0.0
        self.printed: list[bytes] = []
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.child.stderr is not None
        seen = b""
        while chunk := self.child.stderr.read1(4096):
            self.printed.append(chunk)
            seen = (seen + chunk)[-64:]
            if b"store" in seen and not self.storing.is_set():
                self.storing_at = time.perf_counter()
                self.storing.set()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_sigkill_at_random_moments_leaves_a_consistent_store(
    tmp_path: Path, executor: str, request: pytest.FixtureRequest
) -> None:
    # Local: two worker processes, which end with the killed sync. Dask: a cluster that
    # outlives the killed sync, with its tasks in flight.
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
    uninterrupted = Watched(_sync(reference, *options))
    assert uninterrupted.child.wait(timeout=300) == 0, b"".join(uninterrupted.printed).decode()
    ended = time.perf_counter()
    assert uninterrupted.storing.is_set()
    # Where the kills aim, from the run the same sources took uninterrupted: the reading and
    # resolving before the first write, and the writing (with what follows it).
    reading = uninterrupted.storing_at - started
    writing = ended - uninterrupted.storing_at
    expected = clear_tables(reference)
    assert len(expected) > CUSTOMERS * 0.9

    # The first kill at a random moment of reading and resolving; the others at a random
    # moment of the first part of writing entities (the part that matters, and short).
    moments = random.Random(20261126)
    killed = 0
    states = []
    for kill in range(KILLS):
        watched = Watched(_sync(config, *options))
        child = watched.child
        if kill == 0:
            time.sleep(moments.uniform(0.15, 0.6) * reading)
        else:
            watched.storing.wait(timeout=(reading + writing) * 3)
            time.sleep(moments.uniform(0.0, 0.3) * writing)
        if child.poll() is None:
            # Its worker processes (building or materializing) are not killed with it: they
            # must see it gone and end by themselves.
            workers = _descendants(child.pid)
            child.send_signal(signal.SIGKILL)
            killed += 1
            assert_processes_end(workers, "processes of the killed sync outlived it")
        child.wait(timeout=60)
        with Project.open(config) as project:
            report = verify_store(project)
        assert report.ok, [str(f) for f in report.faults[:5]]
        states.append((report.checked, dict(report.notices)))
    print("entities stored after each kill:", states)
    assert killed >= KILLS // 2, "the sync outran every kill: nothing was tested"

    final = Watched(_sync(config, *options))
    assert final.child.wait(timeout=300) == 0, b"".join(final.printed).decode()
    with Project.open(config) as project:
        report = verify_store(project)
        assert report.ok and not report.notices, (report.faults[:5], report.notices)
    assert clear_tables(config) == expected
