"""Tell merges and splits apart from ordinary updates, for the history and the aliases.

A merge is a new cluster holding records of several previous entities: the id it keeps is the
survivor, the others become aliases that still resolve. A split is a previous entity whose
records now sit in several clusters: the larger part kept the id (see ``assign_entity_ids``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TypeVar

from fabric.resolve.engine import Link
from fabric.store.catalog import EntityEvent

__all__ = ["entity_changes"]

R = TypeVar("R")


def entity_changes(
    clusters: Sequence[Sequence[R]],
    ids: Sequence[str],
    previous: Mapping[R, str],
    links: Sequence[Link[R]],
    refused: Sequence[Link[R]],
    *,
    at: str,
    run_id: int,
) -> tuple[list[EntityEvent], dict[str, str]]:
    """Return the merge and split events, and the new aliases (old id -> surviving id)."""
    current = set(ids)
    cluster_of: dict[R, str] = {}
    for entity_id, members in zip(ids, clusters, strict=True):
        for record in members:
            cluster_of[record] = entity_id
    # Links grouped once, by the entity they hold together and by the one they would have
    # split: scanning every link for every merge or split was quadratic in a big re-sync.
    joining: dict[str, set[str]] = defaultdict(set)
    for link in links:
        if previous.get(link.a) != previous.get(link.b):
            joining[cluster_of[link.a]].add(link.rule)
    refused_in: dict[str, set[str]] = defaultdict(set)
    for link in refused:
        old = previous.get(link.a)
        if old is not None and previous.get(link.b) == old:
            refused_in[old].add(f"{link.rule} ({link.refused})")
    events: list[EntityEvent] = []
    aliases: dict[str, str] = {}
    for entity_id, members in zip(ids, clusters, strict=True):
        olds = sorted({previous[r] for r in members if r in previous})
        if len(olds) < 2:
            continue
        rules = sorted(joining.get(entity_id, ()))
        others = [o for o in olds if o != entity_id]
        events.append(
            EntityEvent(
                "merge",
                entity_id,
                others,
                f"records linked by {', '.join(rules) or 'match rules'}",
                at,
                run_id,
            )
        )
        for old in others:
            if old not in current:
                aliases[old] = entity_id
    parts: dict[str, set[str]] = defaultdict(set)
    for record, old in previous.items():
        if record in cluster_of:
            parts[old].add(cluster_of[record])
    for old, new_ids in sorted(parts.items()):
        if len(new_ids) < 2:
            continue
        refused_rules = sorted(refused_in.get(old, ()))
        reason = "records no longer linked by the match rules"
        if refused_rules:
            reason += f"; refused: {', '.join(refused_rules)}"
        events.append(EntityEvent("split", old, sorted(new_ids - {old}), reason, at, run_id))
    return events, aliases
