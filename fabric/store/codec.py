"""Turn micro-database images into stored blobs and back: compress, then encrypt.

Images are mostly empty pages, SQLite's own structures and repeated column values. zstd with a
dictionary trained on images of the same entity type (see :class:`Dictionaries`) shrinks them
several times more than zstd alone does, and faster (benchmarks/README.md, "Codec"). The
compressed image is then sealed with AES-256-GCM under a key derived for that one entity
from the current store key, with the entity type, id, version, key id and dictionary id as
associated data: a blob copied onto another entity, replayed as another version, or whose
header was edited, fails to open.

Blob layouts (one byte of length before each id):

- ``b"FE2"`` + key id + dictionary id (empty: none) + nonce + ciphertext;
- ``b"FZ2"`` + dictionary id + compressed image (no key at all: compression only);
- ``b"FE1"`` + nonce + ciphertext and ``b"FZ1"`` + compressed image: the layouts before key
  and dictionary ids (the master key, key id "0", no dictionary); still read, never written.

Dictionaries hold fragments of the images they were trained on, so they are sealed too
(``b"FD2"`` + key id + nonce + ciphertext, or ``b"FD0"`` + dictionary without a key).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import zstandard

from fabric.crypto import MASTER_KEY_ID, KeyDeriver, KeyRing, Sealer
from fabric.errors import StoreError

__all__ = [
    "DICTIONARY_SAMPLES",
    "BlobCodec",
    "Dictionaries",
    "dictionary_id_of",
    "key_id_of",
    "new_dictionary_id",
    "train_dictionary",
]

#: Without a dictionary, a fast level: on the demo's images -1 compresses in less time than
#: level 3 for blobs a little larger. Figures for this and the three settings below:
#: benchmarks/README.md, "Codec".
LEVEL = -1
#: With one, level 1: smaller blobs than at -1, in about the same time.
DICTIONARY_LEVEL = 1
#: Dictionary size: 32 KiB compressed better than 16 KiB and as well as 110 KiB.
DICTIONARY_BYTES = 32 * 1024
#: Images to train on: 1,000 train faster than 2,000 and compress about as well.
DICTIONARY_SAMPLES = 1000
#: Fewer images than this are not worth a dictionary.
DICTIONARY_MIN_SAMPLES = 50

_SEALERS_KEPT = 64
_PLAIN_V1, _PLAIN = b"FZ1", b"FZ2"
_SEALED_V1, _SEALED = b"FE1", b"FE2"
_DICT_PLAIN, _DICT_SEALED = b"FD0", b"FD2"


def _field(blob: bytes, at: int) -> tuple[str, int]:
    """A length-prefixed id at ``at``, and the offset after it."""
    if at >= len(blob):
        raise ValueError("truncated header")
    end = at + 1 + blob[at]
    if end > len(blob):
        raise ValueError("truncated header")
    return blob[at + 1 : end].decode("ascii", "replace"), end


def _id_field(text: str) -> bytes:
    data = text.encode("ascii")
    return bytes([len(data)]) + data


def _parse(blob: bytes) -> tuple[str | None, str, int]:
    """(key id or None, dictionary id or "", offset of the body) of a blob's header."""
    head = blob[:3]
    if head == _SEALED:
        key_id, at = _field(blob, 3)
        dict_id, at = _field(blob, at)
        return key_id, dict_id, at
    if head == _PLAIN:
        dict_id, at = _field(blob, 3)
        return None, dict_id, at
    if head == _SEALED_V1:
        return MASTER_KEY_ID, "", 3
    if head == _PLAIN_V1:
        return None, "", 3
    raise ValueError("not a fabric blob")


def key_id_of(blob: bytes) -> str | None:
    """The id of the key a blob is sealed under, from its header (None: not encrypted)."""
    try:
        return _parse(blob)[0]
    except ValueError:
        return None


def dictionary_id_of(blob: bytes) -> str:
    """The id of the dictionary a blob was compressed with ("": none, or not a blob)."""
    try:
        return _parse(blob)[1]
    except ValueError:
        return ""


def new_dictionary_id() -> str:
    """A fresh dictionary id: random, so it says nothing about what it was trained on."""
    return os.urandom(6).hex()


def train_dictionary(samples: Sequence[bytes]) -> bytes | None:
    """A zstd dictionary trained on some images, or None when they are too few to help."""
    if len(samples) < DICTIONARY_MIN_SAMPLES:
        return None
    try:
        trained = zstandard.train_dictionary(DICTIONARY_BYTES, list(samples))
    except zstandard.ZstdError:
        return None  # zstd found nothing worth a dictionary in them
    return bytes(trained.as_bytes())


