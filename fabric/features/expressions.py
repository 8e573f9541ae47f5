"""Feature filters and derived features as plain Python functions, compiled once.

``simpleeval`` checks every expression at load (:mod:`fabric.features.spec`) and remains the
reference for what they mean, but it walks the syntax tree on every call: about 5 us an
evaluation, and an export evaluates a filter or a derived feature millions of times. An
expression made only of the constructs below is compiled instead into a Python function of
its names (about 0.3 us a call), with the same operators and the same functions
(:data:`fabric.rules.transforms.FUNCTIONS`); anything else keeps being evaluated by
``simpleeval``, so a compiled expression can never do more than the evaluator allows.

The constructs: constants; names; ``and``, ``or``, ``not``; comparisons (``in`` too);
``+ - * / // %`` and unary minus; ``x if c else y``; tuples and lists; calls of the listed
functions by name. No attribute access, subscripts, powers, lambdas or comprehensions. A
product is checked like ``simpleeval`` checks it, so ``'x' * 10**9`` cannot exhaust memory.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import Any

from simpleeval import EvalWithCompoundTypes

from fabric.rules.transforms import FUNCTIONS

__all__ = ["compile_expression"]

#: the longest string or sequence a product may make (``simpleeval``'s own limit)
_MAX_LENGTH = 100_000

_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
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
    ast.Tuple,
    ast.List,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Call,
)


def _safe_mult(a: Any, b: Any) -> Any:
    for seq, count in ((a, b), (b, a)):
        sequence = isinstance(seq, str | bytes | list | tuple) and isinstance(count, int)
        if sequence and len(seq) * count > _MAX_LENGTH:
            raise ValueError("a product longer than 100,000")
    return operator.mul(a, b)


class _Rename(ast.NodeTransformer):
    """Names become parameters ``_0, _1, ...``; products go through ``_safe_mult``."""

    def __init__(self, params: Sequence[str]) -> None:
        self.index = {name: at for at, name in enumerate(params)}

    def visit_Call(self, node: ast.Call) -> Any:
        # The function's own name stays a global (one of FUNCTIONS); its arguments are renamed.
        node.args = [self.visit(arg) for arg in node.args]
        return node

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.index:
            return ast.copy_location(ast.Name(f"_{self.index[node.id]}", ast.Load()), node)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        self.generic_visit(node)
        if isinstance(node.op, ast.Mult):
            call = ast.Call(ast.Name("_safe_mult", ast.Load()), [node.left, node.right], [])
            return ast.copy_location(call, node)
        return node


def _compilable(tree: ast.AST, params: Sequence[str]) -> bool:
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            return False
        if isinstance(node, ast.Call) and (
            node.keywords
            or not isinstance(node.func, ast.Name)
            or node.func.id not in FUNCTIONS
            or any(isinstance(a, ast.Starred) for a in node.args)
        ):
            return False
        if isinstance(node, ast.Constant) and not isinstance(
            node.value, str | int | float | bool | type(None)
        ):
            return False
    called = {n.func for n in ast.walk(tree) if isinstance(n, ast.Call)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n not in called}
    # Every name must be a parameter: no builtins, no globals.
    return names <= set(params) | {"None", "True", "False"}


def compile_expression(
    expression: str, params: Sequence[str], *, more: bool = False
) -> Callable[..., Any]:
    """A function of ``params`` (positional, in that order) evaluating ``expression``;
    with ``more``, it takes and ignores further positional values.

    Errors (a NULL in arithmetic, a name the expression uses that is not a parameter) are
    raised to the caller, as ``simpleeval`` raises them.
    """
    tree = ast.parse(expression, mode="eval")
    if _compilable(tree, params):
        body = _Rename(params).visit(tree).body
        function = ast.Expression(
            ast.Lambda(
                ast.arguments(
                    posonlyargs=[],
                    args=[ast.arg(f"_{at}") for at in range(len(params))],
                    vararg=ast.arg("_more") if more else None,
                    kwonlyargs=[],
                    kw_defaults=[],
                    defaults=[],
                ),
                body,
            )
        )
        ast.fix_missing_locations(function)
        code = compile(function, f"<expression {expression!r}>", "eval")
        scope = {"__builtins__": {}, "_safe_mult": _safe_mult, **FUNCTIONS}
        compiled: Callable[..., Any] = eval(code, scope)  # the tree was checked above
        return compiled
    evaluator = EvalWithCompoundTypes(functions=FUNCTIONS)
    parsed = evaluator.parse(expression)
    names = tuple(params)

    def evaluate(*values: Any) -> Any:
        evaluator.names = dict(zip(names, values, strict=not more))
        return evaluator.eval(expression, previously_parsed=parsed)

    return evaluate
