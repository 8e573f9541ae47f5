"""Time a full sync of the demo sources against the floor: one plain SQLite copy of the rows.

Prints one JSON object per line on stdout (progress goes to stderr):

  generate                   creating the synthetic sources (once; not repeated).
  full_sync                  sync_project(project, full=True) into an empty store: extract,
                             resolve, build one micro-database per entity, compress, store.
                             Timed around the call; medians over --repeat runs, each into a
                             fresh store (the store directory is deleted between runs).
  noop_sync                  a second sync (default mode, no --full) right after, in a newly
                             opened project, with every entity unchanged: the cost of
                             reading, resolving and fingerprinting alone.
  baseline_executemany_copy  the floor no per-entity design can beat: read every source table
                             (apsw, read-only) and copy its rows into ONE new SQLite file with
                             executemany, one transaction per table, same connection settings
                             as the store's shards (WAL, synchronous=NORMAL), no secondary
                             indexes. Timed from opening the sources to the last commit.
  ratio                      sync rows/s over baseline rows/s, from the medians and as the
                             median of the per-repeat (paired) ratios, which resists drift.
  store_bytes                bytes per entity: compressed blobs, shard files as they are on
                             disk after the sync (including -wal/-shm), the same after the
                             files are closed (WAL checkpointed away), the catalog, and the
                             baseline file for the same entity count.

Fields: "what", "n" (measurements), "*_median" (p50), "*_min", "*_max", "*_runs" in seconds,
rates per second named by unit ("rows_per_s", "entities_per_s"), sizes in bytes. The seed is
fixed, so runs with the same arguments do the same work; the times are not gated anywhere.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import Timings, emit, log, rate, sqlite_bytes
from sqlalchemy.engine import make_url

from fabric.demo import create_demo_project
from fabric.project import Project
from fabric.sources.generate import GeneratedTable
from fabric.store.base import StoreStats
from fabric.store.sqlite import apsw, open_database, quote_ident
from fabric.sync import SyncReport, sync_project

BASELINE_FILE = "baseline.db"


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

    @property
    def entities(self) -> int:
        """Entities of every type."""
        return sum(self.report.entities.values())


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--help`` explains every printed figure."""
    parser = argparse.ArgumentParser(
        prog="sync_bench.py",
        description="Benchmark a full fabric sync against a plain SQLite executemany copy.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=10_000,
        metavar="N",
        help="synthetic customers to generate (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        metavar="S",
        help="generator seed, fixed so runs are comparable (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="R",
        help="sync + baseline runs; medians are quoted (default: %(default)s)",
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
        help="after the timed runs, profile one more full sync and print its "
        "TOP entries by cumulative time on stderr (default: off)",
    )
    args = parser.parse_args(argv)
    if args.customers < 1 or args.repeat < 1 or args.profile < 0:
        parser.error("--customers and --repeat must be at least 1, --profile at least 0")
    return args


def sync_once(config_path: Path, store_dir: Path) -> SyncRun:
    """Run a full sync into a fresh store, measure it, then time a no-change sync."""
    shutil.rmtree(store_dir, ignore_errors=True)
    with Project.open(config_path) as project:
        began = time.perf_counter()
        report = sync_project(project, full=True)
        seconds = time.perf_counter() - began
        # Measured while the files are open: the last close checkpoints and removes the WAL.
        stats = project.store.stats()
        catalog_bytes = sum(sqlite_bytes(store_dir / "catalog.db"))
    shard_bytes_at_rest = sum(
        sum(sqlite_bytes(path)) for path in (store_dir / "shards").glob("shard-*.db")
    )
    catalog_bytes_at_rest = sum(sqlite_bytes(store_dir / "catalog.db"))
    # A new project, as a second `fabric sync` would open one.
    with Project.open(config_path) as project:
        began = time.perf_counter()
        noop_report = sync_project(project, full=False)
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
    )


def _source_path(table: GeneratedTable) -> Path:
    url = make_url(table.url)
    if url.get_backend_name() != "sqlite" or not url.database:
        raise SystemExit(f"baseline reads SQLite source files only, got {url.get_backend_name()}")
    return Path(url.database)


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
            source = open_database(_source_path(table), readonly=True)
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
        if noop.created or noop.updated or noop.deleted or noop.unchanged != run.entities:
            log(
                f"warning: run {number}: the no-change sync created {noop.created}, updated "
                f"{noop.updated}, deleted {noop.deleted}, left {noop.unchanged} unchanged of "
                f"{run.entities}"
            )


def report_figures(
    customers: int, tables: int, runs: Sequence[SyncRun], baselines: Sequence[BaselineRun]
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
        }
    )
    emit(
        {
            "what": "noop_sync",
            "customers": customers,
            "entities": entities,
            "rows": rows,
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
    emit(
        {
            "what": "ratio",
            "n": len(paired),
            "sync_rows_per_s_over_baseline": sync_rps / base_rps if base_rps else 0.0,
            "sync_rows_per_s_over_baseline_paired_median": statistics.median(paired),
            "baseline_times_faster": base_rps / sync_rps if sync_rps else 0.0,
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


def profile_sync(config_path: Path, store_dir: Path, top: int) -> None:
    """Profile one more full sync into a fresh store; print the top entries on stderr.

    Kept apart from the timed runs: the profiler slows Python code several times over.
    """
    shutil.rmtree(store_dir, ignore_errors=True)
    profiler = cProfile.Profile()
    with Project.open(config_path) as project:
        profiler.enable()
        sync_project(project, full=True)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    log(out.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the sources once, then repeat sync and baseline; print the figures."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="fabric-sync-bench-", dir=args.workdir))
    config_path = workdir / "project" / "fabric.yaml"
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
        with Project.open(config_path) as project:
            store_dir = project.store_dir
        baseline_path = workdir / "baseline" / BASELINE_FILE
        baseline_path.parent.mkdir()
        runs: list[SyncRun] = []
        baselines: list[BaselineRun] = []
        for number in range(1, args.repeat + 1):
            run = sync_once(config_path, store_dir)
            runs.append(run)
            log(
                f"run {number}/{args.repeat}: full sync {run.seconds:.2f} s "
                f"({run.report.rows_read} rows, {run.entities} entities), "
                f"no-change sync {run.noop_seconds:.2f} s"
            )
            baseline = copy_baseline(tables, baseline_path)
            baselines.append(baseline)
            log(
                f"run {number}/{args.repeat}: baseline copy {baseline.seconds:.2f} s "
                f"(read {baseline.read_seconds:.2f} s, write {baseline.write_seconds:.2f} s)"
            )
        _check(runs, source_rows)
        report_figures(args.customers, len(tables), runs, baselines)
        if args.profile:
            profile_sync(config_path, store_dir, args.profile)
    finally:
        if args.keep:
            log(f"kept the project: {config_path}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
