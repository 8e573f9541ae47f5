"""Clustering and stable ids: order independence, merges keep the older id, splits."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from fabric.resolve.clusters import UnionFind, assign_entity_ids, cluster_by_keys


def canonical(clusters: list[list[int]]) -> set[frozenset[int]]:
    return {frozenset(c) for c in clusters}


records_strategy = st.lists(
    st.tuples(
        st.integers(0, 40), st.lists(st.one_of(st.none(), st.sampled_from("abcdefgh")), max_size=3)
    ),
    max_size=40,
    unique_by=lambda r: r[0],
)


@given(records_strategy, st.randoms(use_true_random=False))
def test_clusters_do_not_depend_on_input_order(
    records: list[tuple[int, list[str | None]]], rnd: random.Random
) -> None:
    shuffled = records[:]
    rnd.shuffle(shuffled)
    assert canonical(cluster_by_keys(records)) == canonical(cluster_by_keys(shuffled))


@given(records_strategy)
def test_clusters_link_exactly_records_sharing_keys(
    records: list[tuple[int, list[str | None]]],
) -> None:
    clusters = canonical(cluster_by_keys(records))
    assert sorted(r for c in clusters for r in c) == sorted(r for r, _ in records)
    dict(records)
    for a, ka in records:
        for b, kb in records:
            if set(filter(None, ka)) & set(filter(None, kb)):
                assert any(a in c and b in c for c in clusters)


def test_clusters_none_keys_never_link() -> None:
    assert canonical(cluster_by_keys([(1, [None]), (2, [None])])) == {
        frozenset({1}),
        frozenset({2}),
    }


def test_union_find_groups() -> None:
    uf: UnionFind[str] = UnionFind()
    for x in "abcde":
        uf.add(x)
    uf.union("a", "b")
    uf.union("d", "e")
    uf.union("b", "e")
    assert canonical_str(uf.groups()) == {frozenset("abde"), frozenset("c")}


def canonical_str(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(g) for g in groups}


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
