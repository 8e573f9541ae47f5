"""Transforms applied at ingest: what each source column becomes before it is resolved and stored.

A transforms file maps entity type -> table -> column to one of:

- ``drop``: the column is not stored;
- a step or a list of steps, applied in order: ``trim``, ``lowercase``, ``uppercase``,
  ``title``, ``collapse_spaces``, ``digits_only``, ``empty_to_null``,
  ``{cast: INTEGER|REAL|TEXT}``, ``{parse_date: FORMAT}`` and ``{parse_datetime: FORMAT}``
  (to ISO 8601; ``invalid: null`` turns values that do not parse into NULL instead of
  stopping the sync), ``{normalize: email|phone|whitespace}`` (``region:`` for phones),
  ``{default: VALUE}`` (for NULL), ``{map: {old: new, ...}}``;
- for a column the source does not have, a derived one: ``{derive: EXPRESSION, type: T}`` (an
  expression of :mod:`fabric.expressions` over the row's columns as transformed, and dropped
  ones as read: arithmetic, comparisons, ``x if c else y``, ``x in ('a', 'b')`` and the
  functions of :data:`fabric.expressions.FUNCTIONS`; no attribute access, no imports) or
  ``{builtin: NAME, from: [COLUMNS], type: T}`` (one of those functions).

Files are checked whole at load, each problem naming file, line and path; rules compile once
into one function per table from a source row to the stored row, derived columns included
(expressions are compiled to Python, never interpreted per row). Primary keys, foreign keys
and watermark columns are read as they are: transforming them would break incremental syncs.
"""

from __future__ import annotations

import difflib
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers

from fabric.config.documents import YamlDocument
from fabric.config.loader import read_yaml
from fabric.config.validation import format_issue
from fabric.errors import RuleError, SourceError
from fabric.expressions import FUNCTIONS, parse_expression
from fabric.resolve.normalize import make_normaliser

__all__ = ["TableTransform", "Transforms", "load_transforms"]

Row = tuple[Any, ...]
Step = Callable[[Any], Any]
#: a derived column's value from the row's values (every source column, in source order)
Derive = Callable[[Sequence[Any]], Any]

_TYPES = ("INTEGER", "REAL", "TEXT")
_SIMPLE_STEPS = (
    "trim",
    "lowercase",
    "uppercase",
    "title",
    "collapse_spaces",
    "digits_only",
    "empty_to_null",
)
_MAPPED_STEPS = ("cast", "parse_date", "parse_datetime", "normalize", "default", "map")
# The resolver's normalisers, shared: text steps of transforms and match fields agree.
_TRIM = make_normaliser("trim")
_COLLAPSE = make_normaliser("collapse_spaces")
#: The step keeps digits as the expressions' function does (of numbers too, not only text).
_DIGITS_ONLY = FUNCTIONS["digits"]


def _on_text(normalise: Callable[[str], str | None]) -> Step:
    """A text normaliser as a step: other values (numbers, NULL) pass through."""
    return lambda v: normalise(v) if isinstance(v, str) else v


@dataclass(frozen=True)
class TableTransform:
    """One table's transforms: the source columns read, the stored columns, the row function."""

    source_columns: tuple[str, ...]
    #: (name, SQLite storage class) of every stored column, in order
    columns: tuple[tuple[str, str], ...]
    apply: Callable[[Row], Row]


