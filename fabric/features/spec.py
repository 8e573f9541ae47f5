"""Feature views: declared in YAML, checked whole at load, compiled once.

A view belongs to one entity type and has a name, a version and features. Each feature is one
of:

- ``{count: TABLE, timestamp: COLUMN, window: 90d, filter: EXPR}``;
- ``{sum|avg|min|max|distinct|last: TABLE.COLUMN, timestamp: COLUMN, window: 30d, filter: EXPR}``;
- ``{recency: TABLE, timestamp: COLUMN}``: days since the table's last event;
- ``{age: [TABLE.COLUMN, ...]}``: days since the earliest of those times;
- ``{attribute: TABLE.COLUMN, timestamp: COLUMN}``: the value on the latest row that existed;
- ``{derive: EXPR}``: an expression over other features of the view.

with ``type: INTEGER|REAL|TEXT|BOOLEAN`` and ``default:`` (the value for an entity with no data).
Windows are ``Nd``, ``Nh`` or ``Nw``; ``[t - window, t)``. Filters and derived features are
expressions of :mod:`fabric.expressions`, the language of ingest transforms too, checked here
and compiled once by :mod:`fabric.features.compute`; a filter sees the row's columns and
``as_of`` (and may write SQL's ``=`` for ``==``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fabric.config.loader import read_yaml
from fabric.config.validation import format_issue, suggest
from fabric.errors import RuleError
from fabric.expressions import parse_expression

__all__ = ["AGGREGATES", "Feature", "FeatureView", "load_views"]

AGGREGATES = ("count", "sum", "avg", "min", "max", "distinct", "last")
_KINDS = (*AGGREGATES, "recency", "age", "attribute", "derive")
_TYPES = ("INTEGER", "REAL", "TEXT", "BOOLEAN")
_WINDOW = re.compile(r"^(\d+)([dhw])$")
_UNITS = {"d": "days", "h": "hours", "w": "weeks"}
_KEYS = {"timestamp", "window", "filter", "type", "default", "description"}


@dataclass(frozen=True)
class Feature:
    """One compiled feature definition."""

    name: str
    kind: str
    table: str = ""
    column: str = ""
    timestamp: str = ""
    window: timedelta | None = None
    filter: str = ""
    #: (table, column) of each time ``age`` looks at
    times: tuple[tuple[str, str], ...] = ()
    expression: str = ""
    type: str = "REAL"
    default: Any = None
    #: other features a ``derive`` reads
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned set of features of one entity type."""

    name: str
    entity_type: str
    version: int
    features: tuple[Feature, ...]
    #: the definitions as written, hashed into exports' manifests
    definition: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @functools.cached_property
    def definition_hash(self) -> str:
        """SHA-256 of the definitions (canonical JSON), made once."""
        text = json.dumps(self.definition, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def tables(self) -> list[str]:
        """The entity tables the view's features read, in a stable order."""
        found = {f.table for f in self.features if f.table}
        found.update(table for f in self.features for table, _ in f.times)
        return sorted(found)

    def feature(self, name: str) -> Feature:
        """One feature by name."""
        for item in self.features:
            if item.name == name:
                return item
        raise KeyError(name)


def load_views(
    path: Path, schema: Mapping[str, Mapping[str, Sequence[str]]]
) -> dict[str, FeatureView]:
    """Load and check a features file against entity type -> table -> columns.

    Raises:
        RuleError: every problem at once, each naming file, line and path.
    """
    doc = read_yaml(path, what="feature views", error=RuleError)
    problems: list[str] = []

    def issue(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(format_issue(path, doc.line_of(loc), loc, message))

    data = doc.data
    if not isinstance(data, dict) or set(data) != {"views"} or not isinstance(data["views"], dict):
        raise RuleError(format_issue(path, None, (), "must hold 'views:', a mapping of views"))
    views: dict[str, FeatureView] = {}
    for name, body in data["views"].items():
        base: tuple[str | int, ...] = ("views", str(name))
        if not isinstance(body, dict):
            issue(base, "a view maps entity, version and features")
            continue
        extra = set(body) - {"entity", "version", "features", "description"}
        if extra:
            issue((*base, sorted(extra)[0]), "unknown key (allowed: entity, version, features)")
        entity_type = str(body.get("entity", ""))
        if entity_type not in schema:
            issue((*base, "entity"), f"unknown entity type (types: {', '.join(schema)})")
            continue
        tables = schema[entity_type]
        version = body.get("version", 1)
        if not isinstance(version, int) or version < 1:
            issue((*base, "version"), "a whole number, 1 or more")
        raw = body.get("features")
        if not isinstance(raw, dict) or not raw:
            issue((*base, "features"), "a mapping of feature names to definitions")
            continue
        features = []
        for fname, spec in raw.items():
            made = _feature(str(fname), spec, tables, (*base, "features", str(fname)), issue)
            if made is not None:
                features.append(made)
        _check_derived(features, (*base, "features"), issue)
        views[str(name)] = FeatureView(
            str(name),
            entity_type,
            int(version) if isinstance(version, int) else 1,
            tuple(_ordered(features)),
            body,
        )
    if problems:
        raise RuleError("\n".join(problems))
    return views


def _feature(
    name: str,
    spec: Any,
    tables: Mapping[str, Sequence[str]],
    loc: tuple[str | int, ...],
    issue: Any,
) -> Feature | None:
    if not isinstance(spec, dict):
        issue(loc, f"a mapping with one of: {', '.join(_KINDS)}")
        return None
    kinds = [k for k in spec if k in _KINDS]
    unknown = [k for k in spec if k not in _KINDS and k not in _KEYS]
    if unknown:
        issue(
            (*loc, unknown[0]),
            f"unknown key; {suggest(str(unknown[0]), [*_KINDS, *_KEYS])}"
            f"(kinds: {', '.join(_KINDS)}; keys: {', '.join(sorted(_KEYS))})",
        )
        return None
    if len(kinds) != 1:
        issue(loc, f"exactly one kind of feature (kinds: {', '.join(_KINDS)})")
        return None
    kind = kinds[0]
    ftype = spec.get(
        "type", "INTEGER" if kind in ("count", "distinct", "recency", "age") else "REAL"
    )
    if ftype not in _TYPES:
        issue((*loc, "type"), f"unknown type (types: {', '.join(_TYPES)})")
        return None
    default = spec.get("default", 0 if kind in ("count", "distinct") else None)
    target = spec[kind]

    def column_ref(value: Any, where: tuple[str | int, ...], table_only: bool) -> tuple[str, str]:
        text = str(value)
        table, _, column = text.partition(".")
        if table not in tables:
            issue(
                where,
                f"unknown table '{table}'; {suggest(table, tables)}(tables: {', '.join(tables)})",
            )
            return "", ""
        if table_only:
            if column:
                issue(where, "name a table, not a column")
            return table, ""
        if column not in tables[table]:
            issue(
                where,
                f"unknown column '{column}' of {table}; "
                f"{suggest(column, tables[table])}(columns: {', '.join(tables[table])})",
            )
            return "", ""
        return table, column

    if kind == "derive":
        try:
            expression = parse_expression(str(target))
        except RuleError as exc:  # not an expression, or one with what the language lacks
            issue((*loc, "derive"), str(exc))
            return None
        problem = expression.functions_problem()
        if problem:
            issue((*loc, "derive"), problem)
            return None
        return Feature(
            name,
            kind,
            expression=expression.text,
            type=ftype,
            default=default,
            reads=tuple(sorted(expression.names)),
        )
    if kind == "age":
        refs = target if isinstance(target, list) else [target]
        times = tuple(column_ref(r, (*loc, "age"), False) for r in refs)
        if any(not t for t, _ in times):
            return None
        return Feature(name, kind, times=times, type=ftype, default=default)
    table, column = column_ref(target, (*loc, kind), kind in ("count", "recency"))
    if not table:
        return None
    timestamp = str(spec.get("timestamp", ""))
    if not timestamp:
        issue(
            loc,
            f"{kind} needs timestamp: the table's event time column "
            f"(columns of {table}: {', '.join(tables[table])})",
        )
        return None
    if timestamp not in tables[table]:
        issue(
            (*loc, "timestamp"),
            f"unknown column of {table}; {suggest(timestamp, tables[table])}"
            f"(columns: {', '.join(tables[table])})",
        )
        return None
    window = None
    if "window" in spec:
        match = _WINDOW.match(str(spec["window"]))
        if not match or int(match[1]) == 0:
            issue((*loc, "window"), "a window like 30d, 12h or 4w (days, hours, weeks)")
            return None
        window = timedelta(**{_UNITS[match[2]]: int(match[1])})
    elif kind not in ("recency", "attribute", "last"):
        window = None  # no window: everything before t
    filter_text = str(spec.get("filter", ""))
    if filter_text:
        try:
            condition = parse_expression(_sql_equals(filter_text))
        except RuleError as exc:  # not an expression, or one with what the language lacks
            issue((*loc, "filter"), str(exc))
            return None
        parts = []
        unknown_cols = sorted(condition.names - set(tables[table]) - {"as_of"})
        if unknown_cols:
            parts.append(f"unknown column(s) {', '.join(unknown_cols)} of {table}")
        unknown_calls = condition.functions_problem()
        if unknown_calls:
            parts.append(unknown_calls)
        if parts:
            issue((*loc, "filter"), "; ".join(parts))
            return None
    return Feature(
        name,
        kind,
        table,
        column,
        timestamp,
        window,
        _sql_equals(filter_text),
        type=ftype,
        default=default,
    )


def _sql_equals(text: str) -> str:
    """``status = 'paid'`` (SQL) as ``status == 'paid'``; ``==``, ``<=``, ``!=`` stay."""
    return re.sub(r"(?<![=!<>])=(?!=)", "==", text)


def _check_derived(features: list[Feature], loc: tuple[str | int, ...], issue: Any) -> None:
    names = {f.name for f in features}
    for feature in features:
        unknown = [r for r in feature.reads if r not in names]
        if unknown:
            issue(
                (*loc, feature.name, "derive"),
                f"unknown feature(s) {', '.join(unknown)} (features: {', '.join(sorted(names))})",
            )
    # Cycles: a derived feature may not depend on itself through others.
    graph = {f.name: set(f.reads) & names for f in features}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                issue(
                    (*loc, node, "derive"), f"derived features form a cycle: {' -> '.join(cycle)}"
                )
            elif not state.get(nxt):
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if not state.get(name):
            visit(name, [name])


def _ordered(features: list[Feature]) -> list[Feature]:
    """Features with every derived one after those it reads (declaration order otherwise)."""
    done: list[Feature] = []
    placed: set[str] = set()
    pending = list(features)
    while pending:
        ready = [f for f in pending if set(f.reads) <= placed]
        if not ready:  # a cycle, already reported
            return done + pending
        for feature in ready:
            done.append(feature)
            placed.add(feature.name)
        pending = [f for f in pending if f.name not in placed]
    return done
