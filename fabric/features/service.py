"""Feature vectors of single entities, masked for the caller's role: the online side.

The same :func:`fabric.features.compute.compute` as exports, on the entity's rows as stored
(read through the entity read path and its cache), so online and offline values agree.
Attributes are masked by the role's policy like any read of the column; aggregates are
numbers computed from the rows and carry no value of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fabric.entities import EntityService, InvalidRequestError
from fabric.errors import EntityNotFoundError
from fabric.features.compute import (
    BadTimeError,
    Column,
    compute,
    compute_many,
    entity_rows,
    micros,
    parse_time,
)
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.rules.masking import MaskingPolicy
from fabric.rules.operators import MaskContext

__all__ = ["MAX_BATCH", "FeatureService", "mask_attributes", "mask_columns"]

#: Most entities one call of :meth:`FeatureService.vectors` computes.
MAX_BATCH = 1000


#: Features whose value is a value of a column: masked like that column for the role.
_VALUE_KINDS = ("attribute", "last", "min", "max")


def _masks(view: FeatureView, policy: MaskingPolicy) -> tuple[dict[str, Any], set[str]]:
    """The mask of each feature that shows a column's value (``attribute``, ``last``,
    ``min``, ``max``), and the derived features to withhold because they read, directly or
    through others, a feature the role sees masked: computed from clear values, they could
    give them away (``upper(country)``). Counts, sums, averages, recency and age are numbers
    computed from the rows and show no value of them."""
    masks: dict[str, Any] = {}
    withheld: set[str] = set()
    if policy.clear:
        return masks, withheld
    for feature in view.features:  # derived ones come after what they read
        if feature.kind in _VALUE_KINDS:
            plan: Mapping[str, Any] = policy.tables.get((view.entity_type, feature.table), {})
            mask = plan.get(feature.column, policy.unlisted)
            if mask is not None:
                masks[feature.name] = mask
        elif feature.kind == "derive" and set(feature.reads) & (set(masks) | withheld):
            withheld.add(feature.name)
    return masks, withheld


def mask_attributes(
    view: FeatureView, policy: MaskingPolicy, entity_id: str, values: dict[str, Any]
) -> None:
    """Mask one vector's values in place for the policy (see :func:`_masks`)."""
    masks, withheld = _masks(view, policy)
    ctx = MaskContext(view.entity_type, entity_id)
    for name, mask in masks.items():
        if values.get(name) is not None:
            values[name] = mask(values[name], ctx)
    for name in withheld:
        values[name] = None


def mask_columns(
    view: FeatureView, policy: MaskingPolicy, entity_of: Sequence[str], columns: dict[str, Column]
) -> None:
    """Mask columns of many vectors in place (see :func:`_masks`); ``entity_of`` names each
    row's entity.

    Each distinct (entity, value) is masked once: an entity's rows at many times mostly
    share the value.
    """
    masks, withheld = _masks(view, policy)
    for name, mask in masks.items():
        masked: dict[tuple[str, Any], Any] = {}
        values = []
        for entity_id, value in zip(entity_of, columns[name].to_pylist(), strict=True):
            if value is not None:
                key = (entity_id, value)
                if key not in masked:
                    masked[key] = mask(value, MaskContext(view.entity_type, entity_id))
                value = masked[key]
            values.append(value)
        columns[name] = Column(columns[name].type, values)
    for name in withheld:
        columns[name] = Column(columns[name].type, [None] * len(entity_of))


