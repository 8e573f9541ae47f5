"""Compute a view's features for many (entity, time) pairs at once: online and offline alike.

The one code path behind `GET /v1/features` (one entity at one time: now, or ``as_of``) and
`fabric export` (thousands of entities, each at the times of its spine rows). As of *t*, a
feature sees only rows whose event time is strictly before *t*; a window ``w`` is
``[t - w, t)``. An entity with no event before *t* in any table the view reads did not exist
yet: it gets every default and ``existed = False``.

Times are ISO 8601; source times without a zone are taken as UTC, and times with one are
converted to UTC. Internally a time is a whole number of microseconds since 1970.

How: each (table, timestamp column) a view reads becomes one array of events of every entity,
sorted by (entity, time). A time is replaced by its rank among the event times, so that
``entity * ranks + rank`` orders events and query times alike, and one ``searchsorted`` finds,
for every query at once, where its window starts and ends. Counts, the last row and recency
come from prefix sums over the events that pass the feature's filter; sums, averages, minima,
maxima and distinct counts from the (query, event) pairs inside each window, added up by
``bincount`` in event order, the order a plain loop would add them. A filter that reads
``as_of`` is judged per (query, event) pair. Filters and derived features are compiled once
(:mod:`fabric.expressions`).
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from fabric.expressions import compile_expression, parse_expression
from fabric.features.spec import Feature, FeatureView

__all__ = [
    "ARROW_TYPES",
    "Column",
    "Computed",
    "columns_read",
    "compute",
    "compute_many",
    "entity_rows",
    "micros",
    "parse_time",
    "parse_times",
]

Rows = Sequence[tuple[Any, ...]]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

ARROW_TYPES = {
    "INTEGER": pa.int64(),
    "REAL": pa.float64(),
    "TEXT": pa.string(),
    "BOOLEAN": pa.bool_(),
}
_EPOCH = datetime(1970, 1, 1)
_MICRO = timedelta(microseconds=1)
_DAY = 86_400_000_000


def parse_time(value: Any) -> datetime | None:
    """A naive UTC datetime from an ISO 8601 value (None for None, a value that is not one, or
    one that has no UTC time within years 1 to 9999)."""
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
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:  # 0001-01-01T00:00+05:00 is before the first UTC time there is
            return None
    return moment


def micros(moment: datetime) -> int:
    """Microseconds since 1970 of a naive UTC datetime."""
    return (moment - _EPOCH) // _MICRO


def _event_micros(value: Any) -> int | None:
    moment = parse_time(value)
    return None if moment is None else (moment - _EPOCH) // _MICRO


#: ISO 8601 forms that Arrow and :func:`parse_time` read alike: a date, a time to the
#: minute, second or microsecond, all without a zone or all with ``Z`` or ``+hh:mm``.
_DATE = r"^\d{4}-\d{2}-\d{2}"
_TIME = r"[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
_FORMS = (
    (_DATE + f"({_TIME})?$", pa.timestamp("us")),
    (_DATE + _TIME + r"(Z|[+-]\d{2}:\d{2})$", pa.timestamp("us", tz="UTC")),
)


def parse_times(values: Sequence[Any] | pa.Array) -> tuple[Ints, Bools]:
    """Times as microseconds since 1970 (UTC), and which values are times at all.

    Many values in the forms of ``_FORMS`` are parsed by Arrow in C; anything else (a mix of
    forms, other forms, spaces, a few values) goes value by value through
    :func:`parse_time`. Both read those forms alike, so a value gets the same time whichever
    way it goes, and a feature online (a few rows) equals the same feature in an export.
    """
    if len(values) > _SMALL:
        text = values if isinstance(values, pa.Array) else _text(values)
        if text is not None and not text.null_count:
            for form, kind in _FORMS:
                if not pc.all(pc.match_substring_regex(text, form)).as_py():
                    continue
                with contextlib.suppress(pa.ArrowInvalid):  # a date like 2026-02-30
                    parsed = pc.cast(text, kind)
                    numbers: Ints = parsed.cast(pa.int64()).to_numpy()
                    return numbers, np.ones(len(numbers), np.bool_)
        if isinstance(values, pa.Array):
            values = values.to_pylist()
    out = [_event_micros(v) for v in values]
    valid = np.fromiter((m is not None for m in out), np.bool_, len(out))
    return np.array([0 if m is None else m for m in out], np.int64), valid


def _text(values: Sequence[Any]) -> pa.Array | None:
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text
        return None


def _iso(moments: Ints) -> list[str]:
    """``datetime.isoformat()`` of each time (microseconds only when there are some)."""
    stamps = moments.astype("datetime64[us]")
    whole = moments % 1_000_000 == 0
    if whole.all():
        return [str(t) for t in np.datetime_as_string(stamps, unit="s").tolist()]
    text = np.where(
        whole,
        np.datetime_as_string(stamps, unit="s"),
        np.datetime_as_string(stamps, unit="us"),
    )
    return [str(t) for t in text.tolist()]


def _iso_one(moment: int) -> str:
    return (_EPOCH + timedelta(microseconds=moment)).isoformat()


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
    except (TypeError, ValueError, OverflowError):
        return default


@dataclass
class _Source:
    """Events of one (table, timestamp column): the table's position, where a row's time is."""

    table: int
    time_at: int


@dataclass
class _Step:
    """One feature, compiled: the source it reads, the column's position, its filter."""

    feature: Feature
    source: int = -1
    column_at: int = -1
    #: row values..., as_of -> kept?
    filter: Callable[..., Any] | None = None
    filter_uses_as_of: bool = False
    #: positions of the columns an ``as_of`` filter compares ``as_of`` with, when that is
    #: all it does with it (see :func:`_as_of_operands`); None: it does more
    as_of_columns: tuple[int, ...] | None = None
    #: the text constants it compares ``as_of`` with
    as_of_constants: tuple[str, ...] = ()
    #: sources of an ``age`` feature
    sources: tuple[int, ...] = ()
    derive: Callable[..., Any] | None = None


