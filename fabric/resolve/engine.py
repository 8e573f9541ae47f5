"""Resolve records into clusters with the compiled match rules, explaining every link.

Records are first put in a canonical order (by reference), so the result never depends on the
order they arrive in. Deterministic rules link records through shared keys in linear time;
fuzzy rules compare only candidate pairs that share a blocking key, one block at a time, so
candidate pairs are never all held in memory, and each pair is compared once (in the block of
the first key the two records share). Links are then applied strongest rule first: a link that
would put two conflicting records (``cannot_link``) in one entity, or grow an entity past
``max_cluster_size``, is refused and reported for review instead of merging blindly.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fabric.resolve.rules import CompiledMatchRules, CompiledRule

__all__ = ["Link", "Resolution", "resolve_records"]

R = TypeVar("R", bound=Hashable)

#: Groups of records sharing a deterministic key up to this size link pairwise; larger ones
#: link to one member, which keeps the number of links linear.
_ALL_PAIRS_UP_TO = 12
Values = Mapping[str, str | None]


@dataclass(frozen=True)
class Link(Generic[R]):
    """Why two records belong together: the rule and each field's comparison."""

    a: R
    b: R
    rule: str
    #: field -> similarity in [0, 1] (1.0 for fields that had to be equal)
    comparisons: Mapping[str, float]
    score: float | None = None
    #: for refused links: why the merge was refused
    refused: str | None = None


@dataclass
class Resolution(Generic[R]):
    """Clusters of records, the links that formed them and the links refused for review."""

    clusters: list[list[R]]
    links: list[Link[R]]
    refused: list[Link[R]]
    stats: dict[str, int] = field(default_factory=dict)


def _key(values: Values, fields: Sequence[str]) -> tuple[str, ...] | None:
    parts = []
    for name in fields:
        value = values.get(name)
        if value is None:
            return None
        parts.append(value)
    return tuple(parts)


def _compare(rule: CompiledRule, a: Values, b: Values) -> tuple[dict[str, float], float] | None:
    """Evaluate a fuzzy rule on one pair; None when it does not link them."""
    details: dict[str, float] = {}
    for name in rule.equal:
        if a.get(name) is None or a.get(name) != b.get(name):
            return None
        details[name] = 1.0
    for name, metric, minimum in rule.similar:
        va, vb = a.get(name), b.get(name)
        if va is None or vb is None:
            return None
        similarity = metric(va, vb)
        if similarity < minimum:
            return None
        details[name] = round(similarity, 4)
    total = 0.0
    if rule.score:
        for name, metric, weight in rule.score:
            va, vb = a.get(name), b.get(name)
            similarity = metric(va, vb) if va is not None and vb is not None else 0.0
            details[name] = round(similarity, 4)
            total += weight * similarity
        if total < rule.threshold:
            return None
    return details, round(total, 4)


