"""Match rules: how records of an entity type are recognised as the same entity.

A match file declares, per entity type, the *fields* used for matching (each with its
normalisers and the column that holds it in each identity table), the *rules* that link two
records (all fields of a rule equal after normalisation), and values that must never link
(a shared family or placeholder email). Rules are validated strictly and compiled once into
plain functions; nothing reads YAML per record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from fabric.config._validation import format_issue, validate_document
from fabric.config.loader import read_yaml
from fabric.errors import RuleError
from fabric.resolve.normalize import NORMALIZERS

__all__ = ["CompiledMatchRules", "MatchFile", "compile_match_rules", "load_match_rules"]

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
Normalizer = Literal["trim", "lowercase", "collapse_spaces", "digits_only", "strip_punctuation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchField(_Strict):
    """A field compared between records."""

    normalize: list[Normalizer] = ["trim", "lowercase"]
    columns: dict[Name, Name] = Field(
        default_factory=dict, description="entity table -> column holding this field"
    )


class MatchRule(_Strict):
    """Two records match when every listed field is present and equal after normalising."""

    name: Name
    fields: list[Name] = Field(min_length=1)


class EntityMatchRules(_Strict):
    """The match rules of one entity type."""

    fields: dict[Name, MatchField] = Field(min_length=1)
    rules: list[MatchRule] = Field(min_length=1)
    never_link: dict[Name, list[str]] = Field(
        default_factory=dict, description="field -> normalised values that never link records"
    )


class MatchFile(RootModel[dict[Name, EntityMatchRules]]):
    """A match rules file: entity type -> rules."""


@dataclass(frozen=True)
class CompiledMatchRules:
    """Match rules of one entity type, compiled to plain functions per table."""

    entity_type: str
    #: rule names in order, and for each table, a function from a row (as a dict) to the
    #: match keys of that row, one per rule that applies (None where a field is missing).
    rule_names: tuple[str, ...]
    key_functions: dict[str, Callable[[dict[str, object]], list[str | None]]]
    #: table -> columns the key functions read
    columns: dict[str, tuple[str, ...]]


def _compile_field(spec: MatchField, never: frozenset[str]) -> Callable[[object], str | None]:
    steps = [NORMALIZERS[n] for n in spec.normalize]

    def normalise(value: object) -> str | None:
        if value is None:
            return None
        text = str(value)
        for step in steps:
            text = step(text)
        if not text or text in never:
            return None
        return text

    return normalise


def compile_match_rules(entity_type: str, rules: EntityMatchRules) -> CompiledMatchRules:
    """Compile one entity type's rules into key functions per identity table."""
    normalisers = {
        name: _compile_field(spec, frozenset(rules.never_link.get(name, ())))
        for name, spec in rules.fields.items()
    }
    tables = sorted({t for spec in rules.fields.values() for t in spec.columns})
    functions: dict[str, Callable[[dict[str, object]], list[str | None]]] = {}
    columns: dict[str, tuple[str, ...]] = {}
    for table in tables:
        # Per rule: the (column, normaliser) pairs, or None when the table lacks a field.
        plan: list[list[tuple[str, Callable[[object], str | None]]] | None] = []
        for rule in rules.rules:
            parts = []
            for field in rule.fields:
                column = rules.fields[field].columns.get(table)
                if column is None:
                    break
                parts.append((column, normalisers[field]))
            else:
                plan.append(parts)
                continue
            plan.append(None)
        columns[table] = tuple(sorted({c for p in plan if p for c, _ in p}))

        def keys(
            row: dict[str, object],
            plan: list[list[tuple[str, Callable[[object], str | None]]] | None] = plan,
        ) -> list[str | None]:
            out: list[str | None] = []
            for i, parts in enumerate(plan):
                if parts is None:
                    out.append(None)
                    continue
                values = [norm(row.get(col)) for col, norm in parts]
                out.append(
                    None
                    if None in values
                    else f"{i}\x1f" + "\x1f".join(v for v in values if v is not None)
                )
            return out

        functions[table] = keys
    return CompiledMatchRules(entity_type, tuple(r.name for r in rules.rules), functions, columns)


def load_match_rules(
    path: Path, entity_type: str, tables: dict[str, list[str]] | None = None
) -> CompiledMatchRules:
    """Load, check and compile the rules of ``entity_type`` from a match file.

    Args:
        path: the match YAML file.
        entity_type: which entity type's section to compile.
        tables: optional entity table -> available columns, to check column references.

    Raises:
        RuleError: naming every problem with file, line and path.
    """
    doc = read_yaml(path, what="match rules", error=RuleError)
    if not isinstance(doc.data, dict):
        raise RuleError(
            format_issue(path, None, (), "must be a mapping of entity type -> match rules")
        )
    model, problems = validate_document(MatchFile, doc)
    if model is None:
        raise RuleError("\n".join(problems))
    section = model.root.get(entity_type)
    if section is None:
        raise RuleError(
            format_issue(
                path,
                None,
                (),
                f"no rules for entity type '{entity_type}' "
                f"(found: {', '.join(model.root) or 'none'})",
            )
        )
    loc: tuple[str | int, ...]
    for i, rule in enumerate(section.rules):
        for j, field in enumerate(rule.fields):
            if field not in section.fields:
                loc = (entity_type, "rules", i, "fields", j)
                problems.append(
                    format_issue(
                        path,
                        doc.line_of(loc),
                        loc,
                        f"unknown field '{field}' (fields: {', '.join(section.fields)})",
                    )
                )
    for field in section.never_link:
        if field not in section.fields:
            loc = (entity_type, "never_link", field)
            problems.append(format_issue(path, doc.line_of(loc), loc, "unknown field"))
    if tables is not None:
        for fname, spec in section.fields.items():
            for table, column in spec.columns.items():
                loc = (entity_type, "fields", fname, "columns", table)
                if table not in tables:
                    problems.append(
                        format_issue(
                            path,
                            doc.line_of(loc),
                            loc,
                            f"not a table of '{entity_type}' (tables: {', '.join(tables)})",
                        )
                    )
                elif column not in tables[table]:
                    problems.append(
                        format_issue(
                            path,
                            doc.line_of(loc),
                            loc,
                            f"table has no column '{column}' (columns: {', '.join(tables[table])})",
                        )
                    )
    if problems:
        raise RuleError("\n".join(problems))
    return compile_match_rules(entity_type, section)