@dataclass
class _Plan:
    """A view compiled for computing: the columns read per table, a step per feature."""

    columns: dict[str, list[str]] = field(default_factory=dict)
    sources: list[_Source] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)

    @classmethod
    def of(cls, view: FeatureView) -> _Plan:
        plan = cls()
        index: dict[tuple[str, str], int] = {}

        def column(table: str, name: str) -> int:
            # A row is (table position, order, *columns): the first column is at 2.
            names = plan.columns.setdefault(table, [])
            if name not in names:
                names.append(name)
            return 2 + names.index(name)

        def source(table: str, timestamp: str) -> int:
            if (table, timestamp) not in index:
                at = column(table, timestamp)
                index[(table, timestamp)] = len(plan.sources)
                plan.sources.append(_Source(list(plan.columns).index(table), at))
            return index[(table, timestamp)]

        for feature in view.features:
            step = _Step(feature)
            if feature.kind == "derive":
                step.derive = compile_expression(feature.expression, feature.reads)
            elif feature.kind == "age":
                step.sources = tuple(source(t, c) for t, c in feature.times)
            else:
                step.source = source(feature.table, feature.timestamp)
                if feature.column:
                    step.column_at = column(feature.table, feature.column)
                if feature.filter:
                    names = set(parse_expression(feature.filter).names)
                    for name in sorted(names - {"as_of"}):
                        column(feature.table, name)
                    step.filter_uses_as_of = "as_of" in names
                    if step.filter_uses_as_of:
                        compared = _as_of_operands(feature.filter)
                        if compared is not None:
                            names, constants = compared
                            step.as_of_columns = tuple(
                                column(feature.table, name) for name in sorted(names)
                            )
                            step.as_of_constants = tuple(sorted(constants))
            plan.steps.append(step)
        # Filters are functions of as_of and a whole row (every column read of its table),
        # so they are compiled once every column is known.
        for step in plan.steps:
            if step.feature.filter:
                params = ["as_of", "\x00table", "\x00order", *plan.columns[step.feature.table]]
                step.filter = compile_expression(step.feature.filter, params, more=True)
        return plan


