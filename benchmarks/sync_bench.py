"""Time full and incremental syncs of the demo sources against the floor: a plain SQLite copy.

The quick default is --customers 10000; the figures issue 3 asks for (full sync >= 5,000
entities/s, incremental >= 20x faster than full for 1% changes) and issue 18 asks for (at most
400 CPU microseconds per entity, at most 2 GiB resident in all, Dask at 0.8 of local entities/s
or better, an incremental sync touching entities at least as fast as a full sync builds them)
are for --customers 100000.

Flags beyond the sizes: --executor {local,dask} says where the timed full syncs (full_sync and
its memory, noop_sync) run their tasks: local worker processes (the default), or a Dask
LocalCluster of --workers single-threaded worker processes on 127.0.0.1 that this process
starts before the runs, outside every timed region, and stops after them. --dask adds the
dask_full_sync line. Incremental syncs always run with local workers. --full-only stops after
the full syncs and their baselines: issue 18's growth figure is
--customers 1000000 --repeat 1 --full-only, against a run at --customers 100000.

Prints one JSON object per line on stdout (progress goes to stderr):

  generate                   creating the synthetic sources (once; not repeated).
  full_sync                  sync_project(project, full=True) into an empty store: extract,
                             resolve, build one micro-database per entity, compress, store,
                             materialize the online store. Each run is a fresh spawned process
                             (so its memory and CPU time can be read) and is timed inside it
                             around the call; medians over --repeat runs, each into a fresh
                             store (the store directory is deleted between runs), with
                             sync_project(workers=--workers, executor=...): the executor
                             (--executor) is opened, a Dask client connected, before the clock
                             starts and closed after it stops. "executor" says which.
                             "target_entities_per_s" is issue 18's floor, for --workers 2.
                             "sync_only_seconds_median" leaves out what the run then spent
                             materializing the online store (vectors and masked documents:
                             "materialize_seconds_median", SyncReport.materialize_seconds),
                             "sync_only_entities_per_s" is the rate without it.
                             CPU: "cpu_us_per_entity_median" is the median over the runs of the
                             CPU seconds (user + system) the full sync cost in every process,
                             per entity, in microseconds ("cpu_us_per_entity_runs": each run's,
                             "cpu_seconds_median": the seconds themselves);
                             "target_cpu_us_per_entity" is issue 18's ceiling. Counted in the
                             child while the sync runs (ProcessTreeSampler in
                             benchmarks/_common.py): the child's own getrusage (RUSAGE_SELF)
                             after less before, less the sampler thread's own CPU;
                             its reaped children's (RUSAGE_CHILDREN, after less before); every
                             other descendant (fork server, worker processes, the materializing
                             workers) sampled every 50 ms from /proc/PID/stat (own plus reaped
                             children's times, psutil elsewhere), keeping the last value seen
                             per process, less its value at the start when it already ran.
                             A process that exits is counted by its live parent's reaped-
                             children time when that parent was sampled (or is the child), else
                             by its last sample (losing up to 50 ms); nothing is counted twice.
                             On Dask, the cluster's worker processes are sampled the same way,
                             and the own time of the benchmark's main process, where the
                             scheduler and nannies run, is read before and after.
                             "cpu_us_per_entity_parts_median" splits the median:
                             "sync_process", "reaped_children", "descendants",
                             "cluster_workers", "scheduler_process";
                             "cpu_sampler_seconds_median" is the sampling's own cost, left out.
                             "cpu_us_per_entity_sync_only_median" is what was spent until
                             materializing the online store began (sampled then, on its first
                             progress line), "cpu_us_per_entity_materialize_median" the rest.
  full_sync_memory           resident-set high-water mark of that child process during the
                             full sync (Linux: VmHWM, reset just before the call; elsewhere
                             ru_maxrss, which also counts the parent's peak): "peak_rss_mib" is
                             the largest over the runs, "rss_before_sync_mib" the resident set
                             just before the call (interpreter, imports, opened project) and
                             "sync_growth_mib" the difference, what the sync itself added.
                             Every descendant process (fork server, workers and their children,
                             however deep) is sampled every 50 ms while it runs, by the same
                             sampler: "workers_seen" counts them, "worker_peak_rss_mib" is the
                             largest mark of any one, "total_peak_rss_mib_sampled" the largest
                             resident total of the process and all its descendants seen (a
                             lower bound of the true peak; pages shared by forked processes
                             count once per process), "target_total_peak_rss_mib" issue 18's
                             ceiling for it; "total_peak_pss_mib_sampled" the largest
                             proportional total (shared pages counted once; every tenth sample).
  noop_sync                  a second sync (default mode, no --full) right after, in a newly
                             opened project, with every entity unchanged: an incremental sync
                             that reads only the rows at each table's watermark (watermarks are
                             inclusive), re-resolves the few entities holding them and finds
                             them unchanged. Same child process and executor kind as the full
                             sync.
  baseline_executemany_copy  the floor no per-entity design can beat: read every source table
                             (apsw, read-only) and copy its rows into ONE new SQLite file with
                             executemany, one transaction per table, same connection settings
                             as the store's shards (WAL, synchronous=NORMAL), no secondary
                             indexes. Timed from opening the sources to the last commit.
  ratio                      sync rows/s over baseline rows/s, from the medians and as the
                             median of the per-repeat (paired) ratios, which resists drift;
                             "sync_only_..." the same for the sync without materializing the
                             online store; "target_rows_per_s_over_baseline" is issue 18's.
  store_bytes                bytes per entity: compressed blobs, shard files as they are on
                             disk after the sync (including -wal/-shm), the same after the
                             files are closed (WAL checkpointed away), the catalog, and the
                             baseline file for the same entity count.
  dask_full_sync             with --dask, after the above and before any source changes: this
                             process starts a Dask LocalCluster of --workers single-threaded
                             worker processes (untimed; reused by every run, so only the first
                             run's workers import fabric), then --repeat full syncs (and their
                             no-change syncs) into fresh stores (fabric-dask.yaml, store-dask/)
                             run exactly as full_sync's, each in a fresh spawned child with the
                             dask executor connected to that cluster. Seconds median/min/max/
                             runs, "entities_per_s", CPU fields as on full_sync (the cluster's
                             workers and the scheduler's process counted),
                             "total_peak_rss_mib_sampled" (the child, its descendants and the
                             cluster's workers) and its target.
                             "over_local" is its entities/s median over full_sync's
                             ("local_entities_per_s"; "local_executor" says what full_sync ran
                             on), "target_over_local" issue 18's floor for it.
                             "identical_store": the Dask store equals the last full_sync run's
                             (after its no-change sync, as the Dask ones are; with --executor
                             dask, one more local run's, fabric-local.yaml) entity by entity:
                             same ids, versions, rows of every table (in order) and lineage
                             (without extraction times and run ids). "store_differences"
                             counts what differs: entities in one store only, layouts,
                             versions, rows (and of those, rows only in another order), lineage,
                             entities per differing table, and a few examples.
  incremental_sync           after all the above (so those figures are for the unchanged
                             sources), --repeat rounds of: change 1% of source rows, then time
                             sync_project(project) (incremental) in a newly opened project.
                             A change UPDATEs 1% of crm.customers and of billing.accounts (city
                             or email case, phone format, IBAN grouping; updated_at set past
                             the newest one) and INSERTs copies of 1% of billing.payments,
                             shop.orders, shop.order_items and support.tickets with new ids
                             above the maximum and their original parent keys, so they land in
                             existing entities. Rows are drawn by a seeded RNG, other ones each
                             round; the 1% is of the generated row counts, so every round
                             changes as many rows ("rows_changed"). "rows_read" and the entity
                             counts are medians over the rounds; "full_over_incremental" is the
                             full sync median over the incremental median, "target_ratio" the
                             issue's floor for it. "entities_touched" is the median of the
                             entities updated plus created, "touched_entities_per_s" that over
                             the median seconds, "over_full_entities_per_s" that over full_sync's
                             entities/s ("full_entities_per_s"), "target_over_full" issue 18's
                             floor for it.
  incremental_sync_entities  then --repeat rounds that change 1% of the ENTITIES, not of the
                             rows: 1% of the customer entities (rounded, at least one), drawn by
                             another seeded RNG from those with crm.customers rows (as the
                             store's source map has them before the round), get every one of
                             their crm.customers rows updated (city case; email case or phone
                             format when it is NULL; updated_at set past the newest one), then
                             sync_project(project) (incremental) is timed in a newly opened
                             project. "entities_changed" and "rows_changed" are what the change
                             picked and wrote; "rows_read", "entities_updated",
                             "entities_created", "entities_unchanged" and "entities_touched"
                             (updated plus created) medians of what the syncs did; seconds,
                             "touched_entities_per_s", "over_full_entities_per_s",
                             "full_over_incremental" and the targets as on incremental_sync.
  incremental_equals_full    after all the rounds (and the profiled one, with --profile), a full
                             sync of the changed sources into a second, fresh store
                             (fabric-check.yaml, store-check/): "equal" is true when both stores
                             partition the source records into the same entities (sets of
                             record sets; entity ids may differ). "only_incremental" and
                             "only_full" count the entities found in one partition only;
                             "seconds" times that full sync (sources now 1% per round larger).

Fields: "what", "n" (measurements), "*_median" (p50), "*_min", "*_max", "*_runs" in seconds,
rates per second named by unit ("rows_per_s", "entities_per_s"), sizes in bytes or MiB, CPU in
microseconds per entity. The seed is fixed, so runs with the same arguments do the same work;
the times are not gated anywhere. --profile TOP adds one profiled incremental sync (after a
further change) and one profiled full sync (in one process, workers=1, so the profile sees the
building too), printed on stderr by cumulative and by own time, after the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _changes import (
    ENTITY_TABLE,
    EntityChange,
    SourceChange,
    change_entities,
    change_sources,
    source_path,
)
from _cluster import LoopbackCluster
from _common import (
    MIB,
    CpuTime,
    ProcessTreeSampler,
    StoreComparison,
    Timings,
    compare_stores,
    current_rss_bytes,
    emit,
    log,
    peak_rss_bytes,
    rate,
    reset_peak_rss,
    sqlite_bytes,
)

from fabric.demo import create_demo_project
from fabric.executors import EXECUTOR_KINDS, ExecutorKind
from fabric.project import Project
from fabric.sources.generate import GeneratedTable
from fabric.store.base import StoreStats
from fabric.store.catalog import SourceRef
from fabric.store.sqlite import apsw, open_database, quote_ident
from fabric.sync import SyncReport, open_sync_executor, sync_project

BASELINE_FILE = "baseline.db"
#: Config and store of the full sync that checks the incremental store.
CHECK_CONFIG, CHECK_STORE = "fabric-check.yaml", "store-check"
#: Config and store of the --dask full syncs.
DASK_CONFIG, DASK_STORE = "fabric-dask.yaml", "store-dask"
#: Config and store of the local full sync --dask compares with when --executor is dask.
LOCAL_CONFIG, LOCAL_STORE = "fabric-local.yaml", "store-local"
#: Share of each changed table's rows that one incremental round changes, and share of the
#: entities that one entity round changes.
CHANGED_FRACTION = 0.01
#: The demo's entity type, whose entities the entity rounds change.
ENTITY_TYPE = "customer"
#: Issue 3's floors on this 2-core machine, for --customers 100000.
TARGET_ENTITIES_PER_S = 5_000
TARGET_FULL_OVER_INCREMENTAL = 20
#: Issue 18's: CPU per entity of a full sync (every process), resident total of a full sync
#: and its workers, Dask entities/s over local ones, incremental touched entities/s over full.
TARGET_CPU_US_PER_ENTITY = 400
TARGET_TOTAL_PEAK_RSS_MIB = 2048
TARGET_DASK_OVER_LOCAL = 0.8
TARGET_INCREMENTAL_OVER_FULL = 1
#: Issue 18's: a full sync's rows/s over the executemany floor's.
TARGET_FLOOR_RATIO = 0.10


@dataclass(frozen=True)
class Placement:
    """Where a timed sync's tasks run: local worker processes, or a Dask cluster."""

    kind: ExecutorKind
    workers: int
    #: the cluster's scheduler address (dask)
    scheduler: str | None = None
    #: the cluster's worker processes, sampled for CPU time and memory
    cluster_pids: tuple[int, ...] = ()
    #: the process the cluster's scheduler runs in, whose own CPU time counts
    scheduler_pid: int | None = None

    @classmethod
    def on(cls, kind: ExecutorKind, workers: int, cluster: LoopbackCluster | None) -> Placement:
        """Local workers, or the ``cluster`` (which must be given for dask)."""
        if kind == "local":
            return cls("local", workers)
        assert cluster is not None, "a dask placement needs a cluster"
        return cls("dask", workers, cluster.address, cluster.pids, cluster.scheduler_pid)


