"""Benchmark feature exports and online feature vectors.

Usage: ``python benchmarks/export_bench.py [--customers N] [--rows R] [--workers W] [--repeat K]``

A demo project of N customers (default 10,000; the issue's figure is 100,000 with a spine of
1,000,000 rows) is generated and synced (not timed). A spine of R rows (default 10 per
customer) over random entities and times is written as Parquet. Then, with a baseline
measured in the same run:

  export          `customer_360` over the spine to Parquet with ``--workers`` processes:
                  spine rows/s (median of K), peak memory of the exporting process and its
                  workers. Targets: >= 100,000 rows/s with 2 workers, <= 1 GiB.
  baseline        the same windowed aggregation (orders in the 90 days before each spine
                  time: count and sum) done by one SQL query over every order and the spine
                  in one plain SQLite database.
  online          one feature vector computed in-process (`FeatureService.vector`, entity
                  cache cold): median and p99. Target: <= 1 ms median.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
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
    peak_rss_bytes,
    rate,
    reset_peak_rss,
    synced_demo,
)

from fabric.entities import EntityService
from fabric.features.export import export_view
from fabric.features.service import FeatureService
from fabric.project import Project

VIEW = "customer_360"


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=None, help="spine rows (default 10 each)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rows = args.rows or 10 * args.customers
    with synced_demo("export", args.customers, args.seed) as (project, root):
        ids = sorted(project.catalog.entities("customer"))
        spine = root / "spine.parquet"
        write_spine(ids, rows, spine, args.seed)
        log(f"spine of {rows} rows over {len(ids)} entities; exporting {args.repeat} times")
        runs, peaks, worker_peaks = [], [], []
        for attempt in range(args.repeat):
            reset_peak_rss()
            with DescendantMemory() as memory:
                started = time.perf_counter()
                export_view(
                    project,
                    VIEW,
                    root / f"out{attempt}.parquet",
                    spine=spine,
                    workers=args.workers,
                )
                runs.append(time.perf_counter() - started)
            peaks.append(peak_rss_bytes())
            worker_peaks.append(memory.peak_descendant_bytes)
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
                "worker_peak_rss_mib": max(worker_peaks) / MIB,
                "peak_total_rss_mib_bound": (max(peaks) + args.workers * max(worker_peaks)) / MIB,
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
