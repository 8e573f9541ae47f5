"""Materialize what the API serves (:mod:`fabric.store.online`): the current vector of
every entity whose row is missing, stale or past its horizon, and the document of every
entity whose masked copy is missing or stale, for each masking policy a role sees.

`fabric sync` ends with this; `fabric materialize` runs it alone. Vectors are computed in
chunks by the export's code path, so a served vector equals the exported row; documents by
the entity read path, so a served document equals one masked on request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fabric.errors import StoreError
from fabric.executors import LocalExecutor
from fabric.features.compute import micros
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import compute_vectors
from fabric.store.online import OnlineStore, Row, SealedTable
from fabric.store.sqlite import apsw

__all__ = ["Materialized", "materialize"]

#: Entities read and computed together when materializing.
_CHUNK = 2000
#: Fewest entities (summed over the jobs) for which materializing starts worker processes.
_IN_WORKERS_FROM = 2000


@dataclass
class Materialized:
    """What :func:`materialize` did: vectors written per view, masked documents written
    per policy, and rows dropped."""

    written: dict[str, int]
    dropped: int
    documents: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job(ABC):
    """One chunk of entities of a type: their vectors of a view, or their documents masked
    by a policy. Picklable: worker processes compute its rows."""

    config: Path
    name: str  # the view, or the policy
    entity_type: str
    ids: list[str]
    moment: int

    @abstractmethod
    def table(self, online: OnlineStore) -> SealedTable[Any]:
        """The table its rows are written to."""

    @abstractmethod
    def rows(self, project: Project, entities: EntityService) -> list[Row]:
        """Its rows, computed, encoded and sealed."""

    @abstractmethod
    def tally(self, done: Materialized) -> dict[str, int]:
        """Where the rows written are counted, by :attr:`name`."""


@dataclass(frozen=True)
class _VectorJob(_Job):
    def table(self, online: OnlineStore) -> SealedTable[Any]:
        return online.vectors

    def rows(self, project: Project, entities: EntityService) -> list[Row]:
        view = project.views()[self.name]
        vectors = compute_vectors(entities, view, self.ids, self.moment)
        return project.online.vectors.rows((view.name, view.definition_hash), vectors)

    def tally(self, done: Materialized) -> dict[str, int]:
        return done.written


@dataclass(frozen=True)
class _DocumentJob(_Job):
    def table(self, online: OnlineStore) -> SealedTable[Any]:
        return online.documents

    def rows(self, project: Project, entities: EntityService) -> list[Row]:
        stored = project.store.get_many(self.entity_type, self.ids)
        blobs = [stored[e] for e in self.ids if e in stored]  # one may have gone since
        documents = entities.masked_documents(blobs, project.policies.for_policy(self.name))
        scope = (self.entity_type, self.name, project.masking_fingerprint)
        return project.online.documents.rows(scope, documents)

    def tally(self, done: Materialized) -> dict[str, int]:
        return done.documents


#: Per worker process: the project it reads (opened once).
_opened: dict[Path, tuple[Project, EntityService]] = {}


def _rows_in_worker(job: _Job) -> list[Row]:
    if job.config not in _opened:
        project = Project.open(job.config)
        _opened[job.config] = (project, EntityService(project))
    project, entities = _opened[job.config]
    return job.rows(project, entities)


def materialize(
    entities: EntityService,
    online: OnlineStore,
    views: Mapping[str, FeatureView],
    *,
    only: Sequence[str] | None = None,
    everything: bool = False,
    workers: int = 1,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Materialized:
    """Bring the online store up to date with the entity store, as of now.

    ``views`` are every view declared; ``only`` limits the work to some of them (and skips
    documents). For each view, every entity whose row is missing, of another version, or
    past its horizon is computed again (with ``everything``, every entity); rows of
    entities no longer stored, and of views no longer declared or redefined, are dropped.
    Then each masking policy a role sees (not clear ones: reading is all they cost) gets
    the masked document of every entity whose copy is missing or of another version or
    masking fingerprint. With ``workers`` above 1, chunks are computed in that many
    processes and written by this one.

    Raises:
        StoreError: the online store cannot be written.
    """
    project = entities.project
    # To the second, as the API's "now" is: a request in the same second finds the row.
    moment = micros(datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    config = Path(project.config.path or "fabric.yaml")
    done = Materialized({}, 0, {})
    jobs: list[_Job] = []
    read: dict[str, dict[str, int]] = {}

    def versions(entity_type: str) -> dict[str, int]:
        """Entity id -> version of a type, read from the catalog once."""
        if entity_type not in read:
            read[entity_type] = project.catalog.versions_of(entity_type)
        return read[entity_type]

    try:
        done.dropped += online.vectors.prune((v.name, v.definition_hash) for v in views.values())
        for view in views.values():
            if only is not None and view.name not in only:
                continue
            current = versions(view.entity_type)
            held = online.vectors.held((view.name, view.definition_hash))
            gone = [e for e in held if e not in current]
            if gone:
                online.vectors.forget((view.name,), gone)
                done.dropped += len(gone)
            due = [
                e
                for e, version in current.items()
                if everything
                or (row := held.get(e)) is None
                or row[0] != version  # (version, computed_at, until)
                or row[2] <= moment
            ]
            done.written[view.name] = 0
            jobs += _chunks(_VectorJob, config, view.name, view.entity_type, due, moment)
        if only is None:
            jobs += _document_jobs(project, online, config, everything, moment, done, versions)
        totals: dict[str, int] = {}
        for job in jobs:
            totals[job.name] = totals.get(job.name, 0) + len(job.ids)
        for name, total in totals.items():
            if progress is not None:
                progress(f"materialize {name}", 0, total)
        for job, rows in _run(project, entities, jobs, workers):
            job.tally(done)[job.name] += job.table(online).write(rows)
            if progress is not None:
                progress(f"materialize {job.name}", len(job.ids), totals[job.name])
    except apsw.Error as exc:
        raise StoreError(
            f"the online store {online.path.name} could not be written: {exc}"
        ) from exc
    return done


def _chunks(
    kind: type[_Job], config: Path, name: str, entity_type: str, due: list[str], moment: int
) -> list[_Job]:
    return [
        kind(config, name, entity_type, due[start : start + _CHUNK], moment)
        for start in range(0, len(due), _CHUNK)
    ]


def _document_jobs(
    project: Project,
    online: OnlineStore,
    config: Path,
    everything: bool,
    moment: int,
    done: Materialized,
    versions: Callable[[str], dict[str, int]],
) -> list[_Job]:
    """Chunks of entities whose masked document is missing or stale, per policy; the
    documents of policies, fingerprints and entities gone are dropped."""
    fingerprint = project.masking_fingerprint
    policies = sorted(
        {p.name for p in map(project.policy_for, project.config.roles) if not p.clear}
    )
    types = project.config.entities
    done.dropped += online.documents.prune((t, p, fingerprint) for t in types for p in policies)
    jobs: list[_Job] = []
    for entity_type in types:
        current = versions(entity_type)
        for name in policies:
            held = online.documents.held((entity_type, name, fingerprint))
            gone = [e for e in held if e not in current]
            if gone:
                online.documents.forget((entity_type,), gone)  # of every policy
                done.dropped += len(gone)
            due = [
                e
                for e, v in current.items()
                if everything or (row := held.get(e)) is None or row[0] != v
            ]
            done.documents[name] = 0
            jobs += _chunks(_DocumentJob, config, name, entity_type, due, moment)
    return jobs


def _run(
    project: Project, entities: EntityService, jobs: list[_Job], workers: int
) -> Iterator[tuple[_Job, list[Row]]]:
    """Each job with its rows, in order: in this process, or in ``workers`` processes
    forked from a server that imported fabric once.

    Starting workers costs a second or more (the server imports fabric, each worker opens
    the project), so the few entities an incremental sync touches are done here.
    """
    entities_due = sum(len(job.ids) for job in jobs)
    if (
        workers <= 1
        or len(jobs) < 2
        or entities_due < _IN_WORKERS_FROM
        or project.config.path is None
    ):
        for job in jobs:
            yield job, job.rows(project, entities)
        return
    with LocalExecutor(min(workers, len(jobs)), preload=[__name__]) as executor:
        yield from zip(jobs, executor.map(_rows_in_worker, jobs), strict=True)
