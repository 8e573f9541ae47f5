"""Materialize what the API serves (:mod:`fabric.store.online`): the current vector of
every entity whose row is missing, stale or past its horizon, and the document of every
entity whose masked copy is missing or stale, for each masking policy a role sees.

`fabric sync` ends with this; `fabric materialize` runs it alone. Vectors are computed in
chunks by the export's code path, so a served vector equals the exported row; documents by
the entity read path, so a served document equals one masked on request.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fabric.errors import StoreError
from fabric.features.compute import micros
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import compute_vectors
from fabric.store.online import OnlineStore
from fabric.store.sqlite import apsw

__all__ = ["Materialized", "materialize"]

#: Entities read and computed together when materializing.
_CHUNK = 2000


@dataclass
class Materialized:
    """What :func:`materialize` did: vectors written per view, masked documents written
    per policy, and rows dropped."""

    written: dict[str, int]
    dropped: int
    documents: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    """One chunk: vectors of a view, or documents of a type masked by a policy."""

    config: Path
    kind: str  # "vectors" or "documents"
    name: str  # the view, or the policy
    entity_type: str
    ids: list[str]
    moment: int


def _rows(project: Project, entities: EntityService, job: _Job) -> list[tuple[Any, ...]]:
    """The online store's rows of one chunk, computed, encoded and sealed."""
    if job.kind == "vectors":
        view = project.views()[job.name]
        vectors = compute_vectors(entities, view, job.ids, job.moment)
        return project.online.vector_rows(view, vectors)
    stored = project.store.get_many(job.entity_type, job.ids)
    blobs = [stored[e] for e in job.ids if e in stored]  # one may have gone since
    policy = project.policies.for_policy(job.name)
    documents = entities.masked_documents(blobs, policy)
    return project.online.document_rows(job.name, project.masking_fingerprint, documents)


#: Per worker process: the project it reads (opened once).
_opened: dict[Path, tuple[Project, EntityService]] = {}


def _rows_in_worker(job: _Job) -> list[tuple[Any, ...]]:
    if job.config not in _opened:
        project = Project.open(job.config)
        _opened[job.config] = (project, EntityService(project))
    project, entities = _opened[job.config]
    return _rows(project, entities, job)


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
            entities_of = project.catalog.entities(entity_type)
            read[entity_type] = {e: r.version for e, r in entities_of.items()}
        return read[entity_type]

    try:
        done.dropped += online.prune(views)
        for view in views.values():
            if only is not None and view.name not in only:
                continue
            current = versions(view.entity_type)
            held = online.held(view)
            gone = [e for e in held if e not in current]
            if gone:
                online.forget(view, gone)
                done.dropped += len(gone)
            due = [
                e
                for e, version in current.items()
                if everything
                or (row := held.get(e)) is None
                or row[0] != version
                or row[1] <= moment
            ]
            done.written[view.name] = 0
            jobs += _chunks(config, "vectors", view.name, view.entity_type, due, moment)
        if only is None:
            jobs += _document_jobs(project, online, config, everything, moment, done, versions)
        totals: dict[str, int] = {}
        for job in jobs:
            totals[job.name] = totals.get(job.name, 0) + len(job.ids)
        for name, total in totals.items():
            if progress is not None:
                progress(f"materialize {name}", 0, total)
        for job, rows in _run(project, entities, jobs, workers):
            written = online.write(job.kind, rows)
            (done.written if job.kind == "vectors" else done.documents)[job.name] += written
            if progress is not None:
                progress(f"materialize {job.name}", len(job.ids), totals[job.name])
    except apsw.Error as exc:
        raise StoreError(
            f"the online store {online.path.name} could not be written: {exc}"
        ) from exc
    return done


def _chunks(
    config: Path, kind: str, name: str, entity_type: str, due: list[str], moment: int
) -> list[_Job]:
    return [
        _Job(config, kind, name, entity_type, due[start : start + _CHUNK], moment)
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
    done.dropped += online.prune_documents(policies, fingerprint)
    jobs: list[_Job] = []
    for entity_type in project.config.entities:
        current = versions(entity_type)
        for name in policies:
            held = online.held_documents(entity_type, name, fingerprint)
            gone = [e for e in held if e not in current]
            if gone:
                online.forget_documents(entity_type, gone)
                done.dropped += len(gone)
            due = [e for e, v in current.items() if everything or held.get(e) != v]
            done.documents[name] = 0
            jobs += _chunks(config, "documents", name, entity_type, due, moment)
    return jobs


def _run(
    project: Project, entities: EntityService, jobs: list[_Job], workers: int
) -> Iterator[tuple[_Job, list[tuple[Any, ...]]]]:
    """Each job with its rows, in order: in this process, or in ``workers`` processes
    forked from a server that imported fabric once."""
    if workers <= 1 or len(jobs) < 2 or project.config.path is None:
        for job in jobs:
            yield job, _rows(project, entities, job)
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with context.Pool(min(workers, len(jobs))) as pool:
        yield from zip(jobs, pool.imap(_rows_in_worker, jobs), strict=True)
