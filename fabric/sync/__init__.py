"""Sync: extract sources, resolve records into entities, build and store micro-databases.

The order matters for "bad input loses nothing": every source table is reflected and every
rule file compiled *before* anything is written, so a missing table or a broken rule stops the
run with the store untouched; and every row a run needs is read before its first write, so a
source that fails mid-run leaves the store as it was. Entities whose content did not change
keep their version and are not rewritten.

The stages follow the data: :mod:`~fabric.sync.reading` (source rows), then
:mod:`~fabric.sync.full` or :mod:`~fabric.sync.incremental`, which hand pure tasks
(:mod:`~fabric.sync.values`, :mod:`~fabric.sync.build`, :mod:`~fabric.sync.patch`) to an
executor (:mod:`fabric.executors`: inline, local processes or Dask), and
:mod:`~fabric.sync.apply`, which writes what they return and records the resolution.
"""

from __future__ import annotations

from fabric.sync.report import ProgressCallback, SyncReport, key_text
from fabric.sync.run import open_sync_executor, paused_gc, sync_project

__all__ = [
    "ProgressCallback",
    "SyncReport",
    "key_text",
    "open_sync_executor",
    "paused_gc",
    "sync_project",
]
