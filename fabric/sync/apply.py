"""Applying a sync's results: storing built images with their catalog entries, assembling
entities from rows, and recording a resolution (links, identity index, merges and splits)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from fabric.resolve.engine import Resolution
from fabric.resolve.index import Hashed, IdentityIndex
from fabric.store.base import StoredBlob
from fabric.store.catalog import EntityRecord, SourceRef, StoredLink, utc_now
from fabric.store.microdb import (
    EntityContent,
    MicroDbReader,
    TableDef,
)
from fabric.sync.build import (
    PartitionResult,
    build_entities,
    new_lineage,
)
from fabric.sync.changes import entity_changes
from fabric.sync.context import (
    Item,
    Lineage,
    Values,
    entity_versions,
    ref_text,
)
from fabric.sync.reading import Reading
from fabric.sync.report import key_text

__all__ = ["Applying"]


class Applying(Reading):
    """Writing entities and recording a resolution: shared by the full and incremental modes."""

    def _write_results(
        self,
        results: Iterable[PartitionResult],
        known: dict[str, EntityRecord],
        now: str,
        *,
        refs_before: Mapping[str, Iterable[SourceRef]] | None = None,
    ) -> None:
        """Store built images and record them in the catalog, a batch per transaction.

        Without ``refs_before`` the built entities' refs are added (a patch), or there are none
        (a full sync writes every source key itself). ``refs_before``: entity id -> its source
        keys before the run; the entities' keys are replaced, writing only the changes.
        """
        store, catalog = self.project.store, self.project.catalog
        batch_size = self.project.config.store.batch_size
        for result in results:
            self.report.unchanged += result.unchanged
            for start in range(0, len(result.built), batch_size):
                batch = result.built[start : start + batch_size]
                records = []
                for b in batch:
                    previous = known.get(b.entity_id)
                    records.append(
                        EntityRecord(
                            self.entity_type,
                            b.entity_id,
                            b.version,
                            b.fingerprint,
                            self.schema.version,
                            now if previous is None else previous.created_at,
                            now,
                        )
                    )
                    if previous is None:
                        self.report.created += 1
                    else:
                        self.report.updated += 1
                catalog.apply_images(
                    store,
                    [
                        StoredBlob(
                            self.entity_type,
                            b.entity_id,
                            b.version,
                            b.blob,
                            expected_version=b.expected_version,
                        )
                        for b in batch
                    ],
                    records,
                    ((b.entity_id, SourceRef(*ref)) for b in batch for ref in b.refs),
                    self.entity_type,
                    previous=refs_before,
                )
                self.progress("store", len(batch), None)

    def _items_of_entities(
        self, entity_ids: set[str], tables: Sequence[TableDef] | None = None
    ) -> dict[str, list[Item]]:
        """The rows (of every table, or of ``tables``) of some entities, with lineage."""
        items: dict[str, list[Item]] = {}
        reader = MicroDbReader()
        stored = self.project.store.get_many(self.entity_type, sorted(entity_ids))
        wanted = list(tables) if tables is not None else list(self.schema.tables)
        layout = {t.name: list(t.column_names) for t in wanted}
        key_at = {t.name: t.column_names.index(t.key) for t in wanted}
        for entity_id, blob in stored.items():
            image = self.project.codec.decode(blob.blob, self.entity_type, entity_id, blob.version)
            rows, lineage_rows = reader.contents(image, layout)
            lineage = {(row[0], row[1]): tuple(row) for row in lineage_rows}
            found = items[entity_id] = []
            for table in wanted:
                at = key_at[table.name]
                for row in rows[table.name]:
                    key = key_text(row[at])
                    found.append(Item(table, row, key, lineage.get((table.name, key))))
        return items

    def _lineage(self, item: Item) -> Lineage:
        """A row's lineage: kept from its image, or new when it was extracted in this run."""
        run = self.sync_run
        return item.lineage or new_lineage(item.table, item.key, run.started, run.run_id)

    def _record(
        self,
        resolution: Resolution[SourceRef],
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        identity_previous: Mapping[SourceRef, str],
        keys_of: Mapping[SourceRef, Values] | Mapping[SourceRef, Hashed],
        *,
        affected: set[str],
        index: IdentityIndex,
        everything: bool,
        changed: set[SourceRef] | frozenset[SourceRef] = frozenset(),
    ) -> None:
        """Delete entities gone, and record links, the identity index and merges/splits.

        ``keys_of``: every record's match values, or the keyed hashes of its match keys.
        ``changed``: the records this run read (re-indexed whatever their entity).
        """
        events, aliases = entity_changes(
            clusters,
            ids,
            identity_previous,
            resolution.links,
            resolution.refused,
            at=self.sync_run.started,
            run_id=self.sync_run.run_id,
        )
        gone = sorted(affected - set(ids))
        catalog, store = self.project.catalog, self.project.store
        catalog.record_schema(self.entity_type, self.schema.version, self.layout())
        if gone:
            # Catalog first: a crash between the two leaves an image no catalog entry names
            # (a full sync removes it), never an entry whose image is gone.
            catalog.delete_entities(self.entity_type, gone)
            store.delete_many(self.entity_type, gone)
            self.report.deleted += len(gone)
        cluster_of = {
            ref: entity_id
            for entity_id, members in zip(ids, clusters, strict=True)
            for ref in members
        }
        # Entities gone keep no links: they are replaced by none.
        links: dict[str, list[StoredLink]] = {entity_id: [] for entity_id in (*gone, *ids)}
        for link in resolution.links:
            links[cluster_of[link.a]].append(
                StoredLink(
                    ref_text(link.a),
                    ref_text(link.b),
                    link.rule,
                    link.score,
                    dict(link.comparisons),
                )
            )
        catalog.replace_links(self.entity_type, links, everything=everything)
        # Records of this run, and ones now in another entity; an unchanged record in the same
        # entity is indexed already, under the same keys.
        index.replace(
            (
                (ref_text(ref), entity_id, keys_of[ref])
                for ref, entity_id in cluster_of.items()
                if everything or ref in changed or identity_previous.get(ref) != entity_id
            ),
            everything=everything,
        )
        catalog.record_history(self.entity_type, events, aliases, self.sync_run.run_id, current=ids)
        self.report.merged += sum(1 for e in events if e.kind == "merge")
        self.report.split += sum(1 for e in events if e.kind == "split")

    def _assemble(
        self,
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        item_of: Mapping[SourceRef, Item],
        children: Mapping[str, list[Item]],
    ) -> dict[str, EntityContent]:
        """Group the records of each cluster and the child rows they own into entities."""
        grouped: dict[str, list[Item]] = defaultdict(list)
        entity_of: dict[tuple[str, str], str] = {}

        def add(entity_id: str, item: Item) -> None:
            grouped[entity_id].append(item)
            entity_of[(item.table.name, item.key)] = entity_id

        for entity_id, members in zip(ids, clusters, strict=True):
            for ref in members:
                add(entity_id, item_of[ref])
        for table in self.tables:
            if table.parent is None:
                continue
            assert table.foreign_key is not None
            fk_at = table.column_names.index(table.foreign_key)
            orphans = 0
            for item in children.get(table.name, []):
                owner = entity_of.get((table.parent, key_text(item.row[fk_at])))
                if owner is None:
                    orphans += 1  # a child whose parent is not in the source: nothing to join
                    continue
                add(owner, item)
            if orphans:
                self.report.orphans[table.name] = self.report.orphans.get(table.name, 0) + orphans
        return {e: self._content(e, items) for e, items in grouped.items()}

    def _content(self, entity_id: str, items: Iterable[Item]) -> EntityContent:
        """An entity's rows and their lineage, ready to build."""
        content = EntityContent(entity_id, {t.name: [] for t in self.tables}, [])
        for item in items:
            content.rows[item.table.name].append(item.row)
            content.lineage.append(self._lineage(item))
        return content

    def _write(
        self,
        contents: dict[str, EntityContent],
        known: dict[str, EntityRecord],
        refs_before: Mapping[str, Iterable[SourceRef]],
    ) -> None:
        """Build and write the rebuilt entities whose content (or schema) changed."""
        stored = self.project.store.versions(self.entity_type, sorted(contents))
        versions = entity_versions(known, stored)
        now = utc_now()
        built, unchanged = build_entities(
            (contents[e] for e in sorted(contents)),
            self.schema,
            self.project.codec,
            versions,
            full=self.full,
            run_id=self.sync_run.run_id,
            built_at=now,
            rules_version=self.schema.rules,
        )
        self._write_results(
            [PartitionResult(0, built, unchanged)], known, now, refs_before=refs_before
        )
