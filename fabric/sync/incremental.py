"""An incremental sync of one entity type: rows at or past each table's watermark; entities
that only gained or changed child rows are patched, those a changed identity record touches
are resolved again (patched when they keep their records, rebuilt when not)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from fabric.resolve.clusters import assign_entity_ids
from fabric.resolve.engine import Resolution, resolve_records
from fabric.resolve.index import IdentityIndex
from fabric.store.base import StoredBlob
from fabric.store.catalog import EntityRecord, SourceRef, utc_now
from fabric.store.codec import (
    dictionary_id_of,
)
from fabric.store.microdb import (
    EntityContent,
    fingerprint_total,
)
from fabric.sync.apply import Applying
from fabric.sync.build import (
    BuiltEntity,
    PartitionResult,
)
from fabric.sync.context import (
    Item,
    Row,
    ref_text,
)
from fabric.sync.patch import PatchBatch, PatchItem, patch_batch
from fabric.sync.report import key_text

__all__ = ["IncrementalMode"]

#: Entities per batch of an incremental patch (a worker's unit of work).
_PATCH_BATCH = 250
#: Fewest entities to patch for which an incremental sync starts its workers: starting them
#: has a fixed cost, and below some thousands of entities they gain little or nothing over
#: this process alone (benchmarks/README.md, "Patch workers").
_PATCH_IN_WORKERS_FROM = 5000


class IncrementalMode(Applying):
    """The incremental sync."""

    def _run_incremental(self, index: IdentityIndex) -> None:
        """Re-resolve the entities changed identity records touch; patch the others.

        An entity that only gained or changed child rows (orders, payments) keeps its records
        and links, so it skips resolution: its stored image is patched with the new rows. Only
        the entities holding a changed identity record, or a record sharing a match key with
        one, are resolved again (and may merge or split).
        """
        catalog = self.project.catalog
        changed: dict[str, list[Row]] = {}
        for table in self.tables:
            column = self._watermark_column(table)
            since = catalog.watermark(table.source, table.source_table, column) if column else None
            changed[table.name] = self._read(table, since)
        identity = [
            i for t in self.tables if t.parent is None for i in self._identity(t, changed[t.name])
        ]
        # A changed record whose match values are the ones indexed cannot link differently
        # (nothing resolution compares changed): it is patched into its entity like a child
        # row, unless that entity is resolved again anyway.
        same = index.unchanged((ref_text(ref), values) for ref, values, _ in identity)
        kept = [(same[ref_text(r[0])], r) for r in identity if ref_text(r[0]) in same]
        identity = [r for r in identity if ref_text(r[0]) not in same]
        changed_refs = {ref_text(ref) for ref, _, _ in identity}
        resolve: set[str] = set(index.entity_of(changed_refs).values())
        resolve |= set(index.entity_of(index.candidates(v for _, v, _ in identity)).values())
        patch, deferred = self._place_children(
            changed,
            {(i.table.name, i.key) for _, _, i in identity},
            resolve,
            {(r[2].table.name, r[2].key): entity_id for entity_id, r in kept},
        )
        # Read once here, for the patch: the blobs of the entities it may patch.
        stored = self.project.store.get_many(
            self.entity_type, sorted({*patch, *(e for e, _ in kept)})
        )
        # Catalogued but not stored (a run died between the two): resolved again.
        resolve |= {*patch, *(e for e, _ in kept)} - set(stored)
        while True:
            for entity_id in [e for e in patch if e in resolve]:
                deferred.extend(patch.pop(entity_id))
            back = [r for e, r in kept if e in resolve]
            if not back:
                break
            kept = [(e, r) for e, r in kept if e not in resolve]
            identity.extend(back)
            resolve |= set(index.entity_of(index.candidates(v for _, v, _ in back)).values())
        for entity_id, (_, _, item) in kept:
            patch[entity_id].append(item)
        self._patch(patch, stored)
        stored.clear()
        if resolve or identity or deferred:
            self._resolve_again(resolve, identity, deferred, index)
        self.report.entities[self.entity_type] = self.project.catalog.count(self.entity_type)

    def _place_children(
        self,
        changed: Mapping[str, list[Row]],
        identity_keys: set[tuple[str, str]],
        resolve: set[str],
        known: Mapping[tuple[str, str], str],
    ) -> tuple[dict[str, list[Item]], list[Item]]:
        """Find the entity of each changed child row where that needs no resolution.

        Returns the rows to patch into each entity, and the rows left to the resolution: those
        whose parent is a changed identity record, whose entity is resolved again anyway, that
        moved from one entity to another (both are then resolved again, ``resolve`` grows), or
        whose parent no entity holds (counted as orphans there). ``known``: changed identity
        rows whose entity is known without resolving.
        """
        catalog = self.project.catalog
        owner: dict[tuple[str, str], str | None] = dict(known)
        placed: list[tuple[Item, str | None]] = []
        for table in self.tables:
            if table.parent is None:
                continue
            parent = self.schema.table(table.parent)
            assert table.foreign_key is not None
            key_at = table.column_names.index(table.key)
            fk_at = table.column_names.index(table.foreign_key)
            for row in changed[table.name]:
                key, fk = key_text(row[key_at]), key_text(row[fk_at])
                entity: str | None
                if (parent.name, fk) in identity_keys:
                    entity = None
                elif (parent.name, fk) in owner:
                    entity = owner[(parent.name, fk)]
                else:
                    found = catalog.find_by_source(
                        self.entity_type, parent.source, parent.source_table, fk
                    )
                    entity = found[0] if found else None
                before = catalog.find_by_source(
                    self.entity_type, table.source, table.source_table, key
                )
                if before and before[0] != entity:
                    resolve.update(before)
                    if entity is not None:
                        resolve.add(entity)
                owner[(table.name, key)] = entity
                placed.append(
                    (
                        Item(
                            table, row, key, held_by=before[0] if before else None, new=not before
                        ),
                        entity,
                    )
                )
        patch: dict[str, list[Item]] = defaultdict(list)
        deferred: list[Item] = []
        for item, entity in placed:
            if entity is None or entity in resolve:
                deferred.append(item)
            else:
                patch[entity].append(item)
        return patch, deferred

    def _patch(
        self,
        patch: Mapping[str, list[Item]],
        blobs: dict[str, StoredBlob] | None = None,
    ) -> None:
        """Put child rows into entities whose records did not change, without resolving.

        The stored image is patched in place (the new rows inserted, changed ones updated)
        and its fingerprint follows from the catalog's; an entity whose catalog entry does not
        describe its image exactly (another schema or fingerprint scheme, a version the
        catalog missed) is rebuilt from its rows instead. With workers and enough
        entities, the workers patch batches while this process writes finished ones.
        ``blobs``: the entities' stored blobs, when the caller has read them already.
        """
        if not patch:
            return
        catalog, store = self.project.catalog, self.project.store
        known = catalog.entities_in(self.entity_type, patch)
        if blobs is None:
            blobs = store.get_many(self.entity_type, sorted(patch))
        now = utc_now()
        items: list[PatchItem] = []
        rebuild: dict[str, list[Item]] = {}
        for entity_id in sorted(patch):
            rows, record, blob = patch[entity_id], known.get(entity_id), blobs.get(entity_id)
            total = None if record is None else fingerprint_total(record.fingerprint)
            if (
                record is None
                or blob is None
                or total is None
                or record.version != blob.version
                or record.schema_version != self.schema.version
            ):
                rebuild[entity_id] = rows
                continue
            items.append(
                PatchItem(
                    entity_id,
                    blob.blob,
                    blob.version,
                    total,
                    [(i.table.name, i.row, self._lineage(i), i.new) for i in rows],
                    [(i.table.source, i.table.source_table, i.key) for i in rows],
                )
            )
        batches = [
            PatchBatch(
                self.schema,
                self.project.secrets.key_ring,
                now,
                self.sync_run.run_id,
                items[start : start + _PATCH_BATCH],
                rules_version=self.schema.rules,
                dictionaries=self.project.codec.dictionaries.subset(
                    self.entity_type,
                    {dictionary_id_of(i.blob) for i in items[start : start + _PATCH_BATCH]},
                ),
            )
            for start in range(0, len(items), _PATCH_BATCH)
        ]
        done: Iterable[tuple[list[BuiltEntity], int]]
        if self.executor.workers > 1 and len(items) >= _PATCH_IN_WORKERS_FROM:
            done = self.executor.map(patch_batch, batches)
        else:
            done = map(patch_batch, batches)
        self._write_results(
            (PartitionResult(0, built, unchanged) for built, unchanged in done), known, now
        )
        if rebuild:
            self._rebuild(rebuild)

    def _rebuild(self, patch: Mapping[str, list[Item]]) -> None:
        """Rebuild entities from their stored rows and some new ones, without resolving."""
        stored = self._items_of_entities(set(patch))
        contents: dict[str, EntityContent] = {}
        refs_before: dict[str, list[SourceRef]] = {}
        for entity_id, new_items in patch.items():
            items = {(i.table.name, i.key): i for i in stored.get(entity_id, [])}
            refs_before[entity_id] = [i.ref for i in items.values()]
            items.update({(i.table.name, i.key): i for i in new_items})
            contents[entity_id] = self._content(entity_id, items.values())
        known = self.project.catalog.entities_in(self.entity_type, patch)
        self._write(contents, known, refs_before)

    def _resolve_again(
        self,
        resolve: set[str],
        identity: list[tuple[SourceRef, dict[str, str | None], Item]],
        deferred: list[Item],
        index: IdentityIndex,
    ) -> None:
        """Resolve the records of the given entities with the changed ones, and write.

        Only identity rows are read to resolve. An entity that keeps exactly its records (a
        customer who moved city) is patched like one that gained an order; only entities
        that merge, split, appear or lose a row to another entity are rebuilt.
        """
        catalog = self.project.catalog
        roots = [t for t in self.tables if t.parent is None]
        held = self._items_of_entities(resolve, roots)
        merged: dict[tuple[str, str], Item] = {}
        previous: dict[SourceRef, str] = {}
        before: dict[str, set[SourceRef]] = defaultdict(set)
        for entity_id, items in held.items():
            for item in items:
                merged[(item.table.name, item.key)] = item
                ref = item.ref
                previous[ref] = entity_id
                before[entity_id].add(ref)
        # Rows of this run replace the stored ones with the same key.
        for _, _, item in identity:
            merged[(item.table.name, item.key)] = item
        changed_values = {ref: values for ref, values, _ in identity}
        identity_all = [
            i
            for t in roots
            for i in self._identity(
                t, [m.row for (name, _), m in merged.items() if name == t.name], changed_values
            )
        ]
        # Keep each stored record's lineage (its extraction time) unless it changed now.
        for _, _, item in identity_all:
            item.lineage = merged[(item.table.name, item.key)].lineage
        known = catalog.entities_in(self.entity_type, resolve)
        resolution: Resolution[SourceRef] = resolve_records(
            [(ref, values) for ref, values, _ in identity_all], self.rules
        )
        self.report.links_refused += len(resolution.refused)
        self.progress("resolve", len(identity_all), len(identity_all))
        clusters = resolution.clusters
        ids = assign_entity_ids(
            self.entity_type,
            clusters,
            previous,
            {e: r.created_at for e, r in known.items()},
            exists=lambda e: catalog.entity(self.entity_type, e) is not None,
        )
        item_of = {ref: item for ref, _, item in identity_all}
        keeps = {
            entity_id
            for entity_id, members in zip(ids, clusters, strict=True)
            if entity_id in held and set(members) == before[entity_id]
        }
        owners = self._deferred_owners(deferred, ids, clusters, item_of, keeps)
        patch: dict[str, list[Item]] = defaultdict(list)
        for ref, _, item in identity:
            holder = previous.get(ref)
            if holder is not None and holder in keeps:
                patch[holder].append(item)
        for item, owner in zip(deferred, owners, strict=True):
            if owner is not None:
                patch[owner].append(item)
        self._patch(patch)
        self._rebuild_resolved(
            [(e, m) for e, m in zip(ids, clusters, strict=True) if e not in keeps],
            resolve - keeps,
            item_of,
            [item for item, owner in zip(deferred, owners, strict=True) if owner not in keeps],
            {(i.table.name, i.key) for i in deferred},
            known,
        )
        self._record(
            resolution,
            ids,
            clusters,
            previous,
            {ref: values for ref, values, _ in identity_all},
            affected=resolve,
            index=index,
            everything=False,
            changed={ref for ref, _, _ in identity},
        )

    def _deferred_owners(
        self,
        deferred: Sequence[Item],
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        item_of: Mapping[SourceRef, Item],
        keeps: set[str],
    ) -> list[str | None]:
        """The entity each deferred child row goes to, where that is known before assembling.

        None: decided when the rebuilt entities are assembled. The two entities of a row that
        moved leave ``keeps``: patches only add and update rows, and the rows below the moved
        one (an order's items) must follow it, so both sides are rebuilt.
        """
        catalog = self.project.catalog
        owner_of: dict[tuple[str, str], str | None] = {}
        for entity_id, members in zip(ids, clusters, strict=True):
            for ref in members:
                item = item_of[ref]
                owner_of[(item.table.name, item.key)] = entity_id
        owners: list[str | None] = []
        for item in deferred:  # parents before children: _place_children keeps table order
            table = item.table
            assert table.parent is not None and table.foreign_key is not None
            parent = self.schema.table(table.parent)
            fk = key_text(item.row[table.column_names.index(table.foreign_key)])
            owner: str | None = None
            if (parent.name, fk) in owner_of:
                owner = owner_of[(parent.name, fk)]
            else:
                found = catalog.find_by_source(
                    self.entity_type, parent.source, parent.source_table, fk
                )
                owner = found[0] if found and found[0] in keeps else None
            owner_of[(table.name, item.key)] = owner
            owners.append(owner)
            if item.held_by is not None and item.held_by != owner:
                # Moved: the rows below it move too, which only assembling both sides does.
                keeps.discard(item.held_by)
                if owner is not None:
                    keeps.discard(owner)
        return [owner if owner in keeps else None for owner in owners]

    def _rebuild_resolved(
        self,
        clusters: Sequence[tuple[str, Sequence[SourceRef]]],
        old: set[str],
        item_of: Mapping[SourceRef, Item],
        new_children: Sequence[Item],
        replaced: set[tuple[str, str]],
        known: dict[str, EntityRecord],
    ) -> None:
        """Assemble and build the entities whose records changed, from their stored rows."""
        if not clusters:
            return
        stored = self._items_of_entities(old)
        refs_before: dict[str, list[SourceRef]] = defaultdict(list)
        children: dict[str, list[Item]] = defaultdict(list)
        for entity_id, items in stored.items():
            for item in items:
                table = item.table
                refs_before[entity_id].append(item.ref)
                if table.parent is not None and (table.name, item.key) not in replaced:
                    children[table.name].append(item)
        for item in new_children:
            children[item.table.name].append(item)
        ids = [entity_id for entity_id, _ in clusters]
        contents = self._assemble(ids, [members for _, members in clusters], item_of, children)
        self._write(contents, known, refs_before)
