"""Answers served a moment ago, served again without asking the store.

Checking that a cached document is still current means asking the store for the entity's
version: a SQLite read, so off the event loop, on a thread, and back. For an entity asked
for again and again (a hot key), that round trip costs more than everything else of the
request. An answer checked less than ``fresh_ms`` ago is served again from memory, on the
event loop: a sync that commits a new version is seen at most that much later (the
default, 250 ms, is far below the time any sync takes). Pure memory: nothing here touches
SQLite, so it is safe to call from the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any

from cachetools import LRUCache

__all__ = ["Recent"]


class Recent:
    """At most ``size`` answers, each with the moment it was checked against the store."""

    def __init__(self, size: int, fresh_ms: int) -> None:
        self.fresh = fresh_ms / 1000
        self._answers: LRUCache[Hashable, tuple[float, Any]] = LRUCache(maxsize=max(size, 1))
        self._lock = threading.Lock()

    @staticmethod
    def now() -> float:
        """The clock answers are checked by; take it before the store is asked."""
        return time.monotonic()

    def get(self, key: Hashable) -> Any | None:
        """The answer kept for ``key`` if it was checked less than ``fresh_ms`` ago."""
        if not self.fresh:
            return None
        with self._lock:
            found = self._answers.get(key)
        if found is None or time.monotonic() - found[0] >= self.fresh:
            return None
        return found[1]

    def put(self, key: Hashable, checked_at: float, answer: Any) -> None:
        """Keep ``answer``, current as of ``checked_at`` (:meth:`now` before the store was
        asked). The caller never changes it afterwards."""
        if self.fresh:
            with self._lock:
                self._answers[key] = (checked_at, answer)