class FeatureService:
    """Feature vectors over a project's entities; safe to share between threads."""

    def __init__(self, project: Project, entities: EntityService | None = None) -> None:
        self.project = project
        self.entities = entities or EntityService(project)

    def view(self, name: str) -> FeatureView:
        """A feature view by name.

        Raises:
            EntityNotFoundError: no such view.
        """
        views = self.project.views()
        if name not in views:
            raise EntityNotFoundError(
                f"unknown feature view (views: {', '.join(views) or 'none declared'})"
            )
        return views[name]

    @staticmethod
    def _moment(as_of: str | None) -> datetime:
        if as_of is None:
            return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        parsed = parse_time(as_of)
        if parsed is None:
            raise BadTimeError("as_of must be an ISO 8601 time, e.g. 2026-01-31T00:00:00Z")
        return parsed

    def vector(
        self,
        view_name: str,
        entity_id: str,
        *,
        as_of: str | None = None,
        role: str | None = None,
    ) -> dict[str, Any]:
        """One entity's features as of ``as_of`` (ISO 8601; default now), masked for ``role``.

        Raises:
            EntityNotFoundError: unknown view or entity.
            BadTimeError: ``as_of`` is not ISO 8601.
        """
        view = self.view(view_name)
        policy = self.project.policy_for(role)
        moment = self._moment(as_of)
        found, tables = self.entities.shared_tables(view.entity_type, entity_id)
        ((existed, values),) = compute(view, tables, [moment])
        mask_attributes(view, policy, found, values)
        vector: dict[str, Any] = {
            "view": view.name,
            "version": view.version,
            "entity_id": found,
            "as_of": moment.isoformat(),
            "existed": existed,
            "policy": policy.name,
            "features": values,
        }
        if found != entity_id:
            vector["merged_from"] = entity_id
        return vector

    def vectors(
        self,
        view_name: str,
        entity_ids: Sequence[str],
        *,
        as_of: str | None = None,
        role: str | None = None,
        layout: str = "rows",
    ) -> dict[str, Any]:
        """Many entities' features as of one time, computed together, masked for ``role``.

        ``layout`` ``rows``: ``vectors``, one ``{entity_id, existed, features}`` per entity
        found, in the order asked. ``columns``: ``entity_ids``, ``existed`` and ``features``
        (feature -> list of values, in that order). Either way ``not_found`` lists the ids no
        entity holds, and ``merged_from`` maps an id asked to the entity it was merged into.

        Raises:
            EntityNotFoundError: unknown view.
            InvalidRequestError: no ids, more than :data:`MAX_BATCH`, an unknown layout, or
                a malformed id.
            BadTimeError: ``as_of`` is not ISO 8601.
        """
        if not entity_ids or len(entity_ids) > MAX_BATCH:
            raise InvalidRequestError(f"ids must list 1 to {MAX_BATCH:,} entity ids")
        if layout not in ("rows", "columns"):
            raise InvalidRequestError("layout must be 'rows' or 'columns'")
        view = self.view(view_name)
        policy = self.project.policy_for(role)
        moment = self._moment(as_of)
        found: list[str] = []
        rows = []
        missing: list[str] = []
        merged: dict[str, str] = {}
        for asked in entity_ids:
            try:
                entity_id, tables = self.entities.shared_tables(view.entity_type, asked)
            except EntityNotFoundError:
                missing.append(asked)
                continue
            if entity_id != asked:
                merged[asked] = entity_id
            found.append(entity_id)
            rows.append(entity_rows(view, tables))
        out: dict[str, Any] = {
            "view": view.name,
            "version": view.version,
            "as_of": moment.isoformat(),
            "policy": policy.name,
        }
        if found:
            done = compute_many(view, rows, range(len(found)), [micros(moment)] * len(found))
            mask_columns(view, policy, found, done.columns)
            existed = done.existed.tolist()
            values = {name: column.to_pylist() for name, column in done.columns.items()}
        else:
            existed, values = [], {f.name: [] for f in view.features}
        if layout == "columns":
            out |= {"entity_ids": found, "existed": existed, "features": values}
        else:
            out["vectors"] = [
                {
                    "entity_id": entity_id,
                    "existed": existed[at],
                    "features": {name: column[at] for name, column in values.items()},
                }
                for at, entity_id in enumerate(found)
            ]
        out["not_found"] = missing
        out["merged_from"] = merged
        return out
