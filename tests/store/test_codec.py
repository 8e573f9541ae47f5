"""Blobs: compressed, sealed under the current store key, bound to entity, version and key id."""

from __future__ import annotations

import pickle

import pytest
import zstandard

from fabric.crypto import KeyDeriver, KeyRing, Sealer
from fabric.errors import StoreError
from fabric.store.codec import (
    BlobCodec,
    Dictionaries,
    dictionary_id_of,
    key_id_of,
    train_dictionary,
)

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


def _images(count: int) -> list[bytes]:
    return [
        b"SQLite format 3\x00"
        + f"customer {i} name-{i % 17} city-{i % 5} ".encode() * 30
        + bytes(300)
        for i in range(count)
    ]


def test_images_compress_with_their_types_dictionary() -> None:
    images = _images(300)
    trained = train_dictionary(images)
    assert trained is not None
    dictionaries = Dictionaries({"d1": trained}, {"customer": "d1"})
    codec = BlobCodec(KeyRing.of_master(MASTER), dictionaries)
    blob = codec.encode(images[7], "customer", "e7", 1)
    assert dictionary_id_of(blob) == "d1" and key_id_of(blob) == "0"
    plain = BlobCodec(KeyRing.of_master(MASTER)).encode(images[7], "customer", "e7", 1)
    assert len(blob) < len(plain) and dictionary_id_of(plain) == ""
    assert codec.decode(blob, "customer", "e7", 1) == images[7]
    # Other types have no dictionary of their own.
    assert dictionary_id_of(codec.encode(images[7], "device", "e7", 1)) == ""
    # The dictionary id is bound as associated data, like the key id.
    dictionaries.add("d2", trained)
    with pytest.raises(StoreError, match="failed its integrity check"):
        codec.decode(blob.replace(b"d1", b"d2", 1), "customer", "e7", 1)


def test_an_unknown_dictionary_is_looked_up_once_then_a_clear_error() -> None:
    images = _images(100)
    trained = train_dictionary(images)
    assert trained is not None
    writer = BlobCodec(None, Dictionaries({"d1": trained}, {"customer": "d1"}))
    blob = writer.encode(images[0], "customer", "e0", 1)
    asked: list[str] = []

    def lookup(dict_id: str) -> bytes | None:
        asked.append(dict_id)
        return trained if dict_id == "d1" else None

    reader = BlobCodec(None, Dictionaries(lookup=lookup))
    assert reader.decode(blob, "customer", "e0", 1) == images[0]
    assert reader.decode(blob, "customer", "e0", 1) == images[0]
    assert asked == ["d1"]
    with pytest.raises(StoreError, match="compression dictionary d1 is missing"):
        BlobCodec(None).decode(blob, "customer", "e0", 1)
    # Worker processes get the dictionaries, never the lookup (it holds a catalog).
    copied = pickle.loads(pickle.dumps(reader.dictionaries.subset("customer", {"d1"})))
    assert copied.get("d1") == trained and copied.current_for("customer") == ""


def test_dictionaries_are_sealed_at_rest() -> None:
    trained = train_dictionary(_images(100))
    assert trained is not None
    codec = BlobCodec(KeyRing("k1", {"k1": K1, "0": MASTER}))
    sealed = codec.seal_dictionary("d1", trained)
    assert trained[-64:] not in sealed and BlobCodec.dictionary_key_id(sealed) == "k1"
    assert codec.open_dictionary("d1", sealed) == trained
    with pytest.raises(StoreError, match="failed its integrity check"):
        codec.open_dictionary("d2", sealed)  # bound to its id


def test_too_few_images_make_no_dictionary() -> None:
    assert train_dictionary(_images(3)) is None
