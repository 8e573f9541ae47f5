"""Transforms applied at ingest: what each source column becomes before it is resolved and stored.

A transforms file maps entity type -> table -> column to one of:

- ``drop``: the column is not stored;
- a step or a list of steps, applied in order: ``trim``, ``lowercase``, ``uppercase``,
  ``title``, ``collapse_spaces``, ``digits_only``, ``empty_to_null``,
  ``{cast: INTEGER|REAL|TEXT}``, ``{parse_date: FORMAT}`` and ``{parse_datetime: FORMAT}``
  (to ISO 8601; ``invalid: null`` turns values that do not parse into NULL instead of
  stopping the sync), ``{normalize: email|phone|whitespace}`` (``region:`` for phones),
  ``{default: VALUE}`` (for NULL), ``{map: {old: new, ...}}``;
- for a column the source does not have, a derived one: ``{derive: EXPRESSION, type: T}`` (a
  small expression over the row's columns as transformed, and dropped ones as read, evaluated
  by ``simpleeval`` with lists and tuples (``x in ('a', 'b')``): arithmetic,
  comparisons, ``x if c else y`` and the functions of :data:`FUNCTIONS`; no attribute access,
  no imports) or ``{builtin: NAME, from: [COLUMNS], type: T}``.

Files are checked whole at load, each problem naming file, line and path; rules compile once
into one function per table from a source row to the stored row. Primary keys, foreign keys
and watermark columns are read as they are: transforming them would break incremental syncs.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import phonenumbers
from simpleeval import EvalWithCompoundTypes, FeatureNotAvailable

from fabric.config.documents import YamlDocument
from fabric.config.loader import read_yaml
from fabric.config.validation import format_issue
from fabric.errors import RuleError, SourceError
from fabric.resolve.normalize import make_normaliser

__all__ = ["FUNCTIONS", "TableTransform", "Transforms", "load_transforms", "unsupported"]

Row = tuple[Any, ...]
Step = Callable[[Any], Any]

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
_DIGITS = make_normaliser("digits_only")


def _on_text(normalise: Callable[[str], str | None]) -> Step:
    """A text normaliser as a step: other values (numbers, NULL) pass through."""
    return lambda v: normalise(v) if isinstance(v, str) else v


def _digits(value: Any) -> str | None:
    return None if value is None else _DIGITS(str(value))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _email_domain(email: Any) -> str | None:
    text = _text(email)
    if not text or "@" not in text:
        return None
    return text.rsplit("@", 1)[1].strip().lower() or None


def _year(value: Any) -> int | None:
    text = _text(value)
    return int(text[:4]) if text and re.match(r"^\d{4}-", text) else None


def _month(value: Any) -> int | None:
    text = _text(value)
    return int(text[5:7]) if text and re.match(r"^\d{4}-\d{2}", text) else None


def _days_between(start: Any, end: Any) -> int | None:
    if start is None or end is None:
        return None
    return (date.fromisoformat(str(end)[:10]) - date.fromisoformat(str(start)[:10])).days


def _concat(*parts: Any) -> str:
    return "".join("" if p is None else str(p) for p in parts)


def _full_name(first: Any, last: Any) -> str | None:
    name = " ".join(str(p).strip() for p in (first, last) if p is not None and str(p).strip())
    return name or None


#: Functions a ``derive`` expression may call (and the ``builtin`` names).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": lambda s: None if s is None else str(s).lower(),
    "upper": lambda s: None if s is None else str(s).upper(),
    "trim": lambda s: None if s is None else str(s).strip(),
    "len": lambda s: None if s is None else len(str(s)),
    "concat": _concat,
    "coalesce": lambda *values: next((v for v in values if v is not None), None),
    "nullif": lambda a, b: None if a == b else a,
    "round": round,
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "str": str,
    "substr": lambda s, start, length=None: (
        None if s is None else str(s)[start : None if length is None else start + length]
    ),
    "replace": lambda s, old, new: None if s is None else str(s).replace(old, new),
    "year": _year,
    "month": _month,
    "days_between": _days_between,
    "email_domain": _email_domain,
    "full_name": _full_name,
    "digits": _digits,
}


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
        derived: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = []
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
                if made is not None:
                    derived.append((column, *made))
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
        plan = [(at[n], steps.get(n)) for n in kept]
        where = f"{self.path.name}: {entity_type}.{table}"

        def apply(row: Row) -> Row:
            out = []
            for position, chain in plan:
                value = row[position]
                if chain is not None:
                    for step in chain:
                        value = step(value)
                out.append(value)
            if derived:
                # Derived columns see the transformed values, and the raw ones of dropped
                # columns (derive an age from a birth date, then drop the date).
                values = dict(zip(names, row, strict=True))
                values.update(zip(kept, out, strict=True))
                for column, _, make in derived:
                    try:
                        out.append(make(values))
                    except Exception as exc:  # any expression error: say where, not what value
                        raise SourceError(
                            f"{where}.{column}: the derive failed on a row "
                            f"({type(exc).__name__}); guard it, e.g. with coalesce or nullif"
                        ) from None
            return tuple(out)

        def guarded(row: Row) -> Row:
            try:
                return apply(row)
            except _StepError as exc:
                raise SourceError(f"{where}.{exc.column}: {exc}") from None

        stored = tuple((n, types[n]) for n in kept) + tuple((c, t) for c, t, _ in derived)
        return TableTransform(tuple(names), stored, guarded)


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
            "digits_only": _digits,
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
) -> tuple[str, Callable[[dict[str, Any]], Any]] | None:
    """(storage class, function of the row's values) of a derived column; ``names`` None:
    the columns are not known yet, only the rest is checked."""
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
        return sql_type, lambda values: function(*(values[s] for s in sources))
    expression = str(entry.get("derive", ""))
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        problems.append(doc.issue((*loc, "derive"), f"not an expression ({exc.msg})"))
        return None
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - called
    known = set(names) if names is not None else used
    unknown_names = sorted(used - known - {"None", "True", "False"})
    unknown_calls = sorted(called - set(FUNCTIONS))
    if any(isinstance(n, ast.Attribute) for n in ast.walk(tree)):
        problems.append(doc.issue((*loc, "derive"), "attribute access (x.y) is not allowed"))
        return None
    if unknown_names or unknown_calls:
        parts = []
        if unknown_names:
            parts.append(
                f"unknown column(s) {', '.join(unknown_names)} (columns: {', '.join(names or ())})"
            )
        if unknown_calls:
            parts.append(
                f"unknown function(s) {', '.join(unknown_calls)} "
                f"(functions: {', '.join(FUNCTIONS)})"
            )
        problems.append(doc.issue((*loc, "derive"), "; ".join(parts)))
        return None
    evaluator = EvalWithCompoundTypes(functions=FUNCTIONS)
    parsed = evaluator.parse(expression)
    problem = unsupported(evaluator, expression, parsed, used)
    if problem:
        problems.append(doc.issue((*loc, "derive"), problem))
        return None

    def derive(values: dict[str, Any]) -> Any:
        evaluator.names = values
        return evaluator.eval(expression, previously_parsed=parsed)

    return sql_type, derive


def unsupported(
    evaluator: EvalWithCompoundTypes, expression: str, parsed: Any, names: Iterable[str]
) -> str | None:
    """What ``simpleeval`` refuses in an expression (a construct it does not evaluate), found
    by one trial with every name NULL: at load, not on the first row of a sync."""
    evaluator.names = dict.fromkeys(names)
    try:
        evaluator.eval(expression, previously_parsed=parsed)
    except FeatureNotAvailable as exc:
        return f"not allowed in an expression: {exc}"
    except Exception:  # NULLs in arithmetic and the like: a question for real rows
        return None
    return None


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
