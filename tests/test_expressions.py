"""Compiled expressions mean what simpleeval says they mean, and can do no more.

``simpleeval`` evaluated the rules' expressions before they were compiled: it stays the
reference here (a test dependency), so the one language keeps the meaning the rules had.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simpleeval import EvalWithCompoundTypes

from fabric.errors import RuleError
from fabric.expressions import FUNCTIONS, compile_expression, parse_expression

EXPRESSIONS = [
    "a / nullif(b, 0)",
    "closed == None or closed >= as_of",
    "status == 'paid' and a > 10",
    "not (a < b) or status in ('x', 'y')",
    "coalesce(a, b, 0) * 2 - b % 3",
    "a // b if b else -a",
    "lower(status) != 'paid'",
    "[a, b] == [b, a]",
    "a ** 2",  # a power, through its guard
    "round(a, ndigits=1) if a is not None else substr(status, 1, 2)",
    "a << 2 if b else a | 1 ^ ~b",
    "{a: status, 'k': [b]} == {a: status, 'k': [b]} and {a, b} != {status}",
    "status[0:2] if status else f'{a}-{b}'",
    "-a + +b - a * b / 3",
]
NAMES = ("a", "b", "status", "closed", "as_of")
_values = st.one_of(st.none(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))
_texts = st.one_of(st.none(), st.sampled_from(["paid", "x", "PAID", "2026-01-01T00:00:00"]))


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "value", call()
    except Exception as exc:  # the kind of error matters, not its message
        return "error", type(exc).__name__


@pytest.mark.parametrize("expression", EXPRESSIONS)
@given(a=_values, b=_values, status=_texts, closed=_texts, as_of=_texts)
def test_compiled_equals_simpleeval(
    expression: str, a: Any, b: Any, status: Any, closed: Any, as_of: Any
) -> None:
    values = (a, b, status, closed, as_of)
    names = dict(zip(NAMES, values, strict=True))
    evaluator = EvalWithCompoundTypes(functions=dict(FUNCTIONS), names=names)
    compiled = compile_expression(expression, NAMES)
    expected = _outcome(lambda: evaluator.eval(expression))
    got = _outcome(lambda: compiled(*values))
    if expected[0] == "value" and got[0] == "value":
        assert got[1] == expected[1] or (got[1] != got[1] and expected[1] != expected[1])
    else:
        assert got[0] == expected[0]


def test_extra_values_are_ignored_when_asked() -> None:
    keep = compile_expression("x > 1", ["x"], more=True)
    assert keep(2, "ignored", None) is True


@pytest.mark.parametrize(
    "expression",
    ["'x' * 1000000", "[0] * 10 ** 6", "x.__class__", "__import__('os')", "open('/etc/passwd')"],
)
def test_what_simpleeval_refuses_stays_refused(expression: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - each refuses in its own way
        compile_expression(expression, ["x"])(1)


def test_a_row_function_equals_the_positional_one() -> None:
    expression = parse_expression("coalesce(a, 0) * 2 if status == 'paid' else len(status)")
    positional = expression.compile(NAMES)
    by_row = expression.compile_row(NAMES)
    for values in [(1, 2, "paid", None, None), (None, 0, "x", None, None)]:
        assert by_row(values) == positional(*values)


def test_names_are_what_is_read_and_functions_what_is_called() -> None:
    expression = parse_expression("lower(lower) + coalesce(a, b) if as_of else None")
    assert expression.names == {"lower", "a", "b", "as_of"}
    assert expression.functions == {"lower", "coalesce"}
    assert expression.functions_problem() is None
    problem = parse_expression("open(a) or exec(b)").functions_problem()
    assert problem is not None and problem.startswith("unknown function(s) exec, open")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("a +", "not an expression"),
        ("a.b", "attribute access (x.y) is not allowed"),
        ("(lambda q: 1)(a)", "not allowed in an expression: Lambda"),
        ("[x for x in a]", "not allowed in an expression: ListComp"),
        ("(a := 1)", "not allowed in an expression: NamedExpr"),
        ("lower(*a)", "not allowed in an expression: Starred"),
        ("lower(**a)", "not allowed in an expression: ** (unpacking arguments)"),
        ("{**a}", "not allowed in an expression: ** (unpacking a dict)"),
        ("a[0](1)", "a call of something other than a function by name"),
        ("f'{a:>1000000000}'", "a format spec in an f-string"),
        ("a @ b", "not allowed in an expression: MatMult"),
        ("'" + "x" * 100_001 + "'", "a constant longer than 100,000"),
    ],
)
def test_what_the_language_lacks_is_refused_when_it_is_read(expression: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_expression(expression)
    assert message in str(caught.value)


def test_the_functions_are_fixed_here() -> None:
    with pytest.raises(TypeError):
        FUNCTIONS["open"] = open  # type: ignore[index]
