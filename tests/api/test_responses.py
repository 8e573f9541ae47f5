"""JSON answers as ASGI responses: the bytes Litestar would send, made once per answer."""

from __future__ import annotations

from datetime import date

import msgspec
from litestar.serialization import default_serializer, encode_json

from fabric.api.responses import JsonResponses


def test_json_responses_encode_as_litestar_and_are_made_once_per_answer() -> None:
    made = JsonResponses(size=3)
    answer = {"entity_id": "3f1c9a2b7d4e", "tables": {"t": [{"born": date(1990, 1, 2)}]}}
    first = made(answer)
    assert first.body == encode_json(answer, default_serializer)
    assert msgspec.json.decode(first.body)["tables"]["t"][0]["born"] == "1990-01-02"
    assert dict(first.headers)["content-type"] == "application/json"
    assert made(answer) is first  # the same answer object: the same response
    equal = dict(answer)
    assert made(equal) is not first and made(equal).body == first.body
    # Bounded: past `size` answers, the kept ones are dropped and made again when asked.
    others = [{"n": n} for n in range(4)]
    for other in others:
        made(other)
    assert made(answer) is not first
    # One-off answers are never kept.
    once = made.once(others[0])
    assert once.body == b'{"n":0}' and once is not made.once(others[0])
