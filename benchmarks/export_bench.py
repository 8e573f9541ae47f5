"""Benchmark feature exports and online feature vectors.

Usage: ``python benchmarks/export_bench.py [--customers N | --project DIR] [--rows R] [--workers W]
[--repeat K]``

A demo project of N customers (default 10,000; the issue's figure is 100,000 with a spine of
1,000,000 rows) is generated and synced (not timed), or ``--project`` names one already synced
(`fabric demo --no-serve --dir DIR --customers N`), to measure again without waiting. A spine
of R rows (default 10 per customer) over random entities and times is written as Parquet.
Then, with a baseline measured in the same run:

  export          `customer_360` over the spine to Parquet with ``--workers`` processes:
                  in a fresh process each time: spine rows/s (median of K), and memory: the
                  exporting process's peak, the largest peak of any process, and the sampled
                  total of the process and its workers (resident, and proportional: pages
                  the forked workers share counted once). Targets: >= 100,000 rows/s with 2
                  workers, <= 1 GiB.
  baseline        the same windowed aggregation (orders in the 90 days before each spine
                  time: count and sum) done by one SQL query over every order and the spine
                  in one plain SQLite database.
  online          one feature vector computed in-process (`FeatureService.vector`, entity
                  cache cold): median and p99. Target: <= 1 ms median.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MIB,
    DescendantMemory,
    Timings,
    emit,
    log,
    rate,
    synced_demo,
)

from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService

VIEW = "customer_360"

#: One export in a fresh process, to a local path or an s3:// URL: its time (the export
#: alone, not Python's start) and peak.
EXPORT_CHILD = """
import json, sys, time
from pathlib import Path
from fabric.objects import parse_location
from fabric.project import Project
from fabric.services.export import export_view
config, view, spine, out, workers = sys.argv[1:6]
with Project.open(Path(config)) as project:
    started = time.perf_counter()
    export_view(project, view, parse_location(out), spine=Path(spine), workers=int(workers))
    seconds = time.perf_counter() - started
with open("/proc/self/status") as status:
    peak = next((int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:")), 0)
print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak}))
"""


def write_spine(ids: list[str], rows: int, path: Path, seed: int) -> None:
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    pq.write_table(
        pa.table(
            {
                "entity_id": [rng.choice(ids) for _ in range(rows)],
                "event_timestamp": [
                    (start + timedelta(seconds=rng.randrange(3 * 365 * 86400))).isoformat()
                    for _ in range(rows)
                ],
                "label": [rng.random() < 0.1 for _ in range(rows)],
            }
        ),
        path,
    )


def plain_baseline(project: Project, ids: list[str], spine: Path, db: Path) -> tuple[float, int]:
    """Seconds of one SQL query computing count and sum of orders in [t - 90d, t) per row."""
    service = EntityService(project)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (entity_id TEXT, ordered_at TEXT, total REAL)")
    conn.execute("CREATE TABLE spine (idx INTEGER, entity_id TEXT, t TEXT)")
    for entity_id in ids:
        rows = service.document("customer", entity_id, role="steward")["tables"]["shop_orders"]
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(entity_id, r["ordered_at"], r["total"]) for r in rows],
        )
    table = pq.read_table(spine).to_pydict()
    conn.executemany(
        "INSERT INTO spine VALUES (?, ?, ?)",
        [
            (i, e, t)
            for i, (e, t) in enumerate(
                zip(table["entity_id"], table["event_timestamp"], strict=True)
            )
        ],
    )
    conn.execute("CREATE INDEX orders_by_entity ON orders (entity_id, ordered_at)")
    conn.commit()
    started = time.perf_counter()
    out = conn.execute(
        "SELECT s.idx, count(o.total), coalesce(sum(o.total), 0) FROM spine s "
        "LEFT JOIN orders o ON o.entity_id = s.entity_id "
        "AND o.ordered_at >= datetime(s.t, '-90 days') AND o.ordered_at < s.t "
        "GROUP BY s.idx ORDER BY s.idx"
    ).fetchall()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds, len(out)


@contextmanager
def bench_project(args: argparse.Namespace, name: str) -> Iterator[tuple[Project, Path]]:
    """The project to export from (``--project``, else a synced demo of ``--customers``),
    and a scratch directory for spines and outputs (``name`` names both)."""
    if args.project is None:
        with synced_demo(name, args.customers, args.seed) as found:
            yield found
        return
    with (
        Project.open(args.project / "fabric.yaml") as project,
        tempfile.TemporaryDirectory(prefix=f"fabric-{name}-bench-") as scratch,
    ):
        yield project, Path(scratch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=None, help="spine rows (default 10 each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--project",
        type=Path,
        default=None,
        help="a synced demo project directory to use instead of generating one (--customers "
        "is then ignored); it is only read",
    )
    args = parser.parse_args()
    with bench_project(args, "export") as (project, root):
        rows = args.rows or 10 * project.catalog.count("customer")
        ids = sorted(project.catalog.entities("customer"))
        spine = root / "spine.parquet"
        write_spine(ids, rows, spine, args.seed)
        log(f"spine of {rows} rows over {len(ids)} entities; exporting {args.repeat} times")
        runs, peaks, worker_peaks, totals, proportional = [], [], [], [], []
        for attempt in range(args.repeat):
            # In a process of its own, as `fabric export` runs: this one's memory holds the
            # spine it wrote and the ids it drew, which are not the export's.
            with DescendantMemory() as memory:
                child = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        EXPORT_CHILD,
                        str(project.config.path),
                        VIEW,
                        str(spine),
                        str(root / f"out{attempt}.parquet"),
                        str(args.workers),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            done = json.loads(child.stdout)
            runs.append(done["seconds"])
            peaks.append(done["peak_rss_bytes"])
            worker_peaks.append(memory.peak_descendant_bytes)
            totals.append(memory.peak_total_bytes)
            proportional.append(memory.peak_total_pss_bytes)
            log(f"  export {attempt + 1}: {runs[-1]:.1f} s")
        timed = Timings.of(runs)
        base_seconds, base_rows = plain_baseline(project, ids, spine, root / "plain.db")
        emit(
            {
                "what": "export",
                "view": VIEW,
                "rows": rows,
                "entities": len(ids),
                "workers": args.workers,
                **timed.fields(),
                "rows_per_s": rate(rows, timed.median),
                "target_rows_per_s": 100_000,
                "peak_rss_mib": max(peaks) / MIB,
                "any_process_peak_rss_mib": max(worker_peaks) / MIB,
                "peak_total_rss_mib_sampled": max(totals) / MIB,
                "peak_total_pss_mib_sampled": max(proportional) / MIB,
                "target_peak_mib": 1024,
                "baseline_one_sql_query_seconds": base_seconds,
                "baseline_rows_per_s": rate(base_rows, base_seconds),
                "baseline_note": "count and sum of orders in [t - 90d, t): 2 of 10 features",
            }
        )
        service = FeatureService(project)
        sample = random.Random(args.seed).choices(ids, k=2000)
        latencies = []
        for entity_id in sample:
            service.entities._cache.clear()  # cold: decode the entity every time
            started = time.perf_counter()
            service.vector(VIEW, entity_id, as_of="2026-06-01T00:00:00Z")
            latencies.append(time.perf_counter() - started)
        ordered = sorted(latencies)
        emit(
            {
                "what": "online_vector",
                "view": VIEW,
                "n": len(latencies),
                "median_us": statistics.median(latencies) * 1e6,
                "p99_us": ordered[int(0.99 * len(ordered))] * 1e6,
                "target_median_us": 1000,
            }
        )


if __name__ == "__main__":
    main()
