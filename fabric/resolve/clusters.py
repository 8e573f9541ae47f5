"""Give each cluster of records a stable entity id.

Ids are stable: a cluster containing records the catalog already knows keeps the id those
records had (the oldest entity wins when a cluster spans several; the larger part keeps it when
an entity splits), so a re-sync does not renumber the world.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

__all__ = ["assign_entity_ids", "mint_entity_id"]

T = TypeVar("T")


def mint_entity_id(
    entity_type: str,
    seed: str,
    taken: set[str] | frozenset[str],
    exists: Callable[[str], bool] | None = None,
) -> str:
    """Derive a new id from the cluster's smallest record reference.

    A hash of a record reference (not of any value) makes ids reproducible for the same sources
    without revealing anything about the entity; a counter resolves the rare collision.
    """
    counter = 0
    while True:
        material = f"{entity_type}\x00{seed}\x00{counter}".encode()
        candidate = hashlib.sha256(material).hexdigest()[:12]
        if candidate not in taken and (exists is None or not exists(candidate)):
            return candidate
        counter += 1


def assign_entity_ids(
    entity_type: str,
    clusters: Sequence[Sequence[T]],
    previous: Mapping[T, str],
    age: Mapping[str, str],
    exists: Callable[[str], bool] | None = None,
) -> list[str]:
    """Give every cluster an id, reusing known ids where the cluster holds known records.

    Args:
        clusters: record clusters.
        previous: record -> entity id from the last sync.
        age: entity id -> creation time; the oldest entity keeps its id on a merge.
        exists: for ids not in ``age``: does an entity with this id exist already? (An
            incremental sync passes only the entities it touches in ``age``.)

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
            chosen = mint_entity_id(entity_type, min(str(r) for r in clusters[i]), taken, exists)
        claimed.add(chosen)
        taken.add(chosen)
        ids[i] = chosen
    return [i for i in ids if i is not None]