@dataclass(frozen=True)
class SyncRun:
    """One full sync into an empty store, then a no-change sync, and what they left on disk."""

    seconds: float
    report: SyncReport
    stats: StoreStats
    catalog_bytes: int
    shard_bytes_at_rest: int
    catalog_bytes_at_rest: int
    noop_seconds: float
    noop_report: SyncReport
    #: the process's resident set just before the full sync, and its high-water mark right
    #: after it (since a reset just before it, where the platform allows one: rss_reset)
    rss_before_bytes: int
    rss_peak_bytes: int
    rss_reset: bool
    #: sampled while the full sync ran: the largest mark of one of its worker processes, the
    #: largest resident total of the process and its workers, and how many workers there were
    workers_peak_bytes: int
    total_peak_bytes: int
    workers_seen: int
    #: the largest proportional total sampled (pages shared between processes counted once)
    total_peak_pss_bytes: int
    #: CPU time of the full sync: the process, its descendants, the cluster's processes
    cpu: CpuTime
    executor: str
    #: CPU time until materializing the online store began (None: nothing to materialize)
    sync_cpu: CpuTime | None = None

    @property
    def entities(self) -> int:
        """Entities of every type."""
        return sum(self.report.entities.values())

    @property
    def sync_only_seconds(self) -> float:
        """The full sync without materializing the online store after it."""
        return self.seconds - self.report.materialize_seconds

    @property
    def cpu_us_per_entity(self) -> float:
        """CPU microseconds per entity, every process counted."""
        return rate(self.cpu.total * 1e6, self.entities)


