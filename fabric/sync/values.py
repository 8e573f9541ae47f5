"""Match values of identity rows, computed in worker processes during a full sync.

Normalising identity fields (parsing phone numbers, finding emails and signatures in ticket
text) is most of what a full sync spends before resolution can start, while the build workers
sit idle. So the parent reads and spills rows and hands each batch to a worker, which compiles
the match rules once (compiled rules are closures and cannot be pickled; their spec can) and
returns the batch's match values in row order, with the keyed hashes of their match keys for
the identity index (hashing them was the parent's next largest cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fabric.resolve.index import Hashed, hashed, index_hasher
from fabric.resolve.rules import CompiledMatchRules, EntityMatchRules, compile_match_rules

__all__ = ["ValuesJob", "match_values"]

Values = dict[str, str | None]

#: (entity type, rules as JSON) -> compiled rules, per worker process
_compiled: dict[tuple[str, str], CompiledMatchRules] = {}


@dataclass(frozen=True)
class ValuesJob:
    """One batch of identity rows of one table."""

    entity_type: str
    spec: EntityMatchRules
    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    #: key of the identity index's keyed hashes (see :func:`fabric.resolve.index.index_key`)
    index_key: bytes


def _rules(entity_type: str, spec: EntityMatchRules) -> CompiledMatchRules:
    key = (entity_type, spec.model_dump_json())
    rules = _compiled.get(key)
    if rules is None:
        rules = _compiled[key] = compile_match_rules(entity_type, spec)
    return rules


def match_values(job: ValuesJob) -> list[tuple[Values, Hashed]]:
    """The normalised match fields of every row of the batch, in row order, each with the
    keyed hashes the identity index files it under."""
    rules = _rules(job.entity_type, job.spec)
    extract = rules.extractor(job.table, set(job.columns))
    hasher = index_hasher(job.index_key)
    names = job.columns
    out = []
    for row in job.rows:
        values = extract(dict(zip(names, row, strict=True))) if extract else {}
        out.append((values, hashed(rules, hasher, values)))
    return out
