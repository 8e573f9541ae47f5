"""Helpers shared by the benchmark scripts: JSON figures on stdout, progress on stderr.

Benchmarks print one JSON object per line and nothing else on stdout, so their output can be
piped into ``jq`` or appended to a results file; everything meant for a human goes to stderr.
Timings are summarised by their median because the machines they run on are shared and noisy:
one slow run should not move the quoted figure.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fabric.project import Project

__all__ = [
    "MIB",
    "DescendantMemory",
    "Timings",
    "current_rss_bytes",
    "emit",
    "log",
    "peak_rss_bytes",
    "rate",
    "reset_peak_rss",
    "sig",
    "sqlite_bytes",
    "synced_demo",
]

#: Significant digits kept in printed floats: more would only print noise.
SIGNIFICANT_DIGITS = 4
#: Bytes in a MiB, for printing memory figures.
MIB = 1024 * 1024


def log(message: str) -> None:
    """Print progress for a human on stderr, keeping stdout for the JSON figures."""
    print(message, file=sys.stderr, flush=True)


def sig(value: float) -> float:
    """Round ``value`` to a few significant digits, for printing measured figures."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def emit(figure: Mapping[str, object]) -> None:
    """Print one figure as a single JSON line on stdout; floats are rounded with :func:`sig`."""

    def tidy(value: object) -> object:
        if isinstance(value, float):
            return sig(value)
        if isinstance(value, Mapping):
            return {str(k): tidy(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [tidy(v) for v in value]
        return value

    print(json.dumps(tidy(figure)), flush=True)


def rate(count: float, seconds: float) -> float:
    """Return ``count`` per second; 0 when nothing was timed (avoids dividing by zero)."""
    return count / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class Timings:
    """Repeated measurements of one thing, in seconds."""

    seconds: tuple[float, ...]

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timings:
        """Collect measurements; at least one is needed."""
        if not seconds:
            raise ValueError("no measurements")
        return cls(tuple(seconds))

    @property
    def median(self) -> float:
        """The median (p50): the figure to quote on a noisy machine."""
        return statistics.median(self.seconds)

    def fields(self, prefix: str = "seconds") -> dict[str, object]:
        """JSON fields: ``n``, median (p50), min, max and every run, in order."""
        return {
            "n": len(self.seconds),
            f"{prefix}_median": self.median,
            f"{prefix}_min": min(self.seconds),
            f"{prefix}_max": max(self.seconds),
            f"{prefix}_runs": list(self.seconds),
        }


def sqlite_bytes(path: Path) -> tuple[int, int]:
    """Return ``(main file bytes, -wal and -shm bytes)`` of a SQLite database on disk.

    In WAL mode committed pages can sit in the -wal file until a checkpoint, so the main file
    alone under-counts a database that is still open; missing files count as 0.
    """

    def size(file: Path) -> int:
        try:
            return file.stat().st_size
        except FileNotFoundError:
            return 0

    sidecars = sum(size(path.with_name(path.name + suffix)) for suffix in ("-wal", "-shm"))
    return size(path), sidecars


def _proc_status_bytes(field: str, pid: str = "self") -> int | None:
    """Read a ``kB`` field of /proc/PID/status in bytes; None where there is no such file."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _pss_bytes(pid: str = "self") -> int | None:
    """Proportional set size of a process (/proc/PID/smaps_rollup): its resident memory, with
    pages shared between processes (a forked worker's imports) split among them, so a sum over
    processes counts each page once."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark to its current size, if possible.

    Linux 4.0 and later reset VmHWM when "5" is written to /proc/self/clear_refs; returns
    False where that is not available, and the mark then covers the whole process life.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def current_rss_bytes() -> int | None:
    """Return this process's resident set size now, in bytes (None where it is not known)."""
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes() -> int:
    """Return this process's resident-set high-water mark, in bytes.

    On Linux this is VmHWM of /proc/self/status: the mark of this process image only, since
    the last :func:`reset_peak_rss`. Elsewhere it is ``ru_maxrss``, which on Linux would
    also carry the mark of the parent a process was forked from, even across exec, so it
    over-states a spawned child's own peak. Linux reports ``ru_maxrss`` in kibibytes, macOS
    in bytes.
    """
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _descendants(pid: str) -> list[str]:
    """Every live descendant of ``pid`` (Linux: /proc/PID/task/*/children), deepest last."""
    found: list[str] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as children:
                    kids = children.read().split()
            except OSError:
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


class DescendantMemory:
    """Sample the resident memory of this process's child processes while a block runs.

    A process's own high-water mark (:func:`peak_rss_bytes`) leaves out worker processes it
    starts. This samples, every ``interval`` seconds from a background thread, each
    descendant's own mark (VmHWM, exact up to the last sample before it exits) and the
    resident total of this process and its descendants (a sampled lower bound of the true
    peak). Linux only; elsewhere nothing is found and every figure stays 0.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        #: largest high-water mark of any one descendant, in bytes
        self.peak_descendant_bytes = 0
        #: largest sampled resident total of this process and its descendants, in bytes
        self.peak_total_bytes = 0
        #: largest sampled proportional total (shared pages counted once), in bytes
        self.peak_total_pss_bytes = 0
        #: distinct descendants seen
        self.descendants = 0
        self._seen: set[str] = set()
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        # The proportional size walks a process's page tables under its memory lock, which
        # slowed the processes measured: every tenth sample only.
        self._samples += 1
        with_pss = self._samples % 10 == 1
        total = current_rss_bytes() or 0
        proportional = (_pss_bytes() or 0) if with_pss else 0
        for pid in _descendants(str(os.getpid())):
            self._seen.add(pid)
            total += _proc_status_bytes("VmRSS", pid) or 0
            if with_pss:
                proportional += _pss_bytes(pid) or 0
            hwm = _proc_status_bytes("VmHWM", pid) or 0
            self.peak_descendant_bytes = max(self.peak_descendant_bytes, hwm)
        self.peak_total_bytes = max(self.peak_total_bytes, total)
        self.peak_total_pss_bytes = max(self.peak_total_pss_bytes, proportional)
        self.descendants = len(self._seen)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> DescendantMemory:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@contextmanager
def synced_demo(
    name: str, customers: int, seed: int, workdir: Path | None = None
) -> Iterator[tuple[Project, Path]]:
    """A demo project of ``customers``, generated and fully synced (not timed), opened.

    Yields the project and its scratch directory, which is removed afterwards unless it was
    made under ``workdir`` (to keep the files).
    """
    from fabric.demo import create_demo_project
    from fabric.project import Project
    from fabric.sync import sync_project

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"fabric-{name}-bench-", dir=workdir))
    try:
        log(f"generating and syncing {customers} customers in {root}")
        demo = create_demo_project(root / "project", customers=customers, seed=seed)
        with Project.open(demo.config_path) as project:
            sync_project(project, full=True, workers=2)
            yield project, root
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
