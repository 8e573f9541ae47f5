"""Suggest a masking policy: find personal data in source samples, propose an operator for each.

Each column of each entity table is judged by its name (``email``, ``phone``, ``card``,
``iban``, ``birth``, ``first_name``, ``street``, ``zip``...) and by its sampled values (the
share that look like emails, phone numbers, Luhn-valid card numbers, mod-97-valid IBANs,
birth dates, or free text holding any of those). The result is a ready-to-use policy in
YAML: every column listed, personal ones masked, with a comment giving the evidence (counts,
never values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from fabric.rules.freetext import find_pii, luhn_ok

__all__ = ["ColumnFinding", "render_policy", "suggest_column"]

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[\d\s().-]{7,20}$")
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9 ]{11,36}$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
#: Share of sampled values that must match for content alone to call a column personal.
_SHARE = 0.6

#: (name pattern, kind): the first that matches names the column's kind.
_NAMES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), kind)
    for p, kind in (
        (r"e[-_]?mail", "email"),
        (r"phone|mobile|(^|_)tel(_|$)|fax", "phone"),
        (r"card|(^|_)pan(_|$)|(^|_)cc_?num", "card"),
        (r"iban|account_?number|bank_?account", "iban"),
        (r"birth|(^|_)dob(_|$)", "birth_date"),
        (r"^first_?name$|given_?name|forename", "first_name"),
        (r"^last_?name$|surname|family_?name", "last_name"),
        (r"(^|_)name$|holder|full_?name", "name"),
        (r"street|address|addr", "street"),
        (r"zip|postal|postcode", "zip"),
        (r"ssn|social_?security|passport|national_?id|tax_?id", "national_id"),
        (r"(^|_)ip(_|$)|ip_?address", "ip"),
    )
)

#: kind -> (operator spec as YAML flow text, why)
_OPERATORS: dict[str, str] = {
    "email": "{op: tokenize, domain: email}",
    "phone": "{op: partial, keep_last: 2}",
    "card": "{op: fpe, alphabet: digits, keep_last: 4}",
    "iban": "{op: partial, keep_first: 2, keep_last: 2}",
    "birth_date": "{op: generalize, to: year}",
    "first_name": "{op: fake, provider: first_name}",
    "last_name": "{op: fake, provider: last_name}",
    "name": "{op: fake, provider: name}",
    "street": "{op: redact}",
    "zip": "{op: generalize, to: prefix, keep: 2}",
    "national_id": "{op: hash, truncate: 16}",
    "ip": "{op: hash, truncate: 16}",
    "free_text": "{op: free_text}",
    "keep": "{op: keep}",
}


@dataclass(frozen=True)
class ColumnFinding:
    """What one column looks like: its kind ("keep" when nothing personal was found)."""

    column: str
    kind: str
    evidence: str

    @property
    def operator(self) -> str:
        """The suggested operator, as YAML flow text."""
        return _OPERATORS[self.kind]


def _share(values: Sequence[str], test: Any) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def _is_card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return digits.isdigit() and 13 <= len(digits) <= 19 and luhn_ok(digits)


def _is_birth_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    age = (date.today() - day).days / 365.25
    return 0 <= age <= 120


def suggest_column(column: str, samples: Iterable[Any]) -> ColumnFinding:
    """Judge one column by its name and its sampled values."""
    values = [str(v).strip() for v in samples if v is not None and str(v).strip()]
    tests = (
        ("email", lambda v: bool(_EMAIL.match(v))),
        ("card", _is_card),
        ("iban", lambda v: bool(_IBAN.match(v.upper()))),
        ("phone", lambda v: bool(_PHONE.match(v)) and sum(c.isdigit() for c in v) >= 7),
    )
    for pattern, kind in _NAMES:
        if pattern.search(column):
            test = dict(tests).get(kind)
            if test is None or not values:
                return ColumnFinding(column, kind, "by its name")
            share = _share(values, test)
            return ColumnFinding(
                column, kind, f"by its name; {share:.0%} of {len(values)} sampled values match"
            )
    for kind, test in tests:
        share = _share(values, test)
        if share >= _SHARE:
            return ColumnFinding(column, kind, f"{share:.0%} of {len(values)} sampled values")
    if values and _share(values, _is_birth_date) >= _SHARE and "birth" in column.lower():
        return ColumnFinding(column, "birth_date", "dates of birth")
    long_text = [v for v in values if len(v) >= 40 and " " in v]
    if long_text:
        with_pii = sum(1 for v in long_text if find_pii(v))
        if with_pii:
            return ColumnFinding(
                column,
                "free_text",
                f"{with_pii} of {len(long_text)} sampled texts hold emails, phones, cards or IBANs",
            )
    return ColumnFinding(column, "keep", "nothing personal found in the sample")


def render_policy(
    name: str, findings: Mapping[str, Mapping[str, Sequence[ColumnFinding]]], sampled: int
) -> str:
    """A masking file with one policy (entity type -> table -> column findings) and a clear one."""
    lines = [
        "# Suggested by `fabric rules suggest` from samples of the sources (at most "
        f"{sampled} rows a table).",
        "# Review every line: a column kept here is one nothing personal was found in.",
        f"default_policy: {name}",
        "policies:",
        f"  {name}:",
        '    unlisted: "null"',
    ]
    for entity_type, tables in findings.items():
        lines.append(f"    {_key(entity_type)}:")
        for table, columns in tables.items():
            lines.append(f"      {_key(table)}:")
            width = max((len(_key(c.column)) for c in columns), default=0) + 1
            for finding in columns:
                key = f"{_key(finding.column)}:".ljust(width + 1)
                lines.append(f"        {key} {finding.operator}   # {finding.evidence}")
    lines += ["  steward: {clear: true}", ""]
    return "\n".join(lines)


def _key(name: str) -> str:
    """A YAML mapping key: plain when it can be, quoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else json.dumps(name)
