"""Benchmark the shared deployment: a sync into PostgreSQL on Dask, and the API on PostgreSQL,
each against the embedded store measured in the same run.

Usage: ``python benchmarks/shared_bench.py [--customers N | --project DIR] [--workers W]
[--repeat K] [--http-rounds R] [--seconds S]``

A demo project of N customers (default 10,000; issue 19's figures are for 100,000) is generated,
or ``--project DIR`` names one (`fabric demo --no-serve --dir DIR --customers N`) whose sources
and rules are copied (its own store is never touched). A private PostgreSQL cluster
(``tests/pgcluster.py``) and a Dask ``LocalCluster`` of W single-threaded workers (default 2)
start outside every timed region. Then:

  sync            K rounds (default 1), turn about: a full sync into an empty embedded store
                  with W local workers, and a full sync into an empty PostgreSQL database
                  (``store.backend: postgres``) with the Dask executor on the cluster. Each in
                  a fresh process, timed around ``sync_project`` (materializing included, as
                  users run it). Entities/s of each and their ratio; issue 19 asks the
                  postgres one for >= 0.7x. The two stores are then compared entity by
                  entity (ids, versions, rows, lineage).
  http            ``benchmarks/http_bench.py`` on each project (granian, W workers, 32
                  connections), R rounds (default 2) turn about: uniform entity lookups and
                  vectors, req/s and p99. Issue 19 asks the postgres backend for >= 0.6x the
                  embedded req/s with p99 <= 25 ms. Before it, the Dask cluster is closed
                  and the postgres store gets ``VACUUM (ANALYZE)`` (its seconds are printed),
                  so the rounds measure the API nodes, not the workers' heartbeats or the
                  autovacuum that follows a bulk load.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from _cluster import LoopbackCluster
from _common import Timings, compare_stores, emit, log, rate
from pgcluster import PostgresCluster  # type: ignore[import-not-found]  # tests/, not a package

#: The variable the postgres project reads its URL from.
URL_ENV = "FABRIC_BENCH_STORE_URL"
TARGET_SYNC_RATIO = 0.7
TARGET_HTTP_RATIO = 0.6
TARGET_P99_MS = 25.0
_DATABASE = "fabric_bench"

#: One full sync in a fresh process: its seconds (around sync_project) and what it did.
_SYNC_CHILD = """
import json, sys, time
from pathlib import Path
from fabric.project import Project
from fabric.sync import open_sync_executor, sync_project
config, kind, workers, scheduler = sys.argv[1:5]
with (
    Project.open(Path(config)) as project,
    open_sync_executor(project, kind=kind, workers=int(workers), scheduler=scheduler or None)
    as executor,
):
    began = time.perf_counter()
    report = sync_project(project, full=True, workers=int(workers), executor=executor)
    seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "entities": sum(report.entities.values()),
                  "rows": report.rows_read, "mode": report.mode,
                  "materialize_seconds": report.materialize_seconds}))
