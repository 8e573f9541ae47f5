"""The online store: what the API serves, materialized ahead of requests: each entity's
current feature vector, and its document masked for each role's policy.

A vector of "now" is a step function of time: it stays the same until a row enters or leaves
one of its windows, a day count ticks over, or an ``as_of`` filter may turn (its horizon,
:attr:`fabric.features.compute.Computed.until`), unless the entity changes. So it can be
computed once and served until then, as a feature store serves precomputed values, but
without ever serving a stale one:

- ``fabric sync`` and ``fabric materialize`` (:mod:`fabric.services.materialize`) compute
  the vectors of every entity whose stored version, view definition or horizon no longer
  matches its row here, and write them. The API only reads this file.
- A row is served only for the entity version it was computed from, the view definition it
  was computed with, and times in ``[computed_at, until)``. Anything else is computed on
  the spot from the entity's image, as before.

Masking is deterministic (keyed operators), so an entity's masked document depends only on
the entity's version and the masking fingerprint (rules, key, operator and Faker versions,
:attr:`fabric.project.Project.masking_fingerprint`): it is materialized the same way and
served only for both.

``online.db`` sits beside the shards: one row per (view, entity) and per (entity type,
policy, entity), ``WITHOUT ROWID``. The
values are derived from personal data (an attribute can be an email), so with a key
configured they are sealed like images (AES-256-GCM under a key derived from the store key,
bound to view, definition, entity, version and horizon by the associated data). A row sealed
under a key the ring no longer holds is simply not used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from fabric.crypto import Sealer
from fabric.errors import StoreError
from fabric.features.spec import FeatureView
from fabric.store.base import StoredBlob
from fabric.store.codec import BlobCodec
from fabric.store.sqlite import ThreadConnections, apsw, open_database

__all__ = ["OnlineStore", "OnlineVector"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    view TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    definition TEXT NOT NULL,
    version INTEGER NOT NULL,
    computed_at INTEGER NOT NULL,
    until INTEGER NOT NULL,
    key_id TEXT,
    payload BLOB NOT NULL,
    PRIMARY KEY (view, entity_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents (
    entity_type TEXT NOT NULL,
    policy TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT,
    payload BLOB NOT NULL,
    PRIMARY KEY (entity_type, policy, entity_id)
) WITHOUT ROWID;
"""

_JSON_IDS = "(SELECT value FROM json_each(?))"
log = logging.getLogger("fabric.store")


@dataclass(frozen=True, slots=True)
class OnlineVector:
    """One entity's vector as computed at ``computed_at`` (microseconds), unmasked."""

    entity_id: str
    version: int
    computed_at: int
    #: the vector is the same at any time in [computed_at, until) while the version holds
    until: int
    existed: bool
    #: never handed out: callers get masked copies
    values: dict[str, Any]


