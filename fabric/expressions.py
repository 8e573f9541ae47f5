"""The expression language of the rules: its functions, its checks, its compiler.

Two kinds of rule hold small expressions: ingest transforms derive a column from the row's
columns (:mod:`fabric.rules.transforms`), and feature views filter events and derive features
from other features (:mod:`fabric.features.spec`). Both are written in this one language,
checked here when their file loads (:func:`parse_expression`), and compiled once into a plain
Python function (:meth:`Expression.compile`): a sync or an export evaluates them millions of
times, and walking the syntax tree on every call, as an interpreter does, costs many times
what the compiled function does (``benchmarks/expr_bench.py`` measures both; figures in
``benchmarks/README.md``, "Expressions").

The language: constants; names; ``and``, ``or``, ``not``; comparisons (``in``, ``is`` too);
``+ - * / // % **``, ``<< >> & | ^ ~`` and the signs; ``x if c else y``; tuples, lists, sets
and dicts; subscripts and slices (``s[0:3]``); f-strings without format specs; calls of
:data:`FUNCTIONS` by name, with positional and named arguments. Nothing else: no attribute
access, lambdas, comprehensions, assignments, unpacking or imports, and no builtins but the
listed functions. It means what ``simpleeval``, which evaluated these rules before, made of
them (``tests/test_expressions.py`` checks the two against each other), with its limits on
products, powers and shifts, so that ``'x' * 10**9`` cannot exhaust memory. Where the two
part: what the language lacks is refused when the file loads, wherever it is (``simpleeval``
was tried once on NULLs, and met only the branches those took); comprehensions, ``*``/``**``
unpacking and format specs, which it evaluated, are refused (a comprehension's variable was
an unknown column anyway); sums are not limited in length (one is only as long as its terms
together, which the rows bound).
"""

from __future__ import annotations

import ast
import copy
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any

from fabric.errors import RuleError
from fabric.resolve.normalize import make_normaliser

__all__ = ["FUNCTIONS", "Expression", "compile_expression", "parse_expression"]

#: The longest text or sequence a product may make, and the longest literal.
MAX_LENGTH = 100_000
#: The largest base or exponent of a power.
MAX_POWER = 4_000_000
#: The largest shift, and the largest number shifted.
MAX_SHIFT = 10_000
MAX_SHIFT_BASE = int(sys.float_info.max)

_DIGITS = make_normaliser("digits_only")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _digits(value: Any) -> str | None:
    return None if value is None else _DIGITS(str(value))


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


#: The functions an expression may call (and a transform's ``builtin:`` names). Read-only:
#: what an expression may call is decided here, not by whoever imports it.
FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
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
)


def _safe_mult(a: Any, b: Any) -> Any:
    for seq, count in ((a, b), (b, a)):
        sequence = isinstance(seq, str | bytes | list | tuple) and isinstance(count, int)
        if sequence and len(seq) * count > MAX_LENGTH:
            raise ValueError("a product longer than 100,000")
    return a * b


def _safe_power(a: Any, b: Any) -> Any:
    if abs(a) > MAX_POWER or abs(b) > MAX_POWER:
        raise ValueError("a power of a base or an exponent above 4,000,000")
    return a**b


def _check_shift(a: Any, b: Any) -> None:
    if abs(b) > MAX_SHIFT or abs(a) > MAX_SHIFT_BASE:
        raise ValueError("a shift by more than 10,000 or of too large a number")


def _safe_lshift(a: Any, b: Any) -> Any:
    _check_shift(a, b)
    return a << b


def _safe_rshift(a: Any, b: Any) -> Any:
    _check_shift(a, b)
    return a >> b


#: Operators whose result can be made arbitrarily large: computed by a guard, not inline.
_GUARDED: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Mult: _safe_mult,
    ast.Pow: _safe_power,
    ast.LShift: _safe_lshift,
    ast.RShift: _safe_rshift,
}
#: The guards as compiled expressions call them, by name.
_GUARDS = {guard.__name__: guard for guard in _GUARDED.values()}

#: Every kind of syntax node the language has (calls, dicts and f-strings have more rules).
_ALLOWED: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Invert,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.LShift,
    ast.RShift,
    ast.BitOr,
    ast.BitXor,
    ast.BitAnd,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.IfExp,
    ast.Call,
    ast.keyword,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.Subscript,
    ast.Slice,
    ast.JoinedStr,
    ast.FormattedValue,
)
_LANGUAGE = (
    "an expression has constants, names, arithmetic, comparisons, and/or/not, "
    "x if c else y, tuples, lists, sets, dicts, subscripts and calls of the functions"
)


def _refusal(node: ast.AST) -> str | None:
    """Why ``node`` is not part of the language, or None when it is."""
    if isinstance(node, ast.Attribute):
        return "attribute access (x.y) is not allowed"
    if not isinstance(node, _ALLOWED):
        return f"not allowed in an expression: {type(node).__name__} ({_LANGUAGE})"
    if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
        # A call of anything but a function by name: say what is called when it is refused
        # itself (a lambda), else that only the functions are called.
        return _refusal(node.func) or (
            "not allowed in an expression: a call of something other than a function by name"
        )
    if isinstance(node, ast.keyword) and node.arg is None:
        return "not allowed in an expression: ** (unpacking arguments)"
    if isinstance(node, ast.Dict) and any(key is None for key in node.keys):
        return "not allowed in an expression: ** (unpacking a dict)"
    if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
        return "not allowed in an expression: a format spec in an f-string (use round or substr)"
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str | bytes)
        and len(node.value) > MAX_LENGTH
    ):
        return "not allowed in an expression: a constant longer than 100,000"
    return None


