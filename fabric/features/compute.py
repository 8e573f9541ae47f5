"""Compute a view's features for one entity at any number of times: online and offline alike.

The one code path behind `GET /v1/features` (one time: now, or ``as_of``) and `fabric export`
(every time of the entity's spine rows). As of *t*, a feature sees only rows whose event time
is strictly before *t*; a window ``w`` is ``[t - w, t)``. An entity with no time at all before
*t* (no row of any table the view reads) did not exist yet: it gets every default and
``existed = False``.

Times are ISO 8601; source times without a zone are taken as UTC, and times with one are
converted to UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from simpleeval import EvalWithCompoundTypes

from fabric.errors import FabricError
from fabric.features.spec import AGGREGATES, Feature, FeatureView
from fabric.rules.transforms import FUNCTIONS

__all__ = ["BadTimeError", "compute", "parse_time"]

Tables = Mapping[str, Sequence[Mapping[str, Any]]]


class BadTimeError(FabricError):
    """A time that is not ISO 8601."""

    code = "bad_request"


def parse_time(value: Any) -> datetime | None:
    """A naive UTC datetime from an ISO 8601 value (None for None or a value that is not one)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _cast(value: Any, kind: str, default: Any) -> Any:
    if value is None:
        return default
    try:
        if kind == "INTEGER":
            return int(value)
        if kind == "REAL":
            return float(value)
        if kind == "BOOLEAN":
            return bool(value)
        return str(value)
    except (TypeError, ValueError):
        return default


class _Events:
    """One table's rows in event-time order, for bisecting by time."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], timestamp: str) -> None:
        timed = [(parse_time(r.get(timestamp)), r) for r in rows]
        ordered = sorted(((t, r) for t, r in timed if t is not None), key=lambda x: x[0])
        self.times = [t for t, _ in ordered]
        self.rows = [r for _, r in ordered]
        self._prefixes: dict[int, tuple[list[int], list[int]]] = {}

    def prefix(self, keep: _Filter | None) -> tuple[list[int], list[int]]:
        """For a filter that does not read ``as_of`` (or none): how many of the first ``i``
        rows pass it, and the index of the last of them that passes (-1: none)."""
        key = id(keep)
        found = self._prefixes.get(key)
        if found is None:
            passing, last = [0], [-1]
            for at, row in enumerate(self.rows):
                ok = keep is None or keep(row, "")
                passing.append(passing[-1] + ok)
                last.append(at if ok else last[-1])
            found = self._prefixes[key] = (passing, last)
        return found


class _Expression:
    """An expression parsed once (per process), evaluated many times with new names."""

    def __init__(self, expression: str) -> None:
        self.evaluator = EvalWithCompoundTypes(functions=FUNCTIONS)
        self.expression = expression
        self.parsed = self.evaluator.parse(expression)
        self.uses_as_of = "as_of" in expression

    def __call__(self, names: dict[str, Any]) -> Any:
        self.evaluator.names = names
        return self.evaluator.eval(self.expression, previously_parsed=self.parsed)


_parsed: dict[str, _Expression] = {}


def _expression(text: str) -> _Expression:
    found = _parsed.get(text)
    if found is None:
        found = _parsed[text] = _Expression(text)
    return found


class _Filter:
    """A row filter; rows are judged once when the filter does not read ``as_of``."""

    def __init__(self, expression: str) -> None:
        self.expression = _expression(expression)
        self._judged: dict[int, bool] = {}

    def __call__(self, row: Mapping[str, Any], as_of: str) -> bool:
        uses_as_of = self.expression.uses_as_of
        if not uses_as_of:
            found = self._judged.get(id(row))
            if found is not None:
                return found
        try:
            verdict = bool(self.expression({**row, "as_of": as_of}))
        except Exception:  # a row the filter cannot judge (a NULL compared): not counted
            verdict = False
        if not uses_as_of:
            self._judged[id(row)] = verdict  # rows live as long as this compute() call
        return verdict


def compute(
    view: FeatureView, tables: Tables, times: Sequence[datetime]
) -> list[tuple[bool, dict[str, Any]]]:
    """``(existed, {feature: value})`` of one entity at each of ``times`` (naive UTC)."""
    events: dict[tuple[str, str], _Events] = {}
    filters: dict[str, _Filter] = {}
    earliest: list[datetime] = []
    for feature in view.features:
        if feature.table and (feature.table, feature.timestamp) not in events:
            found = events[(feature.table, feature.timestamp)] = _Events(
                tables.get(feature.table, ()), feature.timestamp
            )
            earliest.extend(found.times[:1])
        for table, column in feature.times:
            if (table, column) not in events:
                found = events[(table, column)] = _Events(tables.get(table, ()), column)
                earliest.extend(found.times[:1])
        if feature.filter and feature.filter not in filters:
            filters[feature.filter] = _Filter(feature.filter)
    born = min(earliest) if earliest else None
    out = []
    for moment in times:
        existed = born is not None and born < moment
        values: dict[str, Any] = {}
        as_of = moment.isoformat()
        for feature in view.features:
            if not existed:
                values[feature.name] = feature.default
                continue
            value = _one(feature, events, filters, moment, as_of, values)
            values[feature.name] = _cast(value, feature.type, feature.default)
        out.append((existed, values))
    return out


def _one(
    feature: Feature,
    events: Mapping[tuple[str, str], _Events],
    filters: Mapping[str, _Filter],
    moment: datetime,
    as_of: str,
    values: Mapping[str, Any],
) -> Any:
    kind = feature.kind
    if kind == "derive":
        try:
            return _expression(feature.expression)(dict(values))
        except Exception:  # division by zero, a NULL in arithmetic: the feature's default
            return None
    if kind == "age":
        starts = [
            e.times[0]
            for e in (events[t] for t in feature.times)
            if e.times and e.times[0] < moment
        ]
        return (moment - min(starts)).days if starts else None
    found = events[(feature.table, feature.timestamp)]
    high = bisect.bisect_left(found.times, moment)  # strictly before t
    low = 0 if feature.window is None else bisect.bisect_left(found.times, moment - feature.window)
    keep = filters.get(feature.filter) if feature.filter else None
    if kind in ("count", "recency", "attribute", "last") and (
        keep is None or not keep.expression.uses_as_of
    ):
        # Counting and taking the last row need no walk over the window's rows: prefix
        # counts of the rows that pass the filter, computed once per entity.
        passing, last_passing = found.prefix(keep)
        if kind == "count":
            return passing[high] - passing[low]
        at = last_passing[high]
        if at < low:
            return None
        if kind == "recency":
            return (moment - found.times[at]).days
        return found.rows[at].get(feature.column)
    rows = found.rows[low:high]
    if feature.filter:
        keep = filters[feature.filter]
        rows = [r for r in rows if keep(r, as_of)]
    if kind == "count":
        return len(rows)
    if kind == "recency":
        if not rows:
            return None
        last = parse_time(rows[-1].get(feature.timestamp))
        return None if last is None else (moment - last).days
    if kind in ("attribute", "last"):
        return rows[-1].get(feature.column) if rows else None
    numbers: list[Any] = [r[feature.column] for r in rows if r.get(feature.column) is not None]
    if kind == "distinct":
        return len(set(numbers))
    if not numbers:
        return None
    if kind == "sum":
        return sum(float(n) for n in numbers)
    if kind == "avg":
        return sum(float(n) for n in numbers) / len(numbers)
    if kind == "min":
        return min(numbers)
    assert kind in AGGREGATES
    return max(numbers)
