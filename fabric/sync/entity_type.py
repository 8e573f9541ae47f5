"""The sync of one entity type: full, or incremental from the watermarks.

Full: read every row, resolve every identity record, rebuild what changed, delete what is gone.
Incremental: read only rows at or past each table's watermark, and find the entities they
touch. Entities that only gained or changed child rows are patched in place; entities holding
a changed identity record (or one sharing a match key with it) are resolved again from their
stored identity rows, patched when they keep exactly their records, rebuilt from their stored
rows when they merge, split or lose a row. Every read happens before the first write, so a
source that fails mid-run leaves the store as it was; watermarks move in the last step, so the
next run reads the same rows again.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult, Pool
from typing import Any

from fabric.crypto import require_master_key
from fabric.errors import SourceError
from fabric.project import Project
from fabric.resolve.clusters import assign_entity_ids
from fabric.resolve.engine import Resolution, resolve_records
from fabric.resolve.index import Hashed, IdentityIndex, index_key
from fabric.store.base import StoredBlob, entity_key, partition_of
from fabric.store.catalog import BulkRewrite, EntityRecord, SourceRef, StoredLink, utc_now
from fabric.store.codec import (
    DICTIONARY_SAMPLES,
    dictionary_id_of,
    new_dictionary_id,
    train_dictionary,
)
from fabric.store.microdb import (
    EntityContent,
    EntitySchema,
    MicroDbBuilder,
    MicroDbReader,
    TableDef,
    fingerprint_total,
)
from fabric.sync.build import (
    BuildJob,
    BuiltEntity,
    Known,
    PartitionResult,
    build_entities,
    build_partition,
    new_lineage,
    partition_contents,
)
from fabric.sync.changes import entity_changes
from fabric.sync.patch import PatchBatch, PatchItem, patch_batch
from fabric.sync.report import ProgressCallback, SyncReport, key_text
from fabric.sync.spill import Spill, read_stream
from fabric.sync.values import ValuesJob, match_values

__all__ = ["EntityTypeSync", "ref_text"]

Row = tuple[Any, ...]
Lineage = tuple[Any, ...]
Values = Mapping[str, str | None]

#: Entities per batch of an incremental patch (a worker's unit of work).
_PATCH_BATCH = 250
#: Fewest entities to patch for which an incremental sync starts its workers: starting them
#: has a fixed cost, and below some thousands of entities they gain little or nothing over
#: this process alone (benchmarks/README.md, "Patch workers").
_PATCH_IN_WORKERS_FROM = 5000


def ref_text(ref: SourceRef) -> str:
    """A record reference as stored in the identity index and in links."""
    return f"{ref.source}.{ref.table}:{ref.key}"


def _versions(known: Mapping[str, EntityRecord], stored: Mapping[str, int]) -> Known:
    """What builders need to know of existing entities: catalog and stored versions, prints.

    The store is the commit point for images, so an entity it has and the catalog lost (a run
    that died between the two commits) still continues from its stored version.
    """
    versions: Known = {
        entity_id: (
            record.version,
            stored.get(entity_id, 0),
            record.fingerprint,
            record.schema_version,
        )
        for entity_id, record in known.items()
    }
    versions.update({e: (0, v, "", "") for e, v in stored.items() if e not in known})
    return versions


def _topological(schema: EntitySchema) -> list[TableDef]:
    """Tables with every parent before its children."""
    done: list[TableDef] = []
    pending = list(schema.tables)
    while pending:
        ready = [t for t in pending if t.parent is None or t.parent in {d.name for d in done}]
        done.extend(ready)
        pending = [t for t in pending if t not in ready]
    return done


@dataclass
class _Item:
    """One row on its way into an entity, with its lineage (None: extracted in this run)."""

    table: TableDef
    row: Row
    key: str
    lineage: Lineage | None = None
    #: the entity that held this row before the run (child rows of this run only)
    held_by: str | None = None
    #: no entity held this row before the run (it was looked up: child rows of this run)
    new: bool = False

    @property
    def ref(self) -> SourceRef:
        """The source record this row is."""
        return SourceRef(self.table.source, self.table.source_table, self.key)


class EntityTypeSync:
    """Sync one entity type. Construction checks sources and rules; nothing is written."""

    def __init__(
        self,
        project: Project,
        entity_type: str,
        report: SyncReport,
        progress: ProgressCallback | None,
        full: bool = False,
        workers: int = 1,
    ) -> None:
        self.project = project
        self.full = full
        self.workers = workers
        self.entity_type = entity_type
        self.report = report
        self.progress = progress or (lambda stage, n, total: None)
        self.schema = project.schema(entity_type)
        self.rules = project.match_rules(entity_type)
        self.tables = _topological(self.schema)
        self._master = require_master_key(project.secrets.master_key, "sync")
        self._marks: dict[tuple[str, str, str], Any] = {}

    def layout(self) -> dict[str, list[str]]:
        """Table -> columns of this entity type's micro-database."""
        return {t.name: list(t.column_names) for t in self.schema.tables}

    # -- reading ----------------------------------------------------------------------------

    def _watermark_column(self, table: TableDef) -> str | None:
        return self.project.config.sources[table.source].tables[table.source_table].watermark

    def _read(self, table: TableDef, since: Any | None = None) -> list[Row]:
        """Read a table (or its rows at or past ``since``) whole: for incremental runs."""
        return [row for batch in self._stream(table, since) for row in batch]

    def _stream(self, table: TableDef, since: Any | None = None) -> Iterator[list[Row]]:
        """Stream a table's rows (at or past ``since``), checking keys identify rows.

        A NULL or repeated key would silently drop a row or put it into someone else's
        entity, so both stop the run (before anything is written) with counts, never values.
        """
        reader = self.project.source(table.source)
        column = self._watermark_column(table)
        key_at = table.column_names.index(table.key)
        mark_at = table.column_names.index(column) if column else None
        seen: set[str] = set()
        nulls = repeats = count = 0
        newest = since
        filter_ = (column, since) if column is not None and since is not None else None
        transform = self.project.row_transform(self.entity_type, table.name)
        read = table.source_columns or table.column_names
        for batch in reader.read(table.source_table, read, since=filter_):
            if transform is not None:
                # Transforms at ingest: every later step sees the rows as they are stored
                # (keys, foreign keys and watermarks are never transformed).
                batch = [transform(row) for row in batch]
            for row in batch:
                key = row[key_at]
                if key is None:
                    nulls += 1
                    continue
                text = key_text(key)
                if text in seen:
                    repeats += 1
                seen.add(text)
                if (
                    mark_at is not None
                    and row[mark_at] is not None
                    and (newest is None or row[mark_at] > newest)
                ):
                    newest = row[mark_at]
            count += len(batch)
            self.progress(f"extract {table.name}", len(batch), None)
            yield batch
        if nulls or repeats:
            raise SourceError(
                f"source '{table.source}' table '{table.source_table}': {nulls} rows with a "
                f"NULL '{table.key}' and {repeats} repeated '{table.key}' values; the primary "
                f"key must identify every row (fabric.yaml: sources.{table.source}.tables."
                f"{table.source_table}.primary_key)"
            )
        if column is not None and newest is not None:
            self._marks[(table.source, table.source_table, column)] = newest
        self.report.rows_read += count
        self.report.rows_by_table[table.name] = self.report.rows_by_table.get(table.name, 0) + count

    def _identity(
        self,
        table: TableDef,
        rows: Sequence[Row],
        known: Mapping[SourceRef, dict[str, str | None]] | None = None,
    ) -> list[tuple[SourceRef, dict[str, str | None], _Item]]:
        """Identity records of some rows with their match values (``known`` ones not redone)."""
        key_at = table.column_names.index(table.key)
        names = table.column_names
        extract = self.rules.extractor(table.name, set(names))
        out = []
        for row in rows:
            key = key_text(row[key_at])
            ref = SourceRef(table.source, table.source_table, key)
            values = known.get(ref) if known is not None else None
            if values is None:
                values = extract(dict(zip(names, row, strict=True))) if extract else {}
            out.append((ref, values, _Item(table, row, key)))
        return out

    # -- the two modes ----------------------------------------------------------------------

    def run(self, run_id: int, started: str) -> str:
        """Sync this entity type; incremental when there is state to continue from.

        Returns the mode it ran in: "incremental", or "full" (asked for, or a first sync).
        """
        index = IdentityIndex(self.project.catalog, self.entity_type, self._master, self.rules)
        has_state = (
            not self.full
            and self.project.catalog.count(self.entity_type) > 0
            and index.has_records()
            and self.project.catalog.schemas().get(self.entity_type) == self.layout()
            # other match rules or transforms: what is stored no longer follows from them
            and self.project.catalog.schema_version(self.entity_type) == self.schema.version
        )
        # New images compress with the newest dictionary of this schema (a full sync may
        # train a better one).
        latest = self.project.catalog.latest_dictionary(self.entity_type, self.schema.version)
        if latest is not None:
            self.project.codec.dictionaries.use(self.entity_type, latest.dict_id)
        if has_state:
            self._run_incremental(index, run_id, started)
            return "incremental"
        self._run_full(index, run_id, started)
        return "full"

    def _train_dictionary(
        self, spill: Spill, partitions: int, entities: int, run_id: int, started: str
    ) -> None:
        """Train the compression dictionary of this type and schema, when it needs one.

        A dictionary is trained once per schema from images of this run (built from the first
        partitions' spilled rows, never stored), and again only when the one there was
        trained on fewer images than this run has. Before any image uses it, it is sealed
        into the catalog within the transaction the run has open there, so no committed
        blob ever names a dictionary the catalog lacks.
        """
        latest = self.project.catalog.latest_dictionary(self.entity_type, self.schema.version)
        wanted = min(DICTIONARY_SAMPLES, entities)
        if latest is not None and latest.samples >= wanted:
            return
        builder = MicroDbBuilder(self.schema)
        samples: list[bytes] = []
        for partition in range(partitions):
            job = BuildJob(
                partition,
                spill.path(str(partition)),
                spill.key,
                self.schema,
                None,
                True,
                run_id,
                started,
                started,
                {},
            )
            for content in partition_contents(job):
                meta: dict[str, int | str] = {
                    "entity_type": self.entity_type,
                    "entity_id": content.entity_id,
                    "version": 1,
                    "schema_version": self.schema.version,
                    "rules_version": self.schema.rules,
                    "built_at": started,
                    "sync_run": run_id,
                }
                samples.append(builder.build(content, meta))
                if len(samples) >= wanted:
                    break
            if len(samples) >= wanted:
                break
        trained, count = train_dictionary(samples), len(samples)
        samples.clear()  # images of real entities: not kept a moment longer
        if trained is None:
            return
        codec = self.project.codec
        dict_id = new_dictionary_id()
        self.project.catalog.put_dictionary(
            dict_id,
            self.entity_type,
            self.schema.version,
            count,
            codec.seal_dictionary(dict_id, trained),
        )
        codec.dictionaries.add(dict_id, trained, current_for=self.entity_type)

    def _run_full(self, index: IdentityIndex, run_id: int, started: str) -> None:
        """Stream every table through partition spill files and build partitions in workers.

        Memory holds the identity records' match values, the owners of parent rows and one
        partition of rows at a time, never whole tables.
        """
        catalog = self.project.catalog
        partitions = max(8, 4 * self.workers)
        spill = Spill(partitions)
        with contextlib.ExitStack() as stack:
            pool = None
            if self.workers > 1:
                context = multiprocessing.get_context("spawn")
                # Workers run without the cyclic collector too (see sync.paused_gc).
                pool = stack.enter_context(context.Pool(self.workers, initializer=gc.disable))
            stack.callback(spill.remove)
            self._full_with(pool, spill, partitions, index, run_id, started)
        self.report.entities[self.entity_type] = catalog.count(self.entity_type)

    def _identity_values(
        self, spill: Spill, pool: Pool | None
    ) -> tuple[list[tuple[SourceRef, Values]], dict[SourceRef, Hashed]]:
        """Stream the identity tables into the spill; workers compute their match values.

        Returns every record's match values, and the keyed hashes the identity index files
        each under. At most two batches per worker wait in the pool, so memory stays bounded
        while the parent reads on.
        """
        assert self.rules.spec is not None
        identity: list[tuple[SourceRef, Values]] = []
        hashes: dict[SourceRef, Hashed] = {}
        Found = list[tuple[dict[str, str | None], Hashed]]
        pending: deque[tuple[AsyncResult[Found], list[SourceRef]]] = deque()
        key = index_key(self._master)

        def keep(refs: list[SourceRef], found: Found) -> None:
            for ref, (values, hashed) in zip(refs, found, strict=True):
                identity.append((ref, values))
                hashes[ref] = hashed

        for table in self.tables:
            if table.parent is not None:
                continue
            key_at = table.column_names.index(table.key)
            for batch in self._stream(table):
                refs = []
                for row in batch:
                    text = key_text(row[key_at])
                    refs.append(SourceRef(table.source, table.source_table, text))
                    spill.add("pending", (table.name, text, row))
                job = ValuesJob(
                    self.entity_type, self.rules.spec, table.name, table.column_names, batch, key
                )
                if pool is None:
                    keep(refs, match_values(job))
                    continue
                pending.append((pool.apply_async(match_values, (job,)), refs))
                while len(pending) > 2 * self.workers:
                    result, done = pending.popleft()
                    keep(done, result.get())
        while pending:
            result, done = pending.popleft()
            keep(done, result.get())
        return identity, hashes

    def _full_with(
        self,
        pool: Pool | None,
        spill: Spill,
        partitions: int,
        index: IdentityIndex,
        run_id: int,
        started: str,
    ) -> None:
        """The full sync proper, with its worker pool (None: everything in this process)."""
        catalog = self.project.catalog
        identity, hashes = self._identity_values(spill, pool)
        table_of = {(t.source, t.source_table): t.name for t in self.tables}
        resolution: Resolution[SourceRef] = resolve_records(identity, self.rules)
        self.report.links_refused += len(resolution.refused)
        self.progress("resolve", len(identity), len(identity))
        # Identity records only: child rows follow their parents, and loading every source
        # key of a large store would cost memory for nothing.
        previous = catalog.source_map(
            self.entity_type,
            [(t.source, t.source_table) for t in self.tables if t.parent is None],
        )
        known = catalog.entities(self.entity_type)
        # Read once: the images a crashed run left uncatalogued, and the builders' versions.
        stored = self.project.store.all_versions(self.entity_type)
        ids = assign_entity_ids(
            self.entity_type,
            resolution.clusters,
            previous,
            {e: r.created_at for e, r in known.items()},
        )
        owner: dict[tuple[str, str], str] = {}
        for entity_id, members in zip(ids, resolution.clusters, strict=True):
            for ref in members:
                owner[(table_of[(ref.source, ref.table)], ref.key)] = entity_id

        placed: dict[str, str] = {}

        def place(entity_id: str) -> str:
            found = placed.get(entity_id)
            if found is None:
                found = placed[entity_id] = str(
                    partition_of(entity_key(self.entity_type, entity_id), partitions)
                )
            return found

        spill.finish()
        # Every row's source key goes to the catalog in one bulk rewrite, written as rows are
        # placed: the parent knows each row's entity before any image is built.
        keys = catalog.rewrite("source_keys", self.entity_type)
        try:
            self._place_rows(spill, owner, place, keys)
            identity.clear()
            self._train_dictionary(spill, partitions, len(ids), run_id, started)

            def record() -> None:
                keys.finish()
                self._record(
                    resolution,
                    ids,
                    resolution.clusters,
                    {ref: e for ref, e in previous.items() if ref in hashes},  # records still read
                    hashes,
                    run_id,
                    started,
                    # with images a crashed run stored and never catalogued
                    affected=set(known) | set(stored),
                    index=index,
                    everything=True,
                )

            self._build_and_write(spill, partitions, known, stored, run_id, started, record, pool)
        finally:
            keys.abort()  # nothing once finished

    def _place_rows(
        self,
        spill: Spill,
        owner: dict[tuple[str, str], str],
        place: Callable[[str], str],
        keys: BulkRewrite,
    ) -> None:
        """Send every row to its entity's partition, and its source key to the catalog.

        Identity rows come back from the spill they waited in during resolution; child rows
        stream from their sources and follow their parent's entity.
        """
        by_name = {t.name: t for t in self.tables}
        for chunk in read_stream(spill.path("pending"), spill.key, "pending"):
            refs = []
            for table_name, key, row in chunk:
                entity_id = owner[(table_name, key)]
                spill.add(place(entity_id), (entity_id, table_name, row))
                table = by_name[table_name]
                refs.append((self.entity_type, table.source, table.source_table, key, entity_id))
            keys.add(refs)
        parents = {t.parent for t in self.tables if t.parent is not None}
        for table in self.tables:
            if table.parent is None:
                continue
            assert table.foreign_key is not None
            key_at = table.column_names.index(table.key)
            fk_at = table.column_names.index(table.foreign_key)
            orphans = 0
            is_parent = table.name in parents
            for batch in self._stream(table):
                refs = []
                for row in batch:
                    found = owner.get((table.parent, key_text(row[fk_at])))
                    if found is None:
                        orphans += 1  # its parent is not in the source: nothing to join
                        continue
                    key = key_text(row[key_at])
                    if is_parent:
                        owner[(table.name, key)] = found
                    spill.add(place(found), (found, table.name, row))
                    refs.append((self.entity_type, table.source, table.source_table, key, found))
                keys.add(refs)
            if orphans:
                self.report.orphans[table.name] = self.report.orphans.get(table.name, 0) + orphans
        spill.finish()
        owner.clear()

    def _build_and_write(
        self,
        spill: Spill,
        partitions: int,
        known: dict[str, EntityRecord],
        stored: Mapping[str, int],
        run_id: int,
        started: str,
        meanwhile: Callable[[], None],
        pool: Pool | None,
    ) -> None:
        """Build the partitions (in worker processes when asked) and write what changed.

        ``stored``: every stored entity's version. ``meanwhile`` is the parent's own catalog
        work (links, identity index, history): it runs while the workers build, instead of
        after them.
        """
        now = utc_now()
        versions = _versions(known, stored)
        by_partition: dict[int, Known] = defaultdict(dict)
        for entity_id, entry in versions.items():
            by_partition[partition_of(entity_key(self.entity_type, entity_id), partitions)][
                entity_id
            ] = entry
        dictionaries = self.project.codec.dictionaries.subset(self.entity_type)
        jobs = [
            BuildJob(
                p,
                spill.path(str(p)),
                spill.key,
                self.schema,
                self.project.secrets.key_ring,
                self.full,
                run_id,
                started,
                now,
                by_partition.get(p, {}),
                rules_version=self.schema.rules,
                dictionaries=dictionaries,
            )
            for p in range(partitions)
        ]
        if pool is not None:
            results = pool.imap_unordered(build_partition, jobs)
            meanwhile()
            self._write_results(results, known, now)
        else:
            meanwhile()
            self._write_results(map(build_partition, jobs), known, now)

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
                store.put_many(
                    [
                        StoredBlob(
                            self.entity_type,
                            b.entity_id,
                            b.version,
                            b.blob,
                            expected_version=b.expected_version,
                        )
                        for b in batch
                    ]
                )
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
                catalog.apply_batch(
                    records,
                    ((b.entity_id, SourceRef(*ref)) for b in batch for ref in b.refs),
                    self.entity_type,
                    previous=refs_before,
                )
                self.progress("store", len(batch), None)

    def _run_incremental(self, index: IdentityIndex, run_id: int, started: str) -> None:
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
        self._patch(patch, run_id, started, stored)
        stored.clear()
        if resolve or identity or deferred:
            self._resolve_again(resolve, identity, deferred, index, run_id, started)
        self.report.entities[self.entity_type] = self.project.catalog.count(self.entity_type)

    def _place_children(
        self,
        changed: Mapping[str, list[Row]],
        identity_keys: set[tuple[str, str]],
        resolve: set[str],
        known: Mapping[tuple[str, str], str],
    ) -> tuple[dict[str, list[_Item]], list[_Item]]:
        """Find the entity of each changed child row where that needs no resolution.

        Returns the rows to patch into each entity, and the rows left to the resolution: those
        whose parent is a changed identity record, whose entity is resolved again anyway, that
        moved from one entity to another (both are then resolved again, ``resolve`` grows), or
        whose parent no entity holds (counted as orphans there). ``known``: changed identity
        rows whose entity is known without resolving.
        """
        catalog = self.project.catalog
        owner: dict[tuple[str, str], str | None] = dict(known)
        placed: list[tuple[_Item, str | None]] = []
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
                        _Item(
                            table, row, key, held_by=before[0] if before else None, new=not before
                        ),
                        entity,
                    )
                )
        patch: dict[str, list[_Item]] = defaultdict(list)
        deferred: list[_Item] = []
        for item, entity in placed:
            if entity is None or entity in resolve:
                deferred.append(item)
            else:
                patch[entity].append(item)
        return patch, deferred

    def _patch(
        self,
        patch: Mapping[str, list[_Item]],
        run_id: int,
        started: str,
        blobs: dict[str, StoredBlob] | None = None,
    ) -> None:
        """Put child rows into entities whose records did not change, without resolving.

        The stored image is patched in place (the new rows inserted, changed ones updated)
        and its fingerprint follows from the catalog's; an entity whose catalog entry does not
        describe its image exactly (another schema or fingerprint scheme, a version the
        catalog missed) is rebuilt from its rows instead. With ``workers`` and enough
        entities, worker processes patch batches while this process writes finished ones.
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
        rebuild: dict[str, list[_Item]] = {}
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
                    [(i.table.name, i.row, self._lineage(i, run_id, started), i.new) for i in rows],
                    [(i.table.source, i.table.source_table, i.key) for i in rows],
                )
            )
        batches = [
            PatchBatch(
                self.schema,
                self.project.secrets.key_ring,
                now,
                run_id,
                items[start : start + _PATCH_BATCH],
                rules_version=self.schema.rules,
                dictionaries=self.project.codec.dictionaries.subset(
                    self.entity_type,
                    {dictionary_id_of(i.blob) for i in items[start : start + _PATCH_BATCH]},
                ),
            )
            for start in range(0, len(items), _PATCH_BATCH)
        ]
        with contextlib.ExitStack() as stack:
            done: Iterable[tuple[list[BuiltEntity], int]]
            if self.workers > 1 and len(items) >= _PATCH_IN_WORKERS_FROM:
                context = multiprocessing.get_context("spawn")
                pool = stack.enter_context(context.Pool(self.workers, initializer=gc.disable))
                done = pool.imap(patch_batch, batches)
            else:
                done = map(patch_batch, batches)
            self._write_results(
                (PartitionResult(0, built, unchanged) for built, unchanged in done), known, now
            )
        if rebuild:
            self._rebuild(rebuild, run_id, started)

    def _rebuild(self, patch: Mapping[str, list[_Item]], run_id: int, started: str) -> None:
        """Rebuild entities from their stored rows and some new ones, without resolving."""
        stored = self._items_of_entities(set(patch))
        contents: dict[str, EntityContent] = {}
        refs_before: dict[str, list[SourceRef]] = {}
        for entity_id, new_items in patch.items():
            items = {(i.table.name, i.key): i for i in stored.get(entity_id, [])}
            refs_before[entity_id] = [i.ref for i in items.values()]
            items.update({(i.table.name, i.key): i for i in new_items})
            contents[entity_id] = self._content(entity_id, items.values(), run_id, started)
        known = self.project.catalog.entities_in(self.entity_type, patch)
        self._write(contents, known, run_id, refs_before)

    def _resolve_again(
        self,
        resolve: set[str],
        identity: list[tuple[SourceRef, dict[str, str | None], _Item]],
        deferred: list[_Item],
        index: IdentityIndex,
        run_id: int,
        started: str,
    ) -> None:
        """Resolve the records of the given entities with the changed ones, and write.

        Only identity rows are read to resolve. An entity that keeps exactly its records (a
        customer who moved city) is patched like one that gained an order; only entities
        that merge, split, appear or lose a row to another entity are rebuilt.
        """
        catalog = self.project.catalog
        roots = [t for t in self.tables if t.parent is None]
        held = self._items_of_entities(resolve, roots)
        merged: dict[tuple[str, str], _Item] = {}
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
        patch: dict[str, list[_Item]] = defaultdict(list)
        for ref, _, item in identity:
            holder = previous.get(ref)
            if holder is not None and holder in keeps:
                patch[holder].append(item)
        for item, owner in zip(deferred, owners, strict=True):
            if owner is not None:
                patch[owner].append(item)
        self._patch(patch, run_id, started)
        self._rebuild_resolved(
            [(e, m) for e, m in zip(ids, clusters, strict=True) if e not in keeps],
            resolve - keeps,
            item_of,
            [item for item, owner in zip(deferred, owners, strict=True) if owner not in keeps],
            {(i.table.name, i.key) for i in deferred},
            known,
            run_id,
            started,
        )
        self._record(
            resolution,
            ids,
            clusters,
            previous,
            {ref: values for ref, values, _ in identity_all},
            run_id,
            started,
            affected=resolve,
            index=index,
            everything=False,
            changed={ref for ref, _, _ in identity},
        )

    def _deferred_owners(
        self,
        deferred: Sequence[_Item],
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        item_of: Mapping[SourceRef, _Item],
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
        item_of: Mapping[SourceRef, _Item],
        new_children: Sequence[_Item],
        replaced: set[tuple[str, str]],
        known: dict[str, EntityRecord],
        run_id: int,
        started: str,
    ) -> None:
        """Assemble and build the entities whose records changed, from their stored rows."""
        if not clusters:
            return
        stored = self._items_of_entities(old)
        refs_before: dict[str, list[SourceRef]] = defaultdict(list)
        children: dict[str, list[_Item]] = defaultdict(list)
        for entity_id, items in stored.items():
            for item in items:
                table = item.table
                refs_before[entity_id].append(item.ref)
                if table.parent is not None and (table.name, item.key) not in replaced:
                    children[table.name].append(item)
        for item in new_children:
            children[item.table.name].append(item)
        ids = [entity_id for entity_id, _ in clusters]
        contents = self._assemble(
            ids, [members for _, members in clusters], item_of, children, run_id, started
        )
        self._write(contents, known, run_id, refs_before)

    def _items_of_entities(
        self, entity_ids: set[str], tables: Sequence[TableDef] | None = None
    ) -> dict[str, list[_Item]]:
        """The rows (of every table, or of ``tables``) of some entities, with lineage."""
        items: dict[str, list[_Item]] = {}
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
                    found.append(_Item(table, row, key, lineage.get((table.name, key))))
        return items

    @staticmethod
    def _lineage(item: _Item, run_id: int, started: str) -> Lineage:
        """A row's lineage: kept from its image, or new when it was extracted in this run."""
        return item.lineage or new_lineage(item.table, item.key, started, run_id)

    # -- applying a resolution --------------------------------------------------------------

    def _record(
        self,
        resolution: Resolution[SourceRef],
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        identity_previous: Mapping[SourceRef, str],
        keys_of: Mapping[SourceRef, Values] | Mapping[SourceRef, Hashed],
        run_id: int,
        started: str,
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
            at=started,
            run_id=run_id,
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
        catalog.record_history(self.entity_type, events, aliases, run_id, current=ids)
        self.report.merged += sum(1 for e in events if e.kind == "merge")
        self.report.split += sum(1 for e in events if e.kind == "split")

    def _assemble(
        self,
        ids: Sequence[str],
        clusters: Sequence[Sequence[SourceRef]],
        item_of: Mapping[SourceRef, _Item],
        children: Mapping[str, list[_Item]],
        run_id: int,
        started: str,
    ) -> dict[str, EntityContent]:
        """Group the records of each cluster and the child rows they own into entities."""
        grouped: dict[str, list[_Item]] = defaultdict(list)
        entity_of: dict[tuple[str, str], str] = {}

        def add(entity_id: str, item: _Item) -> None:
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
        return {e: self._content(e, items, run_id, started) for e, items in grouped.items()}

    def _content(
        self, entity_id: str, items: Iterable[_Item], run_id: int, started: str
    ) -> EntityContent:
        """An entity's rows and their lineage, ready to build."""
        content = EntityContent(entity_id, {t.name: [] for t in self.tables}, [])
        for item in items:
            content.rows[item.table.name].append(item.row)
            content.lineage.append(self._lineage(item, run_id, started))
        return content

    def _write(
        self,
        contents: dict[str, EntityContent],
        known: dict[str, EntityRecord],
        run_id: int,
        refs_before: Mapping[str, Iterable[SourceRef]],
    ) -> None:
        """Build and write the rebuilt entities whose content (or schema) changed."""
        versions = _versions(known, self.project.store.versions(self.entity_type, sorted(contents)))
        now = utc_now()
        built, unchanged = build_entities(
            (contents[e] for e in sorted(contents)),
            self.schema,
            self.project.codec,
            versions,
            full=self.full,
            run_id=run_id,
            built_at=now,
            rules_version=self.schema.rules,
        )
        self._write_results(
            [PartitionResult(0, built, unchanged)], known, now, refs_before=refs_before
        )

    def watermarks(self) -> dict[tuple[str, str, str], Any]:
        """The newest watermark value read per table in this run."""
        return dict(self._marks)
