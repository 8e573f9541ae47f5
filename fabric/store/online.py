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

``online.db`` sits beside the shards (on PostgreSQL: tables ``fabric.vectors`` and
``fabric.documents`` beside the blobs and the catalog): one row per (view, entity) and per
(entity type, policy, entity), ``WITHOUT ROWID`` in SQLite. Both tables are one
:class:`SealedTable` each, with the same verbs (:meth:`~SealedTable.rows`,
:meth:`~SealedTable.write`, :meth:`~SealedTable.get`, :meth:`~SealedTable.held`,
:meth:`~SealedTable.prune`, :meth:`~SealedTable.forget`). The
values are derived from personal data (an attribute can be an email), so with a key
configured they are sealed like images (AES-256-GCM under a key derived from the store key
for the table's purpose, bound to the row's scope, entity, version and horizon by the
associated data). A row sealed under a key the ring no longer holds is simply not used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import zstandard

from fabric.crypto import Sealer
from fabric.errors import StoreError
from fabric.store.base import entity_key, partition_of
from fabric.store.codec import BlobCodec, Dictionaries
from fabric.store.database import (
    SCHEMA,
    Database,
    PostgresDb,
    PostgresThreads,
    SqliteDb,
    connect_postgres,
    upsert_sql,
)
from fabric.store.sqlite import ThreadConnections, open_database

__all__ = ["OnlineStore", "OnlineVector", "Row", "Scope", "SealedTable"]

#: A row as :meth:`SealedTable.rows` makes it and :meth:`SealedTable.write` writes it.
Row = tuple[Any, ...]
#: Which rows of a table: the values of its place columns, then what they were made with
#: (vectors: view name, view definition hash; documents: entity type, policy, masking
#: fingerprint).
Scope = tuple[str, ...]
#: An entity's state as a row records it: its version first, then what the associated data
#: also binds (vectors: computed_at, until).
State = tuple[int, ...]

_T = TypeVar("_T")

#: The one purpose every online row was sealed under before documents had their own. A
#: ``key_id`` without a table's mark names a store key of this purpose.
_FIRST_PURPOSE = "online vectors"
#: Distinct ``key_id`` values whose sealers a table keeps: the ring's few keys, each with
#: and without a mark; a bound all the same, as the values come from the file.
_SEALERS_KEPT = 16
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


@dataclass(frozen=True)
class _Layout:
    """A sealed table's columns, in order: ``place``, ``entity_id``, ``made_with``,
    ``state``, ``key_id``, ``payload``; its primary key is ``place`` and ``entity_id``.

    A row is served only for the scope (``place`` and ``made_with``) and the entity version
    it was made for. A row of the same place made otherwise (another view definition,
    another masking fingerprint) is stale: a new one replaces it.
    """

    name: str
    #: what the rows are of (a view; an entity type and policy)
    place: tuple[str, ...]
    #: how they were made (a view's definition hash; a masking fingerprint)
    made_with: str
    #: version, then any other state the associated data binds
    state: tuple[str, ...]
    #: two state columns a row holds between (``[since, until)``), if its rows expire
    window: tuple[str, str] | None
    #: put before the scope in the associated data
    aad_prefix: tuple[str, ...]
    #: the purpose the table's key is derived for
    purpose: str
    #: appended to the key id in ``key_id`` of rows sealed under ``purpose`` when it is not
    #: :data:`_FIRST_PURPOSE`: how such rows are told from the rows written before
    mark: str
    #: names a row in messages, formatted with the scope
    what: str

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key's columns."""
        return (*self.place, "entity_id")

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column, in order."""
        return (*self.key, self.made_with, *self.state, "key_id", "payload")

    def schema(self, postgres: bool = False) -> str:
        """The table's ``CREATE TABLE``, as the first writer runs it (SQLite's, or
        PostgreSQL's: its own names for the types, and no ``WITHOUT ROWID``)."""
        text, integer, blob = (
            ("text", "bigint", "bytea") if postgres else ("TEXT", "INTEGER", "BLOB")
        )
        texts = (*self.place, "entity_id", self.made_with)
        columns = [
            *(f"{column} {text} NOT NULL" for column in texts),
            *(f"{column} {integer} NOT NULL" for column in self.state),
            f"key_id {text}",
            f"payload {blob} NOT NULL",
        ]
        return (
            f"CREATE TABLE IF NOT EXISTS {self.name} "
            f"({', '.join(columns)}, PRIMARY KEY ({', '.join(self.key)}))"
            + ("" if postgres else " WITHOUT ROWID")
            + ";"
        )