@dataclass(frozen=True)
class BaselineRun:
    """One executemany copy of every source row into a single SQLite file."""

    read_seconds: float
    write_seconds: float
    rows: int
    file_bytes: int
    file_bytes_at_rest: int

    @property
    def seconds(self) -> float:
        """Reading plus writing: the sync reads its sources too."""
        return self.read_seconds + self.write_seconds


@dataclass(frozen=True)
class IncrementalRun:
    """One change of the sources and the incremental sync that followed it."""

    change: SourceChange
    seconds: float
    report: SyncReport


@dataclass(frozen=True)
class EntityRun:
    """One change of 1% of the entities and the incremental sync that followed it."""

    change: EntityChange
    seconds: float
    report: SyncReport

    @property
    def touched(self) -> int:
        """Entities the sync rewrote or created."""
        return self.report.updated + self.report.created


@dataclass(frozen=True)
class EqualityCheck:
    """The incremental store's partition of source records against a full sync's."""

    records: int
    entities_incremental: int
    entities_full: int
    only_incremental: int
    only_full: int
    seconds: float

    @property
    def equal(self) -> bool:
        """Both stores put the same records together."""
        return self.only_incremental == 0 and self.only_full == 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--help`` explains every printed figure."""
    parser = argparse.ArgumentParser(
        prog="sync_bench.py",
        description="Benchmark full and incremental fabric syncs against a plain SQLite "
        "executemany copy.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=10_000,
        metavar="N",
        help="synthetic customers to generate (default: %(default)s, a quick run; issue 3's "
        "targets are for 100000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        metavar="S",
        help="generator and change seed, fixed so runs are comparable (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="R",
        help="full sync + baseline runs, then as many 1%% change + incremental sync rounds; "
        "medians are quoted (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="W",
        help="sync_project(workers=W): processes that build entities in a full sync; issue "
        "3's entities/s target is for 2 on a 2-core machine (default: %(default)s)",
    )
    parser.add_argument(
        "--executor",
        choices=EXECUTOR_KINDS,
        default="local",
        help="where the timed full syncs (full_sync) run their tasks: local worker processes, "
        "or a Dask LocalCluster of W single-threaded workers that this process starts before "
        "the runs (default: %(default)s)",
    )
    parser.add_argument(
        "--dask",
        action="store_true",
        help="after the full syncs, time as many full syncs with the dask executor on a Dask "
        "LocalCluster of W workers started here, and compare their store with a local one "
        "(the dask_full_sync line)",
    )
    parser.add_argument(
        "--full-only",
        action="store_true",
        help="stop after the full syncs, their baselines (and --dask): no source changes, "
        "no incremental rounds, no check against a full sync of the changed sources; for the "
        "growth run, --customers 1000000 --repeat 1 --full-only (about 40 minutes here)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="create the temporary project under DIR (default: the system "
        "temp dir); the disk behind it matters",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary project instead of deleting it"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="TOP",
        help="after the timed runs, profile one more incremental sync (after a further 1%% "
        "change) and one more full sync, and print their TOP entries by cumulative and by "
        "own time on stderr (default: off)",
    )
    args = parser.parse_args(argv)
    if args.customers < 1 or args.repeat < 1 or args.workers < 1 or args.profile < 0:
        parser.error("--customers, --repeat and --workers must be at least 1, --profile at least 0")
    return args


def sync_once(config_path: Path, store_dir: Path, placement: Placement) -> SyncRun:
    """Run a full sync into a fresh store, measure it, then time a no-change sync.

    Meant to run in a fresh child process (:func:`sync_in_child`): the resident-set mark and
    the CPU time it reads are the process's (and its descendants'), so only there are they
    the full sync's. The executor is opened (a Dask client connected) before the clock
    starts and closed after it stops.
    """
    shutil.rmtree(store_dir, ignore_errors=True)
    workers = placement.workers
    with (
        Project.open(config_path) as project,
        open_sync_executor(
            project, kind=placement.kind, workers=workers, scheduler=placement.scheduler
        ) as executor,
    ):
        rss_reset = reset_peak_rss()
        rss_before = current_rss_bytes() or peak_rss_bytes()
        sampler = ProcessTreeSampler(
            others=placement.cluster_pids,
            others_own=() if placement.scheduler_pid is None else (placement.scheduler_pid,),
        )
        # The CPU spent until materializing the online store starts: the sync proper's.
        before_materializing: list[CpuTime] = []

        def progress(label: str, done: int, total: int | None) -> None:
            if label.startswith("materialize") and not before_materializing:
                before_materializing.append(sampler.cpu_so_far())

        with sampler:
            began = time.perf_counter()
            report = sync_project(
                project, full=True, workers=workers, executor=executor, progress=progress
            )
            seconds = time.perf_counter() - began
        rss_peak = peak_rss_bytes()
        # Measured while the files are open: the last close checkpoints and removes the WAL.
        stats = project.store.stats()
        catalog_bytes = sum(sqlite_bytes(store_dir / "catalog.db"))
    shard_bytes_at_rest = sum(
        sum(sqlite_bytes(path)) for path in (store_dir / "shards").glob("shard-*.db")
    )
    catalog_bytes_at_rest = sum(sqlite_bytes(store_dir / "catalog.db"))
    # A new project, as a second `fabric sync` would open one.
    with (
        Project.open(config_path) as project,
        open_sync_executor(
            project, kind=placement.kind, workers=workers, scheduler=placement.scheduler
        ) as executor,
    ):
        began = time.perf_counter()
        noop_report = sync_project(project, full=False, workers=workers, executor=executor)
        noop_seconds = time.perf_counter() - began
    return SyncRun(
        seconds,
        report,
        stats,
        catalog_bytes,
        shard_bytes_at_rest,
        catalog_bytes_at_rest,
        noop_seconds,
        noop_report,
        rss_before,
        rss_peak,
        rss_reset,
        sampler.peak_descendant_bytes,
        sampler.peak_total_bytes,
        sampler.descendants,
        sampler.peak_total_pss_bytes,
        sampler.cpu,
        placement.kind,
        before_materializing[0] if before_materializing else None,
    )


def sync_in_child(config_path: Path, store_dir: Path, placement: Placement) -> SyncRun:
    """Run :func:`sync_once` in a freshly spawned process, so its memory is the sync's own.

    Spawned rather than forked, so the child does not start with the parent's pages (the
    generated rows, earlier runs) resident. Its ``ru_maxrss`` would still start at the
    parent's mark (Linux keeps it across fork and exec), hence VmHWM, reset before the sync.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(sync_once, config_path, store_dir, placement).result()


