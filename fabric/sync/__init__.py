"""Sync: extract sources, resolve records into entities, build and store micro-databases.

The order matters for "bad input loses nothing": every source table is reflected and every
rule file compiled *before* anything is written, so a missing table or a broken rule stops the
run with the store untouched; and every row a run needs is read before its first write, so a
source that fails mid-run leaves the store as it was. Entities whose content did not change
keep their version and are not rewritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fabric.sync.report import ProgressCallback, SyncReport, key_text

if TYPE_CHECKING:
    from fabric.sync.run import paused_gc, sync_project

__all__ = ["ProgressCallback", "SyncReport", "key_text", "paused_gc", "sync_project"]


def __getattr__(name: str) -> Any:
    # Worker processes import this package's job modules (build, patch, values), and a
    # spawned worker spent most of its start-up importing what the sync itself needs (the
    # sources' drivers, the config models): that is imported when first asked for instead.
    if name in ("paused_gc", "sync_project"):
        from fabric.sync import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
