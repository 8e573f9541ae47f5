"""What the OpenAPI schema says each route answers: its success model, its errors, its auth,
and what it accepts.

Handlers build plain dicts (the services' own answers); these msgspec models describe them
for the schema, with examples, and the error responses each route can give, all in the one
error shape of :mod:`fabric.api.errors`. :func:`tailor` then writes into the schema what the
server refuses with a 400, as the project configures it (its sources and tables) and as the
services check it (ids of 1 to 256 characters without NUL), so a request the schema calls
valid is not refused. `tests/api/test_schema.py` holds every answer of every route, errors
included, to what is written here, and every schema-valid request to being accepted
(schemathesis).
"""

from __future__ import annotations

from typing import Any

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIType,
    Operation,
    Parameter,
    Schema,
    SecurityScheme,
)
from msgspec import Struct

from fabric.config.models import ProjectConfig
from fabric.services.entities import MAX_ID_LENGTH, source_table
from fabric.services.features import MAX_BATCH
from fabric.store.catalog import EntityEvent

__all__ = [
    "BEARER",
    "COMPONENTS",
    "Catalog",
    "EntityDocument",
    "ErrorBody",
    "ExportJobStatus",
    "FeatureBatchAnswer",
    "FeatureVector",
    "Lineage",
    "Reloaded",
    "SpineUpload",
    "Status",
    "answers",
    "tailor",
]

#: The security requirement of every route that takes a key.
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
COMPONENTS = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API key from the project's key file, sent as "
            "`Authorization: Bearer <key>`. Its role decides the routes it may use and the "
            "masking policy of what it sees.",
        )
    }
)


class ErrorDetail(Struct):
    status: int
    code: str
    #: one line, never a key, a secret or a source value
    message: str


class ErrorBody(Struct):
    """Every error, whatever its status."""

    error: ErrorDetail


class Status(Struct):
    """A liveness or readiness answer."""

    status: str


class EntityDocument(Struct):
    """An entity's tables and rows, masked for the caller's role."""

    entity_type: str
    entity_id: str
    version: int
    built_at: str
    #: the masking policy applied (the caller's role's)
    policy: str
    #: entity table -> rows, each a column -> value mapping
    tables: dict[str, list[dict[str, Any]]]
    #: the id asked for, when it was merged into this entity
    merged_from: str | None = None


class LineageRow(Struct):
    table: str
    #: the row's key; a keyed hash (``key_...``) for roles without a clear policy
    row_key: Any
    source: str
    source_table: str
    source_key: Any
    extracted_at: str
    sync_run: int


class LineageLink(Struct):
    #: the two source records (``system:table:key``, keys as in ``rows``)
    records: list[str]
    rule: str
    score: float | None
    #: field -> similarity in [0, 1]; never a value
    comparisons: dict[str, float]


class Lineage(Struct):
    """Where each of an entity's rows came from, and what made the entity."""

    entity_type: str
    entity_id: str
    policy: str
    rows: list[LineageRow]
    links: list[LineageLink]
    #: merges and splits, as the catalog's history records them
    events: list[EntityEvent]
    merged_from: str | None = None


class FeatureVector(Struct):
    """One entity's features as of a time, masked for the caller's role."""

    view: str
    #: the view definition's version
    version: int
    entity_id: str
    as_of: str
    #: False when the entity had no row before ``as_of``; null when a time the view reads is
    #: one the caller's role does not see in clear (it would tell when the first row was)
    existed: bool | None
    policy: str
    #: feature -> value (attributes masked for the caller's role)
    features: dict[str, Any]
    merged_from: str | None = None


class BatchVector(Struct):
    entity_id: str
    existed: bool | None
    features: dict[str, Any]


class FeatureBatchAnswer(Struct):
    """``layout: rows`` fills ``vectors``; ``layout: columns`` fills ``entity_ids``,
    ``existed`` and ``features`` (feature -> values, in the order of ``entity_ids``)."""

    view: str
    version: int
    as_of: str
    policy: str
    #: ids no entity holds
    not_found: list[str]
    #: id asked -> the entity it was merged into
    merged_from: dict[str, str]
    vectors: list[BatchVector] | None = None
    entity_ids: list[str] | None = None
    existed: list[bool | None] | None = None
    features: dict[str, list[Any]] | None = None


class ExportJobStatus(Struct):
    """An export job: its state, progress and speed."""

    job: str
    view: str
    role: str
    format: str
    #: queued, running, succeeded or failed
    state: str
    stage: str | None
    rows_done: int
    rows_total: int | None
    rows_per_s: float | None
    eta_seconds: float | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    #: rows written, once succeeded
    rows: int | None
    error: str | None


class SpineUpload(Struct):
    """An uploaded spine, for this key's exports."""

    #: what to pass as ``spine`` to ``POST /v1/exports``
    spine: str
    bytes: int
    format: str


class Reloaded(Struct):
    """The configuration now served."""

    status: str
    rules_version: str
    views: list[str]


class CatalogColumn(Struct):
    name: str
    #: the PII class its name suggests, or None
    pii_class: str | None
    #: role -> the operator its policy applies
    operators: dict[str, str]


class CatalogTable(Struct):
    source: str | None
    source_table: str | None
    columns: list[CatalogColumn]


class CatalogEntityType(Struct):
    entities: int
    synced: bool
    tables: dict[str, CatalogTable]


