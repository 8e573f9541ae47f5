"""`fabric store stats`: what a project's store holds and how large it is on disk."""

from __future__ import annotations

from typing import Any

from fabric.project import Project

__all__ = ["store_figures"]


def store_figures(project: Project) -> dict[str, Any]:
    """Entity counts per type (from the catalog), the store's images, blob and file sizes
    (postgres: the blobs' tables on the server), the catalog's size on disk (None on
    postgres), and the last sync run (None before any)."""
    stats = project.store.stats()
    catalog_bytes = None
    if not project.shared:
        catalog_path = project.store_dir / "catalog.db"
        # The catalog's write-ahead log and shared memory count too: they are its size.
        catalog_bytes = sum(
            p.stat().st_size for p in catalog_path.parent.glob("catalog.db*") if p.is_file()
        )
    runs = project.catalog.runs(1)
    return {
        "backend": project.config.store.backend,
        "entities": {t: project.catalog.count(t) for t in project.config.entities},
        "stored_entities": stats.entities,
        "blob_bytes": stats.blob_bytes,
        "shard_file_bytes": stats.file_bytes,
        "catalog_file_bytes": catalog_bytes,
        "shards": stats.partitions,
        "bytes_per_entity": round(stats.file_bytes / stats.entities) if stats.entities else 0,
        "last_sync": None
        if not runs
        else {
            "id": runs[0].id,
            "status": runs[0].status,
            "finished_at": runs[0].finished_at,
            "rules_version": runs[0].rules_version,
        },
    }
