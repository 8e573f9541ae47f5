"""The identity index's hashes: keyed, and telling apart exactly what resolution compares."""

from __future__ import annotations

from fabric.resolve.index import values_hash
from fabric.store.crypto import KeyedHasher


def test_values_hash_is_keyed_order_free_and_tells_missing_from_text() -> None:
    hasher = KeyedHasher(b"k" * 32)
    values = {"email": "ada@example.com", "phone": None}
    assert values_hash(hasher, values) == values_hash(hasher, dict(reversed(values.items())))
    assert values_hash(hasher, values) != values_hash(hasher, {**values, "phone": "None"})
    assert values_hash(hasher, values) != values_hash(hasher, {"email": "ada@example.com"})
    assert values_hash(hasher, values) != values_hash(KeyedHasher(b"o" * 32), values)
    assert b"ada" not in values_hash(hasher, values)