class Transforms:
    """The compiled transforms of a project, by (entity type, table)."""

    def __init__(self, spec: Mapping[str, Mapping[str, Mapping[str, Any]]], path: Path) -> None:
        self.spec = spec
        self.path = path

    def version(self, entity_type: str) -> str:
        """The transforms of one entity type, as canonical JSON (part of its schema version)."""
        return json.dumps(self.spec.get(entity_type, {}), sort_keys=True, default=str)

    def tables(self, entity_type: str) -> set[str]:
        """Tables of an entity type with transforms."""
        return set(self.spec.get(entity_type, {}))

    def for_table(
        self,
        entity_type: str,
        table: str,
        source: Sequence[tuple[str, str]],
        protected: Mapping[str, str],
    ) -> TableTransform | None:
        """Compile the transforms of one table against its reflected source columns.

        ``source`` is (column, storage class) as reflected; ``protected`` maps the columns
        read as they are (primary key, foreign key, watermark) to why.

        Raises:
            RuleError: every problem, each naming file, line and path.
        """
        columns = self.spec.get(entity_type, {}).get(table)
        if not columns:
            return None
        problems: list[str] = []
        doc = _Doc(self.path)
        names = [name for name, _ in source]
        types = dict(source)
        steps: dict[str, list[Step]] = {}
        dropped: set[str] = set()
        derived: list[tuple[str, str, Derive]] = []
        for column, entry in columns.items():
            loc = (entity_type, table, column)
            if column in protected and column in names:
                problems.append(
                    doc.issue(
                        loc,
                        f"is the table's {protected[column]}: it is "
                        "read as it is, never transformed",
                    )
                )
                continue
            if isinstance(entry, dict) and ("derive" in entry or "builtin" in entry):
                if column in names:
                    problems.append(
                        doc.issue(
                            loc,
                            "the source has this column: transform it "
                            "with steps, or derive under another name",
                        )
                    )
                    continue
                made = _derived(entry, names, doc, loc, problems)
                if made is not None and made[1] is not None:
                    derived.append((column, made[0], made[1]))
                continue
            if column not in names:
                hint = difflib.get_close_matches(column, names, n=1)
                problems.append(
                    doc.issue(
                        loc,
                        "unknown column"
                        + (f"; did you mean '{hint[0]}'?" if hint else "")
                        + f" (columns: {', '.join(names)}; a new column needs derive: or builtin:)",
                    )
                )
                continue
            if entry == "drop":
                dropped.add(column)
                continue
            compiled = _steps(entry, doc, loc, problems)
            if compiled is not None:
                steps[column] = compiled[0]
                if compiled[1] is not None:
                    types[column] = compiled[1]
        if problems:
            raise RuleError("\n".join(problems))
        kept = [n for n in names if n not in dropped]
        at = {n: i for i, n in enumerate(names)}
        pick = _picker([at[n] for n in kept])
        chains = [(at[n], chain) for n, chain in steps.items()]
        where = f"{self.path.name}: {entity_type}.{table}"

        def apply(row: Row) -> Row:
            # Derived columns see the transformed values, and the raw ones of dropped
            # columns (derive an age from a birth date, then drop the date).
            values = list(row)
            for position, chain in chains:
                value = values[position]
                for step in chain:
                    value = step(value)
                values[position] = value
            if not derived:
                return pick(values)
            made = []
            for column, _, make in derived:
                try:
                    made.append(make(values))
                except Exception as exc:  # any expression error: say where, not what value
                    raise SourceError(
                        f"{where}.{column}: the derive failed on a row "
                        f"({type(exc).__name__}); guard it, e.g. with coalesce or nullif"
                    ) from None
            return (*pick(values), *made)

        def guarded(row: Row) -> Row:
            try:
                return apply(row)
            except _StepError as exc:
                raise SourceError(f"{where}.{exc.column}: {exc}") from None

        stored = tuple((n, types[n]) for n in kept) + tuple((c, t) for c, t, _ in derived)
        return TableTransform(tuple(names), stored, guarded)


def _picker(positions: Sequence[int]) -> Callable[[Sequence[Any]], Row]:
    """The values at ``positions`` of a row, as a tuple (``itemgetter`` of one position
    would return the value itself)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    return lambda values: tuple(values[p] for p in positions)


class _StepError(ValueError):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


class _Doc:
    """Line numbers for messages about one transforms file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._doc: YamlDocument | None = None

    def issue(self, loc: tuple[str | int, ...], message: str) -> str:
        if self._doc is None:
            self._doc = read_yaml(self.path, what="transforms", error=RuleError)
        return format_issue(self.path, self._doc.line_of(loc), loc, message)