@dataclass(frozen=True)
class _Column:
    name: str
    declared_type: str
    not_null: bool
    key_position: int  # 1-based position in the primary key, 0 when not part of it


def _columns(source: apsw.Connection, table: str) -> list[_Column]:
    info = source.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
    return [_Column(str(c[1]), str(c[2]), bool(c[3]), int(c[5] or 0)) for c in info]


def copy_baseline(tables: Sequence[GeneratedTable], target: Path) -> BaselineRun:
    """Copy every source table into one new SQLite file with executemany; time read and write.

    Tables are named ``{system}_{table}`` (as fabric's single-database source layout does) and
    keep their columns, declared types and primary key, but neither foreign keys (checking them
    costs time the sync does not spend) nor secondary indexes (the store has none either).
    """
    for leftover in target.parent.glob(target.name + "*"):
        leftover.unlink()
    read_seconds = write_seconds = 0.0
    rows_total = 0
    conn = open_database(target)
    try:
        for table in tables:
            began = time.perf_counter()
            source = open_database(source_path(table), readonly=True)
            try:
                columns = _columns(source, table.name)
                names = ", ".join(quote_ident(c.name) for c in columns)
                keys = ", ".join(
                    quote_ident(c.name)
                    for c in sorted(columns, key=lambda c: c.key_position)
                    if c.key_position
                )
                rows = source.execute(
                    f"SELECT {names} FROM {quote_ident(table.name)} ORDER BY {keys}"
                ).fetchall()
            finally:
                source.close()
            read_seconds += time.perf_counter() - began

            began = time.perf_counter()
            name = quote_ident(f"{table.system}_{table.table}")
            defs = ", ".join(
                f"{quote_ident(c.name)} {c.declared_type}" + (" NOT NULL" if c.not_null else "")
                for c in columns
            )
            with conn:
                conn.execute(f"CREATE TABLE {name} ({defs}, PRIMARY KEY ({keys}))")
                conn.executemany(
                    f"INSERT INTO {name} VALUES ({', '.join('?' * len(columns))})", rows
                )
            write_seconds += time.perf_counter() - began
            rows_total += len(rows)
        file_bytes = sum(sqlite_bytes(target))
    finally:
        conn.close()
    return BaselineRun(
        read_seconds, write_seconds, rows_total, file_bytes, sum(sqlite_bytes(target))
    )


def incremental_once(
    config_path: Path, tables: Sequence[GeneratedTable], rng: random.Random, workers: int
) -> IncrementalRun:
    """Change the sources, then time an incremental sync in a newly opened project."""
    change = change_sources(tables, rng, CHANGED_FRACTION)
    with Project.open(config_path) as project:
        began = time.perf_counter()
        report = sync_project(project, workers=workers)
        seconds = time.perf_counter() - began
    return IncrementalRun(change, seconds, report)


def entities_once(
    config_path: Path, tables: Sequence[GeneratedTable], rng: random.Random, workers: int
) -> EntityRun:
    """Change 1% of the entities, then time an incremental sync in a newly opened project.

    The entities are drawn from those with crm.customers rows, as the store maps them now
    (read before the change, untimed); every one of their crm.customers rows is updated.
    """
    with Project.open(config_path) as project:
        entities = len(project.catalog.entities(ENTITY_TYPE))
        members: dict[str, list[str]] = defaultdict(list)
        for ref, entity_id in project.catalog.source_map(ENTITY_TYPE, [ENTITY_TABLE]).items():
            members[entity_id].append(ref.key)
    change = change_entities(tables, members, rng, max(1, round(entities * CHANGED_FRACTION)))
    with Project.open(config_path) as project:
        began = time.perf_counter()
        report = sync_project(project, workers=workers)
        seconds = time.perf_counter() - began
    return EntityRun(change, seconds, report)


