"""Benchmark masking: values per second per operator, and one whole entity for the default role.

Usage: ``python benchmarks/mask_bench.py [--customers N] [--values V] [--repeat R]``

A demo project of N customers (default 10,000) is generated and synced (not timed). Each
operator then masks V values (default 100,000) taken from the demo columns it is meant for
(emails, names, card numbers, dates, zip codes, ticket text), on one core, compiled once as
the API and exports compile them. The baseline, measured in the same run, is the same loop
calling a function that returns its input: what iterating and calling cost by themselves.
Then every entity's rows are masked for the default role, as an API lookup does.

Targets (issue 5): hash and tokenize >= 300,000 values/s; partial, redact and generalize
>= 1,000,000; fake >= 100,000; FF1 >= 20,000; a whole demo entity <= 200 us median.

Prints one JSON object per line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timings, emit, log, rate, synced_demo

from fabric.project import Project
from fabric.rules.operators import MaskContext, MaskFunction, MaskingKeys, compile_operator
from fabric.services.entities import EntityService

#: operator name -> (spec, source db, table, column, target values/s)
CASES: dict[str, tuple[dict[str, Any], str, str, str, int]] = {
    "hash": ({"op": "hash", "truncate": 16}, "crm", "customers", "email", 300_000),
    "tokenize": ({"op": "tokenize", "domain": "email"}, "crm", "customers", "email", 300_000),
    "partial": ({"op": "partial", "keep_last": 4}, "billing", "accounts", "card_number", 1_000_000),
    "redact": ({"op": "redact"}, "crm", "customers", "street", 1_000_000),
    "generalize_year": (
        {"op": "generalize", "to": "year"},
        "crm",
        "customers",
        "birth_date",
        1_000_000,
    ),
    "generalize_prefix": (
        {"op": "generalize", "to": "prefix", "keep": 2},
        "crm",
        "customers",
        "zip",
        1_000_000,
    ),
    "fake_first_name": (
        {"op": "fake", "provider": "first_name"},
        "crm",
        "customers",
        "first_name",
        100_000,
    ),
    "fpe_ff1": (
        {"op": "fpe", "alphabet": "digits", "keep_last": 4},
        "billing",
        "accounts",
        "card_number",
        20_000,
    ),
    "date_shift": ({"op": "date_shift"}, "crm", "customers", "birth_date", 0),
    "free_text": ({"op": "free_text"}, "support", "tickets", "body", 0),
}


def values_of(sources: Path, db: str, table: str, column: str, count: int) -> list[Any]:
    """``count`` values of one demo column, repeated in a shuffled order when it has fewer."""
    with sqlite3.connect(sources / f"{db}.db") as conn:
        found = [v for (v,) in conn.execute(f"SELECT {column} FROM {table}") if v is not None]
    rng = random.Random(7)
    rng.shuffle(found)
    return list(itertools.islice(itertools.cycle(found), count))


def time_mask(mask: MaskFunction, values: Sequence[Any], contexts: Sequence[MaskContext]) -> float:
    started = time.perf_counter()
    for value, ctx in zip(values, contexts, strict=True):
        mask(value, ctx)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with synced_demo("mask", args.customers, args.seed) as (project, root):
        master = project.secrets.master_key
        assert master is not None
        operators(root / "project" / "sources", MaskingKeys(master), args)
        entities(project, args)


def operators(sources: Path, keys: MaskingKeys, args: argparse.Namespace) -> None:
    from pydantic import TypeAdapter

    from fabric.rules.operators import OperatorSpec

    adapter: TypeAdapter[Any] = TypeAdapter(OperatorSpec)
    contexts = [MaskContext("customer", f"e{i % 5000}") for i in range(args.values)]

    def identity(value: Any, ctx: MaskContext) -> Any:
        return value

    for name, (spec, db, table, column, target) in CASES.items():
        values = values_of(sources, db, table, column, args.values)
        mask = compile_operator(adapter.validate_python(spec), keys, column)
        assert mask is not None
        mask(values[0], contexts[0])  # pools, caches: made once, as in a server
        runs, base = [], []
        for _ in range(args.repeat):
            base.append(time_mask(identity, values, contexts))
            runs.append(time_mask(mask, values, contexts))
        timed, baseline = Timings.of(runs), Timings.of(base)
        per_s = rate(len(values), timed.median)
        figure: dict[str, object] = {
            "what": "mask_operator",
            "operator": name,
            "spec": spec,
            "column": f"{db}.{table}.{column}",
            "values": len(values),
            **timed.fields(),
            "values_per_s": per_s,
            "us_per_value": timed.median / len(values) * 1e6,
            "baseline_call_values_per_s": rate(len(values), baseline.median),
            "over_baseline_time": timed.median / baseline.median,
        }
        if target:
            figure["target_values_per_s"] = target
            figure["meets_target"] = per_s >= target
        emit(figure)
        log(f"  {name}: {per_s:,.0f} values/s")


def entities(project: Project, args: argparse.Namespace) -> None:
    service = EntityService(project)
    policy = project.policy_for(None)
    ids = sorted(project.catalog.entities("customer"))
    reads = [(e, service._read(s)[1]) for e, s in _stored(project, ids)]
    samples: list[float] = []
    values = 0
    for _ in range(args.repeat):
        for entity_id, tables in reads:
            rows = copy.deepcopy(tables)
            started = time.perf_counter()
            policy.apply("customer", rows, entity_id)
            samples.append(time.perf_counter() - started)
            values += sum(len(r) for t in rows.values() for r in t)
    ordered = sorted(samples)
    emit(
        {
            "what": "mask_entity",
            "policy": policy.name,
            "entities": len(reads),
            "masks": len(samples),
            "values_per_entity": values / len(samples),
            "median_us": statistics.median(samples) * 1e6,
            "p99_us": ordered[int(0.99 * len(ordered))] * 1e6,
            "target_median_us": 200,
            "meets_target": statistics.median(samples) * 1e6 <= 200,
        }
    )


def _stored(project: Project, ids: Sequence[str]) -> list[tuple[str, Any]]:
    found = project.store.get_many("customer", ids)
    return [(e, found[e]) for e in ids if e in found]


if __name__ == "__main__":
    main()
