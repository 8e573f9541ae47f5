"""Every kind of feature, computed for many entities at once, against a plain reference.

The reference below is written independently of :mod:`fabric.features.compute`: a loop over
one entity's rows per feature, keeping rows whose time is strictly before t (and at or after
t - window). Hypothesis draws entities (times that tie, fall exactly on t, are NULL or not
times; NULL values; text and numbers) and query times; the batch computation over all of
them, queries in random order, must equal the reference per (entity, t), and the one-entity
path that online lookups use must equal the batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import RuleError
from fabric.features.compute import (
    _iso,
    _iso_one,
    columns_read,
    compute,
    compute_many,
    micros,
    parse_time,
)
from fabric.features.spec import FeatureView, load_views

SCHEMA = {
    "customer": {
        "orders": ["id", "at", "amount", "status"],
        "tickets": ["id", "opened", "closed", "prio"],
        "profile": ["id", "created", "country"],
    }
}

VIEW = """
views:
  kinds:
    entity: customer
    version: 3
    features:
      n_all:          {count: orders, timestamp: at}
      n_7d:           {count: orders, timestamp: at, window: 7d}
      n_paid_7d:      {count: orders, timestamp: at, window: 7d, filter: "status = 'paid'"}
      total_30d:      {sum: orders.amount, timestamp: at, window: 30d, type: REAL, default: 0.0}
      avg_30d:        {avg: orders.amount, timestamp: at, window: 30d, type: REAL}
      min_30d:        {min: orders.amount, timestamp: at, window: 30d, type: REAL}
      max_paid:       {max: orders.amount, timestamp: at, filter: "status == 'paid'", type: REAL}
      min_status:     {min: orders.status, timestamp: at, type: TEXT}
      statuses_30d:   {distinct: orders.status, timestamp: at, window: 30d}
      last_status:    {last: orders.status, timestamp: at, type: TEXT}
      last_paid_12h:  {last: orders.amount, timestamp: at, window: 12h,
                       filter: "status == 'paid'", type: REAL}
      days_since:     {recency: orders, timestamp: at}
      days_since_paid: {recency: orders, timestamp: at, filter: "status == 'paid'"}
      open_now:       {count: tickets, timestamp: opened,
                       filter: "closed == None or closed >= as_of"}
      open_prio:      {sum: tickets.prio, timestamp: opened,
                       filter: "closed == None or closed >= as_of", type: INTEGER,
                       default: 0}
      last_open_prio: {last: tickets.prio, timestamp: opened,
                       filter: "closed == None or closed >= as_of", type: INTEGER}
      max_open_prio_2w: {max: tickets.prio, timestamp: opened, window: 2w,
                       filter: "closed == None or closed >= as_of",
                       type: INTEGER}
      age:            {age: [profile.created, orders.at], type: INTEGER}
      country:        {attribute: profile.country, timestamp: created, type: TEXT}
      paid_share_7d:  {derive: "n_paid_7d / nullif(n_7d, 0)", type: REAL}
      big_spender:    {derive: "total_30d > 100", type: BOOLEAN, default: false}