class OnlineStore:
    """``online.db`` of one store; connections per thread, like the shards'."""

    def __init__(self, path: Path, codec: BlobCodec) -> None:
        self.path = path
        # Keys and per-thread zstd objects are the images' own (what seals and compresses
        # entities seals and compresses what is derived from them).
        self._codec = codec
        self._connections = ThreadConnections()
        self._encode = msgspec.json.Encoder()
        self._decode = msgspec.json.Decoder()

    def _conn(self) -> apsw.Connection:
        """This thread's connection, the file and its table created if need be (writers)."""
        return self._connections.open("writer", self._open_writer)

    def _open_writer(self) -> apsw.Connection:
        conn = open_database(self.path)
        conn.execute(_SCHEMA)
        return conn

    def _reader(self) -> apsw.Connection | None:
        """This thread's connection for reading; None while no sync has written the file
        (a server never creates it)."""
        mine = self._connections.mine()
        conn = mine.get("writer") or mine.get("reader")
        if conn is None:
            if not self.path.exists():
                return None
            conn = self._connections.open("reader", self._open_reader)
        return conn

    def _open_reader(self) -> apsw.Connection:
        return open_database(self.path, readonly=True)

    def close(self) -> None:
        """Close every thread's connection."""
        self._connections.close()

    def _sealer(self, key_id: str) -> Sealer | None:
        return self._codec.sealer(key_id, "online vectors")

    @staticmethod
    def _aad(view: FeatureView, vector: OnlineVector) -> bytes:
        return (
            f"{view.name}\x00{view.definition_hash}\x00{vector.entity_id}\x00{vector.version}"
            f"\x00{vector.computed_at}\x00{vector.until}"
        ).encode()

    def put_many(self, view: FeatureView, vectors: Iterable[OnlineVector]) -> int:
        """Write (replace) vectors of a view in one transaction; how many."""
        return self.write("vectors", self.vector_rows(view, vectors))

    def write(self, table: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Write rows made by :meth:`vector_rows` or :meth:`document_rows` (``table``:
        ``vectors`` or ``documents``) in one transaction; how many."""
        marks = {"vectors": 8, "documents": 7}[table]
        conn = self._conn()
        with conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * marks)})", rows
            )
        return len(rows)

    def vector_rows(
        self, view: FeatureView, vectors: Iterable[OnlineVector]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``vectors`` for :meth:`write`, sealed: made wherever the vectors are
        computed (worker processes), written by one process."""
        key_id = self._current_key()
        sealer = None if key_id is None else self._sealer(key_id)
        rows = []
        for vector in vectors:
            payload = self._encode.encode([vector.existed, vector.values])
            if sealer is not None:
                payload = sealer.seal(payload, self._aad(view, vector))
            rows.append(
                (
                    view.name,
                    vector.entity_id,
                    view.definition_hash,
                    vector.version,
                    vector.computed_at,
                    vector.until,
                    key_id,
                    payload,
                )
            )
        return rows

    def get_many(
        self, view: FeatureView, versions: Mapping[str, int], moment: int
    ) -> dict[str, OnlineVector]:
        """The stored vectors of these entities (id -> current version) that hold at
        ``moment``: same version and view definition, ``computed_at <= moment < until``."""
        found: dict[str, OnlineVector] = {}
        conn = self._reader()
        if not versions or conn is None:
            return found
        rows = conn.execute(
            "SELECT entity_id, version, computed_at, until, key_id, payload FROM vectors "
            f"WHERE view = ? AND definition = ? AND entity_id IN {_JSON_IDS} "
            "AND computed_at <= ? AND until > ?",
            (view.name, view.definition_hash, json.dumps(list(versions)), moment, moment),
        )
        for entity_id, version, computed_at, until, key_id, payload in rows:
            if versions.get(entity_id) != version:
                continue  # the entity changed since: computed again
            vector = OnlineVector(entity_id, version, computed_at, until, False, {})
            payload = self._open(
                key_id, payload, self._aad(view, vector), f"online vector of view {view.name}"
            )
            if payload is None:
                continue
            existed, values = self._decode.decode(payload)
            found[entity_id] = OnlineVector(
                entity_id, version, computed_at, until, bool(existed), values
            )
        return found

    def _open(self, key_id: str | None, payload: bytes, aad: bytes, what: str) -> bytes | None:
        """A row's payload opened, or None when it is not to be trusted: sealed under a key
        the ring no longer holds, changed or moved (logged), or written in the clear before
        a key was set. A cache entry: whoever asked computes it again rather than fails."""
        if key_id is None:
            return None if self._codec.keys is not None else payload
        sealer = self._sealer(key_id)
        if sealer is None:
            return None
        try:
            return sealer.open(payload, aad, what=what)
        except StoreError:
            log.warning("integrity check failed: %s", what)
            return None

    def _current_key(self) -> str | None:
        keys = self._codec.keys
        return None if keys is None else keys.current

    def held(self, view: FeatureView) -> dict[str, tuple[int, int]]:
        """Entity id -> (version, until) of the view's rows of its current definition,
        sealed under the current key (rows of a retired key count as missing)."""
        conn = self._reader()
        if conn is None:
            return {}
        return {
            str(entity_id): (int(version), int(until))
            for entity_id, version, until in conn.execute(
                "SELECT entity_id, version, until FROM vectors "
                "WHERE view = ? AND definition = ? AND key_id IS ?",
                (view.name, view.definition_hash, self._current_key()),
            )
        }

    def prune(self, views: Mapping[str, FeatureView]) -> int:
        """Drop rows of views no longer declared, or of an older definition; how many."""
        conn = self._conn()
        known = json.dumps([[v.name, v.definition_hash] for v in views.values()])
        with conn:
            conn.execute(
                "DELETE FROM vectors WHERE NOT EXISTS (SELECT 1 FROM json_each(?) "
                "WHERE json_extract(value, '$[0]') = view "
                "AND json_extract(value, '$[1]') = definition)",
                (known,),
            )
            dropped = int(conn.changes())
        return dropped

    # -- masked documents ----------------------------------------------------------------

    @staticmethod
    def _document_aad(
        entity_type: str, policy: str, fingerprint: str, entity_id: str, version: int
    ) -> bytes:
        parts = ("doc", entity_type, policy, fingerprint, entity_id, str(version))
        return "\x00".join(parts).encode()

    def document_rows(
        self, policy: str, fingerprint: str, documents: Iterable[dict[str, Any]]
    ) -> list[tuple[Any, ...]]:
        """Rows of masked ``documents`` for :meth:`write`, compressed and sealed."""
        key_id = self._current_key()
        sealer = None if key_id is None else self._sealer(key_id)
        rows = []
        for document in documents:
            entity_type, entity_id = document["entity_type"], document["entity_id"]
            version = int(document["version"])
            # Documents repeat their column names row after row: compressed to about a fifth.
            payload = self._codec.dictionaries.compressor("").compress(
                self._encode.encode(document)
            )
            if sealer is not None:
                aad = self._document_aad(entity_type, policy, fingerprint, entity_id, version)
                payload = sealer.seal(payload, aad)
            rows.append((entity_type, policy, entity_id, fingerprint, version, key_id, payload))
        return rows

    def get_document(
        self, policy: str, fingerprint: str, stored: StoredBlob
    ) -> dict[str, Any] | None:
        """The materialized document of this stored entity and version, masked by
        ``policy`` under ``fingerprint``; None if there is none that holds."""
        conn = self._reader()
        if conn is None:
            return None
        row = conn.execute(
            "SELECT key_id, payload FROM documents WHERE entity_type = ? AND policy = ? "
            "AND entity_id = ? AND fingerprint = ? AND version = ?",
            (stored.entity_type, policy, stored.entity_id, fingerprint, stored.version),
        ).fetchone()
        if row is None:
            return None
        key_id, sealed = row
        payload = self._open(
            key_id,
            sealed,
            self._document_aad(
                stored.entity_type, policy, fingerprint, stored.entity_id, stored.version
            ),
            f"materialized {policy} document",
        )
        if payload is None:
            return None
        try:
            document: dict[str, Any] = self._decode.decode(
                self._codec.dictionaries.decompressor("").decompress(payload)
            )
        except (zstandard.ZstdError, msgspec.DecodeError):
            log.warning("a materialized %s document could not be read; masking on request", policy)
            return None
        return document

    def held_documents(self, entity_type: str, policy: str, fingerprint: str) -> dict[str, int]:
        """Entity id -> version of the documents held for a type and policy under
        ``fingerprint``, sealed under the current key."""
        conn = self._reader()
        if conn is None:
            return {}
        return {
            str(entity_id): int(version)
            for entity_id, version in conn.execute(
                "SELECT entity_id, version FROM documents WHERE entity_type = ? AND policy = ? "
                "AND fingerprint = ? AND key_id IS ?",
                (entity_type, policy, fingerprint, self._current_key()),
            )
        }

    def prune_documents(self, policies: Sequence[str], fingerprint: str) -> int:
        """Drop documents of other policies or fingerprints; how many."""
        conn = self._conn()
        with conn:
            conn.execute(
                f"DELETE FROM documents WHERE fingerprint != ? OR policy NOT IN {_JSON_IDS}",
                (fingerprint, json.dumps(list(policies))),
            )
            dropped = int(conn.changes())
        return dropped

    def forget_documents(self, entity_type: str, entity_ids: Sequence[str]) -> None:
        """Drop the documents of entities that are no longer stored."""
        conn = self._conn()
        with conn:
            conn.execute(
                f"DELETE FROM documents WHERE entity_type = ? AND entity_id IN {_JSON_IDS}",
                (entity_type, json.dumps(list(entity_ids))),
            )

    def forget(self, view: FeatureView, entity_ids: Sequence[str]) -> None:
        """Drop the rows of entities that are no longer stored."""
        conn = self._conn()
        with conn:
            conn.execute(
                f"DELETE FROM vectors WHERE view = ? AND entity_id IN {_JSON_IDS}",
                (view.name, json.dumps(list(entity_ids))),
            )