def _partition(project: Project) -> set[frozenset[tuple[str, SourceRef]]]:
    """Every entity of the project as the set of its (entity type, source record) pairs."""
    groups: dict[tuple[str, str], set[tuple[str, SourceRef]]] = defaultdict(set)
    for entity_type in project.config.entities:
        for ref, entity_id in project.catalog.source_map(entity_type).items():
            groups[(entity_type, entity_id)].add((entity_type, ref))
    return {frozenset(members) for members in groups.values()}


def with_store(config_path: Path, name: str, store: str) -> Path:
    """Write a copy of a project's config (file ``name``, next to it) with another store path.

    The copy reads the same sources with the same rules and keys.
    """
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["store"]["path"] = store
    path = config_path.with_name(name)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def check_against_full(config_path: Path, workers: int) -> EqualityCheck:
    """Fully sync the (changed) sources into a second store and compare the partitions.

    The second project is the first one's config with only the store path changed.
    """
    check_path = with_store(config_path, CHECK_CONFIG, CHECK_STORE)
    with Project.open(config_path) as project:
        incremental = _partition(project)
    with Project.open(check_path) as project:
        shutil.rmtree(project.store_dir, ignore_errors=True)
        began = time.perf_counter()
        sync_project(project, full=True, workers=workers)
        seconds = time.perf_counter() - began
        full = _partition(project)
    return EqualityCheck(
        records=sum(len(members) for members in full),
        entities_incremental=len(incremental),
        entities_full=len(full),
        only_incremental=len(incremental - full),
        only_full=len(full - incremental),
        seconds=seconds,
    )


def _check(runs: Sequence[SyncRun], source_rows: int) -> None:
    """Warn on stderr when runs disagree or a sync did not do what the figures assume."""
    first = runs[0]
    for number, run in enumerate(runs, 1):
        # Blob sizes may differ by a few bytes between runs: images carry their build time.
        if run.report.entities != first.report.entities or run.stats.entities != run.entities:
            log(
                f"warning: run {number} resolved {run.report.entities} and stored "
                f"{run.stats.entities}, run 1 resolved {first.report.entities}: the figures "
                "mix runs that did different work"
            )
        if run.report.rows_read != source_rows:
            log(
                f"warning: run {number} read {run.report.rows_read} rows, the sources hold "
                f"{source_rows}"
            )
        if run.report.orphans:
            log(f"warning: run {number} skipped orphan rows: {run.report.orphans}")
        noop = run.noop_report
        # Incremental: only the entities holding rows at the watermarks are looked at.
        if (
            noop.mode != "incremental"
            or noop.created
            or noop.updated
            or noop.deleted
            or noop.merged
            or noop.split
            or noop.unchanged > run.entities
        ):
            log(
                f"warning: run {number}: the no-change sync ({noop.mode}) created "
                f"{noop.created}, updated {noop.updated}, deleted {noop.deleted}, merged "
                f"{noop.merged}, split {noop.split}, left {noop.unchanged} unchanged of "
                f"{run.entities}"
            )


def _check_incremental(rounds: Sequence[IncrementalRun]) -> None:
    """Warn on stderr when an incremental sync was not one, or read fewer rows than changed."""
    for number, run in enumerate(rounds, 1):
        report = run.report
        if report.mode != "incremental":
            log(f"warning: incremental round {number} ran as a {report.mode} sync")
        if report.rows_read < run.change.rows:
            log(
                f"warning: incremental round {number} read {report.rows_read} rows but "
                f"{run.change.rows} changed: changes were missed"
            )
        if report.deleted or report.orphans:
            log(
                f"warning: incremental round {number} deleted {report.deleted} entities and "
                f"skipped orphan rows {report.orphans}; the change only adds and edits rows"
            )


def _check_entity_rounds(rounds: Sequence[EntityRun]) -> None:
    """Warn on stderr when an entity round's sync was not incremental or missed entities."""
    for number, run in enumerate(rounds, 1):
        report = run.report
        if report.mode != "incremental":
            log(f"warning: entity round {number} ran as a {report.mode} sync")
        if run.touched < run.change.entities or report.rows_read < run.change.rows:
            log(
                f"warning: entity round {number} changed {run.change.entities} entities "
                f"({run.change.rows} rows) but the sync read {report.rows_read} rows and "
                f"updated or created {run.touched} entities"
            )
        if report.deleted or report.merged or report.split:
            log(
                f"warning: entity round {number} deleted {report.deleted}, merged "
                f"{report.merged}, split {report.split} entities; the change edits no identity"
            )


def _stage_fields(runs: Sequence[SyncRun]) -> dict[str, float]:
    """The sync proper (through its catalog commit) and the online store's materializing
    after it, apart: the report times the second."""
    materialize = statistics.median(r.report.materialize_seconds for r in runs)
    sync_only = statistics.median(r.sync_only_seconds for r in runs)
    return {
        "sync_only_seconds_median": sync_only,
        "sync_only_entities_per_s": rate(runs[0].entities, sync_only),
        "materialize_seconds_median": materialize,
    }


def _cpu_fields(runs: Sequence[SyncRun]) -> dict[str, object]:
    """JSON fields of the full syncs' CPU time per entity: median, runs, median parts."""
    per_entity = [r.cpu_us_per_entity for r in runs]

    def part(seconds: Callable[[CpuTime], float]) -> float:
        return statistics.median(rate(seconds(r.cpu) * 1e6, r.entities) for r in runs)

    return {
        "cpu_seconds_median": statistics.median(r.cpu.total for r in runs),
        "cpu_us_per_entity_median": statistics.median(per_entity),
        "cpu_us_per_entity_runs": per_entity,
        "cpu_us_per_entity_parts_median": {
            "sync_process": part(lambda c: c.process),
            "reaped_children": part(lambda c: c.reaped),
            "descendants": part(lambda c: c.descendants),
            "cluster_workers": part(lambda c: c.others),
            "scheduler_process": part(lambda c: c.others_own),
        },
        "cpu_sampler_seconds_median": statistics.median(r.cpu.sampler for r in runs),
        **_cpu_stage_fields(runs),
        "target_cpu_us_per_entity": TARGET_CPU_US_PER_ENTITY,
    }


