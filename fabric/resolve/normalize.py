"""Normalisers applied to match fields before comparison."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["NORMALIZERS"]

_SPACES = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D+")
_PUNCT = re.compile(r"[^\w\s]+")

NORMALIZERS: dict[str, Callable[[str], str]] = {
    "trim": str.strip,
    "lowercase": str.casefold,
    "collapse_spaces": lambda s: _SPACES.sub(" ", s).strip(),
    "digits_only": lambda s: _NON_DIGITS.sub("", s),
    "strip_punctuation": lambda s: _PUNCT.sub("", s),
}
