"""JSON answers as ready-made ASGI responses, an answer served again sent as the same bytes.

Litestar turns a handler's dict into a response per request: a ``Response``, its headers
merged and checked, an ``ASGIResponse``, the JSON. That was a large part of a hot lookup (an
entity asked for again and again, answered from memory; see :mod:`fabric.clock`; the figure
is in benchmarks/README.md, "Responses"). The services hand back the *same* dict object for
as long as an answer is fresh, so its response is made once per object and sent as it is to
every request that gets it. An ``ASGIResponse`` may be sent any number of times: each send
encodes its headers anew, and nothing of it changes.

Only answers served again are kept (the hot ones): keeping every answer of uniform traffic
kept thousands of documents alive a little longer, and the garbage collector's young passes
grew much longer (benchmarks/README.md, "Responses").
"""

from __future__ import annotations

import threading
from typing import Any

from litestar.enums import MediaType
from litestar.response.base import ASGIResponse
from litestar.serialization import default_serializer, encode_json

__all__ = ["JsonResponses"]


class JsonResponses:
    """Responses of dict answers, made once per answer object (at most ``size`` kept)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        #: id(answer) -> (answer, its response); holding the answer keeps its id unique
        self._made: dict[int, tuple[dict[str, Any], ASGIResponse]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def once(answer: dict[str, Any]) -> ASGIResponse:
        """The response of an answer made for one request (as Litestar would send it)."""
        return ASGIResponse(body=encode_json(answer, default_serializer), media_type=MediaType.JSON)

    def __call__(self, answer: dict[str, Any]) -> ASGIResponse:
        """The response of ``answer``, an answer the services may hand out again unchanged;
        the one made before if it is the same object."""
        found = self._made.get(id(answer))
        if found is not None and found[0] is answer:
            return found[1]
        response = self.once(answer)
        with self._lock:
            if len(self._made) >= self._size:
                # Whatever is hot now comes back at its next request; a sweep is cheaper
                # than an order kept per request.
                self._made.clear()
            self._made[id(answer)] = (answer, response)
        return response