class Dictionaries:
    """zstd dictionaries by id, and the one each entity type compresses with now.

    ``lookup`` finds a dictionary this process has not loaded (one trained by a sync in
    another process since): readers call it for an id they do not know. It is not carried
    to worker processes, which are given every dictionary they need.
    """

    def __init__(
        self,
        known: Mapping[str, bytes] | None = None,
        current: Mapping[str, str] | None = None,
        lookup: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self._known = dict(known or {})
        self._current = dict(current or {})
        self._lookup = lookup
        self._lock = threading.Lock()
        # zstd objects are not thread-safe and costly to make: each thread keeps its own.
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"known": self._known, "current": self._current}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["known"], state["current"])  # type: ignore[misc]

    def current_for(self, entity_type: str) -> str:
        """The dictionary new images of ``entity_type`` use ("": none)."""
        return self._current.get(entity_type, "")

    def add(self, dict_id: str, data: bytes, *, current_for: str | None = None) -> None:
        """Know a dictionary; make it the current one of ``current_for``."""
        with self._lock:
            self._known[dict_id] = data
            if current_for is not None:
                self._current[current_for] = dict_id

    def use(self, entity_type: str, dict_id: str) -> None:
        """Make a known (or findable) dictionary the current one of ``entity_type``."""
        self.get(dict_id)
        with self._lock:
            self._current[entity_type] = dict_id

    def get(self, dict_id: str) -> bytes:
        """The dictionary ``dict_id``.

        Raises:
            StoreError: no such dictionary, here or through ``lookup``.
        """
        data = self._known.get(dict_id)
        if data is None and self._lookup is not None:
            found = self._lookup(dict_id)
            if found is not None:
                self.add(dict_id, found)
                data = found
        if data is None:
            raise StoreError(
                f"compression dictionary {dict_id} is missing from the catalog; rebuild the "
                "entities that use it with `fabric sync --full`"
            )
        return data

    def _for_thread(self, kind: str, dict_id: str) -> Any:
        """This thread's zstd object of ``kind`` ("c": compressor, "d": decompressor)."""
        cache: dict[tuple[str, str], Any] | None = getattr(self._local, "zstd", None)
        if cache is None:
            cache = self._local.zstd = {}
        found = cache.get((kind, dict_id))
        if found is None:
            data = zstandard.ZstdCompressionDict(self.get(dict_id)) if dict_id else None
            if kind == "c":
                level = DICTIONARY_LEVEL if data is not None else LEVEL
                found = zstandard.ZstdCompressor(level=level, dict_data=data)
            else:
                found = zstandard.ZstdDecompressor(dict_data=data)
            cache[(kind, dict_id)] = found
        return found

    def compressor(self, dict_id: str) -> zstandard.ZstdCompressor:
        """This thread's compressor for ``dict_id`` ("": none)."""
        found: zstandard.ZstdCompressor = self._for_thread("c", dict_id)
        return found

    def decompressor(self, dict_id: str) -> zstandard.ZstdDecompressor:
        """This thread's decompressor for ``dict_id`` ("": none)."""
        found: zstandard.ZstdDecompressor = self._for_thread("d", dict_id)
        return found

    def subset(self, entity_type: str, also: Iterable[str] = ()) -> Dictionaries:
        """The current dictionary of one type, and those ``also`` names ("" ignored): what a
        worker process needs to build (and patch) images."""
        current = self.current_for(entity_type)
        wanted = {d for d in (current, *also) if d}
        return Dictionaries(
            {d: self.get(d) for d in wanted}, {entity_type: current} if current else {}
        )