def _step(
    item: Any, doc: _Doc, loc: tuple[str | int, ...], problems: list[str]
) -> tuple[Step, str | None] | None:
    """One step and the storage class it produces (None: unchanged)."""
    column = str(loc[2])
    if isinstance(item, str):
        simple: dict[str, Step] = {
            "trim": _on_text(_TRIM),
            "lowercase": lambda v: v.lower() if isinstance(v, str) else v,
            "uppercase": lambda v: v.upper() if isinstance(v, str) else v,
            "title": lambda v: v.title() if isinstance(v, str) else v,
            "collapse_spaces": _on_text(_COLLAPSE),
            "digits_only": _DIGITS_ONLY,
            "empty_to_null": lambda v: None if isinstance(v, str) and not v.strip() else v,
        }
        if item in simple:
            return simple[item], None
        hint = difflib.get_close_matches(item, [*_SIMPLE_STEPS, *_MAPPED_STEPS], n=1)
        problems.append(
            doc.issue(
                loc,
                f"unknown step '{item}'"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
                + f" (steps: {', '.join(_SIMPLE_STEPS)}, or {{{'|'.join(_MAPPED_STEPS)}: ...}})",
            )
        )
        return None
    if not isinstance(item, dict) or not item:
        problems.append(doc.issue(loc, "a step is a name (trim) or a mapping ({cast: INTEGER})"))
        return None
    kind = next((k for k in item if k in _MAPPED_STEPS), None)
    extra = set(item) - {kind, "invalid", "region"}
    if kind is None or extra:
        problems.append(
            doc.issue(
                loc,
                f"unknown step {sorted(map(str, item))} (mapped steps: {', '.join(_MAPPED_STEPS)})",
            )
        )
        return None
    arg = item[kind]
    nulls = item.get("invalid") == "null"
    if kind == "cast":
        if arg not in _TYPES:
            problems.append(doc.issue((*loc, "cast"), f"unknown type (types: {', '.join(_TYPES)})"))
            return None
        convert: Callable[[Any], Any] = {"INTEGER": int, "REAL": float, "TEXT": str}[arg]

        def cast(value: Any) -> Any:
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            try:
                return convert(value)
            except (TypeError, ValueError):
                if nulls:
                    return None
                raise _StepError(
                    column, f"a value does not cast to {arg} (invalid: null to store NULL instead)"
                ) from None

        return cast, arg
    if kind in ("parse_date", "parse_datetime"):
        fmt = str(arg)
        try:
            datetime.strptime(datetime(2001, 2, 3, 4, 5, 6).strftime(fmt), fmt)
        except ValueError:
            problems.append(doc.issue((*loc, kind), f"not a usable strptime format: {fmt!r}"))
            return None
        as_date = kind == "parse_date"

        def parse(value: Any) -> Any:
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            try:
                moment = datetime.strptime(str(value).strip(), fmt)
            except ValueError:
                if nulls:
                    return None
                raise _StepError(
                    column,
                    f"a value does not match {kind} {fmt!r} (invalid: null to store NULL instead)",
                ) from None
            return moment.date().isoformat() if as_date else moment.isoformat()

        return parse, "TEXT"
    if kind == "normalize":
        if arg == "email":
            return (lambda v: v.strip().lower() if isinstance(v, str) else v), None
        if arg == "whitespace":
            return _on_text(_COLLAPSE), None
        if arg == "phone":
            region = str(item.get("region", "US"))

            def phone(value: Any) -> Any:
                if value is None:
                    return None
                try:
                    number = phonenumbers.parse(str(value), region)
                except phonenumbers.NumberParseException:
                    return None if nulls else value
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

            return phone, "TEXT"
        problems.append(doc.issue((*loc, "normalize"), "unknown (email, phone, whitespace)"))
        return None
    if kind == "default":
        fill = arg
        return (lambda v: fill if v is None else v), None
    if not isinstance(arg, dict):
        problems.append(doc.issue((*loc, "map"), "map: needs a mapping of old value: new value"))
        return None
    table = {str(k): v for k, v in arg.items()}
    return (lambda v: table.get(str(v), v) if v is not None else v), None


def _steps(
    entry: Any, doc: _Doc, loc: tuple[str | int, ...], problems: list[str]
) -> tuple[list[Step], str | None] | None:
    items = entry if isinstance(entry, list) else [entry]
    out: list[Step] = []
    produced: str | None = None
    ok = True
    for index, item in enumerate(items):
        made = _step(item, doc, (*loc, index) if isinstance(entry, list) else loc, problems)
        if made is None:
            ok = False
            continue
        out.append(made[0])
        produced = made[1] or produced
    return (out, produced) if ok else None


