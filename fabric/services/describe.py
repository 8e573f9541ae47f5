"""What a project holds and what each role sees of it: the document behind `GET /v1/catalog`.

Read from the configuration, the compiled rules and the catalog only: describing a project
never touches its sources (serving must not depend on them) and never shows a value, a key
or a source URL (which may carry a password).
"""

from __future__ import annotations

from typing import Any

from fabric.project import Project
from fabric.rules.suggest import suggest_column

__all__ = ["describe"]


def describe(project: Project) -> dict[str, Any]:
    """Entity types with their tables and columns (each column's PII class, judged by its
    name, and the operator each role's policy applies), feature views with their
    definitions, sources and the last sync, roles and the routes they may use."""
    config = project.config
    schemas = project.catalog.schemas()
    policies = {role: project.policy_for(role) for role in config.roles}
    entity_types: dict[str, Any] = {}
    for entity_type, settings in config.entities.items():
        tables: dict[str, Any] = {}
        for table, columns in schemas.get(entity_type, {}).items():
            feed = settings.tables.get(table)
            tables[table] = {
                "source": None if feed is None else feed.source,
                "source_table": None if feed is None else feed.table,
                "columns": [
                    {
                        "name": column,
                        "pii_class": _pii_class(column),
                        "operators": {
                            role: policy.op_of(entity_type, table, column)
                            for role, policy in policies.items()
                        },
                    }
                    for column in columns
                ],
            }
        entity_types[entity_type] = {
            "entities": project.catalog.count(entity_type),
            "synced": entity_type in schemas,
            "tables": tables,
        }
    last = project.catalog.last_succeeded_run()
    return {
        "project": config.project,
        "entity_types": entity_types,
        "feature_views": {
            name: {
                "entity_type": view.entity_type,
                "version": view.version,
                "definition_sha256": view.definition_hash,
                "features": view.definition.get("features", {}),
            }
            for name, view in project.views().items()
        },
        "sources": {
            name: {"kind": "files" if source.is_files else _scheme(source.url)}
            for name, source in config.sources.items()
        },
        "last_sync": None
        if last is None
        else {
            "run": last.id,
            "mode": last.mode,
            "started_at": last.started_at,
            "finished_at": last.finished_at,
        },
        "roles": {
            role: {"policy": settings.policy, "routes": list(settings.routes)}
            for role, settings in config.roles.items()
        },
    }


def _pii_class(column: str) -> str | None:
    """The kind of personal data a column's name says it holds (None: nothing known)."""
    kind = suggest_column(column, ()).kind
    return None if kind == "keep" else kind


def _scheme(url: str | None) -> str:
    """A database URL's dialect (``postgresql``), never the rest of it."""
    if not url:
        return "database"
    return url.partition(":")[0].partition("+")[0] or "database"
