"""Answers served a moment ago: fresh for ``fresh_ms`` by the clock given, never past it."""

from __future__ import annotations

import pytest

from fabric.clock import Freshness, Recent


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recent_answers_are_served_until_fresh_ms_by_the_clock() -> None:
    clock = FakeClock()
    recent = Recent(2, Freshness(250, clock))
    checked_at = recent.freshness.now()  # taken before the store is asked
    clock.now += 0.1  # the store took that long to answer
    answer = {"id": "a"}
    recent.put("a", checked_at, answer)
    assert recent.get("a") is answer
    clock.now = checked_at + 0.249
    assert recent.get("a") is answer
    # Fresh from the check, not from the put: a version committed meanwhile shows in time.
    clock.now = checked_at + 0.25
    assert recent.get("a") is None
    assert recent.get("b") is None


def test_recent_keeps_at_most_size_answers() -> None:
    clock = FakeClock()
    recent = Recent(2, Freshness(250, clock))
    for key in "abc":
        recent.put(key, clock(), key)
    assert [recent.get(key) for key in "abc"] == [None, "b", "c"]


@pytest.mark.parametrize("size", [0, 5])
def test_fresh_ms_0_keeps_nothing(size: int) -> None:
    clock = FakeClock()
    freshness = Freshness(0, clock)
    recent = Recent(size, freshness)
    recent.put("a", clock(), "answer")
    assert not freshness and recent.get("a") is None
    assert Freshness(1, clock) and Freshness(1, clock).holds(clock())
