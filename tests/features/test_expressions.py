"""Compiled expressions mean what simpleeval says they mean, and can do no more."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simpleeval import EvalWithCompoundTypes

from fabric.features.expressions import compile_expression
from fabric.rules.transforms import FUNCTIONS

EXPRESSIONS = [
    "a / nullif(b, 0)",
    "closed == None or closed >= as_of",
    "status == 'paid' and a > 10",
    "not (a < b) or status in ('x', 'y')",
    "coalesce(a, b, 0) * 2 - b % 3",
    "a // b if b else -a",
    "lower(status) != 'paid'",
    "[a, b] == [b, a]",
    "a ** 2",  # not compiled (a power): evaluated by simpleeval
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
    evaluator = EvalWithCompoundTypes(functions=FUNCTIONS, names=names)
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
