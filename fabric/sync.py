"""Sync: extract every source, resolve records into entities, build and store micro-databases.

The order matters for "bad input loses nothing": every source table is reflected and every
rule file compiled *before* anything is written, so a missing table or a broken rule stops the
run with the store untouched. Entities whose content did not change keep their version and are
not rewritten, which makes a repeated sync cheap and keeps versions meaningful.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fabric.errors import FabricError, SourceError
from fabric.project import Project
from fabric.resolve.clusters import assign_entity_ids
from fabric.resolve.engine import resolve_records
from fabric.store.base import StoredBlob
from fabric.store.catalog import EntityRecord, SourceRef, utc_now
from fabric.store.codec import encode_image
from fabric.store.microdb import EntityContent, EntitySchema, MicroDbBuilder, TableDef

__all__ = ["ProgressCallback", "SyncReport", "key_text", "sync_project"]

#: ``progress(stage, advance, total)``: called as work is done; total None when unknown.
ProgressCallback = Callable[[str, int, int | None], None]


@dataclass
class SyncReport:
    """What a sync run did."""

    run_id: int
    mode: str
    seconds: float = 0.0
    rows_read: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    entities: dict[str, int] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    #: links the match rules found but refused (cannot_link, max_cluster_size): for review
    links_refused: int = 0

    def counts(self) -> dict[str, int]:
        """Counters as recorded in the catalog."""
        return {
            "rows_read": self.rows_read,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
        }


def key_text(value: Any) -> str:
    """Render a key as text the same way whatever numeric type a driver returns (5, 5.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _topological(schema: EntitySchema) -> list[TableDef]:
    """Tables with every parent before its children."""
    done: list[TableDef] = []
    pending = list(schema.tables)
    while pending:
        ready = [t for t in pending if t.parent is None or t.parent in {d.name for d in done}]
        done.extend(ready)
        pending = [t for t in pending if t not in ready]
    return done


class _EntityTypeSync:
    """The work of one sync for one entity type."""

    def __init__(
        self,
        project: Project,
        entity_type: str,
        report: SyncReport,
        progress: ProgressCallback | None,
        full: bool = False,
    ) -> None:
        self.project = project
        self.full = full
        self.entity_type = entity_type
        self.report = report
        self.progress = progress or (lambda stage, n, total: None)
        self.schema = project.schema(entity_type)
        self.rules = project.match_rules(entity_type)

    def layout(self) -> dict[str, list[str]]:
        """Table -> columns of this entity type's micro-database."""
        return {t.name: list(t.column_names) for t in self.schema.tables}

    def _read(self, table: TableDef) -> list[tuple[Any, ...]]:
        """Read a table whole, checking its key identifies every row.

        A NULL or repeated key would silently drop a row or put it into someone else's
        entity, so both stop the run (before anything is written) with counts, never values.
        """
        reader = self.project.source(table.source)
        rows: list[tuple[Any, ...]] = []
        key_at = table.column_names.index(table.key)
        seen: set[str] = set()
        nulls = repeats = 0
        for batch in reader.read(table.source_table, table.column_names):
            for row in batch:
                key = row[key_at]
                if key is None:
                    nulls += 1
                    continue
                text = key_text(key)
                if text in seen:
                    repeats += 1
                seen.add(text)
            rows.extend(batch)
            self.progress(f"extract {table.name}", len(batch), None)
        if nulls or repeats:
            raise SourceError(
                f"source '{table.source}' table '{table.source_table}': {nulls} rows with a "
                f"NULL '{table.key}' and {repeats} repeated '{table.key}' values; the primary "
                f"key must identify every row (fabric.yaml: sources.{table.source}.tables."
                f"{table.source_table}.primary_key)"
            )
        self.report.rows_read += len(rows)
        self.report.rows_by_table[table.name] = len(rows)
        return rows

    def run(self, run_id: int, started: str) -> None:
        catalog, store = self.project.catalog, self.project.store
        tables = _topological(self.schema)
        rows_of: dict[str, list[tuple[Any, ...]]] = {t.name: self._read(t) for t in tables}

        # Resolve identity tables into clusters of source records.
        identity: list[tuple[SourceRef, dict[str, str | None]]] = []
        table_of_ref: dict[SourceRef, tuple[str, int]] = {}
        for table in tables:
            if table.parent is not None:
                continue
            key_at = table.column_names.index(table.key)
            names = table.column_names
            extract = self.rules.extractor(table.name, set(names))
            for index, row in enumerate(rows_of[table.name]):
                ref = SourceRef(table.source, table.source_table, key_text(row[key_at]))
                table_of_ref[ref] = (table.name, index)
                values = extract(dict(zip(names, row, strict=True))) if extract else {}
                identity.append((ref, values))
        resolution = resolve_records(identity, self.rules)
        clusters = resolution.clusters
        self.report.links_refused += len(resolution.refused)
        known = catalog.entities(self.entity_type)
        ids = assign_entity_ids(
            self.entity_type,
            clusters,
            catalog.source_map(self.entity_type),
            {e: r.created_at for e, r in known.items()},
        )
        self.progress("resolve", len(identity), len(identity))

        contents: dict[str, EntityContent] = {}
        entity_of: dict[tuple[str, str], str] = {}
        refs_of: dict[str, list[SourceRef]] = defaultdict(list)

        def add(entity_id: str, table: TableDef, row: tuple[Any, ...], key: str) -> None:
            content = contents.get(entity_id)
            if content is None:
                content = contents[entity_id] = EntityContent(
                    entity_id, {t.name: [] for t in tables}, []
                )
            content.rows[table.name].append(row)
            content.lineage.append(
                (table.name, key, table.source, table.source_table, key, started, run_id)
            )
            entity_of[(table.name, key)] = entity_id
            refs_of[entity_id].append(SourceRef(table.source, table.source_table, key))

        for entity_id, cluster in zip(ids, clusters, strict=True):
            for ref in cluster:
                tname, index = table_of_ref[ref]
                add(entity_id, self.schema.table(tname), rows_of[tname][index], ref.key)
        for table in tables:
            if table.parent is None:
                continue
            assert table.foreign_key is not None
            key_at = table.column_names.index(table.key)
            fk_at = table.column_names.index(table.foreign_key)
            orphans = 0
            for row in rows_of[table.name]:
                owner = entity_of.get((table.parent, key_text(row[fk_at])))
                if owner is None:
                    orphans += 1  # a child whose parent is not in the source: nothing to join
                    continue
                add(owner, table, row, key_text(row[key_at]))
            if orphans:
                self.report.orphans[table.name] = orphans
        rows_of.clear()
        self._store(contents, refs_of, known, run_id)
        catalog.record_schema(self.entity_type, self.schema.version, self.layout())

        gone = sorted(set(known) - set(contents))
        if gone:
            store.delete_many(self.entity_type, gone)
            catalog.delete_entities(self.entity_type, gone)
            self.report.deleted += len(gone)
        self.report.entities[self.entity_type] = len(contents)

    def _store(
        self,
        contents: dict[str, EntityContent],
        refs_of: dict[str, list[SourceRef]],
        known: dict[str, EntityRecord],
        run_id: int,
    ) -> None:
        """Build and write the entities whose content (or schema) changed, in batches.

        Versions come from the store itself, the commit point for images: if a run died
        after a store commit but before the catalog caught up, the next run continues from
        the stored version instead of failing as a stale writer for ever.
        """
        schema_version = self.schema.version
        changed: list[tuple[str, str]] = []
        for entity_id in sorted(contents):
            fingerprint = contents[entity_id].fingerprint()
            previous = known.get(entity_id)
            if (
                not self.full
                and previous is not None
                and previous.fingerprint == fingerprint
                and previous.schema_version == schema_version
            ):
                self.report.unchanged += 1
            else:
                changed.append((entity_id, fingerprint))
        builder = MicroDbBuilder(self.schema)
        batch_size = self.project.config.store.batch_size
        store, catalog = self.project.store, self.project.catalog
        now = utc_now()
        for start in range(0, len(changed), batch_size):
            batch = changed[start : start + batch_size]
            stored = store.versions(self.entity_type, [e for e, _ in batch])
            blobs: list[StoredBlob] = []
            records: list[EntityRecord] = []
            for entity_id, fingerprint in batch:
                previous = known.get(entity_id)
                current = stored.get(entity_id, 0)
                version = max(current, previous.version if previous else 0) + 1
                image = builder.build(
                    contents[entity_id],
                    {
                        "entity_type": self.entity_type,
                        "entity_id": entity_id,
                        "version": version,
                        "schema_version": schema_version,
                        "built_at": now,
                        "sync_run": run_id,
                    },
                )
                blobs.append(
                    StoredBlob(
                        self.entity_type,
                        entity_id,
                        version,
                        encode_image(image),
                        expected_version=current,
                    )
                )
                created_at = now if previous is None else previous.created_at
                records.append(
                    EntityRecord(
                        self.entity_type,
                        entity_id,
                        version,
                        fingerprint,
                        schema_version,
                        created_at,
                        now,
                    )
                )
                if previous is None:
                    self.report.created += 1
                else:
                    self.report.updated += 1
            store.put_many(blobs)
            catalog.apply_batch(
                records,
                ((r.entity_id, ref) for r in records for ref in refs_of[r.entity_id]),
                self.entity_type,
            )
            self.progress("store", len(records), len(changed))


def sync_project(
    project: Project, *, full: bool = False, progress: ProgressCallback | None = None
) -> SyncReport:
    """Extract, resolve, build and store every entity type of the project.

    Every source and rule file is checked before the first write, so bad input leaves the
    store as it was. The run is recorded in the catalog, failed runs included.

    Args:
        project: the opened project.
        full: rebuild and rewrite every entity. Otherwise (mode "changes") every source row
            is still read (watermark-based incremental extraction is not built yet), but only
            entities whose content or schema changed are rebuilt and get a new version.
        progress: optional progress callback.
    """
    started_clock = time.perf_counter()
    # Check everything that can be checked before touching the store: sources and match rules
    # (in the workers' constructors), masking rules, roles and keys.
    workers = [
        _EntityTypeSync(project, etype, SyncReport(0, ""), progress, full)
        for etype in project.config.entities
    ]
    project.check_masking({etype: w.layout() for etype, w in ((w.entity_type, w) for w in workers)})
    catalog = project.catalog
    mode = "full" if full else "changes"
    run_id = catalog.start_run(mode)
    report = SyncReport(run_id=run_id, mode=mode)
    started = utc_now()
    try:
        for worker in workers:
            worker.report = report
            worker.run(run_id, started)
    except FabricError as exc:
        catalog.finish_run(
            run_id, status="failed", counts=report.counts(), error=str(exc).splitlines()[0]
        )
        raise
    except BaseException:
        catalog.finish_run(run_id, status="failed", counts=report.counts(), error="interrupted")
        raise
    report.seconds = time.perf_counter() - started_clock
    catalog.finish_run(run_id, status="succeeded", counts=report.counts())
    return report
