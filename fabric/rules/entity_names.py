"""The names resolution knows an entity by, for masking to hide.

The match rules already find a person's names wherever the sources write them: first and last
names in CRM columns, a billing holder's "LAST, First" through ``first_name_of`` and
``last_name_of``, the name a ticket is signed with through ``signature_name``, the user part of
an email. Masking asks the same rules, so a customer known only from support tickets, with no
name column at all, still has its name hidden in them; and with each name go its nicknames
and the full names it stands for (a Christopher signs "Chris"), as the ``name`` metric knows
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fabric.resolve.compare import name_variants
from fabric.resolve.rules import ColumnSource, CompiledMatchRules, Extractor
from fabric.rules.names import EntityNames, name_words

__all__ = ["EntityNameFinder", "name_fields"]

#: A table's columns whose name ends in "name", and its match name fields' extractor.
_Plan = tuple[tuple[str, ...], Extractor | None]

#: Normalisers that take a name out of something else.
_NAME_STEPS = frozenset({"first_name_of", "last_name_of", "signature_name", "email_user"})
#: Metrics that compare names.
_NAME_METRICS = frozenset({"name", "name_edits"})


def name_fields(rules: CompiledMatchRules) -> tuple[str, ...]:
    """The match fields that hold names: named so (``first_name``, ``surname``), compared as
    names (metric ``name`` or ``name_edits``), or taken out of a value by a name step
    (``first_name_of``, ``signature_name``, ``email_user``...)."""
    spec = rules.spec
    if spec is None:
        return tuple(f for f in rules.fields if "name" in f.lower())
    compared = {f for f, c in spec.cannot_link.items() if c.metric in _NAME_METRICS}
    for rule in spec.rules:
        compared.update(f for f, c in rule.similar.items() if c.metric in _NAME_METRICS)
        if rule.score is not None:
            compared.update(f for f, c in rule.score.fields.items() if c.metric in _NAME_METRICS)
    found = []
    for name, field in spec.fields.items():
        steps = set(field.normalize)
        for given in field.columns.values():
            if isinstance(given, ColumnSource):
                steps.update(given.before)
        if "name" in name.lower() or name in compared or steps & _NAME_STEPS:
            found.append(name)
    return tuple(found)


def _read_from(rules: CompiledMatchRules, field: str, table: str) -> tuple[str, ...]:
    """The columns of ``table`` a match field is read from (none: not from this table)."""
    source = rules.source_of(field, table)
    return () if source is None else source[0]


class EntityNameFinder:
    """An entity's names from its rows: the text of its columns whose name ends in "name",
    and the values of its match rules' name fields, with their variants."""

    def __init__(self, rules: Mapping[str, CompiledMatchRules]) -> None:
        self._rules = dict(rules)
        self._fields = {etype: name_fields(r) for etype, r in rules.items()}
        #: (type, table, its columns) -> its name columns, and its name fields' extractor
        self._plans: dict[tuple[str, str, tuple[str, ...]], _Plan] = {}

    def _plan(self, entity_type: str, table: str, row: Mapping[str, Any]) -> _Plan:
        columns = tuple(row)
        key = (entity_type, table, columns)
        plan = self._plans.get(key)
        if plan is None:
            named = tuple(c for c in columns if c.lower().endswith("name"))
            rules = self._rules.get(entity_type)
            # A field read from name columns alone adds no word: their text is taken whole.
            fields = [
                f
                for f in self._fields.get(entity_type, ())
                if rules is not None and not set(_read_from(rules, f, table)) <= set(named)
            ]
            extract = rules.extractor(table, set(columns), fields) if rules and fields else None
            plan = self._plans[key] = (named, extract)
        return plan

    def __call__(self, entity_type: str, tables: Mapping[str, list[dict[str, Any]]]) -> EntityNames:
        values: set[str] = set()
        for table, rows in tables.items():
            if not rows:
                continue
            named, extract = self._plan(entity_type, table, rows[0])
            if not named and extract is None:
                continue  # orders, payments...: nothing of a name; their rows are not read
            for row in rows:
                for column in named:
                    value = row.get(column)
                    if isinstance(value, str):
                        values.add(value)
                if extract is not None:
                    values.update(v for v in extract(row).values() if v)
        words = {w for value in values for w in name_words(value)}
        variants = {v for w in words if w.isalpha() for v in name_variants(w)}
        return EntityNames.from_words(words, variants)
