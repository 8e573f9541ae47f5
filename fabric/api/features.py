"""Feature routes: one vector, or up to 1,000 in one call, masked for the caller's role.

The same computation as `fabric export` (:mod:`fabric.features.compute`), so a vector served
here equals the exported row for the same entity and time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Request, get, post
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath, QueryParameter
from litestar.response.base import ASGIResponse
from msgspec import Meta

from fabric.api.context import Call
from fabric.api.schema import BEARER, FeatureBatchAnswer, FeatureVector, answers
from fabric.services.entities import MAX_ID_LENGTH
from fabric.services.features import MAX_BATCH

__all__ = ["FeatureBatch", "feature_batch", "feature_vector"]

_VECTOR: dict[str, Any] = {
    "view": "customer_360",
    "version": 1,
    "entity_id": "3f1c9a2b7d4e",
    "as_of": "2026-01-31T00:00:00",
    "existed": True,
    "policy": "analyst",
    "features": {"order_count_90d": 3, "days_since_last_order": 12, "country": "US"},
}


@dataclass
class FeatureBatch:
    """Which entities, as of when, and how to lay the answer out."""

    ids: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]],
        Meta(min_length=1, max_length=MAX_BATCH),
    ]
    as_of: str | None = None
    #: ``rows``: a list of vectors; ``columns``: one list of values per feature
    layout: Literal["rows", "columns"] = "rows"


@get(
    "/v1/features/{view:str}/{entity_id:str}",
    tags=["features"],
    summary="One entity's feature vector, now or as of a time",
    description=(
        "Features computed from the entity's rows strictly before `as_of` (default: now). "
        "Attributes are masked for the caller's role. An id merged into another entity "
        "answers with the survivor and `merged_from`."
    ),
    security=BEARER,
    opt={"route": "features"},
    responses=answers(FeatureVector, _VECTOR, 400, 404, 503),
)
async def feature_vector(
    view: FromPath[str],
    entity_id: FromPath[str],
    request: Request[Any, Any, Any],
    as_of: Annotated[
        str | None,
        QueryParameter(
            description="ISO 8601 time (default: now); a zone-less time is UTC",
            examples=[Example(value="2026-01-31T00:00:00Z")],
        ),
    ] = None,
) -> ASGIResponse:
    """Return ``{view, version, entity_id, as_of, existed, policy, features}``."""
    call = Call.of(request)
    if as_of is None:
        # Now, for an entity checked a moment ago (api.fresh_ms): answered here.
        recent = call.features.recent_vector(view, entity_id, call.caller.role)
        if recent is not None:
            return call.json.once(recent)
    # Vectors asked at the same time are computed together (as an export computes them):
    # under load, one pass over many entities instead of one per request.
    features = call.features
    answer: dict[str, Any] = await call.gather(
        ("vector", id(features), view, as_of),
        features.vector_batch,
        (view, entity_id, as_of, call.caller.role),
    )
    return call.json.once(answer)


@post(
    "/v1/features/{view:str}",
    tags=["features"],
    summary=f"Feature vectors of up to {MAX_BATCH:,} entities in one call",
    description=(
        'Body `{"ids": [...], "as_of": optional ISO 8601, "layout": "rows" | '
        '"columns"}`. `rows` answers `vectors`: one `{entity_id, existed, features}` per '
        "entity found, in the order asked. `columns` answers `entity_ids`, `existed` and "
        "`features` (feature -> list of values in that order). Ids no entity holds are "
        "listed in `not_found`; ids merged into another entity in `merged_from`."
    ),
    status_code=200,
    security=BEARER,
    opt={"route": "features"},
    responses=answers(
        FeatureBatchAnswer,
        {
            "view": "customer_360",
            "version": 1,
            "as_of": "2026-01-31T00:00:00",
            "policy": "analyst",
            "vectors": [
                {k: _VECTOR[k] for k in ("entity_id", "existed", "features")},
            ],
            "not_found": ["000000000000"],
            "merged_from": {},
        },
        400,
        404,
        413,
        503,
    ),
)
async def feature_batch(
    view: FromPath[str],
    request: Request[Any, Any, Any],
    data: Annotated[
        FeatureBatch,
        Body(examples=[Example(value={"ids": ["3f1c9a2b7d4e"], "as_of": "2026-01-31T00:00:00Z"})]),
    ],
) -> dict[str, Any]:
    """Return the vectors of ``data.ids``."""
    call = Call.of(request)
    return await call.run(
        call.features.vectors,
        view,
        data.ids,
        as_of=data.as_of,
        role=call.caller.role,
        layout=data.layout,
    )
