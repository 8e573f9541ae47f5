"""Entities, the source records they hold, and the table layout each type was built with."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from fabric.store.base import EntityStore, StoredBlob
from fabric.store.catalog._records import EntityRecord, SourceRef
from fabric.store.catalog._tables import Tables
from fabric.store.catalog._upsert import upsert

__all__ = ["EntityTables"]


class EntityTables(Tables):
    """``entities``, ``source_keys`` and ``schemas``: what exists, and where it came from."""

    # -- entities ---------------------------------------------------------------------------

    def entity(self, entity_type: str, entity_id: str) -> EntityRecord | None:
        """Return one entity's catalog row."""
        row = self._conn.execute(
            "SELECT * FROM entities WHERE entity_type = ? AND entity_id = ?",
            (entity_type, entity_id),
        ).fetchone()
        return None if row is None else EntityRecord(*row)

    def entities(self, entity_type: str) -> dict[str, EntityRecord]:
        """Return every entity of a type by id."""
        return {
            row[1]: EntityRecord(*row)
            for row in self._conn.execute(
                "SELECT * FROM entities WHERE entity_type = ?", (entity_type,)
            )
        }

    def versions_of(self, entity_type: str) -> dict[str, int]:
        """Every entity of a type: id -> version (what materializing compares, read without
        building a record per entity)."""
        return dict(
            self._conn.execute(
                "SELECT entity_id, version FROM entities WHERE entity_type = ?", (entity_type,)
            )
        )

    def entities_in(self, entity_type: str, entity_ids: Iterable[str]) -> dict[str, EntityRecord]:
        """Return the given entities' rows (missing ones are left out)."""
        return {
            row[1]: EntityRecord(*row)
            for row in self._conn.execute(
                f"SELECT * FROM entities WHERE entity_type = ? AND entity_id IN {self._conn.ids}",
                (entity_type, json.dumps(sorted(set(entity_ids)))),
            )
        }

    def existing(self, entity_type: str, entity_ids: Sequence[str]) -> set[str]:
        """Which of ``entity_ids`` are catalogued: one query (the ids go in as one JSON
        array), so a spine's hundred thousand keys cost one index probe each, in C."""
        rows = self._conn.execute(
            "SELECT entity_id FROM entities WHERE entity_type = ? AND entity_id IN "
            + self._conn.ids,
            (entity_type, json.dumps(list(entity_ids))),
        )
        return {row[0] for row in rows}

    def count(self, entity_type: str | None = None) -> int:
        """Number of entities (of one type, or all)."""
        if entity_type is None:
            return int(self._conn.execute("SELECT count(*) FROM entities").fetchone()[0])
        return int(
            self._conn.execute(
                "SELECT count(*) FROM entities WHERE entity_type = ?", (entity_type,)
            ).fetchone()[0]
        )

    def first_ids(self, entity_type: str, limit: int) -> list[str]:
        """Up to ``limit`` entity ids, the first by the index."""
        return [
            str(row[0])
            for row in self._conn.execute(
                "SELECT entity_id FROM entities WHERE entity_type = ? LIMIT ?",
                (entity_type, limit),
            )
        ]

    def sample_ids(self, entity_type: str, limit: int = 3) -> list[str]:
        """A few entity ids, largest entities first (for examples in the demo)."""
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT entity_id FROM source_keys WHERE entity_type = ? GROUP BY entity_id "
                "ORDER BY count(DISTINCT source) DESC, count(*) DESC, entity_id LIMIT ?",
                (entity_type, limit),
            )
        ]

    def apply_batch(
        self,
        records: Sequence[EntityRecord],
        refs: Iterable[tuple[str, SourceRef]],
        entity_type: str,
        *,
        previous: Mapping[str, Iterable[SourceRef]] | None = None,
    ) -> None:
        """Record new entity versions and their source keys in one transaction.

        Without ``previous`` the given keys are added (a patch adds rows; a full sync writes
        no keys here, it rewrites them all with :meth:`rewrite`). With ``previous`` (entity id
        -> its source keys before) the entities' keys are replaced by writing only the
        difference, so a record that moved to another entity is found under its new one only,
        and an entity that gained one order of thirty records gets one key written.
        """
        new: dict[str, set[SourceRef]] = {r.entity_id: set() for r in records}
        for entity_id, ref in refs:
            new.setdefault(entity_id, set()).add(ref)
        before = previous or {}
        with self._conn:
            if previous is not None:
                # Guarded by the entity id: a key that moved to another entity may already
                # have been written for that one.
                self._conn.executemany(
                    "DELETE FROM source_keys WHERE entity_type = ? AND source = ? AND "
                    "source_table = ? AND source_key = ? AND entity_id = ?",
                    [
                        (entity_type, ref.source, ref.table, ref.key, entity_id)
                        for entity_id, keys in new.items()
                        for ref in set(before.get(entity_id, ())) - keys
                    ],
                )
            added = [(e, ref) for e, keys in new.items() for ref in keys - set(before.get(e, ()))]
            self._conn.executemany(
                upsert("entities"),
                [
                    (
                        r.entity_type,
                        r.entity_id,
                        r.version,
                        r.fingerprint,
                        r.schema_version,
                        r.created_at,
                        r.updated_at,
                    )
                    for r in records
                ],
            )
            self._conn.executemany(
                upsert("source_keys"),
                [
                    (entity_type, ref.source, ref.table, ref.key, entity_id)
                    for entity_id, ref in added
                ],
            )

    def apply_images(
        self,
        store: EntityStore,
        blobs: Sequence[StoredBlob],
        records: Sequence[EntityRecord],
        refs: Iterable[tuple[str, SourceRef]],
        entity_type: str,
        *,
        previous: Mapping[str, Iterable[SourceRef]] | None = None,
    ) -> None:
        """Store entity images and record them (:meth:`apply_batch`).

        Where the store keeps its images in the catalog's own database (the postgres
        backend), both are one transaction, with the store's version check: every entity
        of the batch is at its new version in the store and the catalog, or neither changed.
        Elsewhere the images are committed first, then the catalog: a crash between leaves
        images no catalog row names yet, which ``store verify`` counts as notices and the
        next sync settles.

        Raises:
            StaleWriteError: an image's stored version is not the one expected (nothing of
                the batch is kept).
        """
        from fabric.store.database import PostgresThreads

        if isinstance(self._conn, PostgresThreads):
            from fabric.store.postgres import PostgresStore

            if isinstance(store, PostgresStore) and store.target == self._conn.target:
                with self._conn:
                    store.put_in(self._conn.raw, blobs)
                    self.apply_batch(records, refs, entity_type, previous=previous)
                return
        store.put_many(blobs)
        self.apply_batch(records, refs, entity_type, previous=previous)

    def delete_entities(self, entity_type: str, entity_ids: Sequence[str]) -> None:
        """Forget entities and their source keys."""
        with self._conn:
            params = [(entity_type, e) for e in entity_ids]
            self._conn.executemany(
                "DELETE FROM entities WHERE entity_type = ? AND entity_id = ?", params
            )
            # One statement, one pass over the type's keys: they are not indexed by entity.
            self._conn.execute(
                "DELETE FROM source_keys WHERE entity_type = ? AND entity_id IN " + self._conn.ids,
                (entity_type, json.dumps(list(entity_ids))),
            )

    # -- source keys ------------------------------------------------------------------------

    def find_by_source(
        self, entity_type: str, source: str, table: str | None, key: str
    ) -> list[str]:
        """Return the entity ids holding a source record (usually exactly one)."""
        if table is None:
            rows = self._conn.execute(
                "SELECT DISTINCT entity_id FROM source_keys WHERE entity_type = ? AND source = ?"
                " AND source_key = ?",
                (entity_type, source, key),
            )
        else:
            rows = self._conn.execute(
                "SELECT entity_id FROM source_keys WHERE entity_type = ? AND source = ? AND "
                "source_table = ? AND source_key = ?",
                (entity_type, source, table, key),
            )
        return [str(r[0]) for r in rows]

    def source_map(
        self, entity_type: str, tables: Iterable[tuple[str, str]] | None = None
    ) -> dict[SourceRef, str]:
        """Every known source record of a type (or of some source tables) and its entity id."""
        if tables is None:
            return {
                SourceRef(s, t, k): e
                for s, t, k, e in self._conn.execute(
                    "SELECT source, source_table, source_key, entity_id FROM source_keys "
                    "WHERE entity_type = ?",
                    (entity_type,),
                )
            }
        found: dict[SourceRef, str] = {}
        for source, table in tables:
            for key, entity_id in self._conn.execute(
                "SELECT source_key, entity_id FROM source_keys "
                "WHERE entity_type = ? AND source = ? AND source_table = ?",
                (entity_type, source, table),
            ):
                found[SourceRef(source, table, str(key))] = str(entity_id)
        return found

    # -- schemas ----------------------------------------------------------------------------

    def record_schema(self, entity_type: str, version: str, layout: dict[str, list[str]]) -> None:
        """Remember the table layout entities of a type were last built with."""
        with self._conn:
            self._conn.execute(
                upsert("schemas"),
                (entity_type, version, json.dumps(layout)),
            )

    def schema_version(self, entity_type: str) -> str | None:
        """The schema version entities of a type were last built with (None: never built)."""
        row = self._conn.execute(
            "SELECT version FROM schemas WHERE entity_type = ?", (entity_type,)
        ).fetchone()
        return None if row is None else str(row[0])

    def schemas(self) -> dict[str, dict[str, list[str]]]:
        """Entity type -> table -> columns, as of the last sync."""
        return {
            str(t): json.loads(str(layout))
            for t, layout in self._conn.execute("SELECT entity_type, layout FROM schemas")
        }
