"""Helpers shared by the benchmark scripts: JSON figures on stdout, progress on stderr.

Benchmarks print one JSON object per line and nothing else on stdout, so their output can be
piped into ``jq`` or appended to a results file; everything meant for a human goes to stderr.
Timings are summarised by their median because the machines they run on are shared and noisy:
one slow run should not move the quoted figure.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from fabric.project import Project

__all__ = [
    "MIB",
    "CpuTime",
    "DescendantMemory",
    "ProcessTreeSampler",
    "StoreComparison",
    "Timings",
    "compare_stores",
    "current_rss_bytes",
    "descendant_pids",
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
    return _proc_status(pid, (field,)).get(field)


def _proc_status(pid: str, fields: Sequence[str]) -> dict[str, int]:
    """Read ``kB`` fields of /proc/PID/status in bytes, in one read; missing ones left out.

    Bytes, not text: the sampler reads it for every process every 50 ms.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for field in fields:
        at = text.find(b"\n" + field.encode("ascii") + b":")
        if at >= 0:
            end = text.find(b"\n", at + 1)
            found[field] = int(text[at + len(field) + 2 : end].split()[0]) * 1024
    return found


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


def descendant_pids(pid: str) -> list[str]:
    """Every live descendant of ``pid``, deepest last.

    Linux: /proc/PID/task/*/children, walked down (cheap enough to run every 50 ms); where
    that file does not exist, psutil's scan of every process's parent.
    """
    if not os.path.isdir(f"/proc/{pid}/task"):
        try:
            return [str(p.pid) for p in _psutil().Process(int(pid)).children(recursive=True)]
        except (_psutil().Error, ValueError):
            return []
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


def _psutil() -> Any:
    """psutil, which ships no type information (Any); installed with distributed."""
    return importlib.import_module("psutil")


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


#: Clock ticks per second, the unit of /proc/PID/stat's times.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class _ProcCpu:
    """A process's CPU seconds: its own and its reaped children's (user + system)."""

    ppid: int
    start: int  # when it started (ticks since boot; with the pid, who it is)
    own: float
    children: float
    zombie: bool