def _as_of_operands(expression: str) -> tuple[set[str], set[str]] | None:
    """(columns, text constants) a filter compares ``as_of`` with, if it uses ``as_of`` only
    as an operand of comparisons whose other operands are columns or constants; else None.

    Then the filter's verdict on a row can change only where the ISO text of ``as_of``
    passes one of those values, which bounds how long a vector stays current.
    """
    tree = ast.parse(expression, mode="eval")
    compared: set[str] = set()
    constants: set[str] = set()
    uses = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if not any(isinstance(o, ast.Name) and o.id == "as_of" for o in operands):
            continue
        for operand in operands:
            if isinstance(operand, ast.Name):
                if operand.id == "as_of":
                    uses += 1
                else:
                    compared.add(operand.id)
            elif isinstance(operand, ast.Constant):
                if isinstance(operand.value, str):
                    constants.add(operand.value)
            else:
                return None
    every = sum(isinstance(n, ast.Name) and n.id == "as_of" for n in ast.walk(tree))
    return (compared, constants) if every == uses else None


_plans: dict[int, tuple[FeatureView, _Plan]] = {}


def _plan(view: FeatureView) -> _Plan:
    found = _plans.get(id(view))
    if found is None or found[0] is not view:
        found = _plans[id(view)] = (view, _Plan.of(view))
    return found[1]


def columns_read(view: FeatureView) -> dict[str, list[str]]:
    """Table -> the columns the view's features read. :func:`compute_many` takes an
    entity's rows as tuples ``(table position in this mapping, order, *these columns)``, the
    form :meth:`fabric.store.microdb.MicroDbReader.flat` reads."""
    return {table: list(names) for table, names in _plan(view).columns.items()}