def _cpu_stage_fields(runs: Sequence[SyncRun]) -> dict[str, object]:
    """The CPU per entity of the sync proper and of materializing the online store after it
    (vectors and masked documents), medians over the runs; none when no run materialized."""
    split = [(r, r.sync_cpu) for r in runs if r.sync_cpu is not None]
    if not split:
        return {}
    sync_only = [rate(before.total * 1e6, r.entities) for r, before in split]
    materialize = [rate((r.cpu.total - before.total) * 1e6, r.entities) for r, before in split]
    return {
        "cpu_us_per_entity_sync_only_median": statistics.median(sync_only),
        "cpu_us_per_entity_materialize_median": statistics.median(materialize),
    }


def report_figures(
    customers: int,
    tables: int,
    workers: int,
    runs: Sequence[SyncRun],
    baselines: Sequence[BaselineRun],
) -> None:
    """Print the JSON figures of the repeated runs."""
    first = runs[0]
    entities, rows = first.entities, first.report.rows_read
    sync_t = Timings.of([r.seconds for r in runs])
    noop_t = Timings.of([r.noop_seconds for r in runs])
    base_t = Timings.of([b.seconds for b in baselines])
    base_rows = baselines[0].rows
    sync_rps, base_rps = rate(rows, sync_t.median), rate(base_rows, base_t.median)
    emit(
        {
            "what": "full_sync",
            "customers": customers,
            "entities": entities,
            "entities_by_type": first.report.entities,
            "rows": rows,
            "created": first.report.created,
            **sync_t.fields(),
            "entities_per_s": rate(entities, sync_t.median),
            "rows_per_s": sync_rps,
            "reported_seconds_median": statistics.median(r.report.seconds for r in runs),
            **_stage_fields(runs),
            "workers": workers,
            "executor": first.executor,
            "target_entities_per_s": TARGET_ENTITIES_PER_S,
            **_cpu_fields(runs),
        }
    )
    peaks = [r.rss_peak_bytes / MIB for r in runs]
    befores = [r.rss_before_bytes / MIB for r in runs]
    emit(
        {
            "what": "full_sync_memory",
            "customers": customers,
            "entities": entities,
            "n": len(runs),
            "peak_rss_mib": max(peaks),
            "peak_rss_mib_runs": peaks,
            "rss_before_sync_mib": statistics.median(befores),
            "sync_growth_mib": max(p - b for p, b in zip(peaks, befores, strict=True)),
            "workers": workers,
            "workers_seen": max(r.workers_seen for r in runs),
            "worker_peak_rss_mib": max(r.workers_peak_bytes for r in runs) / MIB,
            "total_peak_rss_mib_sampled": max(r.total_peak_bytes for r in runs) / MIB,
            "total_peak_pss_mib_sampled": max(r.total_peak_pss_bytes for r in runs) / MIB,
            "target_total_peak_rss_mib": TARGET_TOTAL_PEAK_RSS_MIB,
            "method": (
                "VmHWM of a spawned child, reset just before the full sync, read right after"
                if all(r.rss_reset for r in runs)
                else "ru_maxrss of a spawned child (also counts the parent's peak)"
            ),
        }
    )
    emit(
        {
            "what": "noop_sync",
            "customers": customers,
            "entities": entities,
            "rows": rows,
            "mode": first.noop_report.mode,
            "rows_read": first.noop_report.rows_read,
            "unchanged": first.noop_report.unchanged,
            **noop_t.fields(),
            "entities_per_s": rate(entities, noop_t.median),
            "rows_per_s": rate(first.noop_report.rows_read, noop_t.median),
            "over_full_sync": noop_t.median / sync_t.median,
        }
    )
    emit(
        {
            "what": "baseline_executemany_copy",
            "customers": customers,
            "rows": base_rows,
            "tables": tables,
            **base_t.fields(),
            "read_seconds_median": statistics.median(b.read_seconds for b in baselines),
            "write_seconds_median": statistics.median(b.write_seconds for b in baselines),
            "rows_per_s": base_rps,
            "entities_per_s": rate(entities, base_t.median),
            "file_bytes": baselines[0].file_bytes,
            "file_bytes_at_rest": baselines[0].file_bytes_at_rest,
            "bytes_per_entity": baselines[0].file_bytes / entities,
        }
    )
    paired = [
        rate(r.report.rows_read, r.seconds) / rate(b.rows, b.seconds)
        for r, b in zip(runs, baselines, strict=True)
    ]
    # The same without materializing the online store: what the floor is comparable with
    # (it stores rows and builds nothing to serve), and what issue 18's figures of the day
    # it was filed measured (materializing came into the sync later).
    sync_only_rps = rate(rows, statistics.median(r.sync_only_seconds for r in runs))
    paired_sync_only = [
        rate(r.report.rows_read, r.sync_only_seconds) / rate(b.rows, b.seconds)
        for r, b in zip(runs, baselines, strict=True)
    ]
    emit(
        {
            "what": "ratio",
            "n": len(paired),
            "sync_rows_per_s_over_baseline": sync_rps / base_rps if base_rps else 0.0,
            "sync_rows_per_s_over_baseline_paired_median": statistics.median(paired),
            "baseline_times_faster": base_rps / sync_rps if sync_rps else 0.0,
            "sync_only_rows_per_s_over_baseline": sync_only_rps / base_rps if base_rps else 0.0,
            "sync_only_rows_per_s_over_baseline_paired_median": statistics.median(paired_sync_only),
            "target_rows_per_s_over_baseline": TARGET_FLOOR_RATIO,
        }
    )
    stats = first.stats
    emit(
        {
            "what": "store_bytes",
            "entities": entities,
            "shards": stats.partitions,
            "blob_bytes": stats.blob_bytes,
            "file_bytes": stats.file_bytes,
            "blob_bytes_per_entity": stats.blob_bytes / entities,
            "file_bytes_per_entity": stats.file_bytes / entities,
            "file_bytes_at_rest_per_entity": first.shard_bytes_at_rest / entities,
            "catalog_bytes_per_entity": first.catalog_bytes / entities,
            "catalog_bytes_at_rest_per_entity": first.catalog_bytes_at_rest / entities,
            "baseline_bytes_per_entity": baselines[0].file_bytes / entities,
            "baseline_bytes_at_rest_per_entity": baselines[0].file_bytes_at_rest / entities,
        }
    )