class BlobCodec:
    """Encode and decode entity images for one key ring (None: compression only)."""

    def __init__(self, keys: KeyRing | None, dictionaries: Dictionaries | None = None) -> None:
        self.keys = keys
        self.dictionaries = dictionaries if dictionaries is not None else Dictionaries()
        self._derivers = {} if keys is None else {k: KeyDeriver(v) for k, v in keys.keys.items()}
        # The last few entities' sealers: a patch decodes and encodes the same entity, and
        # deriving its key twice was a noticeable part of the work (benchmarks/README.md,
        # "Codec").
        self._sealers: dict[tuple[str, str], Sealer] = {}

    def sealer(self, key_id: str, purpose: str) -> Sealer | None:
        """AES-GCM under the key derived for ``purpose`` from store key ``key_id``; None when
        the ring does not hold that key (any more)."""
        key = (key_id, purpose)
        sealer = self._sealers.get(key)
        if sealer is None:
            deriver = self._derivers.get(key_id)
            if deriver is None:
                return None
            if len(self._sealers) >= _SEALERS_KEPT:
                self._sealers.clear()
            sealer = self._sealers[key] = Sealer(deriver.derive(purpose))
        return sealer

    def _sealer(self, key_id: str, purpose: str, what: str) -> Sealer:
        sealer = self.sealer(key_id, purpose)
        if sealer is None:
            raise StoreError(
                f"{what} is sealed under store key id '{key_id}', which is not configured "
                "(secrets: store_keys); put that key back, or finish the rotation that "
                "retired it with `fabric store rotate-key --resume`"
            )
        return sealer

    @staticmethod
    def _aad(
        entity_type: str, entity_id: str, version: int, key_id: str | None, dict_id: str
    ) -> bytes:
        if key_id is None:  # the layout before key ids
            return f"{entity_type}\x00{entity_id}\x00{version}".encode()
        return f"{entity_type}\x00{entity_id}\x00{version}\x00{key_id}\x00{dict_id}".encode()

    def encode(self, image: bytes, entity_type: str, entity_id: str, version: int) -> bytes:
        """Compress (with the type's current dictionary), and seal under the current key."""
        dict_id = self.dictionaries.current_for(entity_type)
        compressed: bytes = self.dictionaries.compressor(dict_id).compress(image)
        return self._seal(compressed, dict_id, entity_type, entity_id, version)

    def _open(
        self, blob: bytes, entity_type: str, entity_id: str, version: int
    ) -> tuple[str, bytes]:
        """(dictionary id, compressed image) of a blob, decrypted and checked."""
        what = f"stored image of {entity_type} {entity_id}"
        try:
            key_id, dict_id, at = _parse(blob)
        except ValueError:
            raise StoreError(
                f"{what} is not a fabric image; rebuild it with `fabric sync --full`"
            ) from None
        body = blob[at:]
        if key_id is not None:
            if self.keys is None:
                raise StoreError(f"{what} is encrypted and no master key is configured")
            legacy = blob[:3] == _SEALED_V1
            aad = self._aad(entity_type, entity_id, version, None if legacy else key_id, dict_id)
            sealer = self._sealer(key_id, f"entity\x00{entity_type}\x00{entity_id}", what)
            body = sealer.open(body, aad, what=what)
        return dict_id, body

    def _seal(
        self, compressed: bytes, dict_id: str, entity_type: str, entity_id: str, version: int
    ) -> bytes:
        if self.keys is None:
            return _PLAIN + _id_field(dict_id) + compressed
        key_id = self.keys.current
        sealer = self._sealer(key_id, f"entity\x00{entity_type}\x00{entity_id}", "")
        aad = self._aad(entity_type, entity_id, version, key_id, dict_id)
        return _SEALED + _id_field(key_id) + _id_field(dict_id) + sealer.seal(compressed, aad)

    def reseal(self, blob: bytes, entity_type: str, entity_id: str, version: int) -> bytes:
        """The same compressed image, sealed under the current key (a key rotation)."""
        dict_id, compressed = self._open(blob, entity_type, entity_id, version)
        return self._seal(compressed, dict_id, entity_type, entity_id, version)

    def decode(self, blob: bytes, entity_type: str, entity_id: str, version: int) -> bytes:
        """Decrypt and decompress a stored blob.

        Raises:
            StoreError: naming the entity, if the blob was changed, moved or is unreadable.
        """
        dict_id, body = self._open(blob, entity_type, entity_id, version)
        try:
            return self.dictionaries.decompressor(dict_id).decompress(body)
        except zstandard.ZstdError as exc:
            raise StoreError(
                f"stored image of {entity_type} {entity_id} is corrupt ({exc}); rebuild it "
                "with `fabric sync --full`"
            ) from exc

    # -- dictionaries at rest ---------------------------------------------------------------

    def seal_dictionary(self, dict_id: str, data: bytes) -> bytes:
        """A dictionary as the catalog keeps it: sealed under the current key, if any."""
        if self.keys is None:
            return _DICT_PLAIN + data
        key_id = self.keys.current
        sealer = self._sealer(key_id, f"dictionary\x00{dict_id}", "")
        aad = f"dictionary\x00{dict_id}\x00{key_id}".encode()
        return _DICT_SEALED + _id_field(key_id) + sealer.seal(data, aad)

    def open_dictionary(self, dict_id: str, sealed: bytes) -> bytes:
        """The dictionary kept as ``sealed``.

        Raises:
            StoreError: it was changed, or its key is not configured.
        """
        what = f"compression dictionary {dict_id}"
        head = sealed[:3]
        if head == _DICT_PLAIN:
            return sealed[3:]
        if head != _DICT_SEALED:
            raise StoreError(f"{what} is not a fabric dictionary")
        if self.keys is None:
            raise StoreError(f"{what} is encrypted and no master key is configured")
        try:
            key_id, at = _field(sealed, 3)
        except ValueError:
            raise StoreError(f"{what} is not a fabric dictionary") from None
        sealer = self._sealer(key_id, f"dictionary\x00{dict_id}", what)
        aad = f"dictionary\x00{dict_id}\x00{key_id}".encode()
        return sealer.open(sealed[at:], aad, what=what)

    @staticmethod
    def dictionary_key_id(sealed: bytes) -> str | None:
        """The key id a sealed dictionary is under (None: not sealed)."""
        if sealed[:3] != _DICT_SEALED:
            return None
        try:
            return _field(sealed, 3)[0]
        except ValueError:
            return None