"""

BASE = datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> FeatureView:
    path = tmp_path_factory.mktemp("views") / "features.yaml"
    path.write_text(VIEW)
    return load_views(path, SCHEMA)["kinds"]


# --- the reference ------------------------------------------------------------------------


def _timed(rows: list[dict[str, Any]], column: str) -> list[tuple[datetime, dict[str, Any]]]:
    found = [(parse_time(r[column]), r) for r in rows]
    return sorted(((t, r) for t, r in found if t is not None), key=lambda x: x[0])


def _in(
    rows: list[dict[str, Any]], column: str, t: datetime, window: timedelta | None
) -> list[tuple[datetime, dict[str, Any]]]:
    return [
        (at, r) for at, r in _timed(rows, column) if at < t and (window is None or at >= t - window)
    ]


def reference(entity: dict[str, list[dict[str, Any]]], t: datetime) -> tuple[bool, dict[str, Any]]:
    orders, tickets, profile = entity["orders"], entity["tickets"], entity["profile"]
    as_of = t.isoformat()
    born = [
        at
        for rows, c in ((orders, "at"), (tickets, "opened"), (profile, "created"))
        for at, _ in _timed(rows, c)
    ]
    existed = any(at < t for at in born)
    day, week, month = timedelta(days=7), timedelta(weeks=2), timedelta(days=30)

    def numbers(picked: list[tuple[datetime, dict[str, Any]]], column: str) -> list[float]:
        return [float(r[column]) for _, r in picked if r[column] is not None]

    def is_open(r: dict[str, Any]) -> bool:
        try:
            return bool(r["closed"] is None or r["closed"] >= as_of)
        except TypeError:
            return False

    paid = [(at, r) for at, r in _in(orders, "at", t, None) if r["status"] == "paid"]
    month_rows = _in(orders, "at", t, month)
    amounts = numbers(month_rows, "amount")
    statuses = [r["status"] for _, r in _in(orders, "at", t, None) if r["status"] is not None]
    open_rows = [(at, r) for at, r in _in(tickets, "opened", t, None) if is_open(r)]
    open_2w = [r["prio"] for at, r in _in(tickets, "opened", t, week) if is_open(r)]
    open_2w = [p for p in open_2w if p is not None]
    paid_12h = [
        (at, r) for at, r in _in(orders, "at", t, timedelta(hours=12)) if r["status"] == "paid"
    ]
    all_orders = _in(orders, "at", t, None)
    firsts = [rows[0][0] for rows in (_timed(profile, "created"), _timed(orders, "at")) if rows]
    firsts = [f for f in firsts if f < t]
    profiles = _in(profile, "created", t, None)
    n_7d = len(_in(orders, "at", t, day))
    n_paid_7d = len([1 for _, r in _in(orders, "at", t, day) if r["status"] == "paid"])
    total = sum(amounts) if amounts else 0.0
    values: dict[str, Any] = {
        "n_all": len(all_orders),
        "n_7d": n_7d,
        "n_paid_7d": n_paid_7d,
        "total_30d": total,
        "avg_30d": sum(amounts) / len(amounts) if amounts else None,
        "min_30d": min(amounts) if amounts else None,
        "max_paid": max(numbers(paid, "amount"), default=None),
        "min_status": min(statuses) if statuses else None,
        "statuses_30d": len({r["status"] for _, r in month_rows if r["status"] is not None}),
        "last_status": all_orders[-1][1]["status"] if all_orders else None,
        "last_paid_12h": (
            None
            if not paid_12h or paid_12h[-1][1]["amount"] is None
            else float(paid_12h[-1][1]["amount"])
        ),
        "days_since": (t - all_orders[-1][0]).days if all_orders else None,
        "days_since_paid": (t - paid[-1][0]).days if paid else None,
        "open_now": len(open_rows),
        "open_prio": sum(int(r["prio"]) for _, r in open_rows if r["prio"] is not None)
        if any(r["prio"] is not None for _, r in open_rows)
        else 0,
        "last_open_prio": open_rows[-1][1]["prio"] if open_rows else None,
        "max_open_prio_2w": max(open_2w) if open_2w else None,
        "age": (t - min(firsts)).days if firsts else None,
        "country": profiles[-1][1]["country"] if profiles else None,
        "paid_share_7d": n_paid_7d / n_7d if n_7d else None,
        "big_spender": total > 100,
    }
    if not existed:
        defaults = {"n_all": 0, "n_7d": 0, "n_paid_7d": 0, "total_30d": 0.0, "open_now": 0}
        defaults |= {"statuses_30d": 0, "open_prio": 0, "big_spender": False}
        return False, {name: defaults.get(name) for name in values}
    return True, values


# --- the data -----------------------------------------------------------------------------

# Times on a coarse grid, so that rows tie, fall exactly on query times and window edges.
_moments = st.integers(0, 24 * 60).map(lambda m: BASE + timedelta(hours=m))
_stamps = st.one_of(
    _moments.map(lambda t: t.isoformat()),
    _moments.map(lambda t: t.isoformat() + "Z"),
    _moments.map(lambda t: (t + timedelta(hours=2)).isoformat() + "+02:00"),
    st.sampled_from([None, "not a time", ""]),
)
_orders = st.fixed_dictionaries(
    {
        "at": _stamps,
        "amount": st.one_of(
            st.none(), st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 2))
        ),
        "status": st.sampled_from(["paid", "failed", "refunded", None]),
    }
)
_tickets = st.fixed_dictionaries(
    {
        "opened": _stamps,
        "closed": st.one_of(
            st.none(),
            _moments.map(lambda t: t.isoformat()),
            _moments.map(str),  # "2026-01-02 03:00:00": compares with as_of as text
            st.sampled_from(["soon", "2026-01-0"]),
        ),
        "prio": st.one_of(st.none(), st.integers(1, 5)),
    }
)
_profile = st.fixed_dictionaries(
    {"created": _stamps, "country": st.sampled_from(["DE", "FR", None])}
)
_entities = st.lists(
    st.fixed_dictionaries(
        {
            "orders": st.lists(_orders, max_size=8),
            "tickets": st.lists(_tickets, max_size=4),
            "profile": st.lists(_profile, max_size=2),
        }
    ),
    min_size=1,
    max_size=6,
)


def _flat(view: FeatureView, entity: dict[str, list[dict[str, Any]]]) -> list[tuple[Any, ...]]:
    return [
        (at, order, *(row.get(c) for c in columns))
        for at, (table, columns) in enumerate(columns_read(view).items())
        for order, row in enumerate(entity[table])
    ]


@settings(max_examples=150, deadline=None)
@given(entities=_entities, data=st.data())
def test_every_kind_equals_the_reference_for_many_entities_at_once(
    view: FeatureView, entities: list[dict[str, list[dict[str, Any]]]], data: st.DataObject
) -> None:
    queries = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(entities) - 1), _moments),
            min_size=1,
            max_size=20,
        )
    )
    done = compute_many(
        view,
        [_flat(view, e) for e in entities],
        [owner for owner, _ in queries],
        [micros(t) for _, t in queries],
    )
    for at, (owner, t) in enumerate(queries):
        existed, values = done.vector(at)
        expected_existed, expected = reference(entities[owner], t)
        assert existed == expected_existed, (owner, t)
        for name, value in expected.items():
            if isinstance(value, float):
                assert values[name] == pytest.approx(value), name
            else:
                assert values[name] == value, name
        # The online path: one entity, one time.
        assert compute(view, entities[owner], [t]) == [(existed, values)]


TICKETS_VIEW = """
views:
  tickets:
    entity: customer
    version: 1
    features:
      open_now:       {count: tickets, timestamp: opened,
                       filter: "closed == None or closed >= as_of"}
      last_open_prio: {last: tickets.prio, timestamp: opened,
                       filter: "closed == None or closed >= as_of", type: INTEGER}
      n_7d:           {count: orders, timestamp: at, window: 7d}