@dataclass
class _Events:
    """One source's events of every entity, sorted by (entity, time)."""

    owners: Ints
    times: Ints
    rows: list[tuple[Any, ...]]
    #: per query: first event of its entity, first event at or after its time
    start: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    #: per event: entity * width + rank of its time (sorted)
    keys: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    high: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    _judged: dict[int, Bools] = field(default_factory=dict)
    _numbers: dict[int, tuple[npt.NDArray[np.float64], Bools, bool]] = field(default_factory=dict)
    #: per filter: passing events before each position, and the last passing one
    _prefixes: dict[int, tuple[Ints, Ints]] = field(default_factory=dict)
    #: per window: each query's first event in it
    _lows: dict[timedelta, Ints] = field(default_factory=dict)

    @classmethod
    def of(cls, tables: Sequence[tuple[list[int], Rows]], source: _Source) -> _Events:
        owners, rows = tables[source.table]
        at = source.time_at
        if len(rows) <= _SMALL:
            # A few rows (an online lookup): parsed and sorted in Python, cheaper than
            # numpy's calls. Rows at the same time keep their order in the image.
            stamps = [_event_micros(row[at]) for row in rows]
            picked = sorted(
                (o, t, row[1], i)
                for i, (o, t, row) in enumerate(zip(owners, stamps, rows, strict=True))
                if t is not None
            )
            return cls(
                np.array([p[0] for p in picked], np.int64),
                np.array([p[1] for p in picked], np.int64),
                [rows[p[3]] for p in picked],
            )
        times, timed = parse_times([row[at] for row in rows])
        owner_array = np.array(owners, np.int64)[timed]
        time_array = times[timed]
        if not timed.all():
            rows = [row for row, ok in zip(rows, timed.tolist(), strict=True) if ok]
        order_array = np.array([row[1] for row in rows], np.int64)
        order = np.lexsort((order_array, time_array, owner_array))
        return cls(owner_array[order], time_array[order], [rows[i] for i in order.tolist()])

    def prefixes(self, step: _Step) -> tuple[Ints, Ints]:
        """For a filter that does not read ``as_of`` (or none): how many of the first ``i``
        events pass it, and the last of them that passes (-1: none)."""
        key = id(step.filter)
        found = self._prefixes.get(key)
        if found is None:
            passing = self.judged(step)
            counts = np.concatenate(([0], np.cumsum(passing, dtype=np.int64)))
            positions = np.where(passing, np.arange(len(passing)), -1)
            last = np.concatenate(([-1], np.maximum.accumulate(positions))).astype(np.int64)
            found = self._prefixes[key] = (counts, last)
        return found

    def low(self, window: timedelta, when: Ints, keys: Callable[[Ints], Ints]) -> Ints:
        """Each query's first event in ``window`` before its time (once per window)."""
        found = self._lows.get(window)
        if found is None:
            starts = keys(when - window // _MICRO)
            found = self._lows[window] = np.searchsorted(self.keys, starts, "left")
        return found

    def judged(self, step: _Step) -> Bools:
        """Whether each event passes the step's filter (one that does not read ``as_of``)."""
        key = id(step.filter)
        found = self._judged.get(key)
        if found is None:
            keep = step.filter
            if keep is None:
                found = np.ones(len(self.rows), np.bool_)
            else:
                found = np.fromiter(
                    (_judge(keep, "", row) for row in self.rows), np.bool_, len(self.rows)
                )
            self._judged[key] = found
        return found

    def numbers(self, at: int) -> tuple[npt.NDArray[np.float64], Bools, bool]:
        """Column ``at`` as floats, which events hold a number, and whether every value that
        is not NULL is a number (so minima and maxima can be taken as floats)."""
        found = self._numbers.get(at)
        if found is None:
            values = np.zeros(len(self.rows), np.float64)
            present = np.zeros(len(self.rows), np.bool_)
            only_numbers = True
            for i, row in enumerate(self.rows):
                value = row[at]
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    only_numbers = False
                try:
                    values[i] = float(value)
                except (TypeError, ValueError, OverflowError):
                    continue
                present[i] = True
            found = self._numbers[at] = (values, present, only_numbers)
        return found


def _judge(keep: Callable[..., Any], as_of: str, row: tuple[Any, ...]) -> bool:
    try:
        return bool(keep(as_of, *row))
    except Exception:  # a row the filter cannot judge (a NULL compared): not counted
        return False


#: Below this many values, Python beats the fixed cost of a call into Arrow.
_SMALL = 64


@dataclass
class Column:
    """One feature's values for every query, in the declared type: numbers in an array
    (``null`` marks queries without a value), other values in a list or an Arrow array."""

    type: str
    values: Any
    null: Bools | None = None

    def value(self, at: int) -> Any:
        """One query's value as a Python value."""
        if isinstance(self.values, np.ndarray):
            return None if self.null is not None and self.null[at] else self.values[at].item()
        if isinstance(self.values, list):
            return self.values[at]
        return self.values[at].as_py()

    def to_pylist(self) -> list[Any]:
        """Every query's value as a Python value."""
        if isinstance(self.values, np.ndarray):
            out: list[Any] = self.values.tolist()
            if self.null is not None:
                out = [None if n else v for v, n in zip(out, self.null.tolist(), strict=True)]
            return out
        if isinstance(self.values, list):
            return self.values
        found: list[Any] = self.values.to_pylist()
        return found

    def arrow(self) -> pa.Array:
        """The values as an Arrow array of the declared type; text if masking made them
        values of another type (a number generalised to a range)."""
        if isinstance(self.values, np.ndarray):
            return pa.array(self.values, ARROW_TYPES[self.type], mask=self.null)
        if isinstance(self.values, list):
            try:
                return pa.array(self.values, ARROW_TYPES[self.type])
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                return pa.array([None if v is None else str(v) for v in self.values], pa.string())
        return self.values

    def take(self, order: Ints) -> Column:
        """The values in another order."""
        if isinstance(self.values, np.ndarray):
            null = None if self.null is None else self.null[order]
            return Column(self.type, self.values[order], null)
        if isinstance(self.values, list):
            return Column(self.type, [self.values[i] for i in order.tolist()])
        return Column(self.type, self.values.take(pa.array(order)))


@dataclass
class Computed:
    """Features of many (entity, time) queries, in query order."""

    existed: Bools
    columns: dict[str, Column]
    #: per query, when :func:`compute_many` was asked for horizons: the time (microseconds)
    #: before which its vector stays the same, as long as the entity does not change
    until: Ints | None = None

    def vector(self, at: int) -> tuple[bool, dict[str, Any]]:
        """One query's ``(existed, {feature: value})`` as Python values."""
        return bool(self.existed[at]), {n: c.value(at) for n, c in self.columns.items()}


def compute_many(
    view: FeatureView,
    entities: Sequence[Rows],
    owners: Sequence[int] | Ints,
    times: Sequence[int] | Ints,
    *,
    horizons: bool = False,
) -> Computed:
    """Features of entity ``entities[owners[i]]`` as of ``times[i]`` (microseconds), for
    every ``i``. An entity is its rows as tuples ``(table position, order, *columns)`` of
    :func:`columns_read`'s tables and columns. With ``horizons``, also how long each
    vector stays current (:attr:`Computed.until`)."""
    plan = _plan(view)
    # Queries in (entity, time) order: every search below then walks its array forward.
    arrival = np.lexsort((np.asarray(times, np.int64), np.asarray(owners, np.int64)))
    owner = np.asarray(owners, np.int64)[arrival]
    when = np.asarray(times, np.int64)[arrival]
    queries = len(owner)
    # Every entity's rows, table by table, with the entity each came from.
    tables: list[tuple[list[int], list[tuple[Any, ...]]]] = [([], []) for _ in plan.columns]
    for at, rows in enumerate(entities):
        for row in rows:
            owners_of, rows_of = tables[row[0]]
            owners_of.append(at)
            rows_of.append(row)
    events = [_Events.of(tables, source) for source in plan.sources]
    every = [e.times for e in events if len(e.times)]
    ranked = np.unique(np.concatenate(every)) if every else np.zeros(0, np.int64)
    width = len(ranked) + 1

    def keys(moments: Ints) -> Ints:
        # entity * width + rank: orders (entity, time) with every event time ranked exactly.
        ranks: Ints = np.searchsorted(ranked, moments, "left").astype(np.int64)
        return owner * width + ranks

    query_keys = keys(when)
    existed = np.zeros(queries, np.bool_)
    for found in events:
        found.keys = found.owners * width + np.searchsorted(ranked, found.times, "left")
        found.start = np.searchsorted(found.keys, owner * width, "left")
        found.high = np.searchsorted(found.keys, query_keys, "left")
        existed |= found.high > found.start

    def as_of(asked: Ints) -> list[str]:
        # What a filter reading as_of sees, for each of the queries asked: the time in
        # ISO 8601, made once per distinct query.
        if len(asked) <= _SMALL:
            return [_iso_one(m) for m in when[asked].tolist()]
        distinct, inverse = np.unique(asked, return_inverse=True)
        text = _iso(when[distinct])
        return [text[i] for i in inverse.tolist()]

    columns: dict[str, Column] = {}
    for step in plan.steps:
        feature = step.feature
        raw: Any
        if feature.kind == "derive":
            raw, valid = _derived(step, columns, queries)
        elif feature.kind == "age":
            raw, valid = _age([events[s] for s in step.sources], when)
        else:
            found = events[step.source]
            low = found.start
            if feature.window is not None:
                low = found.low(feature.window, when, keys)
            raw, valid = _aggregate(step, found, low, when, as_of)
        columns[feature.name] = _finish(feature, raw, valid & existed)
    until = _horizons(plan, events, owner, when, width, keys) if horizons else None
    if np.all(arrival[1:] > arrival[:-1]):  # asked in (entity, time) order already
        return Computed(existed, columns, until)
    back = np.argsort(arrival)
    return Computed(
        existed[back],
        {n: c.take(back) for n, c in columns.items()},
        None if until is None else until[back],
    )


#: ``YYYY-MM-DD`` at the start of a text: the day an ``as_of`` comparison with it turns on.
_DATE_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}")
_FOREVER = np.iinfo(np.int64).max


