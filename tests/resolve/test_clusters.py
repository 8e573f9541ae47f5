"""Stable entity ids: reused across syncs, the older id survives a merge, a split keeps it."""

from __future__ import annotations

from fabric.resolve.clusters import assign_entity_ids


def test_ids_are_stable_across_resyncs() -> None:
    clusters = [["r1", "r2"], ["r3"]]
    first = assign_entity_ids("customer", clusters, {}, {})
    previous = {"r1": first[0], "r2": first[0], "r3": first[1]}
    again = assign_entity_ids(
        "customer",
        [["r3"], ["r2", "r1", "r9"]],
        previous,
        {first[0]: "2026-01-01", first[1]: "2026-01-02"},
    )
    assert again == [first[1], first[0]]


def test_ids_merge_keeps_the_older_entity() -> None:
    previous = {"r1": "old", "r2": "new"}
    merged = assign_entity_ids(
        "customer", [["r1", "r2"]], previous, {"old": "2025-01-01", "new": "2026-01-01"}
    )
    assert merged == ["old"]


def test_ids_split_larger_part_keeps_the_id() -> None:
    previous = {"r1": "e", "r2": "e", "r3": "e"}
    ids = assign_entity_ids("customer", [["r1"], ["r2", "r3"]], previous, {"e": "2025-01-01"})
    assert ids[1] == "e" and ids[0] != "e"
