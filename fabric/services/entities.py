"""Read entities as callers see them: decoded, limited to the asked tables, masked per role.

This is the one read path behind `fabric entity show` and the HTTP API, so both answer with the
same document. Ids from callers are only ever hashed into storage keys, never used as paths.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from cachetools import LRUCache

from fabric.clock import Clock, Freshness, Recent, monotonic
from fabric.config.models import ProjectConfig
from fabric.crypto import KeyedHasher, derive_key
from fabric.errors import EntityNotFoundError, FabricError, InvalidRequestError
from fabric.project import Project
from fabric.rules.masking import MaskingPolicy
from fabric.rules.names import EntityNames
from fabric.rules.operators import MaskContext
from fabric.store.base import StoredBlob
from fabric.store.microdb import MicroDbReader
from fabric.store.online import Scope, SealedTable

__all__ = [
    "MAX_ID_LENGTH",
    "DocumentAsk",
    "EntityService",
    "check_id",
    "source_table",
    "table_list",
]

#: An entity as read from its image: ``_meta``, and every table's rows, unmasked.
Read = tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]

_T = TypeVar("_T")

#: One lookup of a coalesced batch: (entity type, entity id, role, tables or None for all).
DocumentAsk = tuple[str, str, str | None, list[str] | None]

#: Longest id or key accepted from a caller; anything longer is not one of ours.
MAX_ID_LENGTH = 256


def check_id(value: str, what: str) -> None:
    """Refuse an id or key that cannot be one of ours (empty, too long, with NUL bytes).

    Raises:
        InvalidRequestError: it is malformed.
    """
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise InvalidRequestError(f"{what} must be 1 to {MAX_ID_LENGTH} characters without NUL")


def table_list(text: str | None) -> list[str] | None:
    """The tables a comma-separated ``tables`` option or parameter names (None: all)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def source_table(config: ProjectConfig, entity_type: str, system: str) -> str | None:
    """The table a lookup by ``system`` alone means for ``entity_type``: the system's one
    identity table of that type, else its only table; None when that is not one table."""
    tables = config.entities[entity_type].tables.values()
    identity = [t.table for t in tables if t.source == system and t.parent is None]
    declared = list(config.sources[system].tables)
    if len(identity) == 1:
        return identity[0]
    return declared[0] if len(declared) == 1 else None


