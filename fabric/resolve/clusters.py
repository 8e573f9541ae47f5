"""Cluster records into entities and give each entity a stable id.

Records that share a match key are linked; union-find turns links into clusters in near-linear
time, and the result does not depend on the order records arrive in. Ids are stable: a cluster
containing records the catalog already knows keeps the id those records had (the oldest entity
wins when a cluster spans several), so a re-sync does not renumber the world.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

__all__ = ["UnionFind", "assign_entity_ids", "cluster_by_keys", "mint_entity_id"]

T = TypeVar("T")


class UnionFind(Generic[T]):
    """Disjoint sets with path halving and union by size."""

    def __init__(self) -> None:
        self._parent: dict[T, T] = {}
        self._size: dict[T, int] = {}

    def add(self, item: T) -> None:
        """Make ``item`` a set of its own if it is new."""
        if item not in self._parent:
            self._parent[item] = item
            self._size[item] = 1

    def find(self, item: T) -> T:
        """Return the representative of ``item``'s set."""
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: T, b: T) -> None:
        """Merge the sets of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]

    def groups(self) -> list[list[T]]:
        """Every set as a list."""
        out: dict[T, list[T]] = {}
        for item in self._parent:
            out.setdefault(self.find(item), []).append(item)
        return list(out.values())


def cluster_by_keys(records: Iterable[tuple[T, Sequence[str | None]]]) -> list[list[T]]:
    """Cluster records that share any non-empty match key.

    Args:
        records: ``(record, keys)`` pairs; keys from different rules must already differ
            (the compiled rules prefix each key with its rule number).
    """
    uf: UnionFind[T] = UnionFind()
    first_with_key: dict[str, T] = {}
    for record, keys in records:
        uf.add(record)
        for key in keys:
            if key is None:
                continue
            seen = first_with_key.setdefault(key, record)
            if seen is not record:
                uf.union(seen, record)
    return uf.groups()


def mint_entity_id(entity_type: str, seed: str, taken: set[str] | frozenset[str]) -> str:
    """Derive a new id from the cluster's smallest record reference.

    A hash of a record reference (not of any value) makes ids reproducible for the same sources
    without revealing anything about the entity; a counter resolves the rare collision.
    """
    counter = 0
    while True:
        material = f"{entity_type}\x00{seed}\x00{counter}".encode()
        candidate = hashlib.sha256(material).hexdigest()[:12]
        if candidate not in taken:
            return candidate
        counter += 1


def assign_entity_ids(
    entity_type: str,
    clusters: Sequence[Sequence[T]],
    previous: Mapping[T, str],
    age: Mapping[str, str],
) -> list[str]:
    """Give every cluster an id, reusing known ids where the cluster holds known records.

    Args:
        clusters: record clusters.
        previous: record -> entity id from the last sync.
        age: entity id -> creation time; the oldest entity keeps its id on a merge.

    Returns:
        One id per cluster, in the order of ``clusters``.
    """
    taken: set[str] = set(age)
    claimed: set[str] = set()
    ids: list[str | None] = [None] * len(clusters)
    # Larger clusters choose first, so when an entity splits its larger part keeps the id.
    order = sorted(
        range(len(clusters)), key=lambda i: (-len(clusters[i]), min(str(r) for r in clusters[i]))
    )
    for i in order:
        known = {previous[r] for r in clusters[i] if r in previous} - claimed
        if known:
            chosen = min(known, key=lambda e: (age.get(e, ""), e))
        else:
            chosen = mint_entity_id(entity_type, min(str(r) for r in clusters[i]), taken)
        claimed.add(chosen)
        taken.add(chosen)
        ids[i] = chosen
    return [i for i in ids if i is not None]
