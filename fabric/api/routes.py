"""Route handlers: thin translations between HTTP and :class:`EntityService`.

Handlers that touch SQLite run in Litestar's thread pool (``sync_to_thread=True``), so apsw
work never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter

from fabric.api.auth import Caller
from fabric.describe import describe
from fabric.entities import EntityService

__all__ = ["find_entity", "get_catalog", "get_entity", "get_lineage", "health", "ready"]


@get("/health", sync_to_thread=False, tags=["ops"], summary="Liveness; no auth")
def health() -> dict[str, str]:
    """Answer while the process is up."""
    return {"status": "ok"}


@get(
    "/ready",
    sync_to_thread=True,
    tags=["ops"],
    summary="Readiness: the store and the catalog answer; no auth",
    responses={503: ResponseSpec(None, description="the store or the catalog does not answer")},
)
def ready(service: NamedDependency[EntityService]) -> dict[str, str]:
    """Answer 200 when a query on the catalog and on the store succeed, else 503."""
    project = service.project
    try:
        project.catalog.count()
        project.store.get(next(iter(project.config.entities)), "\x01ready-probe")
    except Exception as exc:  # any failure means not ready; the type is enough to log
        raise ServiceUnavailableException(f"not ready ({type(exc).__name__})") from exc
    return {"status": "ready"}


@get(
    "/v1/entities/{entity_type:str}/{entity_id:str}",
    sync_to_thread=True,
    tags=["entities"],
    summary="One entity, masked for the caller's role",
)
def get_entity(
    entity_type: FromPath[str],
    entity_id: FromPath[str],
    caller: NamedDependency[Caller],
    service: NamedDependency[EntityService],
    tables: Annotated[
        str | None,
        QueryParameter(description="comma-separated table names to return (default: all)"),
    ] = None,
) -> dict[str, Any]:
    """Return the entity's tables and rows as the caller's role may see them."""
    caller.require("entities")
    wanted = [t.strip() for t in tables.split(",") if t.strip()] if tables else None
    return service.document(entity_type, entity_id, role=caller.role, tables=wanted)


@get(
    "/v1/entities/{entity_type:str}",
    sync_to_thread=True,
    tags=["entities"],
    summary="Find the entity a source record belongs to",
)
def find_entity(
    entity_type: FromPath[str],
    caller: NamedDependency[Caller],
    service: NamedDependency[EntityService],
    source: Annotated[
        str, QueryParameter(description="source system (crm) or system.table (billing.payments)")
    ],
    key: Annotated[str, QueryParameter(description="primary key of the source record")],
) -> dict[str, Any]:
    """Return the entity holding the record ``source``/``key``, masked for the caller."""
    caller.require("entities")
    entity_id = service.find(entity_type, source, key)
    return service.document(entity_type, entity_id, role=caller.role)


@get(
    "/v1/entities/{entity_type:str}/{entity_id:str}/lineage",
    sync_to_thread=True,
    tags=["entities"],
    summary="Where each row came from; the links, merges and splits that made the entity",
    description=(
        "Per row: entity table, key, source, source table, source key, extraction time and "
        "sync run. Links: the record pairs resolution joined, with rule, score and "
        "similarities (never values). Events: merges and splits. Roles without a clear "
        "policy see keys as keyed hashes (`key_...`)."
    ),
)
def get_lineage(
    entity_type: FromPath[str],
    entity_id: FromPath[str],
    caller: NamedDependency[Caller],
    service: NamedDependency[EntityService],
) -> dict[str, Any]:
    """Return the entity's lineage as the caller's role may see it."""
    caller.require("lineage")
    return service.lineage(entity_type, entity_id, role=caller.role)


@get(
    "/v1/catalog",
    sync_to_thread=True,
    tags=["catalog"],
    summary="Entity types, tables, columns, PII classes, operators per role, views, sources",
    description=(
        "Each column's PII class (judged by its name) and the operator each role's policy "
        "applies to it; feature views with their definitions; sources by kind (never their "
        "URLs) and the last sync; roles and their routes. Never a value or a key."
    ),
)
def get_catalog(
    caller: NamedDependency[Caller], service: NamedDependency[EntityService]
) -> dict[str, Any]:
    """Return the project's description."""
    caller.require("catalog")
    return describe(service.project)