"""


def _projects(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path]:
    """The embedded project and its postgres twin (same sources, rules and keys)."""
    embedded = scratch / "embedded"
    if args.project is None:
        from fabric.demo import create_demo_project

        log(f"generating {args.customers} customers in {embedded}")
        create_demo_project(embedded, customers=args.customers, seed=args.seed)
    else:
        log(f"copying {args.project} (its sources, rules and keys; not its store)")
        shutil.copytree(args.project, embedded, ignore=shutil.ignore_patterns("store"))
    shared = scratch / "postgres"
    shutil.copytree(embedded, shared, ignore=shutil.ignore_patterns("store"))
    doc = yaml.safe_load((shared / "fabric.yaml").read_text())
    doc["store"] = {**doc.get("store", {}), "backend": "postgres", "url_env": URL_ENV}
    (shared / "fabric.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return embedded / "fabric.yaml", shared / "fabric.yaml"


def _fresh_database(cluster: PostgresCluster) -> None:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {_DATABASE}")


def _settle(cluster: PostgresCluster) -> float:
    """``VACUUM (ANALYZE)`` the bench database: its seconds."""
    began = time.perf_counter()
    with psycopg.connect(cluster.dsn(_DATABASE), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - began


def _sync(config: Path, kind: str, workers: int, scheduler: str) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", _SYNC_CHILD, str(config), kind, str(workers), scheduler],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"the sync of {config} failed: {child.stderr[-2000:]}")
    done: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return done


def _http(project: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One round of http_bench.py on ``project``'s directory: its summary line."""
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "http_bench.py"),
            "--project",
            str(project.parent),
            "--servers",
            "granian",
            "--workers",
            str(args.workers),
            "--rounds",
            "1",
            "--seconds",
            str(args.seconds),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise SystemExit(f"http_bench on {project} failed: {child.stderr[-2000:]}")
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    summary: dict[str, Any] = next(line for line in lines if line["what"] == "http_summary")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--project", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--http-rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk scenario")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-http", action="store_true", help="the sync part only")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="fabric-shared-bench-") as tmp,
        PostgresCluster() as cluster,
        LoopbackCluster(args.workers) as dask,
    ):
        embedded, shared = _projects(args, Path(tmp))
        os.environ[URL_ENV] = cluster.url_for(_DATABASE)
        local_runs: list[float] = []
        shared_runs: list[float] = []
        paired: list[float] = []
        local_materialize: list[float] = []
        shared_materialize: list[float] = []
        entities = 0
        for attempt in range(args.repeat):
            ways = ["embedded", "postgres"] if attempt % 2 == 0 else ["postgres", "embedded"]
            seconds: dict[str, float] = {}
            materializing: dict[str, float] = {}
            for way in ways:
                if way == "embedded":
                    shutil.rmtree(embedded.parent / "store", ignore_errors=True)
                    done = _sync(embedded, "local", args.workers, "")
                else:
                    _fresh_database(cluster)
                    done = _sync(shared, "dask", args.workers, dask.address)
                seconds[way] = done["seconds"]
                materializing[way] = done["materialize_seconds"]
                entities = done["entities"]
                log(
                    f"  round {attempt + 1}: {way} {done['seconds']:.1f} s "
                    f"({done['materialize_seconds']:.1f} s materializing), "
                    f"{done['entities']} entities"
                )
            local_materialize.append(materializing["embedded"])
            shared_materialize.append(materializing["postgres"])
            local_runs.append(seconds["embedded"])
            shared_runs.append(seconds["postgres"])
            paired.append(seconds["embedded"] / seconds["postgres"])
        local, remote = Timings.of(local_runs), Timings.of(shared_runs)
        comparison = compare_stores(embedded, shared)
        emit(
            {
                "what": "shared_sync",
                "entities": entities,
                "workers": args.workers,
                "embedded_local": {
                    **local.fields(),
                    "entities_per_s": rate(entities, local.median),
                    "materialize_seconds_median": statistics.median(local_materialize),
                },
                "postgres_dask": {
                    **remote.fields(),
                    "entities_per_s": rate(entities, remote.median),
                    "materialize_seconds_median": statistics.median(shared_materialize),
                },
                "postgres_dask_over_embedded_local": local.median / remote.median,
                "paired_median": statistics.median(paired),
                "target_ratio": TARGET_SYNC_RATIO,
                "stores_identical": comparison.identical,
                "comparison": comparison.fields(),
            }
        )
        if args.skip_http:
            return
        # The API nodes are measured as they serve once the sync is over: the Dask workers
        # (other machines in a real deployment) are gone, and the freshly written tables
        # vacuumed and analyzed, as autovacuum would within a minute or two of the load.
        dask.close()
        settle = _settle(cluster)
        log(f"VACUUM (ANALYZE) of the postgres store: {settle:.1f} s (not timed)")
        rounds: dict[str, list[dict[str, Any]]] = {"embedded": [], "postgres": []}
        for attempt in range(args.http_rounds):
            ways = ["embedded", "postgres"] if attempt % 2 == 0 else ["postgres", "embedded"]
            for way in ways:
                summary = _http(embedded if way == "embedded" else shared, args)
                rounds[way].append(summary)
                log(
                    f"  http round {attempt + 1}: {way} entity {summary['entity_rps']:.0f}/s "
                    f"p99 {summary['entity_p99_ms']:.1f} ms, vector {summary['vector_rps']:.0f}/s "
                    f"p99 {summary['vector_p99_ms']:.1f} ms"
                )

        def median(way: str, figure: str) -> float:
            return float(statistics.median(r[figure] for r in rounds[way]))

        figures = {
            way: {
                figure: median(way, figure)
                for figure in ("entity_rps", "entity_p99_ms", "vector_rps", "vector_p99_ms")
            }
            for way in rounds
        }
        emit(
            {
                "what": "shared_http",
                "rounds": args.http_rounds,
                "workers": args.workers,
                "embedded": figures["embedded"],
                "postgres": figures["postgres"],
                "entity_rps_ratio": figures["postgres"]["entity_rps"]
                / figures["embedded"]["entity_rps"],
                "vector_rps_ratio": figures["postgres"]["vector_rps"]
                / figures["embedded"]["vector_rps"],
                "target_ratio": TARGET_HTTP_RATIO,
                "target_p99_ms": TARGET_P99_MS,
                "postgres_vacuum_analyze_seconds": settle,
            }
        )


if __name__ == "__main__":
    main()