_VECTORS = _Layout(
    name="vectors",
    place=("view",),
    made_with="definition",
    state=("version", "computed_at", "until"),
    window=("computed_at", "until"),
    aad_prefix=(),
    purpose=_FIRST_PURPOSE,
    mark="",
    what="online vector of view {0}",
)
# Documents were sealed under the vectors' purpose until they had their own. Rows written
# since carry the mark in ``key_id`` ("k2/documents"); a row whose ``key_id`` is a bare key
# id ("k2") is one written before, opened under the old purpose. Store key ids are letters,
# digits, "_" and "-" (fabric.config.secrets), so the mark cannot be part of one: the two
# are never confused. It is a string suffix per distinct key_id, read from the row already
# fetched (no column added to existing files, no second decryption attempt on the read
# path). ``held`` names the current key with the mark, so rows of the old purpose count as
# missing and the next sync seals them again under the new one.
_DOCUMENTS = _Layout(
    name="documents",
    place=("entity_type", "policy"),
    made_with="fingerprint",
    state=("version",),
    window=None,
    aad_prefix=("doc",),
    purpose="online documents",
    mark="/documents",
    what="materialized {1} document",
)


class _Payload(Protocol[_T]):
    """How a table's items are split into a row's parts and joined back."""

    def split(self, item: _T) -> tuple[str, State, bytes]:
        """(entity id, state, plain payload) of an item."""
        ...

    def join(self, entity_id: str, state: State, plain: bytes) -> _T:
        """The item of a row; raises ``ValueError`` or ``zstandard.ZstdError`` when the
        payload cannot be read."""
        ...


class _VectorPayload:
    """A vector as ``[existed, values]`` in JSON."""

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder().decode

    def split(self, vector: OnlineVector) -> tuple[str, State, bytes]:
        state = (vector.version, vector.computed_at, vector.until)
        return vector.entity_id, state, self._encode([vector.existed, vector.values])

    def join(self, entity_id: str, state: State, plain: bytes) -> OnlineVector:
        version, computed_at, until = state
        existed, values = self._decode(plain)
        return OnlineVector(entity_id, version, computed_at, until, bool(existed), values)


class _DocumentPayload:
    """A masked document in JSON, compressed: documents repeat their column names row
    after row, which compression takes out."""

    def __init__(self, dictionaries: Dictionaries) -> None:
        self._dictionaries = dictionaries
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder().decode

    def split(self, document: dict[str, Any]) -> tuple[str, State, bytes]:
        plain = self._dictionaries.compressor("").compress(self._encode(document))
        return document["entity_id"], (int(document["version"]),), plain

    def join(self, entity_id: str, state: State, plain: bytes) -> dict[str, Any]:
        document: dict[str, Any] = self._decode(
            self._dictionaries.decompressor("").decompress(plain)
        )
        return document


class _Tables(Protocol):
    """Where a store's online tables are: each thread's connection to them."""

    #: the database's way of passing many ids as one parameter (:attr:`Database.ids`)
    ids: str
    #: the partition count of the entity images in the same database (PostgreSQL), which
    #: a read can then join; None where they are elsewhere (SQLite: other files)
    beside_images: int | None

    def writer(self) -> Database:
        """This thread's connection for writing, the tables created if need be."""
        ...

    def reader(self) -> Database | None:
        """This thread's connection for reading; None while nothing was ever written."""
        ...

    def close(self) -> None: ...


