"""Benchmark expressions: an ingest transform's derived column, per row.

Usage: ``python benchmarks/expr_bench.py [--rows N] [--repeat R]``

A table of N rows (default 100,000; seeded, so every run reads the same rows) is transformed
by the demo's derived column (the email's provider when it is a common free one, else
"other": ``rules/transforms.yaml``), compiled once as a sync compiles it, and timed per row:

- ``transform``: the table's transform (``TableTransform.apply``) with the derived column;
- ``transform_without_derive``: the same transform without it (the rest of the row's work),
  so the difference is what the expression costs;
- ``compiled``: the expression alone, compiled by :mod:`fabric.expressions` (a tree that has
  no such module prints no such figure), on the rows as transformed;
- baseline, in the same run: the same expression evaluated by ``simpleeval`` from a dict of
  the row's values, as ingest transforms evaluated it before they were compiled (when
  ``simpleeval`` is installed; else ``eval`` of its compiled code object, the floor of any
  evaluator that is handed a dict of names), on the rows as transformed.

The script reads the transform through its public API (``load_transforms``), so it measures
an older tree as well: ``PYTHONPATH=OLD_TREE python benchmarks/expr_bench.py``.

Prints one JSON object per line on stdout (median of R runs, default 5); progress on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timings, emit, log, rate

import fabric
from fabric.rules.transforms import load_transforms

EXPRESSION = (
    "email_domain(email) if email_domain(email) in "
    "('gmail.com', 'yahoo.com', 'outlook.com', 'hotmail.com', 'icloud.com', 'aol.com') "
    "else 'other'"
)
COLUMNS = [("id", "INTEGER"), ("email", "TEXT"), ("name", "TEXT"), ("amount", "REAL")]
_DOMAINS = ("gmail.com", "example.org", "yahoo.com", "acme.co.uk", "outlook.com", "mail.de")


def make_rows(count: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """``count`` source rows, the same for a given seed (a NULL email now and then)."""
    rng = random.Random(seed)
    rows = []
    for at in range(count):
        user = "".join(rng.choices("abcdefghij", k=8))
        email = None if at % 50 == 0 else f" {user}@{rng.choice(_DOMAINS)} "
        rows.append((at, email, f"{user} {user}", round(rng.uniform(0, 500), 2)))
    return rows


def compile_transform(directory: Path, derive: bool) -> Callable[[tuple[Any, ...]], Any]:
    """The table's transform, as a project compiles it: once, against its columns."""
    text = "customer:\n  people:\n    email: [trim, lowercase]\n"
    if derive:
        text += f'    provider: {{derive: "{EXPRESSION}", type: TEXT}}\n'
    path = directory / f"transforms_{int(derive)}.yaml"
    path.write_text(text)
    table = load_transforms(path, check_steps=False).for_table(
        "customer", "people", COLUMNS, {"id": "primary key"}
    )
    assert table is not None
    return table.apply


def expressions_module() -> ModuleType | None:
    """:mod:`fabric.expressions` of the tree measured; None for a tree without it (an
    editable install would otherwise find it in the installed tree)."""
    try:
        module = importlib.import_module("fabric.expressions")
    except ImportError:
        return None
    if Path(str(module.__file__)).parent != Path(str(fabric.__file__)).parent:
        return None
    return module


def baseline(names: Sequence[str]) -> tuple[str, Callable[[tuple[Any, ...]], Any]]:
    """The expression evaluated from a dict of the row's values, as before it was compiled."""
    module = expressions_module() or importlib.import_module("fabric.rules.transforms")
    functions = dict(module.FUNCTIONS)
    try:
        from simpleeval import EvalWithCompoundTypes
    except ImportError:
        code = compile(EXPRESSION, "<expression>", "eval")
        scope = {"__builtins__": {}, **functions}
        return "eval", lambda row: eval(code, scope, dict(zip(names, row, strict=True)))
    evaluator = EvalWithCompoundTypes(functions=functions)
    parsed = evaluator.parse(EXPRESSION)

    def evaluate(row: tuple[Any, ...]) -> Any:
        evaluator.names = dict(zip(names, row, strict=True))
        return evaluator.eval(EXPRESSION, previously_parsed=parsed)

    return "simpleeval", evaluate


def compiled(names: Sequence[str]) -> Callable[[tuple[Any, ...]], Any] | None:
    """The expression compiled by :mod:`fabric.expressions`, as a transform compiles it."""
    module = expressions_module()
    if module is None:
        return None
    expression = module.parse_expression(EXPRESSION)
    function: Callable[[tuple[Any, ...]], Any] = expression.compile_row(names)
    return function


def time_rows(function: Callable[[tuple[Any, ...]], Any], rows: list[tuple[Any, ...]]) -> float:
    """Seconds to call ``function`` on every row."""
    start = time.perf_counter()
    for row in rows:
        function(row)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows = make_rows(args.rows)
    names = [name for name, _ in COLUMNS]
    with tempfile.TemporaryDirectory() as tmp:
        with_derive = compile_transform(Path(tmp), derive=True)
        without = compile_transform(Path(tmp), derive=False)
    kind, evaluate = baseline(names)
    cleaned = [without(row) for row in rows]  # the baseline reads the values as transformed
    cases: list[tuple[str, Callable[[tuple[Any, ...]], Any], list[tuple[Any, ...]]]] = [
        ("transform", with_derive, rows),
        ("transform_without_derive", without, rows),
        (f"baseline_{kind}", evaluate, cleaned),
    ]
    alone = compiled(names)
    if alone is not None:
        cases.insert(2, ("compiled", alone, cleaned))
    runs: dict[str, list[float]] = {what: [] for what, _, _ in cases}
    for repeat in range(args.repeat):
        log(f"run {repeat + 1} of {args.repeat}")
        for what, function, inputs in cases:  # turn about: drift hits every case alike
            runs[what].append(time_rows(function, inputs))
    for what, _, _ in cases:
        timed = Timings.of(runs[what])
        emit(
            {
                "what": what,
                "expression": EXPRESSION,
                "rows": args.rows,
                "us_per_row": timed.median / args.rows * 1e6,
                "rows_per_s": rate(args.rows, timed.median),
                **timed.fields(),
            }
        )


if __name__ == "__main__":
    main()
