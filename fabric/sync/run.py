"""Run a sync: every entity type in one sync run, recorded in the catalog.

See :mod:`fabric.sync` for the order of the work and why.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator

from fabric.config.documents import read_once
from fabric.errors import ExecutorError, FabricError
from fabric.executors import Executor, ExecutorKind, open_executor
from fabric.project import Project
from fabric.resolve.normalize import clear_caches
from fabric.services.entities import EntityService
from fabric.services.materialize import materialize
from fabric.store.catalog import Catalog, utc_now
from fabric.sync.context import RunContext
from fabric.sync.entity_type import EntityTypeSync
from fabric.sync.report import ProgressCallback, SyncReport

__all__ = ["open_sync_executor", "paused_gc", "sync_project"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run without Python's cyclic garbage collector, turned back on afterwards.

    A sync holds millions of small live objects (rows, records, keys) and allocates millions
    more; every full collection walks all of them, so with the collector on resolution ran
    far longer (benchmarks/README.md, "Sync collector"). What a sync allocates is freed by reference
    counting (rows, tuples and dicts form no cycles), so nothing piles up meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: The modules of a sync's tasks, imported once by the fork server local workers start from.
_TASK_MODULES = ("fabric.sync.build", "fabric.sync.values", "fabric.sync.patch")


def open_sync_executor(
    project: Project,
    *,
    kind: ExecutorKind | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
) -> Executor:
    """Where a sync's tasks run: ``fabric.yaml``'s ``executor:``, with these overrides.

    Raises:
        ExecutorError: a Dask scheduler that cannot be reached or may not be used.
    """
    config = project.config.executor
    if kind == "local" and scheduler is not None:
        raise ExecutorError("a scheduler is for the dask executor, not the local one")
    kind = kind or ("dask" if scheduler is not None else config.kind)
    return open_executor(
        kind,
        workers or config.workers,
        scheduler=scheduler or config.scheduler,
        allow_plaintext=config.allow_plaintext,
        preload=_TASK_MODULES,
        # Workers run without the cyclic collector, as the sync itself does (paused_gc).
        collect=False,
    )


def sync_project(
    project: Project,
    *,
    full: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
) -> SyncReport:
    """Extract, resolve, build and store every entity type of the project.

    Args:
        project: the opened project.
        full: read every row, re-resolve every record and rewrite every entity (also deletes
            entities whose records left the sources). Otherwise the sync is incremental once
            a first sync has run: only rows at or past each table's watermark are read, and
            only the entities they touch are re-resolved and rebuilt.
        progress: optional progress callback.
        workers: worker processes (default: ``executor.workers`` of fabric.yaml, 1). They
            compute match values and build and encrypt entities in a full sync (this process
            reads the sources, resolves and writes), patch entities in an incremental sync
            touching thousands of them, and materialize the online store.
        executor: where the sync's tasks run (the caller closes it); default: one opened
            from fabric.yaml's ``executor:`` with ``workers``, closed at the end.

    Raises:
        FabricError: bad input, sources, rules or keys (the store is left as it was), or the
            executor failed (a run that stopped part-way: the next sync starts over in full).
    """
    started_clock = time.perf_counter()
    # Every rule file is read once: what the run compiles, checks and records as its rules
    # version is one reading of each, whatever is saved meanwhile.
    with read_once(), contextlib.ExitStack() as stack:
        # Check everything that can be checked before touching the store: sources and match
        # rules (in the constructors), masking rules, roles and keys; and reach the executor.
        syncs = [
            EntityTypeSync(project, etype, progress, full) for etype in project.config.entities
        ]
        project.check_masking({s.entity_type: s.layout() for s in syncs})
        rules_version = project.rules_version()
        if executor is None:
            executor = stack.enter_context(open_sync_executor(project, workers=workers))
        catalog = project.catalog
        last = catalog.runs(1)
        if last and last[0].status != "succeeded" and not full:
            # A run that died part-way may have rewritten some entities and not others, and
            # an incremental run only revisits what changed since the watermarks: start over.
            full = True
            for entity_sync in syncs:
                entity_sync.full = True
        mode = "full" if full else "incremental"
        try:
            with paused_gc():
                report = _run(syncs, catalog, mode, rules_version, executor)
        finally:
            clear_caches()  # no source text outlives the run in this process's memory
        # The run is recorded; the online store is a cache of what it wrote, brought up to
        # date now so the API serves current vectors and masked documents without computing.
        # It reads the store's files, so it runs on this machine whatever the executor.
        materializing = time.perf_counter()
        done = materialize(
            EntityService(project),
            project.online,
            project.views(),
            workers=workers or project.config.executor.workers,
            progress=progress,
        )
    report.materialize_seconds = time.perf_counter() - materializing
    report.materialized = done.written
    report.documents = done.documents
    report.seconds = time.perf_counter() - started_clock
    return report


def _run(
    syncs: list[EntityTypeSync],
    catalog: Catalog,
    mode: str,
    rules_version: str,
    executor: Executor,
) -> SyncReport:
    """Sync every entity type as one recorded run, under a rule-set version."""
    run_id = catalog.start_run(mode, rules_version)
    report = SyncReport(run_id=run_id, mode=mode, executor=executor.describe())
    run = RunContext(run_id, utc_now(), report, executor)
    try:
        modes = set()
        for entity_sync in syncs:
            modes.add(entity_sync.run(run))
        # A first sync reads everything: say so, rather than the mode that was asked for.
        report.mode = "incremental" if modes == {"incremental"} else "full"
        marks = {k: v for s in syncs for k, v in s.watermarks().items()}
        catalog.set_watermarks(marks, run_id)
    except FabricError as exc:
        catalog.finish_run(
            run_id, status="failed", counts=report.counts(), error=str(exc).splitlines()[0]
        )
        raise
    except BaseException:
        catalog.finish_run(run_id, status="failed", counts=report.counts(), error="interrupted")
        raise
    catalog.finish_run(run_id, status="succeeded", counts=report.counts(), mode=report.mode)
    return report