def _proc_cpu(pid: int) -> _ProcCpu | None:
    """Read a process's CPU times (Linux: one read of /proc/PID/stat; elsewhere psutil);
    None when it is gone or cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return _psutil_cpu(pid)
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ")".
    fields = text[text.rindex(b")") + 2 :].split()
    return _ProcCpu(
        ppid=int(fields[1]),
        start=int(fields[19]),
        own=(int(fields[11]) + int(fields[12])) / _TICKS,
        children=(int(fields[13]) + int(fields[14])) / _TICKS,
        zombie=fields[0] == b"Z",
    )


def _psutil_cpu(pid: int) -> _ProcCpu | None:
    psutil = _psutil()
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return _ProcCpu(
                ppid=int(process.ppid()),
                start=int(process.create_time() * 1000),
                own=float(times.user + times.system),
                children=float(times.children_user + times.children_system),
                zombie=process.status() == psutil.STATUS_ZOMBIE,
            )
    except psutil.Error:
        return None


@dataclass(frozen=True)
class CpuTime:
    """CPU seconds (user + system) spent while a :class:`ProcessTreeSampler` block ran.

    ``total`` is what the block cost: this process (less the sampler's own thread), its
    children it reaped meanwhile, its other descendants, and the other processes the sampler
    was given (a Dask cluster's workers and scheduler process).
    """

    #: this process (``RUSAGE_SELF``), less ``sampler``
    process: float = 0.0
    #: children this process reaped during the block, with the descendants they reaped
    #: (``RUSAGE_CHILDREN``)
    reaped: float = 0.0
    #: its other descendants, sampled (not counted in ``reaped``)
    descendants: float = 0.0
    #: the other process trees given (cluster workers), sampled the same way
    others: float = 0.0
    #: the other processes given whose own time only counts (a scheduler's process)
    others_own: float = 0.0
    #: the sampler's own thread: left out of ``process``
    sampler: float = 0.0

    @property
    def total(self) -> float:
        """Every part but the sampler's."""
        return self.process + self.reaped + self.descendants + self.others + self.others_own


@dataclass
class _Tracked:
    """One sampled process: its CPU seconds (own and reaped children's) first and last seen."""

    other: bool  # part of a tree given in ``others`` rather than this process's
    start: int
    base: float  # at the first sample when the process was already there, else 0
    last: float
    ppid: int
    alive: bool = True


class ProcessTreeSampler:
    """Sample this process's descendants (and other given process trees) while a block runs.

    Memory: a process's own high-water mark (:func:`peak_rss_bytes`) leaves out the worker
    processes it starts. Every ``interval`` seconds a background thread reads each
    descendant's own mark (VmHWM, exact up to the last sample before it exits) and the resident
    total of this process, its descendants and the ``others`` trees (a sampled lower bound of
    the true peak). Linux only; elsewhere the memory figures stay 0.

    CPU (``cpu=True``; :attr:`cpu` once the block is over): user + system seconds of

    - this process: ``getrusage(RUSAGE_SELF)`` after less before, less the CPU time of the
      samples themselves (``time.thread_time`` around each one);
    - the children it reaped during the block: ``getrusage(RUSAGE_CHILDREN)`` after less
      before (exact, with every descendant those children reaped in turn);
    - every other descendant, and every process of the ``others`` trees: its CPU times (own
      plus reaped children's: /proc/PID/stat, psutil's ``cpu_times`` elsewhere) at each
      sample, keeping the last value seen per process, less the value at the first sample
      for one that was already running. A process that exits loses what it spent after its
      last sample (up to ``interval``) unless its parent was sampled and is still alive at
      the end, or is this process: then the parent's reaped-children time holds its exact
      total and its own samples are left out, so no time is counted twice;
    - the ``others_own`` processes' own time (a Dask scheduler running in the parent, whose
      descendants are this process itself), after less before.

    Args:
        interval: seconds between samples.
        cpu: sample CPU time too.
        others: roots of process trees outside this process's to sample as well.
        others_own: processes outside this tree whose own CPU time counts (read at the
            start and the end).
    """

    def __init__(
        self,
        interval: float = 0.05,
        *,
        cpu: bool = True,
        others: Sequence[int] = (),
        others_own: Sequence[int] = (),
    ) -> None:
        self.interval = interval
        #: largest high-water mark of any one descendant, in bytes
        self.peak_descendant_bytes = 0
        #: largest sampled resident total of this process and its descendants (and of the
        #: ``others`` trees), in bytes
        self.peak_total_bytes = 0
        #: largest sampled proportional total (shared pages counted once), in bytes
        self.peak_total_pss_bytes = 0
        #: distinct descendants seen (the ``others`` trees not counted)
        self.descendants = 0
        #: CPU time of the block, once it is over (with ``cpu``)
        self.cpu = CpuTime()
        #: samples taken
        self.samples = 0
        self._with_cpu = cpu
        self._others = [str(pid) for pid in others]
        self._others_own = list(others_own)
        self._seen: set[str] = set()
        self._tracked: dict[int, _Tracked] = {}
        #: processes whose pid a new process took (they are gone)
        self._retired: list[_Tracked] = []
        self._sampler_seconds = 0.0
        self._rusage_before: tuple[float, float] = (0.0, 0.0)
        self._own_before: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        # A sample from the measured thread (:meth:`cpu_so_far`) must not interleave with
        # one of the sampler's thread.
        self._lock = threading.Lock()

    def cpu_so_far(self) -> CpuTime:
        """CPU time of the block so far (with ``cpu``), sampled now: to split a block into
        stages, the later stage's time being :attr:`cpu` less this. Costs one sample."""
        with self._lock:
            self._sample()
            return self._cpu_time()

    def _sample(self) -> None:
        began = time.thread_time()
        # The proportional size walks a process's page tables under its memory lock, which
        # slowed the processes measured: every tenth sample only.
        first = self.samples == 0
        self.samples += 1
        with_pss = self.samples % 10 == 1
        total = current_rss_bytes() or 0
        proportional = (_pss_bytes() or 0) if with_pss else 0
        mine = descendant_pids(str(os.getpid()))
        others = [p for root in self._others for p in (root, *descendant_pids(root))]
        for pid in mine:
            self._seen.add(pid)
        for pid in (*mine, *others):
            status = _proc_status(pid, ("VmRSS", "VmHWM"))
            total += status.get("VmRSS", 0)
            if pid not in others:
                self.peak_descendant_bytes = max(self.peak_descendant_bytes, status.get("VmHWM", 0))
            if with_pss:
                proportional += _pss_bytes(pid) or 0
        self.peak_total_bytes = max(self.peak_total_bytes, total)
        self.peak_total_pss_bytes = max(self.peak_total_pss_bytes, proportional)
        self.descendants = len(self._seen)
        if self._with_cpu:
            self._sample_cpu(mine, others, first)
        self._sampler_seconds += time.thread_time() - began

    def _sample_cpu(self, mine: Sequence[str], others: Sequence[str], first: bool) -> None:
        listed = {int(pid): False for pid in mine} | {int(pid): True for pid in others}
        # Processes seen before are read again even when they left the tree (reparented).
        for pid in {*listed, *(p for p, t in self._tracked.items() if t.alive)}:
            tracked = self._tracked.get(pid)
            found = _proc_cpu(pid)
            if found is not None and tracked is not None and found.start != tracked.start:
                # The pid was reused: the process tracked is gone, a new one has its pid.
                tracked.alive = False
                self._retired.append(self._tracked.pop(pid))
                tracked = None
            if found is None:
                if tracked is not None:
                    tracked.alive = False
                continue
            if found.zombie:
                continue  # exited, not reaped yet: its last sample stands
            seconds = found.own + found.children
            if tracked is None:
                base = seconds if first else 0.0
                other = listed.get(pid, False)
                self._tracked[pid] = _Tracked(other, found.start, base, seconds, found.ppid)
            else:
                tracked.last, tracked.ppid = seconds, found.ppid

    def _covered(self, tracked: _Tracked) -> bool:
        """Whether an exited process's time is in a live parent's reaped-children time."""
        visited: set[int] = set()
        while tracked.ppid not in visited:
            visited.add(tracked.ppid)
            if tracked.ppid == os.getpid():
                return True
            parent = self._tracked.get(tracked.ppid)
            if parent is None:
                return False
            if parent.alive:
                return True
            tracked = parent
        return False

    def _own_seconds(self) -> dict[int, float]:
        found = {pid: _proc_cpu(pid) for pid in self._others_own}
        return {pid: cpu.own for pid, cpu in found.items() if cpu is not None}

    def _cpu_time(self) -> CpuTime:
        own = self._own_seconds()
        process_before, reaped_before = self._rusage_before
        parts = {False: 0.0, True: 0.0}
        for tracked in (*self._tracked.values(), *self._retired):
            if tracked.alive or not self._covered(tracked):
                parts[tracked.other] += tracked.last - tracked.base
        return CpuTime(
            process=_cpu_seconds(resource.getrusage(resource.RUSAGE_SELF))
            - process_before
            - self._sampler_seconds,
            reaped=_cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)) - reaped_before,
            descendants=parts[False],
            others=parts[True],
            others_own=sum(
                (own[p] - self._own_before[p] for p in own if p in self._own_before), 0.0
            ),
            sampler=self._sampler_seconds,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._sample()

    def __enter__(self) -> Self:
        if self._with_cpu:
            self._own_before = self._own_seconds()
            self._rusage_before = (
                _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)),
                _cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)),
            )
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
        if self._with_cpu:
            self.cpu = self._cpu_time()


