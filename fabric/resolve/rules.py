"""Match rules: how records of an entity type are recognised as the same entity.

A match file declares, per entity type:

- ``fields``: what is compared, each with its normalisers and the column holding it in each
  identity table (without ``columns``, the column of the field's own name);
- ``rules``, strongest first: a rule links two records when its ``equal`` fields are equal
  after normalising and, for fuzzy rules, its ``similar`` comparisons reach their minimum or
  its weighted ``score`` reaches the threshold. Fuzzy rules only compare *candidate pairs*
  that share a blocking key (the rule's ``equal`` fields, its ``block_on`` keys, or the
  entity's ``blocking`` keys), so cost grows with candidate pairs, not with n²;
- guards against over-merging: ``never_link`` values, ``cannot_link`` comparisons (two records
  that conflict on them never end up in one entity, whatever links them), and
  ``max_cluster_size``, beyond which a merge is refused and flagged for review.

Rules are validated strictly and compiled once into plain functions; nothing reads YAML per
record.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    RootModel,
    StringConstraints,
    model_validator,
)

from fabric.config.loader import read_yaml
from fabric.config.validation import StrictModel, format_issue, validate_document
from fabric.errors import RuleError
from fabric.resolve.compare import METRICS, Metric, MetricName
from fabric.resolve.normalize import NORMALIZER_NAMES, is_normaliser, make_normaliser

__all__ = [
    "ColumnSource",
    "CompiledMatchRules",
    "CompiledRule",
    "EntityMatchRules",
    "Extractor",
    "MatchFile",
    "compile_match_rules",
    "load_match_rules",
    "read_match_file",
]

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


def _known_normaliser(name: str) -> str:
    if not is_normaliser(name):
        raise ValueError(f"unknown normaliser '{name}' (allowed: {', '.join(NORMALIZER_NAMES)})")
    return name


Normalizer = Annotated[str, AfterValidator(_known_normaliser)]


class ColumnSource(StrictModel):
    """Where a table keeps a field, with steps that apply to this table only.

    ``before`` runs ahead of the field's own normalisers: a billing holder name needs
    ``first_name_of`` to yield a first name, a ticket body ``signature_name`` first.
    """

    column: Name | list[Name]
    before: list[Normalizer] = Field(default_factory=list)


class MatchField(StrictModel):
    """A field compared between records."""

    normalize: list[Normalizer] = Field(default_factory=lambda: ["trim", "lowercase"])
    columns: dict[Name, Name | list[Name] | ColumnSource] = Field(
        default_factory=dict,
        description="identity table -> column holding this field, a list of columns (the "
        "first that gives a value after normalising wins), or {column, before}",
    )
    region: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(
        "US", description="default country of phone numbers without a country code"
    )


class Comparison(StrictModel):
    """How one field is compared in a fuzzy rule."""

    metric: MetricName = "jaro_winkler"
    min: float | None = Field(None, ge=0, le=1, description="for `similar`: lowest similarity")
    weight: float = Field(1.0, gt=0, le=100, description="for `score`: weight of this field")


class ScoreSpec(StrictModel):
    """A weighted sum of similarities that must reach a threshold."""

    fields: dict[Name, Comparison] = Field(min_length=1)
    threshold: float = Field(gt=0)


class MatchRule(StrictModel):
    """One way two records are recognised as the same entity."""

    name: Name
    equal: list[Name] = Field(default_factory=list, description="fields that must be equal")
    similar: dict[Name, Comparison] = Field(
        default_factory=dict, description="fields whose similarity must reach `min`"
    )
    score: ScoreSpec | None = None
    block_on: list[list[Name]] | None = Field(
        None, description="candidate keys for this fuzzy rule (default: the entity's blocking)"
    )

    @model_validator(mode="after")
    def _has_a_test(self) -> MatchRule:
        if not self.equal and not self.similar and self.score is None:
            raise ValueError("a rule needs `equal`, `similar` or `score`")
        for name, comparison in self.similar.items():
            if comparison.min is None:
                raise ValueError(f"similar.{name} needs `min` (the lowest similarity that links)")
        return self


class CannotLink(StrictModel):
    """Two records whose values of a field are both present and less similar than ``min``."""

    metric: MetricName = "exact"
    min: float = Field(1.0, ge=0, le=1)


class EntityMatchRules(StrictModel):
    """The match rules of one entity type."""

    fields: dict[Name, MatchField] = Field(min_length=1)
    blocking: list[list[Name]] = Field(
        default_factory=list, description="candidate keys for fuzzy rules without their own"
    )
    rules: list[MatchRule] = Field(min_length=1)
    never_link: dict[Name, list[str]] = Field(
        default_factory=dict, description="field -> normalised values that never link records"
    )
    cannot_link: dict[Name, CannotLink] = Field(default_factory=dict)
    max_cluster_size: int = Field(50, ge=2, le=100_000)
    max_block_size: int = Field(
        1000, ge=2, le=1_000_000, description="larger blocks are skipped, with a warning"
    )


class MatchFile(RootModel[dict[Name, EntityMatchRules]]):
    """A match rules file: entity type -> rules."""


@dataclass(frozen=True)
class CompiledRule:
    """One rule, ready to evaluate."""

    name: str
    index: int
    equal: tuple[str, ...]
    similar: tuple[tuple[str, Metric, float], ...]
    score: tuple[tuple[str, Metric, float], ...]
    threshold: float
    #: candidate keys: tuples of fields whose values must all be present and equal
    blocking: tuple[tuple[str, ...], ...]

    @property
    def deterministic(self) -> bool:
        """True when equality of ``equal`` alone decides (no pairwise comparison needed)."""
        return not self.similar and not self.score


Extractor = Callable[[Mapping[str, Any]], dict[str, str | None]]


@dataclass(frozen=True)
class CompiledMatchRules:
    """Match rules of one entity type, compiled to plain functions."""

    entity_type: str
    fields: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    cannot_link: tuple[tuple[str, Metric, float], ...]
    max_cluster_size: int
    max_block_size: int
    #: field -> table -> (columns, normaliser); {} reads the column of the field's own name
    sources: Mapping[str, Mapping[str, tuple[tuple[str, ...], Callable[[Any], str | None]]]]
    _defaults: Mapping[str, Callable[[Any], str | None]] = field(repr=False)
    #: the rules as written: compiled functions cannot cross to worker processes, these can
    spec: EntityMatchRules | None = field(default=None, repr=False, compare=False)

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Rule names, strongest first."""
        return tuple(r.name for r in self.rules)

    @functools.cached_property
    def version(self) -> str:
        """A short hash of the rules as written: recorded in each image's ``_meta``, so an
        entity tells which rule set put its records together."""
        if self.spec is None:
            return ""
        return hashlib.sha256(self.spec.model_dump_json().encode()).hexdigest()[:16]

    @functools.cached_property
    def key_specs(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Every blocking key of every rule: the prefix that tells its keys apart, its fields."""
        return tuple(
            (f"{rule.index}\x1f{spec_index}\x1f", spec)
            for rule in self.rules
            for spec_index, spec in enumerate(rule.blocking)
        )

    def source_of(
        self, field: str, table: str
    ) -> tuple[tuple[str, ...], Callable[[Any], str | None]] | None:
        """The columns of ``table`` a field is read from and its normaliser; None when the
        field is not read from this table. A field without ``columns`` reads the column of
        its own name, in every table."""
        mapping = self.sources[field]
        if not mapping:
            return (field,), self._defaults[field]
        return mapping.get(table)

    def extractor(
        self,
        table: str,
        available: set[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> Extractor | None:
        """Return a function from a row of ``table`` to its normalised fields (all of them,
        or ``fields``).

        None when the table holds no match field at all (its records only link by parents).
        """
        plan: list[tuple[str, tuple[str, ...], Callable[[Any], str | None]]] = []
        for name in self.fields if fields is None else fields:
            source = self.source_of(name, table)
            if source is None:
                continue
            columns, normaliser = source
            if available is not None:
                columns = tuple(c for c in columns if c in available)
            if columns:
                plan.append((name, columns, normaliser))
        if not plan:
            return None

        def extract(row: Mapping[str, Any]) -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for name, columns, norm in plan:
                value = None
                for column in columns:
                    value = norm(row.get(column))
                    if value is not None:
                        break
                out[name] = value
            return out

        return extract


def _compile_field(
    spec: MatchField, never: frozenset[str], before: Sequence[str] = (), cached: bool = True
) -> Callable[[Any], str | None]:
    steps = [
        make_normaliser(n, region=spec.region, cached=cached) for n in (*before, *spec.normalize)
    ]

    def normalise(value: Any) -> str | None:
        if value is None:
            return None
        text: str | None = str(value)
        for step in steps:
            if not text:
                return None
            text = step(text)
        if not text or text in never:
            return None
        return text

    return normalise


def _column_names(given: str | list[str] | ColumnSource) -> tuple[str, ...]:
    if isinstance(given, ColumnSource):
        given = given.column
    return (given,) if isinstance(given, str) else tuple(given)


def _compile_source(
    spec: MatchField, given: str | list[str] | ColumnSource, never: frozenset[str], cached: bool
) -> tuple[tuple[str, ...], Callable[[Any], str | None]]:
    before = given.before if isinstance(given, ColumnSource) else []
    return _column_names(given), _compile_field(spec, never, before, cached)


def compile_match_rules(
    entity_type: str, rules: EntityMatchRules, *, cached: bool = True
) -> CompiledMatchRules:
    """Compile one entity type's rules (``cached``: see :func:`make_normaliser`)."""
    compiled_rules = []
    entity_blocking = tuple(tuple(key) for key in rules.blocking)
    for index, rule in enumerate(rules.rules):
        if rule.equal:
            blocking: tuple[tuple[str, ...], ...] = (tuple(rule.equal),)
        elif rule.block_on:
            blocking = tuple(tuple(key) for key in rule.block_on)
        else:
            blocking = entity_blocking
        compiled_rules.append(
            CompiledRule(
                name=rule.name,
                index=index,
                equal=tuple(rule.equal),
                similar=tuple(
                    (f, METRICS[c.metric], float(c.min or 0)) for f, c in rule.similar.items()
                ),
                score=tuple(
                    (f, METRICS[c.metric], c.weight)
                    for f, c in (rule.score.fields.items() if rule.score else ())
                ),
                threshold=rule.score.threshold if rule.score else 0.0,
                blocking=blocking,
            )
        )
    return CompiledMatchRules(
        entity_type=entity_type,
        fields=tuple(rules.fields),
        rules=tuple(compiled_rules),
        cannot_link=tuple((f, METRICS[c.metric], c.min) for f, c in rules.cannot_link.items()),
        max_cluster_size=rules.max_cluster_size,
        max_block_size=rules.max_block_size,
        sources={
            name: {
                table: _compile_source(
                    spec, given, frozenset(rules.never_link.get(name, ())), cached
                )
                for table, given in spec.columns.items()
            }
            for name, spec in rules.fields.items()
        },
        _defaults={
            name: _compile_field(spec, frozenset(rules.never_link.get(name, ())), (), cached)
            for name, spec in rules.fields.items()
        },
        spec=rules,
    )


def _field_problems(path: Path, doc: Any, entity_type: str, section: EntityMatchRules) -> list[str]:
    """Every reference to a field that the section does not declare."""
    problems: list[str] = []
    known = section.fields

    def check(name: str, loc: tuple[str | int, ...]) -> None:
        if name not in known:
            problems.append(
                format_issue(
                    path,
                    doc.line_of(loc),
                    loc,
                    f"unknown field '{name}' (fields: {', '.join(known)})",
                )
            )

    for i, key in enumerate(section.blocking):
        for j, name in enumerate(key):
            check(name, (entity_type, "blocking", i, j))
    for i, rule in enumerate(section.rules):
        base = (entity_type, "rules", i)
        for j, name in enumerate(rule.equal):
            check(name, (*base, "equal", j))
        for name in rule.similar:
            check(name, (*base, "similar", name))
        for name in rule.score.fields if rule.score else ():
            check(name, (*base, "score", "fields", name))
        for j, key in enumerate(rule.block_on or ()):
            for k, name in enumerate(key):
                check(name, (*base, "block_on", j, k))
        if not rule.equal and not rule.block_on and not section.blocking:
            problems.append(
                format_issue(
                    path,
                    doc.line_of(base),
                    base,
                    "a fuzzy rule without `equal` needs `block_on` keys, "
                    "or `blocking` keys for the entity type",
                )
            )
    for name in section.never_link:
        check(name, (entity_type, "never_link", name))
    for name in section.cannot_link:
        check(name, (entity_type, "cannot_link", name))
    names = [r.name for r in section.rules]
    for i, name in enumerate(names):
        if name in names[:i]:
            loc = (entity_type, "rules", i, "name")
            problems.append(format_issue(path, doc.line_of(loc), loc, "duplicate rule name"))
    return problems


def read_match_file(path: Path) -> tuple[MatchFile, Any]:
    """Parse and validate a whole match file; return the model and the YAML document."""
    doc = read_yaml(path, what="match rules", error=RuleError)
    if not isinstance(doc.data, dict):
        raise RuleError(
            format_issue(path, None, (), "must be a mapping of entity type -> match rules")
        )
    model, problems = validate_document(MatchFile, doc)
    if model is None:
        raise RuleError("\n".join(problems))
    for entity_type, section in model.root.items():
        problems.extend(_field_problems(path, doc, entity_type, section))
    if problems:
        raise RuleError("\n".join(problems))
    return model, doc


def load_match_rules(
    path: Path,
    entity_type: str | None = None,
    tables: Mapping[str, list[str]] | None = None,
    *,
    cached: bool = True,
) -> CompiledMatchRules:
    """Load, check and compile the rules of one entity type from a match file.

    Args:
        path: the match YAML file.
        entity_type: which section to compile; None when the file has exactly one.
        tables: optional identity table -> available columns, to check column references.
        cached: normalisers may cache texts (see :func:`make_normaliser`).

    Raises:
        RuleError: naming every problem with file, line and path.
    """
    model, doc = read_match_file(path)
    if entity_type is None:
        if len(model.root) != 1:
            raise RuleError(
                format_issue(
                    path,
                    None,
                    (),
                    f"holds rules for several entity types ({', '.join(model.root)}); name one",
                )
            )
        entity_type = next(iter(model.root))
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
    problems: list[str] = []
    if tables is not None:
        for fname, spec in section.fields.items():
            for table, given in spec.columns.items():
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
                    continue
                for column in _column_names(given):
                    if column not in tables[table]:
                        columns = ", ".join(tables[table])
                        problems.append(
                            format_issue(
                                path,
                                doc.line_of(loc),
                                loc,
                                f"table has no column '{column}' (columns: {columns})",
                            )
                        )
    if problems:
        raise RuleError("\n".join(problems))
    return compile_match_rules(entity_type, section, cached=cached)