def _against_full(runs: Sequence[SyncRun], touched: int, timings: Timings) -> dict[str, Any]:
    """An incremental figure's rates against the full sync's: entities/s and speed-up."""
    full_median = statistics.median(r.seconds for r in runs)
    full_entities_per_s = rate(runs[0].entities, full_median)
    return {
        "touched_entities_per_s": rate(touched, timings.median),
        "full_entities_per_s": full_entities_per_s,
        "over_full_entities_per_s": rate(rate(touched, timings.median), full_entities_per_s),
        "target_over_full": TARGET_INCREMENTAL_OVER_FULL,
        "full_seconds_median": full_median,
        "full_over_incremental": rate(full_median, timings.median),
        "target_ratio": TARGET_FULL_OVER_INCREMENTAL,
    }


def report_incremental(
    customers: int, runs: Sequence[SyncRun], rounds: Sequence[IncrementalRun]
) -> None:
    """Print the incremental figure: one 1% change per round, against the full sync."""
    timings = Timings.of([r.seconds for r in rounds])
    touched = statistics.median_low(r.report.updated + r.report.created for r in rounds)

    def median(count: Callable[[IncrementalRun], int]) -> int:
        # The lower median: a count some round actually had.
        return statistics.median_low(count(r) for r in rounds)

    first = rounds[0].change
    emit(
        {
            "what": "incremental_sync",
            "customers": customers,
            "entities": sum(rounds[-1].report.entities.values()),
            "changed_fraction": CHANGED_FRACTION,
            "rows_changed": median(lambda r: r.change.rows),
            "rows_updated_by_table": first.updated,
            "rows_inserted_by_table": first.inserted,
            "rows_read": median(lambda r: r.report.rows_read),
            "entities_updated": median(lambda r: r.report.updated),
            "entities_created": median(lambda r: r.report.created),
            "entities_unchanged": median(lambda r: r.report.unchanged),
            "entities_merged": median(lambda r: r.report.merged),
            "entities_split": median(lambda r: r.report.split),
            **timings.fields(),
            "rows_per_s": rate(median(lambda r: r.report.rows_read), timings.median),
            "entities_touched": touched,
            **_against_full(runs, touched, timings),
        }
    )


def report_entity_rounds(
    customers: int, runs: Sequence[SyncRun], rounds: Sequence[EntityRun]
) -> None:
    """Print the entity-round figure: 1% of the entities changed per round, against full."""
    timings = Timings.of([r.seconds for r in rounds])

    def median(count: Callable[[EntityRun], int]) -> int:
        return statistics.median_low(count(r) for r in rounds)

    touched = median(lambda r: r.touched)
    emit(
        {
            "what": "incremental_sync_entities",
            "customers": customers,
            "entities": sum(rounds[-1].report.entities.values()),
            "changed_fraction": CHANGED_FRACTION,
            "entities_changed": median(lambda r: r.change.entities),
            "rows_changed": median(lambda r: r.change.rows),
            "rows_read": median(lambda r: r.report.rows_read),
            "entities_updated": median(lambda r: r.report.updated),
            "entities_created": median(lambda r: r.report.created),
            "entities_unchanged": median(lambda r: r.report.unchanged),
            "entities_touched": touched,
            **timings.fields(),
            **_against_full(runs, touched, timings),
        }
    )


def report_dask(
    customers: int,
    workers: int,
    runs: Sequence[SyncRun],
    dask_runs: Sequence[SyncRun],
    comparison: StoreComparison,
) -> None:
    """Print the Dask full syncs against the full_sync line, and whether their stores agree."""
    first = dask_runs[0]
    entities = first.entities
    timings = Timings.of([r.seconds for r in dask_runs])
    local_rate = rate(runs[0].entities, statistics.median(r.seconds for r in runs))
    dask_rate = rate(entities, timings.median)
    emit(
        {
            "what": "dask_full_sync",
            "customers": customers,
            "entities": entities,
            "rows": first.report.rows_read,
            "created": first.report.created,
            "workers": workers,
            **timings.fields(),
            "entities_per_s": dask_rate,
            "local_entities_per_s": local_rate,
            "local_executor": runs[0].executor,
            "over_local": rate(dask_rate, local_rate),
            **_stage_fields(dask_runs),
            "target_over_local": TARGET_DASK_OVER_LOCAL,
            **_cpu_fields(dask_runs),
            "total_peak_rss_mib_sampled": max(r.total_peak_bytes for r in dask_runs) / MIB,
            "target_total_peak_rss_mib": TARGET_TOTAL_PEAK_RSS_MIB,
            "identical_store": comparison.identical,
            "store_differences": comparison.fields(),
        }
    )


def report_equality(check: EqualityCheck, rounds: int) -> None:
    """Print whether the incremental store partitions the records as a full sync does."""
    emit(
        {
            "what": "incremental_equals_full",
            "equal": check.equal,
            "incremental_rounds": rounds,
            "records": check.records,
            "entities_incremental": check.entities_incremental,
            "entities_full": check.entities_full,
            "only_incremental": check.only_incremental,
            "only_full": check.only_full,
            "n": 1,
            "seconds": check.seconds,
            "entities_per_s": rate(check.entities_full, check.seconds),
        }
    )


def _profiled(what: str, call: Callable[[], SyncReport], top: int) -> None:
    """Run ``call`` under cProfile and print its ``top`` entries by cumulative time on stderr.

    Kept apart from the timed runs: the profiler slows Python code several times over.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    report = call()
    profiler.disable()
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        log(f"profile of one {what} ({report.rows_read} rows read), by {order}:")
        log(out.getvalue())


def profile_incremental(
    config_path: Path, tables: Sequence[GeneratedTable], rng: random.Random, top: int
) -> None:
    """Apply one more 1% change and profile the incremental sync that picks it up."""
    change_sources(tables, rng, CHANGED_FRACTION)
    with Project.open(config_path) as project:
        _profiled("incremental sync", lambda: sync_project(project), top)


def profile_sync(config_path: Path, store_dir: Path, top: int) -> None:
    """Profile one more full sync into a fresh store; print the top entries on stderr.

    In one process (workers=1): the profiler sees only its own process, and worker
    processes would hide the building of the entities from it.
    """
    shutil.rmtree(store_dir, ignore_errors=True)
    with Project.open(config_path) as project:
        _profiled("full sync", lambda: sync_project(project, full=True, workers=1), top)


def store_of(config_path: Path) -> Path:
    """The store directory of a project's config."""
    with Project.open(config_path) as project:
        return project.store_dir