@dataclass(frozen=True)
class Expression:
    """An expression of the language, checked: what it reads, what it calls."""

    text: str
    #: the names it reads (columns, features, ``as_of``: the caller says which are known)
    names: frozenset[str]
    #: the functions it calls by name, known or not (see :meth:`functions_problem`)
    functions: frozenset[str]
    tree: ast.Expression = field(repr=False, compare=False)

    def functions_problem(self) -> str | None:
        """What is wrong with the functions it calls (some are not in :data:`FUNCTIONS`)."""
        unknown = sorted(self.functions - FUNCTIONS.keys())
        if not unknown:
            return None
        return f"unknown function(s) {', '.join(unknown)} (functions: {', '.join(FUNCTIONS)})"

    def compile(self, params: Sequence[str], *, more: bool = False) -> Callable[..., Any]:
        """Return a function of ``params`` (positional, in that order) that evaluates it;
        with ``more``, one that takes and ignores further positional values.

        Errors of evaluation (a NULL in arithmetic, a division by zero, a product over the
        limit) are raised to the caller, on the row that causes them.

        Raises:
            RuleError: it reads a name that is not a parameter or calls an unknown function
                (the caller's checks let through what they should have reported).
        """
        return self._compile(params, more=more, row=False)

    def compile_row(self, columns: Sequence[str]) -> Callable[[Sequence[Any]], Any]:
        """Return a function of one row, a sequence of the values of ``columns`` in that
        order, that evaluates it: the form for a transform, whose rows are already tuples
        (no arguments to spread, however many columns the table has).

        Raises:
            RuleError: as :meth:`compile`.
        """
        return self._compile(columns, more=False, row=True)

    def _compile(self, params: Sequence[str], *, more: bool, row: bool) -> Callable[..., Any]:
        missing = sorted(self.names - set(params))
        if missing:
            raise RuleError(f"{self.text!r}: unknown name(s) {', '.join(missing)}")
        problem = self.functions_problem()
        if problem:
            raise RuleError(f"{self.text!r}: {problem}")
        # A copy is rewritten: the expression's own tree stays as parsed.
        body = _Rename(params, row=row).visit(copy.deepcopy(self.tree)).body
        arguments = ast.arguments(
            posonlyargs=[],
            args=[ast.arg("_row")] if row else [ast.arg(f"_{at}") for at in range(len(params))],
            vararg=ast.arg("_more") if more else None,
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        )
        function = ast.fix_missing_locations(ast.Expression(ast.Lambda(arguments, body)))
        with warnings.catch_warnings():
            # ``x is 1`` means identity here, as it says: no SyntaxWarning at load.
            warnings.simplefilter("ignore", SyntaxWarning)
            code = compile(function, f"<expression {self.text!r}>", "eval")
        scope = {"__builtins__": {}, **_GUARDS, **FUNCTIONS}
        compiled: Callable[..., Any] = eval(code, scope)  # checked by parse_expression
        return compiled


class _Rename(ast.NodeTransformer):
    """Names become parameters ``_0, _1, ...`` (or items ``_row[0], ...`` of one row);
    operators that can make huge values go through their guards; f-strings show values as
    ``str`` does, whatever conversion they ask for."""

    def __init__(self, params: Sequence[str], *, row: bool) -> None:
        self.index = {name: at for at, name in enumerate(params)}
        self.row = row

    def visit_Call(self, node: ast.Call) -> Any:
        # The function's own name stays a global (one of FUNCTIONS); its arguments are renamed.
        node.args = [self.visit(arg) for arg in node.args]
        node.keywords = [self.visit(keyword) for keyword in node.keywords]
        return node

    def visit_Name(self, node: ast.Name) -> Any:
        at = self.index[node.id]
        if self.row:
            item = ast.Subscript(ast.Name("_row", ast.Load()), ast.Constant(at), ast.Load())
            return ast.copy_location(item, node)
        return ast.copy_location(ast.Name(f"_{at}", ast.Load()), node)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        self.generic_visit(node)
        guard = _GUARDED.get(type(node.op))
        if guard is None:
            return node
        call = ast.Call(ast.Name(guard.__name__, ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)

    def visit_FormattedValue(self, node: ast.FormattedValue) -> Any:
        self.generic_visit(node)
        node.conversion = -1
        return node


def parse_expression(text: str) -> Expression:
    """Parse and check an expression: one of the language, whatever names it reads.

    The caller checks the names (columns of a table, features of a view) and the functions
    (:meth:`Expression.functions_problem`), to say which are unknown in its own terms.

    Raises:
        RuleError: it is not an expression, or has what the language does not; the message
            says which, and the caller adds the file and the path inside it.
    """
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"not an expression ({exc.msg})") from None
    except ValueError as exc:  # a NUL character
        raise RuleError(f"not an expression ({exc})") from None
    functions: set[str] = set()
    callees: set[int] = set()
    for node in ast.walk(tree):
        problem = _refusal(node)
        if problem:
            raise RuleError(problem)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            functions.add(node.func.id)
            callees.add(id(node.func))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in callees}
    return Expression(text, frozenset(names), frozenset(functions), tree)


def compile_expression(
    text: str, params: Sequence[str], *, more: bool = False
) -> Callable[..., Any]:
    """Parse, check and compile an expression: :meth:`Expression.compile` of
    :func:`parse_expression`.

    Raises:
        RuleError: as :func:`parse_expression` and :meth:`Expression.compile`.
    """
    return parse_expression(text).compile(params, more=more)
