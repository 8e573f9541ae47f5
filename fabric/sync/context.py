"""The state a sync of one entity type shares across its stages, and the rows it moves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fabric.crypto import require_master_key
from fabric.executors import Executor
from fabric.project import Project
from fabric.store.catalog import EntityRecord, SourceRef
from fabric.store.microdb import (
    EntitySchema,
    TableDef,
)
from fabric.sync.build import (
    Known,
)
from fabric.sync.report import ProgressCallback, SyncReport

__all__ = [
    "Item",
    "Lineage",
    "Row",
    "RunContext",
    "TypeState",
    "Values",
    "entity_versions",
    "ref_text",
    "topological",
]


Row = tuple[Any, ...]
Lineage = tuple[Any, ...]
Values = Mapping[str, str | None]


def ref_text(ref: SourceRef) -> str:
    """A record reference as stored in the identity index and in links."""
    return f"{ref.source}.{ref.table}:{ref.key}"


def entity_versions(known: Mapping[str, EntityRecord], stored: Mapping[str, int]) -> Known:
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


def topological(schema: EntitySchema) -> list[TableDef]:
    """Tables with every parent before its children."""
    done: list[TableDef] = []
    pending = list(schema.tables)
    while pending:
        ready = [t for t in pending if t.parent is None or t.parent in {d.name for d in done}]
        done.extend(ready)
        pending = [t for t in pending if t not in ready]
    return done


@dataclass
class Item:
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


@dataclass(frozen=True)
class RunContext:
    """One sync run, as every entity type's stages see it."""

    run_id: int
    #: when the run started (UTC, ISO): the extraction time in new rows' lineage
    started: str
    report: SyncReport
    #: where the run's tasks execute
    executor: Executor


class TypeState:
    """What every stage of one entity type's sync shares. Construction checks sources and
    rules; nothing is written."""

    def __init__(
        self,
        project: Project,
        entity_type: str,
        progress: ProgressCallback | None,
        full: bool = False,
    ) -> None:
        self.project = project
        self.full = full
        self.entity_type = entity_type
        self.progress = progress or (lambda stage, n, total: None)
        self.schema = project.schema(entity_type)
        self.rules = project.match_rules(entity_type)
        self.tables = topological(self.schema)
        self._master = require_master_key(project.secrets.master_key, "sync")
        self._marks: dict[tuple[str, str, str], Any] = {}

    #: the run this sync is part of (set when it runs)
    sync_run: RunContext

    @property
    def report(self) -> SyncReport:
        """The run's report, which every stage adds its counts to."""
        return self.sync_run.report

    @property
    def executor(self) -> Executor:
        """Where this run's tasks execute."""
        return self.sync_run.executor

    def layout(self) -> dict[str, list[str]]:
        """Table -> columns of this entity type's micro-database."""
        return {t.name: list(t.column_names) for t in self.schema.tables}
