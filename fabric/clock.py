"""Answers served a moment ago, served again without asking the store; by a clock callers inject.

Checking that a cached answer is still current means asking the store for the entity's
version: a SQLite read, so off the event loop, on a thread, and back. For an entity asked
for again and again (a hot key), that round trip costs more than everything else of the
request. An answer checked less than ``fresh_ms`` ago is served again from memory, on the
event loop: a sync that commits a new version is seen at most that much later (the
default, 250 ms, is far below the time any sync takes). Pure memory: nothing here touches
SQLite, so it is safe to call from the event loop.

:class:`Freshness` is the rule (checked when, by which clock, fresh until when), shared by
masked documents (kept here, in :class:`Recent`) and feature vectors (kept by
:class:`fabric.services.features.FeatureService` in flat tuples of their own, which the
garbage collector stops tracking). The clock is injected so that tests move it on rather
than sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import LRUCache

__all__ = ["Clock", "Freshness", "Recent", "monotonic"]

#: Seconds from an arbitrary start that never goes back: what freshness is measured by.
Clock = Callable[[], float]

#: The clock of a running process: wall-clock changes (NTP, DST) never make an answer fresh
#: again or stale early.
monotonic: Clock = time.monotonic


class Freshness:
    """How long an answer checked against the store stays fresh: ``fresh_ms`` by ``clock``.

    ``fresh_ms`` 0 turns it off: nothing is ever fresh, and every answer asks the store.
    """

    __slots__ = ("clock", "seconds")

    def __init__(self, fresh_ms: int, clock: Clock = monotonic) -> None:
        self.seconds = fresh_ms / 1000
        self.clock = clock

    def __bool__(self) -> bool:
        """Whether anything can be fresh: callers skip keeping answers when not."""
        return self.seconds > 0

    def now(self) -> float:
        """The moment an answer is checked at; take it *before* the store is asked, so a
        version committed while the store was read is never taken for checked."""
        return self.clock()

    def holds(self, checked_at: float) -> bool:
        """Whether an answer checked at ``checked_at`` (:meth:`now`) is still fresh."""
        return self.clock() - checked_at < self.seconds


class Recent:
    """At most ``size`` answers, each with the moment it was checked against the store."""

    def __init__(self, size: int, freshness: Freshness) -> None:
        self.freshness = freshness
        self._answers: LRUCache[Hashable, tuple[float, Any]] = LRUCache(maxsize=max(size, 1))
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        """The answer kept for ``key`` if it was checked less than ``fresh_ms`` ago."""
        if not self.freshness:
            return None
        with self._lock:
            found = self._answers.get(key)
        if found is None or not self.freshness.holds(found[0]):
            return None
        return found[1]

    def put(self, key: Hashable, checked_at: float, answer: Any) -> None:
        """Keep ``answer``, current as of ``checked_at`` (:meth:`Freshness.now` before the
        store was asked). The caller never changes it afterwards."""
        if self.freshness:
            with self._lock:
                self._answers[key] = (checked_at, answer)