class EntityService:
    """Entity lookups over a project's store and catalog; safe to share between threads.

    ``clock`` (:mod:`fabric.clock`) tells how long ago a document served was checked
    against the store (``api.fresh_ms``).
    """

    def __init__(self, project: Project, *, clock: Clock = monotonic) -> None:
        self.project = project
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cache: LRUCache[tuple[str, str, int], Read] = LRUCache(
            maxsize=project.config.store.cache_entities
        )
        #: masked documents by (type, id, version, policy, tables): served as they are, never
        #: changed (callers that change a document copy it)
        self._documents: LRUCache[tuple[Any, ...], dict[str, Any]] = LRUCache(
            maxsize=project.config.store.cache_entities
        )
        #: an entity's names by (type, id, version), for masks of features that look at them
        self._names: LRUCache[tuple[str, str, int], EntityNames] = LRUCache(
            maxsize=max(project.config.store.cache_entities, 1)
        )
        #: documents served a moment ago, served again from memory (see fabric.clock)
        self.recent = Recent(
            project.config.store.cache_entities, Freshness(project.config.api.fresh_ms, clock)
        )
        #: reads answered from the cache and decoded, and entity documents served (metrics)
        self.cache_hits = 0
        self.cache_misses = 0
        self.served = 0

    def _reader(self) -> MicroDbReader:
        reader: MicroDbReader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._local.reader = MicroDbReader()
        return reader

    def _read(self, stored: StoredBlob) -> Read:
        """An entity's ``_meta`` and every table, decoded once per version while it is hot.

        The cache is keyed by version: a rebuilt entity has a new one, so a stale image is
        never served; a re-keyed one keeps its version and its content.
        """
        key = (stored.entity_type, stored.entity_id, stored.version)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self.cache_hits += 1
                return found
            self.cache_misses += 1
        image = self.project.codec.decode(
            stored.blob, stored.entity_type, stored.entity_id, stored.version
        )
        found = self._reader().read_tables(image)
        if self._cache.maxsize:
            with self._lock:
                self._cache[key] = found
        return found

    def mask_context(
        self, policy: MaskingPolicy, entity_type: str, entity_id: str, version: int | None = None
    ) -> MaskContext:
        """An entity's mask context under ``policy``, as its document is masked with: its
        names (from its rows, kept by version) when the policy's operators look at them.
        For masks applied to values read apart from the document (feature values); an id
        no longer stored gets a context without names. A caller that knows the entity's
        ``version`` (a vector's) is answered from the names kept for it without a read."""
        context = MaskContext(entity_type, entity_id)
        if not policy.needs_names:
            return context
        names = None if version is None else self.kept_names(entity_type, entity_id, version)
        if names is None:
            stored = self.project.store.get(entity_type, entity_id)
            if stored is None:
                return context
            key = (entity_type, entity_id, stored.version)
            with self._lock:
                names = self._names.get(key)
            if names is None:
                _, tables = self._read(stored)
                names = policy.context(entity_type, entity_id, tables).names
                with self._lock:
                    self._names[key] = names
        context.names = names
        return context

    def kept_names(self, entity_type: str, entity_id: str, version: int) -> EntityNames | None:
        """The names kept for this version of an entity, if any (memory only: safe on the
        event loop)."""
        with self._lock:
            return self._names.get((entity_type, entity_id, version))

    def _entity_type(self, entity_type: str) -> None:
        if entity_type not in self.project.config.entities:
            raise EntityNotFoundError(
                f"unknown entity type (types: {', '.join(self.project.config.entities)})"
            )

    def stored_rows(
        self, entity_type: str, entity_ids: list[str], layout: dict[str, list[str]]
    ) -> list[list[tuple[Any, ...]]]:
        """Stored entities' rows of ``layout`` (table -> columns), each entity's as
        :meth:`MicroDbReader.flat` reads them, unmasked and past the cache: for exports,
        which read each entity once and never hand the rows to a caller. The ids must be
        stored ids (not aliases).

        Raises:
            EntityNotFoundError: no entity is stored under one of the ids.
        """
        stored = self.project.store.get_many(entity_type, entity_ids)
        if len(stored) < len(set(entity_ids)):
            raise EntityNotFoundError(f"no {entity_type} entity with this id")
        return self.read_flat([stored[e] for e in entity_ids], layout)

    def read_flat(
        self, stored: Sequence[StoredBlob], layout: Mapping[str, Sequence[str]]
    ) -> list[list[tuple[Any, ...]]]:
        """Each stored entity's rows of ``layout`` as :meth:`MicroDbReader.flat` reads
        them, unmasked and past the cache. Never hand these rows to a caller."""
        decode = self.project.codec.decode
        # All decoding, then all reading: each loop keeps its own code and tables hot (one
        # entity at a time through both was slower: benchmarks/README.md, "Flat reads").
        images = [decode(b.blob, b.entity_type, b.entity_id, b.version) for b in stored]
        flat = self._reader().flat
        return [flat(image, layout) for image in images]

    def holders(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Asked id -> (id of the entity holding it, that entity's stored version), following
        an id merged into another entity to the survivor; ids no entity holds are left out.
        Reads versions only, no images.

        Raises:
            EntityNotFoundError: no such entity type.
            InvalidRequestError: a malformed id.
        """
        asked = self._asked(entity_type, entity_ids)
        found, _ = self._follow(entity_type, asked, self.project.store.versions(entity_type, asked))
        return found

    def holders_with(
        self,
        entity_type: str,
        entity_ids: Sequence[str],
        table: SealedTable[_T],
        scope: Scope,
        moment: int | None = None,
    ) -> tuple[dict[str, tuple[str, int]], dict[str, _T] | None]:
        """:meth:`holders`, and the items of ``table`` (of ``scope``, holding at ``moment``)
        made for the holders' versions, by holder id, read together where the backend can
        (PostgreSQL: one statement, :meth:`SealedTable.with_versions`); else None for the
        items, which the caller reads if it still needs them (its own cache may answer).

        Raises:
            EntityNotFoundError: no such entity type.
            InvalidRequestError: a malformed id.
        """
        asked = self._asked(entity_type, entity_ids)
        joined = table.with_versions(scope, entity_type, asked, moment)
        if joined is None:
            return self.holders(entity_type, asked), None
        versions, items = joined
        found, survivors = self._follow(entity_type, asked, versions)
        if survivors:
            items.update(table.get(scope, survivors, moment))
        return found, items

    def _asked(self, entity_type: str, entity_ids: Sequence[str]) -> list[str]:
        """The distinct ids asked for, checked."""
        self._entity_type(entity_type)
        # Requests coalesced for a hot entity ask for it many times over: once is enough.
        asked = list(dict.fromkeys(entity_ids))
        for entity_id in asked:
            check_id(entity_id, "entity id")
        return asked

    def _follow(
        self, entity_type: str, asked: list[str], versions: dict[str, int]
    ) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
        """Asked id -> (holder, version) from the stored ``versions`` of the asked ids, an
        id merged into another entity followed to its survivor; and the survivors reached
        that way, with their versions."""
        found = {e: (e, v) for e, v in versions.items()}
        reached: dict[str, int] = {}
        if len(found) < len(asked):
            catalog = self.project.catalog
            survivors = {
                e: survivor
                for e in asked
                if e not in found and (survivor := catalog.alias_target(entity_type, e)) is not None
            }
            if survivors:
                reached = self.project.store.versions(entity_type, sorted(set(survivors.values())))
                for merged, survivor in survivors.items():
                    if survivor in reached:
                        found[merged] = (survivor, reached[survivor])
        return found, reached

    def not_found(self, entity_type: str) -> EntityNotFoundError:
        """The error for an id no entity of the type holds."""
        # Whether any is stored, not how many: a count reads every entity of the type.
        if not self.project.catalog.first_ids(entity_type, 1):
            return EntityNotFoundError(
                f"no {entity_type} entities are stored yet: run `fabric sync` first"
            )
        return EntityNotFoundError(f"no {entity_type} entity with this id")

    def _stored(self, entity_type: str, entity_id: str) -> tuple[str, StoredBlob]:
        """The entity's stored blob, following an alias to the survivor of a merge."""
        self._entity_type(entity_type)
        check_id(entity_id, "entity id")
        stored = self.project.store.get(entity_type, entity_id)
        if stored is None:
            # An id merged into another entity still answers, with the survivor.
            survivor = self.project.catalog.alias_target(entity_type, entity_id)
            if survivor is not None:
                entity_id = survivor
                stored = self.project.store.get(entity_type, entity_id)
        if stored is None:
            raise self.not_found(entity_type)
        return entity_id, stored

    def _load(
        self, entity_type: str, entity_id: str, tables: list[str] | None
    ) -> tuple[str, dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """(id of the entity found, ``_meta``, copies of the asked tables' rows), unmasked."""
        entity_id, stored = self._stored(entity_type, entity_id)
        meta, every_table = self._read(stored)
        return entity_id, meta, self._copies(every_table, tables)

    @staticmethod
    def _copies(
        every_table: dict[str, list[dict[str, Any]]], tables: list[str] | None
    ) -> dict[str, list[dict[str, Any]]]:
        """Copies of the asked tables' rows: masking rewrites rows in place, and the cached
        ones stay unmasked.

        Raises:
            InvalidRequestError: an unknown table name.
        """
        unknown = [t for t in tables or () if t not in every_table]
        if unknown:
            raise InvalidRequestError(
                f"unknown table(s) {', '.join(repr(t[:64]) for t in unknown)} "
                f"(tables: {', '.join(every_table)})"
            )
        return {
            name: [dict(row) for row in every_table[name]]
            for name in (tables if tables is not None else every_table)
        }

    def document(
        self,
        entity_type: str,
        entity_id: str,
        *,
        role: str | None = None,
        tables: list[str] | None = None,
    ) -> dict[str, Any]:
        """Return one entity with its tables and rows, masked for ``role``.

        Raises:
            EntityNotFoundError: no such entity type or entity.
            InvalidRequestError: malformed id or unknown table name.
        """
        policy = self.project.policy_for(role)
        if tables is None and not policy.clear:
            (answer,) = self._from_materialized(entity_type, policy, [entity_id])
            if isinstance(answer, FabricError):
                raise answer
            return answer
        checked_at = self.recent.freshness.now()
        found, stored = self._stored(entity_type, entity_id)
        ask = (entity_type, entity_id, policy, tables)
        return self._finish(ask, found, stored.version, stored, None, checked_at)

    def document_batch(self, asks: Sequence[DocumentAsk]) -> list[dict[str, Any] | Exception]:
        """:meth:`document` of each ask, read together: the answer, or the error that ask
        alone raised. Asks of one type and role served from the materialized documents
        share one read of versions and documents (on PostgreSQL one statement for all: a
        burst of lookups makes one round trip, not one each)."""
        out: dict[int, dict[str, Any] | Exception] = {}
        groups: dict[tuple[str, str], tuple[MaskingPolicy, list[int]]] = {}
        for at, (entity_type, entity_id, role, tables) in enumerate(asks):
            try:
                policy = self.project.policy_for(role)
            except FabricError as exc:
                out[at] = exc
                continue
            if tables is None and not policy.clear:
                groups.setdefault((entity_type, policy.name), (policy, []))[1].append(at)
            else:
                out[at] = self._attempt(entity_type, entity_id, role, tables)
        for (entity_type, _), (policy, members) in groups.items():
            entity_ids = [asks[at][1] for at in members]
            try:
                answers = self._from_materialized(entity_type, policy, entity_ids)
            except FabricError:  # a malformed id or an unknown type: each ask on its own
                answers = [
                    self._attempt(entity_type, e, asks[at][2], None)
                    for at, e in zip(members, entity_ids, strict=True)
                ]
            out.update(zip(members, answers, strict=True))
        return [out[at] for at in range(len(asks))]

    def _attempt(
        self, entity_type: str, entity_id: str, role: str | None, tables: list[str] | None
    ) -> dict[str, Any] | FabricError:
        """:meth:`document`, or the error it raised."""
        try:
            return self.document(entity_type, entity_id, role=role, tables=tables)
        except FabricError as exc:
            return exc

    def _from_materialized(
        self, entity_type: str, policy: MaskingPolicy, entity_ids: Sequence[str]
    ) -> list[dict[str, Any] | FabricError]:
        """The whole documents of these entities under ``policy``, each answer or its own
        error (an unknown id). Materialized by sync for each version, masking rules and
        keys: the versions are read first, with the documents where the backend reads
        both at once (PostgreSQL), else the documents not cached in one read after.

        Raises:
            EntityNotFoundError: no such entity type.
            InvalidRequestError: a malformed id (the whole group: ask each alone).
        """
        checked_at = self.recent.freshness.now()
        documents = self.project.online.documents
        scope = (entity_type, policy.name, self.project.masking_fingerprint)
        holders, held = self.holders_with(entity_type, entity_ids, documents, scope)
        if held is None:
            with self._lock:
                wanted = {
                    found: version
                    for found, version in holders.values()
                    if (entity_type, found, version, policy.name, None) not in self._documents
                }
            held = documents.get(scope, wanted) if wanted else {}
        answers: list[dict[str, Any] | FabricError] = []
        for entity_id in entity_ids:
            if entity_id not in holders:
                answers.append(self.not_found(entity_type))
                continue
            found, version = holders[entity_id]
            ask = (entity_type, entity_id, policy, None)
            try:
                answers.append(self._finish(ask, found, version, None, held, checked_at))
            except FabricError as exc:  # deleted since its version was read
                answers.append(exc)
        return answers

    def _finish(
        self,
        ask: tuple[str, str, MaskingPolicy, list[str] | None],
        found: str,
        version: int,
        stored: StoredBlob | None,
        held: Mapping[str, dict[str, Any]] | None,
        checked_at: float,
    ) -> dict[str, Any]:
        """The answer to ``ask`` (type, id asked, policy, tables), held by ``found`` at
        ``version``: from the masked-document cache, else the materialized document
        (``held``: those read for whole entities under a masking policy), else the image
        masked here (``stored``, or read now)."""
        entity_type, entity_id, policy, tables = ask
        # Masking is deterministic (keyed operators, per-entity offsets), so a masked
        # document is kept by version like a decoded one: a hot entity is masked once.
        key = (entity_type, found, version, policy.name, tables and tuple(tables))
        with self._lock:
            cached = self._documents.get(key)
            self.served += 1
        if cached is None:
            if held is not None:  # read with the versions, or those not cached then
                cached = held.get(found)
            if cached is None:
                if stored is None:  # only the version was read: the image now
                    stored = self.project.store.get(entity_type, found)
                    if stored is None:  # deleted since its version was read
                        raise self.not_found(entity_type)
                    key = (*key[:2], stored.version, *key[3:])
                cached = self._masked(stored, policy, tables, cache=True)
            if self._documents.maxsize:
                with self._lock:
                    self._documents[key] = cached
        answer = cached if found == entity_id else {**cached, "merged_from": entity_id}
        self.recent.put(
            (entity_type, entity_id, policy.name, tables and tuple(tables)), checked_at, answer
        )
        return answer

    def recent_document(
        self, entity_type: str, entity_id: str, role: str | None, tables: list[str] | None
    ) -> dict[str, Any] | None:
        """:meth:`document` as served less than ``api.fresh_ms`` ago, from memory (safe on
        the event loop), or None."""
        answer: dict[str, Any] | None = self.recent.get(
            (entity_type, entity_id, self.project.policy_for(role).name, tables and tuple(tables))
        )
        if answer is not None:
            with self._lock:
                self.served += 1
                self.cache_hits += 1
        return answer

    def _masked(
        self,
        stored: StoredBlob,
        policy: MaskingPolicy,
        tables: list[str] | None = None,
        *,
        cache: bool = False,
    ) -> dict[str, Any]:
        """The document of a stored entity, masked for ``policy`` (read through the read
        cache with ``cache``)."""
        if cache:
            meta, every_table = self._read(stored)
        else:
            image = self.project.codec.decode(
                stored.blob, stored.entity_type, stored.entity_id, stored.version
            )
            meta, every_table = self._reader().read_tables(image)
        rows = self._copies(every_table, tables)
        policy.apply(stored.entity_type, rows, stored.entity_id)
        return {
            "entity_type": stored.entity_type,
            "entity_id": stored.entity_id,
            "version": int(meta["version"]),
            "built_at": meta["built_at"],
            "policy": policy.name,
            "tables": rows,
        }

    def masked_documents(
        self, stored: Sequence[StoredBlob], policy: MaskingPolicy
    ) -> list[dict[str, Any]]:
        """Documents of stored entities masked for ``policy``, past the caches: what
        :func:`fabric.services.materialize.materialize` writes to the online store."""
        return [self._masked(blob, policy) for blob in stored]

    def lineage(
        self, entity_type: str, entity_id: str, *, role: str | None = None
    ) -> dict[str, Any]:
        """Where each of an entity's rows came from, and what made the entity.

        ``rows``: each row's entity table, key, source, source table, source key,
        extraction time and sync run. ``links``: each pair of records resolution linked,
        with the rule, score and similarities (never values). ``events``: the merges and
        splits the entity took part in. A role without a clear policy sees keys as keyed
        hashes (``key_…``): a source's key may itself be personal (an email used as a
        primary key), and the same key always reads the same, so rows still line up.

        Raises:
            EntityNotFoundError: no such entity type or entity.
            InvalidRequestError: malformed id.
        """
        policy = self.project.policy_for(role)
        found, stored = self._stored(entity_type, entity_id)
        image = self.project.codec.decode(
            stored.blob, stored.entity_type, stored.entity_id, stored.version
        )
        rows = self._reader().lineage(image)
        if policy.clear:

            def key(value: Any) -> Any:
                return value

        else:
            master = self.project.secrets.master_key
            hasher = None if master is None else KeyedHasher(derive_key(master, "lineage keys"))

            def key(value: Any) -> Any:
                if value is None or hasher is None:  # no key to hash with: withheld
                    return None
                return "key_" + hasher(str(value)).hex()

        def record(name: str) -> str:
            where, _, raw = name.rpartition(":")
            return f"{where}:{key(raw)}"

        catalog = self.project.catalog
        document: dict[str, Any] = {
            "entity_type": entity_type,
            "entity_id": found,
            "policy": policy.name,
            "rows": [
                {
                    "table": r["tbl"],
                    "row_key": key(r["row_key"]),
                    "source": r["source"],
                    "source_table": r["source_table"],
                    "source_key": key(r["source_key"]),
                    "extracted_at": r["extracted_at"],
                    "sync_run": r["sync_run"],
                }
                for r in rows
            ],
            "links": [
                {
                    "records": [record(link.record_a), record(link.record_b)],
                    "rule": link.rule,
                    "score": link.score,
                    "comparisons": link.comparisons,
                }
                for link in catalog.links(entity_type, found)
            ],
            "events": [
                {
                    "kind": e.kind,
                    "entity_id": e.entity_id,
                    "others": e.others,
                    "reason": e.reason,
                    "at": e.at,
                    "sync_run": e.sync_run,
                }
                for e in catalog.events(entity_type, found)
            ],
        }
        if found != entity_id:
            document["merged_from"] = entity_id
        return document

    def preview(
        self, entity_type: str, entity_id: str, *, role: str | None = None
    ) -> dict[str, Any]:
        """One entity before and after the role's policy, column by column.

        For stewards checking rules (`fabric rules preview`): it shows clear values, so it is
        offered where the key file is at hand (the CLI), never over the API.

        Returns:
            ``{"entity_type", "entity_id", "policy", "tables": {table: [[{"column", "op",
            "before", "after"}, ...] per row]}}``.

        Raises:
            EntityNotFoundError: no such entity type or entity.
        """
        policy = self.project.policy_for(role)
        found, _, before = self._load(entity_type, entity_id, None)
        after = {name: [dict(row) for row in rows] for name, rows in before.items()}
        policy.apply(entity_type, after, found)
        tables = {
            table: [
                [
                    {
                        "column": column,
                        "op": policy.op_of(entity_type, table, column),
                        "before": value,
                        "after": masked_row.get(column),
                    }
                    for column, value in row.items()
                ]
                for row, masked_row in zip(rows, after[table], strict=True)
            ]
            for table, rows in before.items()
        }
        return {
            "entity_type": entity_type,
            "entity_id": found,
            "policy": policy.name,
            "tables": tables,
        }

    def find(self, entity_type: str, source: str, key: str, table: str | None = None) -> str:
        """Return the id of the entity holding a source record.

        ``source`` is a system name (``crm``) or ``system.table`` (``billing.payments``).

        Raises:
            EntityNotFoundError: no entity holds that record.
            InvalidRequestError: the source is not one the project declares.
        """
        self._entity_type(entity_type)
        check_id(key, "key")
        if table is None and "." in source:
            source, table = source.split(".", 1)
        sources = self.project.config.sources
        if source not in sources:
            raise InvalidRequestError(f"unknown source (sources: {', '.join(sources)})")
        if table is not None and table not in sources[source].tables:
            raise InvalidRequestError(
                f"unknown table of source '{source}' (tables: {', '.join(sources[source].tables)})"
            )
        if table is None:
            table = source_table(self.project.config, entity_type, source)
            if table is None:
                raise InvalidRequestError(
                    f"source '{source}' has several tables; name one as source={source}.TABLE "
                    f"(tables: {', '.join(sources[source].tables)})"
                )
        found = self.project.catalog.find_by_source(entity_type, source, table, key)
        if not found:
            raise EntityNotFoundError(f"no {entity_type} entity holds this {source} record")
        if len(found) > 1:
            raise InvalidRequestError(
                f"key matches records of several tables of '{source}'; name one as "
                f"source={source}.TABLE"
            )
        return found[0]

    def find_document(
        self, entity_type: str, source: str, key: str, *, role: str | None = None
    ) -> dict[str, Any]:
        """:meth:`document` of the entity holding a source record (see :meth:`find`)."""
        return self.document(entity_type, self.find(entity_type, source, key), role=role)