"""


@pytest.fixture(scope="module")
def tickets_view(tmp_path_factory: pytest.TempPathFactory) -> FeatureView:
    path = tmp_path_factory.mktemp("views") / "features.yaml"
    path.write_text(TICKETS_VIEW)
    return load_views(path, SCHEMA)["tickets"]


@pytest.mark.parametrize("which", ["every kind", "as_of filters, no day counts"])
@settings(max_examples=100, deadline=None)
@given(entities=_entities, data=st.data())
def test_a_vector_stays_the_same_until_its_horizon(
    view: FeatureView,
    tickets_view: FeatureView,
    which: str,
    entities: list[dict[str, list[dict[str, Any]]]],
    data: st.DataObject,
) -> None:
    view = view if which == "every kind" else tickets_view
    queries = data.draw(
        st.lists(st.tuples(st.integers(0, len(entities) - 1), _moments), min_size=1, max_size=8)
    )
    done = compute_many(
        view,
        [_flat(view, e) for e in entities],
        [owner for owner, _ in queries],
        [micros(t) for _, t in queries],
        horizons=True,
    )
    assert done.until is not None
    for at, (owner, t) in enumerate(queries):
        until = int(done.until[at])
        assert until >= micros(t)
        # Moments between t and the horizon, the last microsecond before it among them.
        span = min(until - micros(t), 90 * 86_400_000_000)
        if span <= 0:
            continue
        offsets = [*data.draw(st.lists(st.integers(0, span - 1), max_size=4)), span - 1]
        for offset in offsets:
            later = t + timedelta(microseconds=offset)
            now = compute(view, entities[owner], [t, later])
            assert now[1] == now[0], (
                owner,
                t,
                later,
            )


def test_horizons_are_not_trivially_short(view: FeatureView) -> None:
    t = BASE + timedelta(days=10)
    entity = {
        "orders": [
            {"at": (BASE + timedelta(days=9)).isoformat(), "amount": 5.0, "status": "paid"},
            {"at": (BASE + timedelta(days=20)).isoformat(), "amount": 5.0, "status": "paid"},
        ],
        "tickets": [{"opened": BASE.isoformat(), "closed": "2026-01-15T08:00:00", "prio": 1}],
        "profile": [{"created": BASE.isoformat(), "country": "DE"}],
    }
    done = compute_many(view, [_flat(view, entity)], [0], [micros(t)], horizons=True)
    assert done.until is not None
    # The 12h window of the order of day 9 ended before t; the next change is the day
    # since that order ticks over (recency, age) at midnight of day 11.
    assert done.until[0] == micros(BASE + timedelta(days=11))
    assert reference(entity, BASE + timedelta(days=11)) != reference(entity, t)


def test_a_row_exactly_at_t_is_out_and_one_at_t_minus_window_is_in(view: FeatureView) -> None:
    t = BASE + timedelta(days=10)
    entity = {
        "orders": [
            {"at": (t - timedelta(days=7)).isoformat(), "amount": 1.0, "status": "paid"},
            {"at": t.isoformat(), "amount": 2.0, "status": "paid"},
        ],
        "tickets": [],
        "profile": [],
    }
    ((existed, values),) = compute(view, entity, [t])
    assert existed and values["n_7d"] == 1 and values["n_all"] == 1


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "features.yaml"
    path.write_text(text)
    load_views(path, SCHEMA)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ("{count: order, timestamp: at}", "unknown table 'order'; did you mean 'orders'"),
        ("{sum: orders.amout, timestamp: at}", "unknown column 'amout' of orders"),
        ("{count: orders}", "count needs timestamp"),
        ("{count: orders, timestamp: when}", "unknown column of orders"),
        ("{count: orders, timestamp: at, window: 3m}", "a window like 30d, 12h or 4w"),
        ("{count: orders, timestamp: at, filter: 'colour = 1'}", "unknown column(s) colour"),
        ("{count: orders, timestamp: at, filter: 'x.y == 1'}", "attribute access"),
        ("{derive: 'nope + 1'}", "unknown feature(s) nope"),
        ("{derive: 'exec(1)'}", "unknown function(s) exec"),
        ("{count: orders, timestamp: at, type: DATE}", "unknown type"),
    ],
)
def test_views_are_checked_at_load_naming_file_line_and_path(
    tmp_path: Path, feature: str, message: str
) -> None:
    text = f"views:\n  v:\n    entity: customer\n    features:\n      f: {feature}\n"
    with pytest.raises(RuleError) as caught:
        _load(tmp_path, text)
    assert message in str(caught.value)
    assert "features.yaml" in str(caught.value) and "views.v.features.f" in str(caught.value)


def test_cycles_in_derived_features_are_named(tmp_path: Path) -> None:
    text = (
        "views:\n  v:\n    entity: customer\n    features:\n"
        "      a: {derive: 'b + 1'}\n      b: {derive: 'a * 2'}\n"
    )
    with pytest.raises(RuleError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        _load(tmp_path, text)


@given(st.lists(st.integers(-(10**15), 4 * 10**15), min_size=1, max_size=200))
def test_times_in_iso_form_read_as_python_writes_them(moments: list[int]) -> None:
    # Whole seconds, and times with microseconds: one form each, as datetime.isoformat().
    moments += [m - m % 1_000_000 for m in moments]
    assert _iso(np.array(moments, np.int64)) == [_iso_one(m) for m in moments]


_FOREVER = 2**63 - 1


@pytest.mark.parametrize(
    ("closed", "until"),
    [
        ("2026-01-11T15:00:00", micros(BASE + timedelta(days=10, hours=15))),
        ("2026-01-11T15:00:00+02:00", micros(BASE + timedelta(days=10, hours=15))),
        ("2026-01-11 15:00:00", _FOREVER),  # " " sorts below "T": closed all day, and after
        ("2026-01-11", _FOREVER),  # a prefix of every as_of of the day: below them all
        ("2026-01-11T08:00:00", _FOREVER),  # passed already
        ("2026-01-11T09:00:00", micros(BASE + timedelta(days=10, hours=9))),  # this second
        ("2026-01-11Z", micros(BASE + timedelta(days=11))),  # above the day's as_of texts
        ("2026-01-12T00:00:00", micros(BASE + timedelta(days=11))),
        ("2026-01-11T15", micros(BASE + timedelta(days=10, hours=9))),  # cannot be told
    ],
)
def test_an_as_of_filter_on_todays_date_turns_where_the_texts_do(
    tickets_view: FeatureView, closed: str, until: int
) -> None:
    entity = {
        "orders": [],
        "tickets": [{"opened": BASE.isoformat(), "closed": closed, "prio": 2}],
        "profile": [],
    }
    t = BASE + timedelta(days=10, hours=9)
    done = compute_many(
        tickets_view, [_flat(tickets_view, entity)], [0], [micros(t)], horizons=True
    )
    assert done.until is not None and int(done.until[0]) == until
    if until not in (_FOREVER, micros(t)):
        # The bound is tight here: just past it, the ticket's verdict has turned.
        after = t + timedelta(microseconds=until - micros(t) + 1)
        assert compute(tickets_view, entity, [after]) != compute(tickets_view, entity, [t])


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_time_with_no_utc_time_in_range_is_no_time(text: str) -> None:
    assert parse_time(text) is None  # not an OverflowError (a 500 for an as_of)
    assert parse_time(text[:19]) is not None