def _horizons(
    plan: _Plan,
    events: Sequence[_Events],
    owner: Ints,
    when: Ints,
    width: int,
    keys: Callable[[Ints], Ints],
) -> Ints:
    """For each query (entity, t): the earliest time after which some feature of the
    vector could differ from its value at t, if the entity's rows stay as they are.

    A vector is a step function of time. It can change only when a row's event time is
    passed (the row enters the views before it), when a row leaves a window (its time
    plus the window), when a whole day passes since the time a recency or age counts
    from, or when the text of ``as_of`` passes a value an ``as_of`` filter compares it
    with. Bounds are taken over every event, not only those that pass a filter: never
    later than the true change, sometimes earlier.
    """
    until = np.full(len(when), _FOREVER, np.int64)

    def bound(candidate: Ints, where: Bools) -> None:
        np.minimum(until, np.where(where, candidate, _FOREVER), out=until)

    for found in events:
        if not len(found.times):
            continue
        end = np.searchsorted(found.keys, (owner + 1) * width, "left")
        # The next event at or after t enters the vector just after its time.
        ahead = found.high < end
        bound(found.times[np.minimum(found.high, len(found.times) - 1)], ahead)
    for step in plan.steps:
        feature = step.feature
        if feature.kind == "derive":
            continue  # a function of the other features, bounded by theirs
        if feature.kind == "age":
            for source in step.sources:
                found = events[source]
                if len(found.times):
                    first = found.times[np.minimum(found.start, len(found.times) - 1)]
                    _next_day(bound, first, when, found.high > found.start)
            continue
        found = events[step.source]
        if not len(found.times):
            continue
        last_at = len(found.times) - 1
        low = found.start
        if feature.window is not None:
            low = found.low(feature.window, when, keys)
            # The oldest event in the window leaves it once t passes its time + window.
            span = feature.window // _MICRO
            bound(found.times[np.minimum(low, last_at)] + span, low < found.high)
        if feature.kind == "recency":
            if step.filter_uses_as_of:
                bound(when, np.ones(len(when), np.bool_))  # its last row may change any time
                continue
            _, last_passing = found.prefixes(step)
            last = last_passing[found.high]
            valid = last >= found.start
            _next_day(bound, found.times[np.maximum(last, 0)], when, valid)
        if step.filter_uses_as_of:
            bound(_as_of_turns(step, found, low, when), np.ones(len(when), np.bool_))
    return until