class _OnlineFile:
    """``online.db``: each thread's connections, the tables created by the first writer."""

    ids = SqliteDb.ids
    beside_images: int | None = None

    def __init__(self, path: Path, layouts: Sequence[_Layout]) -> None:
        self.path = path
        self._schema = "".join(layout.schema() for layout in layouts)
        self._connections: ThreadConnections[SqliteDb] = ThreadConnections()

    def writer(self) -> Database:
        """This thread's connection, the file and its tables created if need be."""
        return self._connections.open("writer", self._open_writer)

    def _open_writer(self) -> SqliteDb:
        conn = open_database(self.path)
        conn.execute(self._schema)
        return SqliteDb(conn)

    def reader(self) -> Database | None:
        """This thread's connection for reading; None while no sync has written the file
        (a server never creates it)."""
        mine = self._connections.mine()
        conn = mine.get("writer") or mine.get("reader")
        if conn is None:
            if not self.path.exists():
                return None
            conn = self._connections.open("reader", self._open_reader)
        return conn

    def _open_reader(self) -> SqliteDb:
        return SqliteDb(open_database(self.path, readonly=True))

    def close(self) -> None:
        self._connections.close()


class _OnlineServer:
    """The online tables on PostgreSQL: created when the store opens (under a lock, so
    several processes opening one database at once do not race), a connection per thread.
    With ``beside_images``, the entity images of the same database (``fabric.blobs``, of
    that many partitions) are joined by :meth:`SealedTable.with_versions`."""

    ids = PostgresDb.ids

    def __init__(
        self,
        url: str,
        layouts: Sequence[_Layout],
        statement_timeout_ms: int | None,
        beside_images: int | None = None,
    ) -> None:
        self.beside_images = beside_images
        self._db, db = PostgresThreads.first(
            lambda: connect_postgres(
                url, "the online store", statement_timeout_ms, generic_plans=True
            )
        )
        with db:
            db.execute("SELECT pg_advisory_xact_lock(hashtext('fabric.online'))")
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            for layout in layouts:
                db.execute(layout.schema(postgres=True))

    def writer(self) -> Database:
        return self._db

    def reader(self) -> Database | None:
        return self._db

    def close(self) -> None:
        self._db.close()


