"""What the OpenAPI schema says each route answers: its success model, its errors, its auth.

Handlers build plain dicts (the services' own answers); these msgspec models describe them
for the schema, with examples, and the error responses each route can give, all in the one
error shape of :mod:`fabric.api.errors`. `tests/api/test_schema.py` holds every answer of
every route, errors included, to what is written here (schemathesis).
"""

from __future__ import annotations

from typing import Any

from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Components, Example, SecurityScheme
from msgspec import Struct

from fabric.store.history import EntityEvent

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
    #: False when the entity had no row before ``as_of``
    existed: bool
    policy: str
    #: feature -> value (attributes masked for the caller's role)
    features: dict[str, Any]
    merged_from: str | None = None


class BatchVector(Struct):
    entity_id: str
    existed: bool
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
    existed: list[bool] | None = None
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
    ``errors`` in the error shape (400, 401, 403 and 429 too, for a route that takes a key:
    Litestar would otherwise document its own shape for a malformed parameter)."""
    found: dict[int, ResponseSpec] = {}
    if model is not None:
        found[status] = ResponseSpec(
            model,
            description=description or (model.__dict__.get("__doc__") or model.__name__),
            examples=[Example(value=example)] if example is not None else None,
            generate_examples=False,
        )
    for code in sorted({*errors, *((400, 401, 403, 429) if keyed else ())}):
        name, when, message = _ERRORS[code]
        found[code] = ResponseSpec(
            ErrorBody,
            description=when,
            examples=[Example(value={"error": {"status": code, "code": name, "message": message}})],
        )
    return found