def _next_day(bound: Callable[[Ints, Bools], None], since: Ints, when: Ints, valid: Bools) -> None:
    """Whole days since ``since`` (recency, age) change at the next whole day after t."""
    days = (when - since) // _DAY
    bound(since + (days + 1) * _DAY, valid)


def _as_of_turns(step: _Step, found: _Events, low: Ints, when: Ints) -> Ints:
    """Per query: when an ``as_of`` filter's verdict on a row in its window may turn.

    A comparison of ``as_of`` (``YYYY-MM-DDTHH:MM:SS``) with a text that starts with a date
    is decided by the dates while they differ: it can turn only on that date, so from the
    start of a later day on; on t's own day, by the rest of the text (:func:`_turn_today`).
    Any other text could turn it at any moment; numbers and NULLs never compare with text,
    so never turn it.
    """
    if step.as_of_columns is None:
        return when.copy()  # as_of is used other than compared: any moment
    out = np.full(len(when), _FOREVER, np.int64)
    constants = list(step.as_of_constants)
    rows = found.rows
    for query, (start, stop, moment) in enumerate(
        zip(low.tolist(), found.high.tolist(), when.tolist(), strict=True)
    ):
        today = moment - moment % _DAY
        values = [rows[e][c] for e in range(start, stop) for c in step.as_of_columns]
        for value in (*values, *constants):
            if not isinstance(value, str):
                continue
            if not _DATE_PREFIX.match(value):
                out[query] = moment
                break
            try:
                day = micros(datetime.fromisoformat(value[:10]))
            except ValueError:
                out[query] = moment
                break
            if day > today:
                out[query] = min(out[query], day)
            elif day == today:
                turn = _turn_today(value, day, moment)
                if turn is not None:
                    out[query] = min(out[query], turn)
    return out


_CLOCK = re.compile(r"T(\d{2}):(\d{2}):(\d{2})")


def _turn_today(value: str, day: int, moment: int) -> int | None:
    """When ``as_of`` (``YYYY-MM-DDTHH:MM:SS[.ffffff]``) may next compare differently with
    ``value``, a text of t's own date: None if never (from t on, the order is settled),
    else a time no later than the turn (t itself when it cannot be told)."""
    rest = value[10:]
    if not rest or rest[0] < "T":  # "2026-01-05" or "2026-01-05 10:00": below every as_of
        return None
    if rest[0] > "T":  # above every as_of of the day, below those of the next
        return day + _DAY
    clock = _CLOCK.match(rest)
    if clock is None:
        return moment
    hours, minutes, seconds = (int(part) for part in clock.groups())
    at = day + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000
    if at > moment:
        return at  # as_of reaches this second of the day later: the turn is at or after it
    if at < moment - moment % 1_000_000:
        return None  # as_of passed this second already
    return moment  # this very second: the turn may be any moment now


