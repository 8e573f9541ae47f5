"""Masking policies: which operator each role sees on each column, compiled once.

A masking file names policies; a policy maps entity type → table → column → operator, or is
``{clear: true}``, the unmasked view that only a role given it explicitly sees. A role without
a policy sees the file's ``default_policy``: privacy by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fabric.config.documents import YamlDocument
from fabric.config.loader import read_yaml
from fabric.config.validation import StrictModel, format_issue, suggest, validate_document
from fabric.errors import RuleError
from fabric.rules.names import NamesOf, column_names
from fabric.rules.operators import (
    AnyOp,
    KeepOp,
    MaskContext,
    MaskFunction,
    MaskingKeys,
    NullOp,
    OperatorSpec,
    RedactOp,
    compile_operator,
)

__all__ = [
    "CLEAR",
    "MASKING_FORMAT",
    "NAMED_OPS",
    "CompiledPolicies",
    "MaskingPolicy",
    "load_masking",
]

CLEAR = "clear"
#: Operators that look at the entity's names besides the value (a policy using one needs
#: them: :attr:`MaskingPolicy.needs_names`; so do the feature masks that use one).
NAMED_OPS = frozenset({"free_text", "fake"})

#: The operators' output format: raised whenever an operator gives another output for the
#: same value, key and rules (2: padded tokens, names from the match rules, one fake identity
#: per name), so masked documents materialized before are not served again.
MASKING_FORMAT = 2

TablePolicy = dict[str, OperatorSpec]


class PolicySpec(StrictModel):
    """One policy: ``{clear: true}`` or entity type → table → column → operator."""

    clear: bool = False
    unlisted: Literal["null", "redact", "keep"] = Field(
        "null",
        description="what columns the policy does not list become: privacy by default means "
        "a new source column is hidden until a steward decides",
    )
    entities: dict[str, dict[str, TablePolicy]] = Field(default_factory=dict)


class MaskingFile(StrictModel):
    """A masking rules file."""

    default_policy: str
    policies: dict[str, PolicySpec] = Field(min_length=1)


@dataclass(frozen=True)
class MaskingPolicy:
    """A compiled policy: per (entity type, table), column → mask function."""

    name: str
    clear: bool
    #: per (entity type, table): column -> mask function, or None for an explicit keep
    tables: Mapping[tuple[str, str], Mapping[str, MaskFunction | None]]
    #: applied to every column the policy does not list (None: keep)
    unlisted: MaskFunction | None = None
    #: some operator looks at the entity's own names (``free_text``, ``fake``)
    needs_names: bool = False
    #: per (entity type, table): column -> its operator as written (previews, the catalog,
    #: revealing tokens and FPE values)
    specs: Mapping[tuple[str, str], Mapping[str, AnyOp]] = field(default_factory=dict)
    #: the operator name of columns the policy does not list
    unlisted_op: str = "keep"
    #: an entity's names from its rows (see :mod:`fabric.rules.names`)
    names_of: NamesOf = column_names

    def op_of(self, entity_type: str, table: str, column: str) -> str:
        """The operator this policy applies to a column ("clear" for the clear view)."""
        if self.clear:
            return CLEAR
        spec = self.specs.get((entity_type, table), {}).get(column)
        return spec.op if spec is not None else self.unlisted_op

    def context(
        self, entity_type: str, entity_id: str, tables: Mapping[str, list[dict[str, Any]]]
    ) -> MaskContext:
        """What this policy's operators see of an entity besides a value: its type and id,
        and its names when an operator looks at them (taken from ``tables``, unmasked)."""
        ctx = MaskContext(entity_type, entity_id)
        if self.needs_names:
            ctx.names = self.names_of(entity_type, tables)
        return ctx

    def apply(
        self, entity_type: str, tables: dict[str, list[dict[str, Any]]], entity_id: str = ""
    ) -> None:
        """Mask rows in place (the caller owns them); ``entity_id`` keys per-entity operators."""
        if self.clear:
            return
        ctx = self.context(entity_type, entity_id, tables)
        unlisted = self.unlisted
        for table, rows in tables.items():
            plan = self.tables.get((entity_type, table), {})
            for at, row in enumerate(rows):
                ctx.row = row  # the original: operators that read other columns see them unmasked
                rows[at] = {
                    column: value
                    if value is None or (mask := plan.get(column, unlisted)) is None
                    else mask(value, ctx)
                    for column, value in row.items()
                }


@dataclass(frozen=True)
class CompiledPolicies:
    """Every policy of a masking file, and the default one."""

    policies: Mapping[str, MaskingPolicy]
    default: str

    def for_policy(self, name: str | None) -> MaskingPolicy:
        """The named policy, or the default when ``name`` is None."""
        return self.policies[name or self.default]


_POLICY_KEYS = ("clear", "unlisted")


def _reshape(data: Any) -> Any:
    """Move entity sections of each policy under ``entities`` for the typed model."""
    if not isinstance(data, dict) or not isinstance(data.get("policies"), dict):
        return data
    policies = {}
    for name, body in data["policies"].items():
        if isinstance(body, dict):
            policies[name] = {
                **{k: body[k] for k in _POLICY_KEYS if k in body},
                "entities": {k: v for k, v in body.items() if k not in _POLICY_KEYS},
            }
        else:
            policies[name] = body
    return {**data, "policies": policies}


def _schema_problems(
    data: Any, schema: Mapping[str, Mapping[str, list[str]]], doc: YamlDocument
) -> list[str]:
    """Check entity types, tables and columns named by policies against the entity schema."""
    problems: list[str] = []
    policies = data.get("policies") if isinstance(data, dict) else None
    if not isinstance(policies, dict):
        return problems

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(format_issue(doc.path, doc.line_of(loc), loc, message))

    for pname, body in policies.items():
        if not isinstance(body, dict):
            continue
        for etype, tables in body.items():
            if etype in _POLICY_KEYS:
                continue
            if etype not in schema:
                add(("policies", pname, etype), f"unknown entity type (types: {', '.join(schema)})")
                continue
            for table, columns in (tables or {}).items() if isinstance(tables, dict) else ():
                if table not in schema[etype]:
                    add(
                        ("policies", pname, etype, table),
                        f"unknown table (tables: {', '.join(schema[etype])})",
                    )
                    continue
                for column in columns if isinstance(columns, dict) else ():
                    if column not in schema[etype][table]:
                        hint = suggest(str(column), schema[etype][table])
                        add(
                            ("policies", pname, etype, table, column),
                            f"unknown column; {hint}(columns: {', '.join(schema[etype][table])})",
                        )
    return problems


def load_masking(
    path: Path,
    key: bytes | None,
    schema: Mapping[str, Mapping[str, list[str]]] | None = None,
    names_of: NamesOf = column_names,
) -> CompiledPolicies:
    """Load, check and compile a masking file.

    Args:
        path: the YAML file.
        key: master key for keyed operators (hash).
        schema: optional entity type → table → columns, to check column references.
        names_of: an entity's names from its rows, for the operators that look at them
            (``free_text``, ``fake``); the project's knows what resolution knows.

    Raises:
        RuleError: every problem, each naming file, line and path.
    """
    doc = read_yaml(path, what="masking rules", error=RuleError)
    if not isinstance(doc.data, dict):
        raise RuleError(
            format_issue(path, None, (), "must be a mapping with 'default_policy:' and 'policies:'")
        )
    original = doc.data
    doc.data = _reshape(original)
    # Error locations point into the reshaped data; map them back to the file's paths.
    reshaped_lines = dict(doc.lines)
    for loc, line in list(doc.lines.items()):
        if len(loc) >= 3 and loc[0] == "policies" and loc[2] not in _POLICY_KEYS:
            reshaped_lines.setdefault((*loc[:2], "entities", *loc[2:]), line)
    doc.lines = reshaped_lines
    model, problems = validate_document(MaskingFile, doc)
    problems = [p.replace(".entities.", ".") for p in problems]
    if schema is not None:
        problems.extend(_schema_problems(original, schema, doc))
    if model is None:
        raise RuleError("\n".join(problems))
    if model.default_policy not in model.policies:
        problems.append(
            format_issue(
                path,
                doc.line_of(("default_policy",)),
                ("default_policy",),
                f"unknown policy (policies: {', '.join(model.policies)})",
            )
        )
    elif model.policies[model.default_policy].clear:
        problems.append(
            format_issue(
                path,
                doc.line_of(("default_policy",)),
                ("default_policy",),
                "the default policy must mask; a clear view is for roles "
                "that are given it explicitly",
            )
        )
    compiled: dict[str, MaskingPolicy] = {}
    keys = MaskingKeys(key) if key else None
    for pname, policy in model.policies.items():
        needs_names = False
        tables: dict[tuple[str, str], dict[str, MaskFunction | None]] = {}
        specs: dict[tuple[str, str], dict[str, AnyOp]] = {
            (etype, table): dict(columns)
            for etype, per_table in policy.entities.items()
            for table, columns in per_table.items()
        }
        for etype, per_table in policy.entities.items():
            for table, columns in per_table.items():
                base = ("policies", pname, etype, table)
                plan: dict[str, MaskFunction | None] = {}
                for column, spec in columns.items():
                    loc = (*base, column)
                    try:
                        fn = compile_operator(spec, keys, column)
                    except ValueError as exc:
                        hint = (
                            ": set the environment variable named by secrets.master_key_env "
                            "or a key file in fabric.yaml"
                            if keys is None
                            else ""
                        )
                        problems.append(
                            format_issue(
                                path,
                                doc.line_of(loc),
                                (*loc, "op"),
                                f"'{spec.op}' {exc}{hint}",
                            )
                        )
                        continue
                    if spec.op in NAMED_OPS:
                        needs_names = True
                    plan[column] = fn
                tables[(etype, table)] = plan
        unlisted = compile_operator(
            RedactOp(op="redact")
            if policy.unlisted == "redact"
            else NullOp(op="null")
            if policy.unlisted == "null"
            else KeepOp(op="keep"),
            keys,
        )
        compiled[pname] = MaskingPolicy(
            pname, policy.clear, tables, unlisted, needs_names, specs, policy.unlisted, names_of
        )
        masks_something = unlisted is not None or any(
            fn is not None for plan in tables.values() for fn in plan.values()
        )
        if pname == model.default_policy and not policy.clear and not masks_something:
            problems.append(
                format_issue(
                    path,
                    doc.line_of(("policies", pname)),
                    ("policies", pname),
                    "the default policy masks nothing: list columns to "
                    "mask, or drop 'unlisted: keep'",
                )
            )
    if problems:
        raise RuleError("\n".join(problems))
    return CompiledPolicies(compiled, model.default_policy)
