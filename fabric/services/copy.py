"""`fabric store copy`: move a store between the embedded and the postgres backend, verified.

Images, the catalog and the online store are copied as they are stored: sealed images and
rows stay sealed, nothing is decrypted, on disk or anywhere else (their associated data binds
entity, version and scope, never a location, so they open the same in the target). Then the
target is checked as ``fabric store verify`` checks a store.

Images go first, a partition at a time; each partition copied is recorded in the target's
catalog (``copy:<source>:<type>:<partition>``), so a copy stopped midway (killed, a server
gone) takes up where it stopped when run again with the same target. The catalog and the
online store follow whole (they are small next to the images), so the target's catalog
never names an image it does not hold. A target that holds entities of another store is
refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fabric.errors import StoreError
from fabric.project import Project
from fabric.services.verify import VerifyReport, verify_store
from fabric.store.base import StoredBlob

__all__ = ["CopyReport", "copy_store", "target_project"]

Progress = Callable[[str, int, int | None], None]

#: The variable a postgres target's URL is handed to the target project in (this process's
#: only: the URL never reaches a file or a log).
_TARGET_ENV = "FABRIC_COPY_TARGET_URL"
_POSTGRES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@dataclass
class CopyReport:
    """What a copy did."""

    target: str
    images: int
    partitions_skipped: int
    catalog_rows: int
    online_rows: int
    verified: VerifyReport


def target_project(project: Project, to: str) -> Project:
    """``project`` with its store at ``to``: a PostgreSQL URL (the postgres backend), or a
    directory (the embedded store), with the same partition count.

    Raises:
        StoreError: ``to`` is the project's own store.
    """
    store = project.config.store
    if to.startswith(_POSTGRES):
        if project.shared and project.store_url() == to:
            raise StoreError("the target is the project's own store: copy it somewhere else")
        os.environ[_TARGET_ENV] = to
        changed = store.model_copy(update={"backend": "postgres", "url_env": _TARGET_ENV})
    else:
        path = Path(to).resolve()
        if not project.shared and path == project.store_dir.resolve():
            raise StoreError("the target is the project's own store: copy it somewhere else")
        changed = store.model_copy(update={"backend": "embedded", "path": path})
    return Project(project.config.model_copy(update={"store": changed}))


def _describe(project: Project) -> str:
    """Where a project's store is (no password)."""
    if project.shared:
        return project.catalog.where
    return str(project.store_dir.resolve())


def copy_store(project: Project, to: str, progress: Progress | None = None) -> CopyReport:
    """Copy ``project``'s store to ``to`` (see the module's docstring) and verify it there.

    Raises:
        StoreError: the target holds another store's entities, or cannot be reached or
            written.
    """
    progress = progress or (lambda stage, n, total: None)
    source_id = hashlib.sha256(_describe(project).encode()).hexdigest()[:16]
    try:
        return _copy(project, to, source_id, progress)
    finally:
        os.environ.pop(_TARGET_ENV, None)  # the target's URL stays no longer than the copy


def _copy(project: Project, to: str, source_id: str, progress: Progress) -> CopyReport:
    """:func:`copy_store`, the target's URL (if any) in this process's environment."""
    with target_project(project, to) as target:
        target_where = _describe(target)
        started = target.catalog.setting("copy_source")
        held = target.catalog.count()
        if started is None and (held or target.store.stats().entities):
            raise StoreError(
                f"the target {target_where} already holds a store ({held} catalogued "
                "entities): copy into an empty one"
            )
        if started is not None and started != source_id:
            raise StoreError(
                f"the target {target_where} holds a copy of another store, stopped midway: "
                "copy into an empty one"
            )
        target.catalog.set_setting("copy_source", source_id)
        images = skipped = 0
        total = project.store.stats().entities
        batch_size = project.config.store.batch_size
        for entity_type in project.config.entities:
            for partition in range(project.store.partitions):
                done = f"copy:{source_id}:{entity_type}:{partition}"
                if target.catalog.setting(done) is not None:
                    skipped += 1
                    continue
                batch: list[StoredBlob] = []
                for blob in project.store.scan(entity_type, partition):
                    batch.append(blob)
                    if len(batch) >= batch_size:
                        images += _put(target, entity_type, batch)
                        progress("copy: images", len(batch), total)
                        batch = []
                if batch:
                    images += _put(target, entity_type, batch)
                    progress("copy: images", len(batch), total)
                target.catalog.set_setting(done, "1")

        def counted(stage: str, n: int) -> None:
            progress(stage, n, None)

        catalog_rows = project.catalog.copy_to(target.catalog, counted)
        # The catalog copied holds the source's settings: the copy marks itself again, so a
        # copy stopped from here on is still taken up, then forgets it was one.
        target.catalog.set_setting("copy_source", source_id)
        online_rows = project.online.vectors.copy_to(target.online.vectors, counted)
        online_rows += project.online.documents.copy_to(target.online.documents, counted)
        target.catalog.forget_settings("copy")
        verified = verify_store(target, progress)
    return CopyReport(target_where, images, skipped, catalog_rows, online_rows, verified)


def _put(target: Project, entity_type: str, batch: list[StoredBlob]) -> int:
    """Write copied images over whatever version the target holds of them."""
    held = target.store.versions(entity_type, [b.entity_id for b in batch])
    target.store.put_many(
        [
            StoredBlob(
                entity_type,
                b.entity_id,
                b.version,
                b.blob,
                expected_version=held.get(b.entity_id, 0),
            )
            for b in batch
        ]
    )
    return len(batch)