def _aggregate(
    step: _Step, found: _Events, low: Ints, when: Ints, as_of: Callable[[Ints], list[str]]
) -> tuple[Any, Bools]:
    """A windowed feature's raw values (numbers or a list) and which queries have one."""
    feature = step.feature
    kind = feature.kind
    high = found.high
    queries = len(when)
    if kind in ("count", "recency", "attribute", "last") and not step.filter_uses_as_of:
        # No walk over each window: prefix counts of the passing events, and the position
        # of the last passing event before each position.
        counts, last_passing = found.prefixes(step)
        if kind == "count":
            return counts[high] - counts[low], np.ones(queries, np.bool_)
        last = last_passing[high]
        return _last(step, found, last, last >= low, when)
    # (query, event) pairs inside each window, queries in order, events in time order.
    sizes = high - low
    pair_query = np.repeat(np.arange(queries), sizes)
    offsets = np.cumsum(sizes) - sizes
    pair_event = np.arange(len(pair_query)) - np.repeat(offsets, sizes) + np.repeat(low, sizes)
    if step.filter_uses_as_of and step.filter is not None:
        keep = step.filter
        rows = found.rows
        kept = np.fromiter(
            (
                _judge(keep, moment, rows[e])
                for e, moment in zip(pair_event.tolist(), as_of(pair_query), strict=True)
            ),
            np.bool_,
            len(pair_query),
        )
    else:
        kept = found.judged(step)[pair_event]
    if kind == "count":
        return np.bincount(pair_query[kept], minlength=queries), np.ones(queries, np.bool_)
    if kind in ("recency", "attribute", "last"):
        last = np.full(queries, -1, np.int64)
        np.maximum.at(last, pair_query[kept], pair_event[kept])
        return _last(step, found, last, last >= 0, when)
    values, present, only_numbers = found.numbers(step.column_at)
    if kind == "distinct" or (kind in ("min", "max") and not only_numbers):
        return _by_python(step, found, pair_query[kept], pair_event[kept], queries)
    chosen = kept & present[pair_event]
    group, members = pair_query[chosen], pair_event[chosen]
    counts = np.bincount(group, minlength=queries)
    valid = counts > 0
    if kind in ("sum", "avg"):
        sums = np.bincount(group, weights=values[members], minlength=queries)
        if kind == "sum":
            return sums, valid
        return sums / np.maximum(counts, 1), valid
    extreme = np.full(queries, np.inf if kind == "min" else -np.inf)
    (np.minimum if kind == "min" else np.maximum).at(extreme, group, values[members])
    return extreme, valid


def _last(step: _Step, found: _Events, last: Ints, valid: Bools, when: Ints) -> tuple[Any, Bools]:
    """Recency, or the value of the last passing row, from each query's last event."""
    if step.feature.kind == "recency":
        safe = np.where(valid, last, 0)
        stamps = found.times[safe] if len(found.times) else np.zeros(len(when), np.int64)
        return (when - stamps) // _DAY, valid
    at = step.column_at
    rows = found.rows
    values = [
        rows[i][at] if ok else None for i, ok in zip(last.tolist(), valid.tolist(), strict=True)
    ]
    return values, valid & np.fromiter((v is not None for v in values), np.bool_, len(values))


def _by_python(
    step: _Step, found: _Events, group: Ints, members: Ints, queries: int
) -> tuple[list[Any], Bools]:
    """Distinct counts, and minima and maxima of values that are not all numbers."""
    at = step.column_at
    seen: list[list[Any]] = [[] for _ in range(queries)]
    for q, e in zip(group.tolist(), members.tolist(), strict=True):
        value = found.rows[e][at]
        if value is not None:
            seen[q].append(value)
    kind = step.feature.kind
    out: list[Any] = []
    for values in seen:
        if kind == "distinct":
            out.append(len(set(values)))
        elif not values:
            out.append(None)
        else:
            try:
                out.append(min(values) if kind == "min" else max(values))
            except TypeError:  # values that do not compare (text and numbers)
                out.append(None)
    return out, np.fromiter((v is not None for v in out), np.bool_, len(out))


