"""Materialize what the API serves (:mod:`fabric.store.online`): the current vector of
every entity whose row is missing, stale or past its horizon, and the document of every
entity whose masked copy is missing or stale, for each masking policy a role sees.

`fabric sync` ends with this; `fabric materialize` runs it alone. Vectors are computed in
chunks by the export's code path, so a served vector equals the exported row; documents by
the entity read path, so a served document equals one masked on request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fabric.entities import EntityService
from fabric.errors import StoreError
from fabric.features.compute import columns_read, compute_many, micros
from fabric.features.spec import FeatureView
from fabric.store.base import StoredBlob
from fabric.store.online import OnlineStore, OnlineVector
from fabric.store.sqlite import apsw

__all__ = ["Materialized", "compute_vectors", "materialize"]

#: Entities read and computed together when materializing.
_CHUNK = 2000


@dataclass
class Materialized:
    """What :func:`materialize` did: vectors written per view, masked documents written
    per policy, and rows dropped."""

    written: dict[str, int]
    dropped: int
    documents: dict[str, int] = field(default_factory=dict)


def compute_vectors(
    entities: EntityService, view: FeatureView, blobs: Sequence[StoredBlob], moment: int
) -> list[OnlineVector]:
    """The vectors of stored entities at ``moment`` (microseconds), with their horizons:
    one pass over all of them, as an export computes."""
    if not blobs:
        return []
    rows = entities.read_flat(blobs, columns_read(view))
    done = compute_many(view, rows, range(len(blobs)), [moment] * len(blobs), horizons=True)
    assert done.until is not None
    existed, until = done.existed.tolist(), done.until.tolist()
    names = list(done.columns)
    values = [column.to_pylist() for column in done.columns.values()]
    return [
        OnlineVector(
            blob.entity_id,
            blob.version,
            moment,
            until[at],
            existed[at],
            {name: column[at] for name, column in zip(names, values, strict=True)},
        )
        for at, blob in enumerate(blobs)
    ]


def materialize(
    entities: EntityService,
    online: OnlineStore,
    views: Mapping[str, FeatureView],
    *,
    only: Sequence[str] | None = None,
    everything: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Materialized:
    """Bring the online store up to date with the entity store, as of now.

    ``views`` are every view declared; ``only`` limits the work to some of them (and skips
    documents). For each view, every entity whose row is missing, of another version, or
    past its horizon is computed again (with ``everything``, every entity); rows of
    entities no longer stored, and of views no longer declared or redefined, are dropped.
    Then each masking policy a role sees (not clear ones: reading is all they cost) gets
    the masked document of every entity whose copy is missing or of another version or
    masking fingerprint.

    Raises:
        StoreError: the online store cannot be written.
    """
    # To the second, as the API's "now" is: a request in the same second finds the row.
    moment = micros(datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    catalog = entities.project.catalog
    written: dict[str, int] = {}
    try:
        dropped = online.prune(views)
        for view in views.values():
            if only is not None and view.name not in only:
                continue
            current = {e: r.version for e, r in catalog.entities(view.entity_type).items()}
            held = online.held(view)
            gone = [e for e in held if e not in current]
            if gone:
                online.forget(view, gone)
                dropped += len(gone)
            due = [
                e
                for e, version in current.items()
                if everything
                or (row := held.get(e)) is None
                or row[0] != version
                or row[1] <= moment
            ]
            written[view.name] = 0
            stage = f"materialize {view.name}"
            if progress is not None:
                progress(stage, 0, len(due))
            for start in range(0, len(due), _CHUNK):
                chunk = due[start : start + _CHUNK]
                stored = entities.project.store.get_many(view.entity_type, chunk)
                blobs = [stored[e] for e in chunk if e in stored]  # one may have gone since
                written[view.name] += online.put_many(
                    view, compute_vectors(entities, view, blobs, moment)
                )
                if progress is not None:
                    progress(stage, len(chunk), len(due))
        documents = {} if only is not None else _documents(entities, online, everything, progress)
        dropped += documents.pop("", 0)
    except apsw.Error as exc:
        raise StoreError(
            f"the online store {online.path.name} could not be written: {exc}"
        ) from exc
    return Materialized(written, dropped, documents)


def _documents(
    entities: EntityService,
    online: OnlineStore,
    everything: bool,
    progress: Callable[[str, int, int | None], None] | None,
) -> dict[str, int]:
    """Masked documents of every entity that needs one, per policy (``""``: rows dropped)."""
    project = entities.project
    fingerprint = project.masking_fingerprint
    policies = {p.name: p for p in map(project.policy_for, project.config.roles) if not p.clear}
    written: dict[str, int] = {"": online.prune_documents(list(policies), fingerprint)}
    for entity_type in project.config.entities:
        current = {e: r.version for e, r in project.catalog.entities(entity_type).items()}
        for name, policy in policies.items():
            held = online.held_documents(entity_type, name, fingerprint)
            gone = [e for e in held if e not in current]
            if gone:
                online.forget_documents(entity_type, gone)
                written[""] += len(gone)
            due = [e for e, v in current.items() if everything or held.get(e) != v]
            written.setdefault(name, 0)
            stage = f"materialize {name} documents"
            if progress is not None:
                progress(stage, 0, len(due))
            for start in range(0, len(due), _CHUNK):
                chunk = due[start : start + _CHUNK]
                stored = project.store.get_many(entity_type, chunk)
                blobs = [stored[e] for e in chunk if e in stored]
                written[name] += online.put_documents(
                    name, fingerprint, entities.masked_documents(blobs, policy)
                )
                if progress is not None:
                    progress(stage, len(chunk), len(due))
    return written