class DescendantMemory(ProcessTreeSampler):
    """:class:`ProcessTreeSampler` of this process's tree, memory only."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(interval, cpu=False)


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


@dataclass(frozen=True)
class StoreComparison:
    """Two stores of the same sources compared entity by entity, every entity type.

    An entity is the same in both when it has the same id and version, the same rows in every
    table (in the same order) and the same lineage (table, key, source, source table, source
    key of each row: its extraction time and sync run are the store's own).
    """

    entities_a: int
    entities_b: int
    #: entities (type and id) stored in one store only
    only_a: int
    only_b: int
    #: entity types whose recorded table layout differs
    layouts_differ: int
    #: entities in both whose version, rows or lineage differ
    versions_differ: int
    rows_differ: int
    #: of ``rows_differ``: the same rows in another order
    rows_differ_in_order_only: int
    lineage_differs: int
    #: table -> entities whose rows of that table differ
    tables_differ: dict[str, int]
    #: a few differing entities, ``type/id: what differs``
    examples: tuple[str, ...]

    @property
    def identical(self) -> bool:
        """Same entities with the same ids, versions, rows and lineage."""
        return not (
            self.only_a
            or self.only_b
            or self.layouts_differ
            or self.versions_differ
            or self.rows_differ
            or self.lineage_differs
        )

    def fields(self) -> dict[str, object]:
        """JSON fields: the counts of every kind of difference."""
        return {
            "entities": [self.entities_a, self.entities_b],
            "only_in_first": self.only_a,
            "only_in_second": self.only_b,
            "layouts_differ": self.layouts_differ,
            "versions_differ": self.versions_differ,
            "rows_differ": self.rows_differ,
            "rows_differ_in_order_only": self.rows_differ_in_order_only,
            "lineage_differs": self.lineage_differs,
            "tables_differ": self.tables_differ,
            "examples": list(self.examples),
        }


_Contents = tuple[int, dict[str, list[tuple[Any, ...]]], list[tuple[Any, ...]]]


def _stored(project: Project, entity_type: str, ids: Sequence[str]) -> dict[str, _Contents]:
    """Entities as stored, decrypted: version, each table's rows, lineage without times."""
    from fabric.store.microdb import MicroDbReader

    reader = MicroDbReader()
    layout = project.catalog.schemas()[entity_type]
    out: dict[str, _Contents] = {}
    for entity_id, blob in project.store.get_many(entity_type, list(ids)).items():
        image = project.codec.decode(blob.blob, entity_type, entity_id, blob.version)
        rows, lineage = reader.contents(image, layout)
        # (table, key, source, source table, source key, extracted at, sync run)
        out[entity_id] = (blob.version, rows, sorted((tuple(r[:5]) for r in lineage), key=repr))
    return out


def compare_stores(config_a: Path, config_b: Path, *, batch: int = 1000) -> StoreComparison:
    """Compare the stores of two projects over the same sources, entity by entity.

    Reads ``batch`` entities of each store at a time, so a large store is not all in memory.
    """
    from fabric.project import Project

    only_a = only_b = layouts = versions = rows = in_order = lineage = 0
    entities_a = entities_b = 0
    tables: dict[str, int] = {}
    examples: list[str] = []
    with Project.open(config_a) as first, Project.open(config_b) as second:
        types = sorted(set(first.config.entities) | set(second.config.entities))
        schemas_a, schemas_b = first.catalog.schemas(), second.catalog.schemas()
        for entity_type in types:
            layouts += schemas_a.get(entity_type) != schemas_b.get(entity_type)
            ids_a = set(first.catalog.entities(entity_type))
            ids_b = set(second.catalog.entities(entity_type))
            entities_a, entities_b = entities_a + len(ids_a), entities_b + len(ids_b)
            only_a, only_b = only_a + len(ids_a - ids_b), only_b + len(ids_b - ids_a)
            for entity_id in sorted(ids_a ^ ids_b)[:3]:
                where = "first" if entity_id in ids_a else "second"
                examples.append(f"{entity_type}/{entity_id}: only in the {where} store")
            common = sorted(ids_a & ids_b)
            for at in range(0, len(common), batch):
                chunk = common[at : at + batch]
                found_a = _stored(first, entity_type, chunk)
                found_b = _stored(second, entity_type, chunk)
                for entity_id in chunk:
                    a, b = found_a.get(entity_id), found_b.get(entity_id)
                    if a == b:
                        continue
                    what: list[str] = []
                    if a is None or b is None:
                        what.append("no stored blob in the " + ("first" if a is None else "second"))
                        versions += 1
                    else:
                        if a[0] != b[0]:
                            versions += 1
                            what.append(f"version {a[0]} != {b[0]}")
                        if a[1] != b[1]:
                            rows += 1
                            names = sorted(set(a[1]) | set(b[1]))
                            differ = [t for t in names if a[1].get(t) != b[1].get(t)]
                            for table in differ:
                                tables[table] = tables.get(table, 0) + 1
                            same_sets = all(
                                sorted(a[1].get(t, []), key=repr)
                                == sorted(b[1].get(t, []), key=repr)
                                for t in differ
                            )
                            in_order += same_sets
                            what.append(
                                f"rows of {', '.join(differ)}"
                                + (" (order only)" if same_sets else "")
                            )
                        if a[2] != b[2]:
                            lineage += 1
                            what.append("lineage")
                    if len(examples) < 6:
                        examples.append(f"{entity_type}/{entity_id}: {'; '.join(what)}")
    return StoreComparison(
        entities_a,
        entities_b,
        only_a,
        only_b,
        layouts,
        versions,
        rows,
        in_order,
        lineage,
        tables,
        tuple(examples),
    )