def _age(sources: Sequence[_Events], when: Ints) -> tuple[Ints, Bools]:
    """Days since the earliest event before each query's time, over the ``age`` sources."""
    earliest = np.full(len(when), np.iinfo(np.int64).max, np.int64)
    for found in sources:
        if not len(found.times):
            continue
        before = found.high > found.start
        first = found.times[np.minimum(found.start, len(found.times) - 1)]
        earliest = np.where(before, np.minimum(earliest, first), earliest)
    valid = earliest != np.iinfo(np.int64).max
    return (when - np.where(valid, earliest, when)) // _DAY, valid


def _derived(step: _Step, columns: Mapping[str, Column], queries: int) -> tuple[list[Any], Bools]:
    """A derived feature, evaluated once per distinct combination of the values it reads
    (an expression is a pure function of them, and most rows share a few combinations)."""
    assert step.derive is not None
    derive = step.derive

    def evaluate(args: Sequence[Any]) -> Any:
        try:
            return derive(*args)
        except Exception:  # division by zero, a NULL in arithmetic: the feature's default
            return None

    if queries <= _SMALL:
        inputs = [columns[name].to_pylist() for name in step.feature.reads]
        out = [evaluate(args) for args in zip(*inputs, strict=True)] if inputs else []
        if not inputs:
            out = [evaluate(()) for _ in range(queries)]
    else:
        codes = np.zeros(queries, np.int64)
        choices: list[list[Any]] = []
        for name in step.feature.reads:
            encoded = pc.dictionary_encode(columns[name].arrow())
            values = [*encoded.dictionary.to_pylist(), None]
            index = encoded.indices.fill_null(len(values) - 1).to_numpy(zero_copy_only=False)
            codes = codes * len(values) + index
            choices.append(values)
        distinct, inverse = np.unique(codes, return_inverse=True)
        results: list[Any] = []
        for code in distinct.tolist():
            args = []
            for values in reversed(choices):
                code, at = divmod(code, len(values))
                args.append(values[at])
            results.append(evaluate(args[::-1]))
        out = [results[i] for i in inverse.tolist()]
    return out, np.fromiter((v is not None for v in out), np.bool_, len(out))


def _finish(feature: Feature, raw: Any, valid: Bools) -> Column:
    """The declared type, with the default where there is no value."""
    kind = feature.type
    default = _cast(feature.default, kind, None)
    if isinstance(raw, np.ndarray) and kind != "TEXT":
        if kind == "INTEGER":
            numbers = raw if raw.dtype == np.int64 else np.trunc(np.where(valid, raw, 0))
            values: npt.NDArray[Any] = numbers.astype(np.int64)
        elif kind == "REAL":
            values = raw.astype(np.float64)
        else:
            values = raw != 0
        if default is not None:
            return Column(kind, np.where(valid, values, default).astype(values.dtype))
        return Column(kind, values, ~valid)
    items = raw.tolist() if isinstance(raw, np.ndarray) else raw
    if len(items) > _SMALL:
        # Values that already have the declared type convert in C; Arrow refuses what
        # would need a cast (text for a number, 3.7 for a whole number): those go below,
        # to the same casts.
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            made = pa.array(items, ARROW_TYPES[kind], mask=~valid)
            return Column(kind, made if default is None else made.fill_null(default))
    return Column(
        kind,
        [
            _cast(value, kind, default) if ok else default
            for value, ok in zip(items, valid.tolist(), strict=True)
        ],
    )


def entity_rows(
    view: FeatureView, tables: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[tuple[Any, ...]]:
    """An entity's rows as dicts (a read of the entity) in the form :func:`compute_many`
    takes: ``(table position, order, *columns)``."""
    return [
        (position, order, *(row.get(c) for c in names))
        for position, (table, names) in enumerate(_plan(view).columns.items())
        for order, row in enumerate(tables.get(table, ()))
    ]


def compute(
    view: FeatureView, tables: Mapping[str, Sequence[Mapping[str, Any]]], times: Sequence[datetime]
) -> list[tuple[bool, dict[str, Any]]]:
    """``(existed, {feature: value})`` of one entity, given its rows as dicts, at each of
    ``times`` (naive UTC): :func:`compute_many` for one entity."""
    entity = entity_rows(view, tables)
    done = compute_many(view, [entity], [0] * len(times), [micros(t) for t in times])
    return [done.vector(at) for at in range(len(times))]
