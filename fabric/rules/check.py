"""Validate rule files on their own, recognising what kind of file each one is.

`fabric rules check FILE...` lets a data steward check a file before it is referenced from
fabric.yaml, or in a repository's CI with no sources at hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fabric.config.loader import read_yaml
from fabric.config.validation import format_issue
from fabric.errors import RuleError
from fabric.resolve.rules import load_match_rules
from fabric.rules.masking import load_masking
from fabric.rules.transforms import load_transforms

__all__ = ["check_rule_file"]

#: Keys only a match rules file has under an entity type.
_MATCH_KEYS = {"fields", "rules", "cannot_link", "never_link", "max_cluster_size"}


def check_rule_file(
    path: Path,
    *,
    key: bytes | None = None,
    schema: Mapping[str, Mapping[str, list[str]]] | None = None,
) -> str:
    """Validate one masking, match or transforms file; return its kind.

    Args:
        path: the file.
        key: the master key; without one, a throwaway key stands in, since checking a keyed
            operator's parameters needs no real key.
        schema: entity type -> table -> columns to check names against, when known.

    Raises:
        RuleError: every problem found.
    """
    doc = read_yaml(path, what="rules", error=RuleError)
    if not isinstance(doc.data, dict):
        raise RuleError(format_issue(path, None, (), "a rule file must be a mapping"))
    if "policies" in doc.data or "default_policy" in doc.data:
        load_masking(path, key or os.urandom(32), schema)
        return "masking"
    sections = [v for v in doc.data.values() if isinstance(v, dict)]
    if sections and not any(set(v) & _MATCH_KEYS for v in sections):
        # entity type -> table -> column: transforms. Columns are checked against the
        # sources when a sync or `fabric rules check` reflects them.
        load_transforms(path)
        return "transforms"
    for entity_type in doc.data:
        table_columns = None if schema is None else schema.get(str(entity_type))
        load_match_rules(path, str(entity_type), dict(table_columns) if table_columns else None)
    return "match"