def _links_of_rule(
    rule: CompiledRule,
    values: Sequence[Values],
    rules: CompiledMatchRules,
    stats: dict[str, int],
    find: Callable[[int], int],
) -> list[tuple[int, int, dict[str, float], float | None]]:
    """The rule's links between records that stronger rules have not already put together.

    ``find`` gives a record's cluster as the stronger rules left it: a pair in one cluster
    already could only be skipped when the links are applied, so it is neither compared nor
    kept (most pairs of a phone block share an email too). Memory holds one rule's links.
    """
    found: list[tuple[int, int, dict[str, float], float | None]] = []
    if rule.deterministic:
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        if len(rule.equal) == 1:
            # One field (an email): read directly, not through _key (a call per record).
            (name,) = rule.equal
            for index, record in enumerate(values):
                value = record.get(name)
                if value is not None:
                    groups[(value,)].append(index)
        else:
            for index, record in enumerate(values):
                key = _key(record, rule.equal)
                if key is not None:
                    groups[key].append(index)
        detail = dict.fromkeys(rule.equal, 1.0)
        for members in groups.values():
            if len(members) > rules.max_block_size:
                stats["blocks_skipped"] = stats.get("blocks_skipped", 0) + 1
                continue
            if len(members) <= _ALL_PAIRS_UP_TO:
                # Every pair: if cannot_link refuses one link, the others can still place
                # each record with the member it really belongs to (a relative's ticket).
                found.extend(
                    (a, b, detail, None)
                    for position, a in enumerate(members)
                    for b in members[position + 1 :]
                    if find(a) != find(b)
                )
            else:
                # Records are in canonical order, so members[0] is the same whatever the
                # input order was: every member links to it.
                hub = members[0]
                found.extend(
                    (hub, other, detail, None) for other in members[1:] if find(hub) != find(other)
                )
        return found
    keys_of: list[list[tuple[int, tuple[str, ...]]]] = []
    blocks: dict[tuple[int, tuple[str, ...]], list[int]] = defaultdict(list)
    # With one blocking key per record, two records share at most one block: no pair can be
    # met twice, so the keys of each record are not kept for the check below (a set per pair).
    single = len(rule.blocking) == 1
    if single:
        (spec,) = rule.blocking
        for index, record in enumerate(values):
            key = _key(record, spec)
            if key is not None:
                blocks[(0, key)].append(index)
    else:
        for index, record in enumerate(values):
            keys = []
            for spec_index, spec in enumerate(rule.blocking):
                key = _key(record, spec)
                if key is not None:
                    keys.append((spec_index, key))
                    blocks[(spec_index, key)].append(index)
            keys_of.append(keys)
    for block_key, members in blocks.items():
        if len(members) < 2:
            continue
        if len(members) > rules.max_block_size:
            stats["blocks_skipped"] = stats.get("blocks_skipped", 0) + 1
            continue
        for position, i in enumerate(members):
            for j in members[position + 1 :]:
                # Compare each pair once: in the block of the first key both records share.
                if not single:
                    shared = set(keys_of[j])
                    first = next(k for k in keys_of[i] if k in shared)
                    if first != block_key:
                        continue
                if find(i) == find(j):
                    continue
                stats["pairs_compared"] = stats.get("pairs_compared", 0) + 1
                result = _compare(rule, values[i], values[j])
                if result is not None:
                    found.append((i, j, result[0], result[1] if rule.score else None))
    return found


class _Clusters:
    """Union-find that keeps members, to check cannot-link conflicts and sizes on merge."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))
        self.members: dict[int, list[int]] = {i: [i] for i in range(size)}

    def find(self, item: int) -> int:
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))


def _conflict(
    rules: CompiledMatchRules, left: list[int], right: list[int], values: Sequence[Values]
) -> str | None:
    for name, metric, minimum in rules.cannot_link:
        for i in left:
            vi = values[i].get(name)
            if vi is None:
                continue
            for j in right:
                vj = values[j].get(name)
                if vj is not None and metric(vi, vj) < minimum:
                    return f"cannot_link: records disagree on {name}"
    return None


def resolve_records(
    records: Sequence[tuple[R, Values]], rules: CompiledMatchRules
) -> Resolution[R]:
    """Cluster records with the rules; the result is independent of the input order.

    Args:
        records: ``(reference, normalised field values)``; references must be unique and
            orderable as text.
        rules: the compiled match rules.
    """
    ordered = sorted(records, key=lambda r: str(r[0]))
    refs = [r for r, _ in ordered]
    values = [v for _, v in ordered]
    stats: dict[str, int] = {"records": len(refs), "links_found": 0}
    clusters = _Clusters(len(refs))
    used: list[Link[R]] = []
    refused: list[Link[R]] = []
    # Strongest rule first, each rule's links in record order: the same order whatever the
    # input order was. A rule's links are found once the stronger rules' are applied.
    for rule in rules.rules:
        candidates = [
            (min(a, b), max(a, b), details, score)
            for a, b, details, score in _links_of_rule(rule, values, rules, stats, clusters.find)
        ]
        candidates.sort(key=operator.itemgetter(0, 1))
        stats["links_found"] += len(candidates)
        for a, b, details, score in candidates:
            ra, rb = clusters.find(a), clusters.find(b)
            if ra == rb:
                continue
            reason = None
            if len(clusters.members[ra]) + len(clusters.members[rb]) > rules.max_cluster_size:
                reason = f"max_cluster_size {rules.max_cluster_size} would be exceeded"
            else:
                reason = _conflict(rules, clusters.members[ra], clusters.members[rb], values)
            link = Link(refs[a], refs[b], rule.name, details, score, reason)
            if reason is None:
                clusters.union(a, b)
                used.append(link)
            else:
                refused.append(link)
    groups = sorted(clusters.members.values(), key=min)
    stats["clusters"] = len(groups)
    stats["links_refused"] = len(refused)
    return Resolution([[refs[i] for i in sorted(g)] for g in groups], used, refused, stats)
