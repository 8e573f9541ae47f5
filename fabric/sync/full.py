"""A full sync of one entity type: every row streamed through partition spill files, every
identity record resolved, every partition built in workers, what changed written, what is
gone deleted."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping

from fabric.resolve.clusters import assign_entity_ids
from fabric.resolve.engine import Resolution, resolve_records
from fabric.resolve.index import Hashed, IdentityIndex, index_key
from fabric.store.base import entity_key, partition_of
from fabric.store.catalog import BulkRewrite, EntityRecord, SourceRef, utc_now
from fabric.store.codec import (
    DICTIONARY_SAMPLES,
    new_dictionary_id,
    train_dictionary,
)
from fabric.store.microdb import (
    MicroDbBuilder,
)
from fabric.sync.apply import Applying
from fabric.sync.build import (
    BuildJob,
    Known,
    build_partition,
    partition_contents,
)
from fabric.sync.context import (
    Values,
    entity_versions,
)
from fabric.sync.report import key_text
from fabric.sync.spill import Spill, read_stream
from fabric.sync.values import ValuesJob, match_values

__all__ = ["ENTITIES_PER_PARTITION", "FullMode"]

#: Most entities a full sync's build task takes at once (its rows are in its memory).
ENTITIES_PER_PARTITION = 20_000


class FullMode(Applying):
    """The full sync."""

    def _train_dictionary(self, spill: Spill, partitions: int, entities: int) -> None:
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
                self.sync_run.run_id,
                self.sync_run.started,
                self.sync_run.started,
                {},
            )
            for content in partition_contents(job):
                meta: dict[str, int | str] = {
                    "entity_type": self.entity_type,
                    "entity_id": content.entity_id,
                    "version": 1,
                    "schema_version": self.schema.version,
                    "rules_version": self.schema.rules,
                    "built_at": self.sync_run.started,
                    "sync_run": self.sync_run.run_id,
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

    def _run_full(self, index: IdentityIndex) -> None:
        """Stream every table through partition spill files and build partitions in workers.

        Memory holds the identity records' match values, the owners of parent rows and one
        partition of rows at a time, never whole tables.
        """
        catalog = self.project.catalog
        spill = Spill()
        try:
            self._full_with(spill, index)
        finally:
            spill.remove()
        self.report.entities[self.entity_type] = catalog.count(self.entity_type)

    def _partitions(self, entities: int) -> int:
        """How many partitions a full sync of ``entities`` builds: a few per worker, so
        they share the work evenly, and more as entities grow, so a worker holds at most
        about :data:`ENTITIES_PER_PARTITION` entities' rows at a time (a million customers
        in 8 partitions held 950 MiB per worker)."""
        return max(8, 4 * self.executor.workers, math.ceil(entities / ENTITIES_PER_PARTITION))

    def _identity_values(
        self, spill: Spill
    ) -> tuple[list[tuple[SourceRef, Values]], dict[SourceRef, Hashed]]:
        """Stream the identity tables into the spill; workers compute their match values.

        Returns every record's match values, and the keyed hashes the identity index files
        each under. At most two batches per worker are in flight, so memory stays bounded
        while this process reads on.
        """
        assert self.rules.spec is not None
        spec = self.rules.spec
        identity: list[tuple[SourceRef, Values]] = []
        hashes: dict[SourceRef, Hashed] = {}
        # The refs of each job sent, in order: results come back in the jobs' order.
        sent: deque[list[SourceRef]] = deque()
        key = index_key(self._master)

        def jobs() -> Iterator[ValuesJob]:
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
                    sent.append(refs)
                    yield ValuesJob(
                        self.entity_type, spec, table.name, table.column_names, batch, key
                    )

        for found in self.executor.map(match_values, jobs()):
            for ref, (values, hashed) in zip(sent.popleft(), found, strict=True):
                identity.append((ref, values))
                hashes[ref] = hashed
        return identity, hashes

    def _full_with(
        self,
        spill: Spill,
        index: IdentityIndex,
    ) -> None:
        """The full sync proper, its spill files removed by the caller."""
        catalog = self.project.catalog
        identity, hashes = self._identity_values(spill)
        table_of = {(t.source, t.source_table): t.name for t in self.tables}
        resolution: Resolution[SourceRef] = resolve_records(identity, self.rules)
        self.report.links_refused += len(resolution.refused)
        self.progress("resolve", len(identity), len(identity))
        # The match values are resolution's alone: freed now, their memory serves the rows'
        # placement instead of adding to it (the syncing process's peak).
        identity.clear()
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
        # As many partitions as there are entities for, now that resolution has found them.
        partitions = self._partitions(len(ids))
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
            self._train_dictionary(spill, partitions, len(ids))

            def record() -> None:
                keys.finish()
                self._record(
                    resolution,
                    ids,
                    resolution.clusters,
                    {ref: e for ref, e in previous.items() if ref in hashes},  # records still read
                    hashes,
                    # with images a crashed run stored and never catalogued
                    affected=set(known) | set(stored),
                    index=index,
                    everything=True,
                )

            self._build_and_write(spill, partitions, known, stored, record)
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
        meanwhile: Callable[[], None],
    ) -> None:
        """Build the partitions (in workers when there are) and write what changed.

        ``stored``: every stored entity's version. ``meanwhile`` is the parent's own catalog
        work (links, identity index, history): it runs while the workers build, instead of
        after them.
        """
        now = utc_now()
        versions = entity_versions(known, stored)
        by_partition: dict[int, Known] = defaultdict(dict)
        for entity_id, entry in versions.items():
            by_partition[partition_of(entity_key(self.entity_type, entity_id), partitions)][
                entity_id
            ] = entry
        dictionaries = self.project.codec.dictionaries.subset(self.entity_type)
        # A remote worker cannot open this machine's files: its job carries the partition.
        remote = self.executor.remote
        jobs = [
            BuildJob(
                p,
                spill.contents(str(p)) if remote else spill.path(str(p)),
                spill.key,
                self.schema,
                self.project.secrets.key_ring,
                self.full,
                self.sync_run.run_id,
                self.sync_run.started,
                now,
                by_partition.get(p, {}),
                rules_version=self.schema.rules,
                dictionaries=dictionaries,
            )
            for p in range(partitions)
        ]
        # The builds start now and run while this process does its own catalog work.
        results = self.executor.start(build_partition, jobs, ordered=False)
        meanwhile()
        self._write_results(results, known, now)
