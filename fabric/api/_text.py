"""Text from outside, made safe to write into a log line."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``,
    ``\\u2028``...), so it can neither end a log line nor forge the next one; most text
    passes through one C-speed check."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
