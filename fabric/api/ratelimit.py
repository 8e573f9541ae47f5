"""Rate limiting per caller: a fixed window per caller, counted in this process.

:mod:`fabric.api.gate` asks :meth:`RateLimit.admit` once per request, after authentication, so
a caller is what authenticated: the key's configured *name*, however its header was spelled
(``Bearer``, ``bearer``, any number of spaces). A caller without a valid key is its address.
Litestar's :class:`RateLimitMiddleware` kept, per caller, the list of the window's request
times in a store, as JSON: every request decoded and encoded the whole list under an async
lock, a cost that grew with the rate (benchmarks/README.md, "Rate limit"), and it ran before
authentication, so it could only key on the header as sent. Here a window is a count and its
end, in a dict. A window starts at the caller's first request rather than at a whole second,
so a burst is never split in two. Answers carry the IETF draft's ``RateLimit-*`` headers.
"""

from __future__ import annotations

import math
from time import time

from litestar.exceptions import TooManyRequestsException

__all__ = ["RateLimit"]

#: Callers remembered before finished windows are dropped.
_PRUNE_AT = 10_000

_POLICY, _LIMIT = b"ratelimit-policy", b"ratelimit-limit"
_REMAINING, _RESET = b"ratelimit-remaining", b"ratelimit-reset"


class RateLimit:
    """At most ``per_second`` requests per caller per second (in this process)."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        #: caller -> [requests in the window, the window's end (epoch seconds)]
        self._windows: dict[str, list[float]] = {}
        #: the two headers that never change
        self._fixed = [(_POLICY, b"%d; w=1" % per_second), (_LIMIT, b"%d" % per_second)]

    def admit(self, caller: str) -> list[tuple[bytes, bytes]]:
        """Count a request of ``caller`` and return the ``RateLimit-*`` headers to answer with.

        Raises:
            TooManyRequestsException: ``caller`` used its allowance of this second (429).
        """
        now = time()
        window = self._windows.get(caller)
        if window is None or window[1] <= now:
            if len(self._windows) >= _PRUNE_AT:
                self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            window = self._windows[caller] = [0, now + 1]
        # Runs on the event loop between awaits: no lock is needed around the count.
        if window[0] >= self.per_second:
            raise TooManyRequestsException(
                headers={k.decode(): v.decode() for k, v in self._headers(window, now)}
            )
        window[0] += 1
        return self._headers(window, now)

    def _headers(self, window: list[float], now: float) -> list[tuple[bytes, bytes]]:
        return [
            *self._fixed,
            (_REMAINING, b"%d" % max(0, self.per_second - int(window[0]))),
            (_RESET, b"%d" % max(0, math.ceil(window[1] - now))),
        ]