class CatalogView(Struct):
    entity_type: str
    version: int
    definition_sha256: str
    features: dict[str, Any]


class CatalogSource(Struct):
    #: ``files`` or a database kind (``postgresql``, ``sqlite``); never a URL
    kind: str


class CatalogRun(Struct):
    run: int
    mode: str
    started_at: str
    finished_at: str | None


class CatalogRole(Struct):
    policy: str
    routes: list[str]


class Catalog(Struct):
    """The project: entity types, tables, columns and their masking, views, sources, roles."""

    project: str
    entity_types: dict[str, CatalogEntityType]
    feature_views: dict[str, CatalogView]
    sources: dict[str, CatalogSource]
    last_sync: CatalogRun | None
    roles: dict[str, CatalogRole]


#: status -> (code, when, example message)
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "a malformed id, parameter or body", "invalid or missing parameter: x"),
    401: ("unauthorized", "no key, or an unknown one", "invalid API key"),
    403: ("forbidden", "the key's role may not use this route", "role 'x' may not use admin"),
    404: ("not_found", "no such entity, type, view or job", "no customer entity with this id"),
    409: ("conflict", "the export has not succeeded (yet)", "the export is running"),
    413: ("payload_too_large", "the body is larger than allowed", "request body too large"),
    414: (
        "uri_too_long",
        "the path and query string are longer than `api.max_url_bytes`",
        "the request target is longer than 8,192 bytes (api.max_url_bytes)",
    ),
    429: ("rate_limited", "over `api.rate_limit` requests a second for this key", "rate limited"),
    503: (
        "timeout",
        "the reads ran past `api.read_timeout_ms` and were stopped (`timeout`), or the store "
        "does not answer (`unavailable`)",
        "the read ran past its time limit of 5000 ms (api.read_timeout_ms)",
    ),
}


def answers(
    model: type[Struct] | None,
    example: dict[str, Any] | None,
    *errors: int,
    status: int = 200,
    description: str = "",
    keyed: bool = True,
) -> dict[int, ResponseSpec]:
    """The responses of a route: ``model`` at ``status`` with ``example``, then each status of
    ``errors`` in the error shape (414 for every route; 400, 401, 403 and 429 too, for a route
    that takes a key: Litestar would otherwise document its own shape for a malformed
    parameter)."""
    found: dict[int, ResponseSpec] = {}
    if model is not None:
        found[status] = ResponseSpec(
            model,
            description=description or (model.__dict__.get("__doc__") or model.__name__),
            examples=[Example(value=example)] if example is not None else None,
            generate_examples=False,
        )
    for code in sorted({*errors, 414, *((400, 401, 403, 429) if keyed else ())}):
        name, when, message = _ERRORS[code]
        found[code] = ResponseSpec(
            ErrorBody,
            description=when,
            examples=[Example(value={"error": {"status": code, "code": name, "message": message}})],
        )
    return found


def _id(description: str | None) -> Schema:
    """An id or a key as the services accept it (:func:`fabric.services.entities.check_id`)."""
    return Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern="^[^\\u0000]+$",
        description=description,
    )


def lookup_sources(config: ProjectConfig) -> list[str]:
    """The ``source`` values a lookup by source record accepts: every ``system.table``, and a
    system alone where it names one table for every entity type
    (:func:`fabric.services.entities.source_table`, as lookups decide)."""
    names: set[str] = set()
    for system, source in config.sources.items():
        names.update(f"{system}.{table}" for table in source.tables)
        if all(source_table(config, entity, system) is not None for entity in config.entities):
            names.add(system)
    return sorted(names)


def tailor(openapi: OpenAPI, config: ProjectConfig) -> None:
    """Write into ``openapi`` what the server refuses with a 400, for this project: ``source``
    among :func:`lookup_sources`; ``tables`` a comma-separated list of the entity types'
    tables; ids and keys of 1 to 256 characters without NUL; a batch of 1 to 1,000 of them.

    A reload that changes sources or tables is seen in the schema of the next start.
    """
    tables = sorted({name for entity in config.entities.values() for name in entity.tables})
    one = "(?:" + "|".join(tables) + ")"
    replaced: dict[str, Schema] = {
        "source": Schema(
            type=OpenAPIType.STRING,
            enum=lookup_sources(config),
            description="source system (crm) or system.table (billing.payments)",
        ),
        "tables": Schema(
            type=OpenAPIType.STRING,
            pattern=f"^{one}(?:,{one})*$",
            description="comma-separated table names to return (default: all)",
        ),
    }
    for item in openapi.paths.values() if openapi.paths else ():
        for operation in (item.get, item.post):
            if not isinstance(operation, Operation):
                continue
            for parameter in operation.parameters or ():
                if not isinstance(parameter, Parameter):
                    continue
                if parameter.name in ("entity_id", "key"):
                    parameter.schema = _id(parameter.description)
                elif parameter.name in replaced:
                    parameter.schema = replaced[parameter.name]
    batch = (openapi.components.schemas or {}).get("FeatureBatch")
    if batch is not None and batch.properties is not None:
        batch.properties["ids"] = Schema(
            type=OpenAPIType.ARRAY,
            items=_id(None),
            min_items=1,
            max_items=MAX_BATCH,
            description=f"entity ids, 1 to {MAX_BATCH:,}",
        )