def dask_full_syncs(
    args: argparse.Namespace,
    config_path: Path,
    runs: Sequence[SyncRun],
    cluster: LoopbackCluster,
) -> None:
    """Time --repeat full syncs on the Dask cluster; compare their store with a local one.

    The local store is the last full_sync run's (after its no-change sync, as the Dask runs'
    stores are); when those ran on Dask too, one more local run (untimed figures) makes one.
    """
    dask_config = with_store(config_path, DASK_CONFIG, DASK_STORE)
    dask_store = store_of(dask_config)
    placement = Placement.on("dask", args.workers, cluster)
    dask_runs: list[SyncRun] = []
    for number in range(1, args.repeat + 1):
        run = sync_in_child(dask_config, dask_store, placement)
        dask_runs.append(run)
        log(
            f"dask run {number}/{args.repeat}: full sync {run.seconds:.2f} s ({run.entities} "
            f"entities, {run.cpu_us_per_entity:.0f} CPU us per entity)"
        )
    _check(dask_runs, runs[0].report.rows_read)
    reference = config_path
    if runs[0].executor != "local":
        reference = with_store(config_path, LOCAL_CONFIG, LOCAL_STORE)
        log("a local full sync to compare the Dask store with")
        sync_in_child(reference, store_of(reference), Placement.on("local", args.workers, None))
    log("comparing the Dask store with the local one, entity by entity")
    comparison = compare_stores(reference, dask_config)
    if not comparison.identical:
        log(f"warning: the Dask store differs from the local one: {comparison.fields()}")
    report_dask(args.customers, args.workers, runs, dask_runs, comparison)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the sources once, repeat sync and baseline, then change and sync incrementally."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fabric-sync-bench-", dir=args.workdir))
    config_path = workdir / "project" / "fabric.yaml"
    cluster: LoopbackCluster | None = None
    try:
        log(f"generating {args.customers} customers (seed {args.seed}) in {workdir}")
        began = time.perf_counter()
        demo = create_demo_project(config_path.parent, customers=args.customers, seed=args.seed)
        wall = time.perf_counter() - began
        assert demo.generation is not None  # a new directory is always generated
        tables = demo.generation.tables
        source_rows = sum(t.rows for t in tables)
        emit(
            {
                "what": "generate",
                "customers": args.customers,
                "seed": args.seed,
                "tables": len(tables),
                "rows": source_rows,
                "n": 1,
                "seconds": demo.generation.seconds,
                "wall_seconds": wall,
                "rows_per_s": rate(source_rows, demo.generation.seconds),
            }
        )
        store_dir = store_of(config_path)
        baseline_path = workdir / "baseline" / BASELINE_FILE
        baseline_path.parent.mkdir()
        if args.executor == "dask":
            cluster = LoopbackCluster(args.workers)
        placement = Placement.on(args.executor, args.workers, cluster)
        runs: list[SyncRun] = []
        baselines: list[BaselineRun] = []
        for number in range(1, args.repeat + 1):
            run = sync_in_child(config_path, store_dir, placement)
            runs.append(run)
            log(
                f"run {number}/{args.repeat}: full sync {run.seconds:.2f} s "
                f"({run.report.rows_read} rows, {run.entities} entities, peak RSS "
                f"{run.rss_peak_bytes / MIB:.0f} MiB, {run.cpu_us_per_entity:.0f} CPU us per "
                f"entity), no-change sync {run.noop_seconds:.2f} s"
            )
            baseline = copy_baseline(tables, baseline_path)
            baselines.append(baseline)
            log(
                f"run {number}/{args.repeat}: baseline copy {baseline.seconds:.2f} s "
                f"(read {baseline.read_seconds:.2f} s, write {baseline.write_seconds:.2f} s)"
            )
        _check(runs, source_rows)
        report_figures(args.customers, len(tables), args.workers, runs, baselines)
        if args.dask:
            # Started outside every timed region; its workers stay up for all the runs.
            cluster = cluster or LoopbackCluster(args.workers)
            dask_full_syncs(args, config_path, runs, cluster)
        if cluster is not None:
            cluster.close()
            cluster = None
        if args.full_only:
            return 0

        # From here on the sources change: the figures above are for the generated ones.
        rng = random.Random(f"sync_bench changes {args.seed}")
        rounds: list[IncrementalRun] = []
        for number in range(1, args.repeat + 1):
            step = incremental_once(config_path, tables, rng, args.workers)
            rounds.append(step)
            log(
                f"round {number}/{args.repeat}: changed {step.change.rows} rows, incremental "
                f"sync {step.seconds:.2f} s ({step.report.rows_read} rows read, "
                f"{step.report.updated} entities updated, {step.report.created} created)"
            )
        _check_incremental(rounds)
        report_incremental(args.customers, runs, rounds)

        entity_rng = random.Random(f"sync_bench entity changes {args.seed}")
        entity_rounds: list[EntityRun] = []
        for number in range(1, args.repeat + 1):
            entity_step = entities_once(config_path, tables, entity_rng, args.workers)
            entity_rounds.append(entity_step)
            log(
                f"entity round {number}/{args.repeat}: changed {entity_step.change.entities} "
                f"entities ({entity_step.change.rows} rows), incremental sync "
                f"{entity_step.seconds:.2f} s ({entity_step.report.rows_read} rows read, "
                f"{entity_step.report.updated} entities updated, {entity_step.report.created} "
                "created)"
            )
        _check_entity_rounds(entity_rounds)
        report_entity_rounds(args.customers, runs, entity_rounds)
        if args.profile:
            profile_incremental(config_path, tables, rng, args.profile)
        log("checking the incremental store against a full sync of the changed sources")
        check = check_against_full(config_path, args.workers)
        report_equality(check, len(rounds) + len(entity_rounds) + (1 if args.profile else 0))
        if args.profile:
            profile_sync(config_path, store_dir, args.profile)
    finally:
        if cluster is not None:
            cluster.close()
        if args.keep:
            log(f"kept the project: {config_path}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