class SealedTable(Generic[_T]):
    """One table of ``online.db``: rows of items of a scope, sealed, served only for the
    entity version (and times) they were made for.

    Rows are made apart from where they are written (:meth:`rows` in worker processes,
    :meth:`write` in the one process that writes), hence the two verbs.
    """

    def __init__(
        self, file: _Tables, codec: BlobCodec, layout: _Layout, payload: _Payload[_T]
    ) -> None:
        self._file = file
        self._codec = codec
        self._layout = layout
        self._payload = payload
        #: key_id as stored -> its sealer (None: a key the ring does not hold)
        self._sealers: dict[str, Sealer | None] = {}
        place, state = layout.place, layout.state
        scope = " AND ".join(f"{column} = ?" for column in (*place, layout.made_with))
        self._insert = upsert_sql(layout.name, layout.columns, layout.key)
        select = (
            f"SELECT entity_id, {', '.join(state)}, key_id, payload FROM {layout.name} "
            f"WHERE {scope} AND "
        )
        window = "" if layout.window is None else " AND {} <= ? AND {} > ?".format(*layout.window)
        # One entity (a document asked for) without the JSON array many need.
        self._select_one = select + "entity_id = ?" + window
        self._select_many = select + f"entity_id IN {file.ids}" + window
        self._held = (
            f"SELECT entity_id, {', '.join(state)} FROM {layout.name} "
            f"WHERE {scope} AND key_id IS NOT DISTINCT FROM ?"
        )
        # Beside the images (PostgreSQL): each image's version, and the row made for it if
        # there is one, in one statement: a request's one round trip instead of two.
        on = " AND ".join(f"t.{column} = ?" for column in (*place, layout.made_with))
        within = (
            "" if layout.window is None else " AND t.{} <= ? AND t.{} > ?".format(*layout.window)
        )
        joined = (
            f"SELECT b.entity_id, b.version, {', '.join('t.' + c for c in state[1:])}"
            f"{', ' if len(state) > 1 else ''}t.key_id, t.payload "
            f"FROM {SCHEMA}.blobs b LEFT JOIN {layout.name} t ON {on} AND t.entity_id = {{}} "
            f"AND t.version = b.version{within} WHERE b.part {{}} AND b.key {{}}"
        )
        self._joined_one = joined.format("?", "= ?", "= ?")
        self._joined_many = joined.format("b.entity_id", "= ANY(?)", "= ANY(?)")

    def _aad_head(self, scope: Scope) -> str:
        """The start of the associated data of every row of ``scope`` (made once a call)."""
        return "".join(part + "\x00" for part in (*self._layout.aad_prefix, *scope))

    @staticmethod
    def _aad(head: str, entity_id: str, state: State) -> bytes:
        """A row's associated data: its scope, entity and state, NUL-separated."""
        return "\x00".join((head + entity_id, *map(str, state))).encode()

    def _current_key(self) -> str | None:
        """``key_id`` of rows sealed now: the current store key, marked; None unkeyed."""
        keys = self._codec.keys
        return None if keys is None else keys.current + self._layout.mark

    def _sealer(self, stored_key: str) -> Sealer | None:
        """The sealer of rows whose ``key_id`` is ``stored_key`` (see :data:`_DOCUMENTS`
        for how a mark tells the table's purpose from the first one)."""
        if stored_key in self._sealers:
            return self._sealers[stored_key]
        mark = self._layout.mark
        if mark and stored_key.endswith(mark):
            sealer = self._codec.sealer(stored_key[: -len(mark)], self._layout.purpose)
        else:
            sealer = self._codec.sealer(stored_key, _FIRST_PURPOSE)
        if len(self._sealers) >= _SEALERS_KEPT:
            self._sealers.clear()
        self._sealers[stored_key] = sealer
        return sealer

    def rows(self, scope: Scope, items: Iterable[_T]) -> list[Row]:
        """Rows of ``items`` of ``scope`` for :meth:`write`, encoded and sealed: made
        wherever the items are computed (worker processes), written by one process."""
        stored_key = self._current_key()
        sealer = None if stored_key is None else self._sealer(stored_key)
        place, made_with = scope[:-1], scope[-1]
        head = self._aad_head(scope)
        rows = []
        for item in items:
            entity_id, state, payload = self._payload.split(item)
            if sealer is not None:
                payload = sealer.seal(payload, self._aad(head, entity_id, state))
            rows.append((*place, entity_id, made_with, *state, stored_key, payload))
        return rows

    def write(self, rows: Sequence[Row]) -> int:
        """Write (replace) rows made by :meth:`rows` in one transaction; how many."""
        conn = self._file.writer()
        with conn:
            conn.load(self._layout.name, self._layout.columns, self._layout.key, rows)
        return len(rows)

    def get(
        self, scope: Scope, versions: Mapping[str, int], moment: int | None = None
    ) -> dict[str, _T]:
        """The items of these entities (id -> current version) of ``scope`` made for their
        current version; of a table whose rows expire, only those that hold at ``moment``
        (``since <= moment < until``) when it is given. Rows that cannot be trusted or read
        are left out: whoever asked computes them again."""
        found: dict[str, _T] = {}
        conn = self._file.reader()
        if not versions or conn is None:
            return found
        window = () if self._layout.window is None or moment is None else (moment, moment)
        if len(versions) == 1:
            (only,) = versions
            rows = conn.execute(self._select_one, (*scope, only, *window))
        else:
            rows = conn.execute(self._select_many, (*scope, json.dumps(list(versions)), *window))
        head, what = self._aad_head(scope), self._layout.what.format(*scope)
        for entity_id, *values, stored_key, payload in rows:
            if versions.get(entity_id) == values[0]:  # else the entity changed since
                state = tuple(values)
                self._item(head, what, entity_id, state, stored_key, payload, found)
        return found

    def with_versions(
        self,
        scope: Scope,
        entity_type: str,
        entity_ids: Sequence[str],
        moment: int | None = None,
    ) -> tuple[dict[str, int], dict[str, _T]] | None:
        """The stored version of each of these entities that is stored (id -> version),
        and the items of ``scope`` made for those versions (as :meth:`get` reads them),
        in one statement; None where the table is not beside the images (the embedded
        store: ask the store for the versions, then :meth:`get`)."""
        partitions = self._file.beside_images
        conn = self._file.reader()
        if partitions is None or conn is None or not entity_ids:
            return None
        window = () if self._layout.window is None or moment is None else (moment, moment)
        keys = [entity_key(entity_type, entity_id) for entity_id in entity_ids]
        if len(keys) == 1:
            rows = conn.execute(
                self._joined_one,
                (*scope, entity_ids[0], *window, partition_of(keys[0], partitions), keys[0]),
            )
        else:
            parts = sorted({partition_of(key, partitions) for key in keys})
            rows = conn.execute(self._joined_many, (*scope, *window, parts, keys))
        versions: dict[str, int] = {}
        found: dict[str, _T] = {}
        head, what = self._aad_head(scope), self._layout.what.format(*scope)
        for entity_id, version, *rest, stored_key, payload in rows:
            versions[entity_id] = int(version)
            if payload is not None:  # a row made for this version (the join's condition)
                state = (int(version), *rest)
                self._item(head, what, entity_id, state, stored_key, payload, found)
        return versions, found

    def _item(
        self,
        head: str,
        what: str,
        entity_id: str,
        state: State,
        stored_key: str | None,
        payload: bytes,
        found: dict[str, _T],
    ) -> None:
        """Open a row's payload into ``found[entity_id]`` (``head``: its scope's start of
        the associated data; ``what``: the row named for the log); a row that cannot be
        trusted or read is left out (logged): whoever asked computes it again."""
        plain = self._open(stored_key, payload, self._aad(head, entity_id, state), what)
        if plain is None:
            return
        try:
            found[entity_id] = self._payload.join(entity_id, state, plain)
        except (ValueError, zstandard.ZstdError):  # msgspec.DecodeError is a ValueError
            log.warning("%s could not be read; computed on request", what)

    def _open(self, stored_key: str | None, payload: bytes, aad: bytes, what: str) -> bytes | None:
        """A row's payload opened, or None when it is not to be trusted: sealed under a key
        the ring no longer holds, changed or moved (logged), or written in the clear before
        a key was set. A cache entry: whoever asked computes it again rather than fails."""
        if stored_key is None:
            return None if self._codec.keys is not None else payload
        sealer = self._sealer(stored_key)
        if sealer is None:
            return None
        try:
            return sealer.open(payload, aad, what=what)
        except StoreError:
            log.warning("integrity check failed: %s", what)
            return None

    def held(self, scope: Scope) -> dict[str, State]:
        """Entity id -> state (version first) of the rows of ``scope`` sealed as rows are
        sealed now: under the current key and this table's purpose (others count as
        missing, so that the next sync seals them again)."""
        conn = self._file.reader()
        if conn is None:
            return {}
        # Columns declared TEXT and INTEGER (WITHOUT ROWID tables keep their types): rows
        # come back as what they are, and a sync reads every one, so nothing is converted.
        return {row[0]: row[1:] for row in conn.execute(self._held, (*scope, self._current_key()))}

    def prune(self, scopes: Iterable[Scope]) -> int:
        """Drop every row of a scope not among ``scopes`` (a view no longer declared or
        redefined; a policy no role sees, or other masking rules); how many."""
        columns = (*self._layout.place, self._layout.made_with)
        kept = {tuple(scope) for scope in scopes}
        match = " AND ".join(f"{column} = ?" for column in columns)
        conn = self._file.writer()
        dropped = 0
        with conn:
            # The scopes present are few (views and their definitions; types, policies and
            # fingerprints): found in one pass, the others dropped one statement each.
            present = conn.execute(
                f"SELECT DISTINCT {', '.join(columns)} FROM {self._layout.name}"
            ).fetchall()
            for scope in present:
                if tuple(scope) not in kept:
                    dropped += conn.count(
                        f"DELETE FROM {self._layout.name} WHERE {match}", tuple(scope)
                    )
        return dropped

    def copy_to(self, target: SealedTable[_T], progress: Callable[[str, int], None]) -> int:
        """Replace every row of ``target``'s table (another store's) with this table's,
        sealed as they are (nothing is decrypted: the associated data binds no location);
        how many."""
        columns = ", ".join(self._layout.columns)
        source = self._file.reader()
        rows = (
            iter(())
            if source is None
            else source.stream(f"SELECT {columns} FROM {self._layout.name}", 5000)
        )
        copied = 0
        into = target._file.writer()
        with into:
            into.execute(f"DELETE FROM {self._layout.name}")
            for batch in rows:
                into.executemany(self._insert, batch)
                progress(f"copy: {self._layout.name}", len(batch))
                copied += len(batch)
        return copied

    def forget(self, place: Sequence[str], entity_ids: Sequence[str]) -> None:
        """Drop the rows of entities that are no longer stored, in ``place`` (values of the
        leading place columns: a view; an entity type, for every policy)."""
        where = " AND ".join(f"{column} = ?" for column in self._layout.place[: len(place)])
        conn = self._file.writer()
        with conn:
            conn.execute(
                f"DELETE FROM {self._layout.name} WHERE {where} AND entity_id IN {self._file.ids}",
                (*place, json.dumps(list(entity_ids))),
            )