def _derived(
    entry: dict[str, Any],
    names: Sequence[str] | None,
    doc: _Doc,
    loc: tuple[str | int, ...],
    problems: list[str],
) -> tuple[str, Derive | None] | None:
    """(storage class, function of the row's values) of a derived column; ``names`` None:
    the columns are not known yet, only the rest is checked (and there is no function)."""
    allowed = {"derive", "builtin", "from", "type"}
    if set(entry) - allowed or ("derive" in entry and "builtin" in entry):
        problems.append(
            doc.issue(
                loc,
                "a derived column has derive: EXPRESSION or builtin: "
                "NAME with from: [COLUMNS], and type:",
            )
        )
        return None
    sql_type = entry.get("type", "TEXT")
    if sql_type not in _TYPES:
        problems.append(doc.issue((*loc, "type"), f"unknown type (types: {', '.join(_TYPES)})"))
        return None
    if "builtin" in entry:
        name = str(entry["builtin"])
        function = FUNCTIONS.get(name)
        sources = entry.get("from", [])
        sources = [sources] if isinstance(sources, str) else list(sources)
        if function is None:
            hint = difflib.get_close_matches(name, list(FUNCTIONS), n=1)
            problems.append(
                doc.issue(
                    (*loc, "builtin"),
                    f"unknown built-in '{name}'"
                    + (f"; did you mean '{hint[0]}'?" if hint else "")
                    + f" (built-ins: {', '.join(FUNCTIONS)})",
                )
            )
            return None
        unknown = [s for s in sources if names is not None and s not in names]
        if unknown or not sources:
            problems.append(
                doc.issue(
                    (*loc, "from"),
                    f"from: needs source columns (unknown: "
                    f"{', '.join(map(str, unknown)) or 'none given'})",
                )
            )
            return None
        if names is None:
            return sql_type, None
        read = [names.index(s) for s in sources]
        return sql_type, lambda values: function(*[values[i] for i in read])
    try:
        expression = parse_expression(str(entry.get("derive", "")))
    except RuleError as exc:  # not an expression, or one with what the language lacks
        problems.append(doc.issue((*loc, "derive"), str(exc)))
        return None
    parts = []
    if names is not None:
        unknown_names = sorted(expression.names - set(names))
        if unknown_names:
            parts.append(
                f"unknown column(s) {', '.join(unknown_names)} (columns: {', '.join(names)})"
            )
    unknown_calls = expression.functions_problem()
    if unknown_calls:
        parts.append(unknown_calls)
    if parts:
        problems.append(doc.issue((*loc, "derive"), "; ".join(parts)))
        return None
    # Compiled over the whole row: its values are in source order already, however many.
    return sql_type, None if names is None else expression.compile_row(names)


def load_transforms(path: Path, *, check_steps: bool = True) -> Transforms:
    """Read a transforms file: entity type -> table -> column -> transform.

    The shape is checked here, and the steps and expressions unless ``check_steps`` is False
    (a caller about to compile every table against its source, which checks them too and
    reports them with the column problems, all at once: :meth:`Transforms.for_table`).

    Raises:
        RuleError: naming file, line and path.
    """
    doc = read_yaml(path, what="transforms", error=RuleError)
    data = doc.data or {}
    problems = []
    if not isinstance(data, dict):
        raise RuleError(format_issue(path, None, (), "must map entity types to tables"))
    for etype, tables in data.items():
        if not isinstance(tables, dict):
            problems.append(
                format_issue(path, doc.line_of((etype,)), (etype,), "must map tables to columns")
            )
            continue
        for table, columns in tables.items():
            if not isinstance(columns, dict):
                problems.append(
                    format_issue(
                        path,
                        doc.line_of((etype, table)),
                        (etype, table),
                        "must map columns to transforms",
                    )
                )
    if not problems and check_steps:
        # Steps and expressions are checked now; column names when the sources are reflected.
        checker = _Doc(path)
        for etype, tables in data.items():
            for table, columns in tables.items():
                for column, entry in columns.items():
                    loc = (str(etype), str(table), str(column))
                    if entry == "drop":
                        continue
                    if isinstance(entry, dict) and ("derive" in entry or "builtin" in entry):
                        _derived(entry, None, checker, loc, problems)
                    else:
                        _steps(entry, checker, loc, problems)
    if problems:
        raise RuleError("\n".join(problems))
    return Transforms(data, path)
