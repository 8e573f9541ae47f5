"""Bounds on a request's shape, checked in bounded time before anything is parsed: the length
of its target (path and query string) and the nesting of its JSON body.

msgspec, like most JSON parsers, recurses once per level of nesting: a 4 KB body of a
thousand brackets ran it out of stack (``RecursionError``, a 500). :func:`json_problem` finds
the nesting of a body without parsing it, with a few passes of C-speed byte operations
(count, replace, translate, split) instead of a Python loop over its bytes: a 1 MiB body in a
few milliseconds at worst (``tests/api/test_limits.py``), and a body with fewer brackets than
the limit (every body fabric's routes expect) in two ``count`` calls.
"""

from __future__ import annotations

from litestar.types import Scope

__all__ = ["json_problem", "target_bytes"]

#: Brackets become ``(`` and ``)``; everything but brackets and quotes is dropped.
_PARENS = bytes.maketrans(b"[]{}", b"()()")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))


def target_bytes(scope: Scope) -> int:
    """The length of a request's target as sent: its path (percent-encoded), ``?`` and query
    string."""
    raw: bytes | None = scope.get("raw_path")
    if raw and b"?" in raw:
        return len(raw)  # the query came with the path (Litestar's test client sends it so)
    query = len(scope.get("query_string", b""))
    return (len(raw) if raw else len(scope["path"])) + (query + 1 if query else 0)


def json_problem(body: bytes, max_depth: int) -> str | None:
    """Why a parser must not be given ``body`` (it nests deeper than ``max_depth`` arrays and
    objects, or its brackets do not pair up), or None.

    Exact for JSON; for anything else, never None where a parser reading it from the start
    would nest deeper than ``max_depth`` before it found the fault.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return None  # too few brackets to nest deeper, however they are placed
    # Strings may hold brackets. Escaped backslashes, then escaped quotes, go first (in that
    # order: in ``\\"`` the quote ends the string); the quotes left delimit strings, whose
    # contents are every other piece between them.
    text = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    shape = b"".join(text.translate(_PARENS, _NOT_STRUCTURE).split(b'"')[::2])
    # Each pass drops the innermost pairs, ``()``: a pair nested n deep inside its
    # outermost one is gone after n passes, so any pair left after max_depth passes nests
    # deeper than that.
    for _ in range(max_depth):
        fewer = shape.replace(b"()", b"")
        if len(fewer) == len(shape):
            break
        shape = fewer
    if not shape:
        return None
    if b"()" in shape:
        return f"the JSON body nests deeper than {max_depth} levels (api.max_json_depth)"
    return "the body is not valid JSON: its brackets do not pair up"
