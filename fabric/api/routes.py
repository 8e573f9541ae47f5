"""Route handlers: thin translations between HTTP and :class:`EntityService`.

Handlers that touch SQLite hand the work to :class:`Offload`'s threads, so apsw work never
blocks the event loop. Each declares the role route it needs (``opt={"route": ...}``), which
:mod:`fabric.api.gate` enforces before it runs, and takes its :class:`Call` from the request.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import FromPath, QueryParameter
from litestar.response.base import ASGIResponse

from fabric.api.context import AppParts, Call
from fabric.api.schema import BEARER, Catalog, EntityDocument, ErrorBody, Lineage, Status, answers
from fabric.project import Project
from fabric.services.describe import describe
from fabric.services.entities import table_list

__all__ = ["find_entity", "get_catalog", "get_entity", "get_lineage", "health", "ready"]

_DOCUMENT = {
    "entity_type": "customer",
    "entity_id": "3f1c9a2b7d4e",
    "version": 3,
    "built_at": "2026-11-26T23:16:45+00:00",
    "policy": "analyst",
    "tables": {
        "crm_customers": [
            {"id": 88710, "first_name": "Patricia", "email": "tok_ec3c6715p_3S4C", "zip": "39***"}
        ]
    },
}


@get(
    "/health",
    sync_to_thread=False,
    tags=["ops"],
    summary="Liveness; no auth",
    responses=answers(Status, {"status": "ok"}, keyed=False, description="the process is up"),
)
def health() -> dict[str, str]:
    """Answer while the process is up."""
    return {"status": "ok"}


def _probe(project: Project) -> None:
    project.catalog.count()
    project.store.get(next(iter(project.config.entities)), "\x01ready-probe")


@get(
    "/ready",
    tags=["ops"],
    summary="Readiness: the store and the catalog answer; no auth",
    responses={
        **answers(
            Status, {"status": "ready"}, keyed=False, description="the store and catalog answer"
        ),
        503: ResponseSpec(
            ErrorBody,
            description="the store or the catalog does not answer",
            examples=[
                Example(
                    value={
                        "error": {
                            "status": 503,
                            "code": "unavailable",
                            "message": "not ready (CantOpenError)",
                        }
                    }
                )
            ],
            generate_examples=False,
        ),
    },
)
async def ready(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Answer 200 when a query on the catalog and on the store succeed, else 503."""
    parts = AppParts.of(request)
    try:
        await parts.offload.run(_probe, parts.reloader.current.project)
    except Exception as exc:  # any failure means not ready; the type is enough to log
        raise ServiceUnavailableException(f"not ready ({type(exc).__name__})") from exc
    return {"status": "ready"}


@get(
    "/v1/entities/{entity_type:str}/{entity_id:str}",
    tags=["entities"],
    summary="One entity, masked for the caller's role",
    security=BEARER,
    opt={"route": "entities"},
    responses=answers(EntityDocument, _DOCUMENT, 400, 404, 503),
)
async def get_entity(
    entity_type: FromPath[str],
    entity_id: FromPath[str],
    request: Request[Any, Any, Any],
    tables: Annotated[
        str | None,
        QueryParameter(description="comma-separated table names to return (default: all)"),
    ] = None,
) -> ASGIResponse:
    """Return the entity's tables and rows as the caller's role may see them."""
    call = Call.of(request)
    wanted = table_list(tables)
    # Served a moment ago (api.fresh_ms): answered here, without a trip to a thread, and
    # sent as the response made for it then (a hot entity's is made once).
    recent = call.entities.recent_document(entity_type, entity_id, call.caller.role, wanted)
    if recent is not None:
        return call.json(recent)
    # Lookups asked at the same time are read together: under load, one read of many
    # entities' versions and documents (one round trip on PostgreSQL) instead of one each.
    entities = call.entities
    answer: dict[str, Any] = await call.gather(
        ("document", id(entities)),
        entities.document_batch,
        (entity_type, entity_id, call.caller.role, wanted),
    )
    return call.json.once(answer)


@get(
    "/v1/entities/{entity_type:str}",
    tags=["entities"],
    summary="Find the entity a source record belongs to",
    security=BEARER,
    opt={"route": "entities"},
    responses=answers(EntityDocument, _DOCUMENT, 400, 404, 503),
)
async def find_entity(
    entity_type: FromPath[str],
    request: Request[Any, Any, Any],
    source: Annotated[
        str, QueryParameter(description="source system (crm) or system.table (billing.payments)")
    ],
    key: Annotated[str, QueryParameter(description="primary key of the source record")],
) -> dict[str, Any]:
    """Return the entity holding the record ``source``/``key``, masked for the caller."""
    call = Call.of(request)
    return await call.run(
        call.entities.find_document, entity_type, source, key, role=call.caller.role
    )


@get(
    "/v1/entities/{entity_type:str}/{entity_id:str}/lineage",
    tags=["entities"],
    summary="Where each row came from; the links, merges and splits that made the entity",
    description=(
        "Per row: entity table, key, source, source table, source key, extraction time and "
        "sync run. Links: the record pairs resolution joined, with rule, score and "
        "similarities (never values). Events: merges and splits. Roles without a clear "
        "policy see keys as keyed hashes (`key_...`)."
    ),
    security=BEARER,
    opt={"route": "lineage"},
    responses=answers(
        Lineage,
        {
            "entity_type": "customer",
            "entity_id": "3f1c9a2b7d4e",
            "policy": "analyst",
            "rows": [
                {
                    "table": "crm_customers",
                    "row_key": "key_35395b1371a92caa4471080733f9cf6d",
                    "source": "crm",
                    "source_table": "customers",
                    "source_key": "key_35395b1371a92caa4471080733f9cf6d",
                    "extracted_at": "2026-11-26T23:16:02+00:00",
                    "sync_run": 1,
                }
            ],
            "links": [
                {
                    "records": ["crm:customers:key_3539…", "billing:accounts:key_1264…"],
                    "rule": "email_exact",
                    "score": None,
                    "comparisons": {"email": 1.0},
                }
            ],
            "events": [],
        },
        400,
        404,
        503,
    ),
)
async def get_lineage(
    entity_type: FromPath[str],
    entity_id: FromPath[str],
    request: Request[Any, Any, Any],
) -> dict[str, Any]:
    """Return the entity's lineage as the caller's role may see it."""
    call = Call.of(request)
    return await call.run(call.entities.lineage, entity_type, entity_id, role=call.caller.role)


@get(
    "/v1/catalog",
    tags=["catalog"],
    summary="Entity types, tables, columns, PII classes, operators per role, views, sources",
    description=(
        "Each column's PII class (judged by its name) and the operator each role's policy "
        "applies to it; feature views with their definitions; sources by kind (never their "
        "URLs) and the last sync; roles and their routes. Never a value or a key."
    ),
    security=BEARER,
    opt={"route": "catalog"},
    responses=answers(Catalog, None, 503, description="the project's description"),
)
async def get_catalog(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Return the project's description."""
    call = Call.of(request)
    return await call.run(describe, call.project)