class OnlineStore:
    """``online.db`` of one store: its :attr:`vectors` and :attr:`documents`; connections
    per thread, like the shards'."""

    def __init__(self, path: Path, codec: BlobCodec, *, tables: _Tables | None = None) -> None:
        self.path = path
        self._file: _Tables = tables or _OnlineFile(path, (_VECTORS, _DOCUMENTS))
        # Keys and per-thread zstd objects are the images' own (what seals and compresses
        # entities seals and compresses what is derived from them).
        #: current feature vectors; scope: (view name, view definition hash)
        self.vectors: SealedTable[OnlineVector] = SealedTable(
            self._file, codec, _VECTORS, _VectorPayload()
        )
        #: masked documents; scope: (entity type, policy, masking fingerprint)
        self.documents: SealedTable[dict[str, Any]] = SealedTable(
            self._file, codec, _DOCUMENTS, _DocumentPayload(codec.dictionaries)
        )

    @classmethod
    def on_postgres(
        cls,
        url: str,
        codec: BlobCodec,
        statement_timeout_ms: int | None = None,
        *,
        beside_images: int | None = None,
    ) -> OnlineStore:
        """The online store's tables on the PostgreSQL server at ``url`` (schema
        ``fabric``, created on first use). ``beside_images``: the partition count of the
        entity images in the same database, which reads then join
        (:meth:`SealedTable.with_versions`).

        Raises:
            StoreError: the server cannot be reached.
        """
        tables = _OnlineServer(url, (_VECTORS, _DOCUMENTS), statement_timeout_ms, beside_images)
        return cls(Path(), codec, tables=tables)

    def close(self) -> None:
        """Close every thread's connection."""
        self._file.close()
