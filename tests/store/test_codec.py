"""Blobs: compressed, sealed under the current store key, bound to entity, version and key id."""

from __future__ import annotations

import pytest
import zstandard

from fabric.errors import StoreError
from fabric.store.codec import BlobCodec, key_id_of
from fabric.store.crypto import KeyDeriver, KeyRing, Sealer

MASTER = b"m" * 32
K1 = b"1" * 32
IMAGE = b"SQLite format 3\x00" + b"Ada Lovelace ada@example.com " * 40


def test_codec_binds_blobs_to_their_entity_and_version() -> None:
    codec = BlobCodec(KeyRing.of_master(MASTER))
    blob = codec.encode(IMAGE, "customer", "e1", 1)
    assert b"Ada" not in blob
    assert key_id_of(blob) == "0"
    assert codec.decode(blob, "customer", "e1", 1) == IMAGE
    for other in (("customer", "e2", 1), ("customer", "e1", 2), ("device", "e1", 1)):
        with pytest.raises(StoreError, match="failed its integrity check"):
            codec.decode(blob, *other)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(StoreError, match="stored image of customer e1"):
        codec.decode(tampered, "customer", "e1", 1)
    with pytest.raises(StoreError, match="no master key"):
        BlobCodec(None).decode(blob, "customer", "e1", 1)


def test_new_blobs_use_the_current_key_and_old_ones_still_open() -> None:
    old = BlobCodec(KeyRing.of_master(MASTER)).encode(IMAGE, "customer", "e1", 1)
    rotated = BlobCodec(KeyRing("k1", {"k1": K1, "0": MASTER}))
    new = rotated.encode(IMAGE, "customer", "e1", 2)
    assert key_id_of(new) == "k1"
    assert rotated.decode(old, "customer", "e1", 1) == IMAGE
    assert rotated.decode(new, "customer", "e1", 2) == IMAGE
    # The key id is bound as associated data: a header edited to name another id fails,
    # even one under which the very same key is configured.
    same_key = BlobCodec(KeyRing("k1", {"k1": K1, "k2": K1}))
    relabelled = new.replace(b"k1", b"k2", 1)
    with pytest.raises(StoreError, match="failed its integrity check"):
        same_key.decode(relabelled, "customer", "e1", 2)
    # A ring without the key a blob needs says which id is missing, never a key.
    with pytest.raises(StoreError, match="store key id 'k1', which is not configured"):
        BlobCodec(KeyRing.of_master(MASTER)).decode(new, "customer", "e1", 2)


def test_blobs_written_before_key_ids_still_open() -> None:
    # The first sealed layout: b"FE1", nonce, ciphertext; the master key, no key id in the
    # associated data.
    sealer = Sealer(KeyDeriver(MASTER).derive("entity\x00customer\x00e1"))
    compressed = zstandard.ZstdCompressor().compress(IMAGE)
    legacy = b"FE1" + sealer.seal(compressed, b"customer\x00e1\x003")
    assert key_id_of(legacy) == "0"
    ring = KeyRing("k1", {"k1": K1, "0": MASTER})
    assert BlobCodec(ring).decode(legacy, "customer", "e1", 3) == IMAGE


def test_key_ring_repr_never_shows_keys() -> None:
    ring = KeyRing("k1", {"k1": K1, "0": MASTER})
    assert "111" not in repr(ring) and "mmm" not in repr(ring)
    with pytest.raises(ValueError, match="not in the key ring"):
        KeyRing("k2", {"k1": K1})
