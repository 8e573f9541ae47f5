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

from fabric.entities import EntityService
from fabric.errors import EntityNotFoundError
from fabric.features.compute import BadTimeError, Column, compute, parse_time
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.rules.masking import MaskingPolicy
from fabric.rules.operators import MaskContext

__all__ = ["FeatureService", "mask_attributes", "mask_columns"]


def mask_attributes(
    view: FeatureView, policy: MaskingPolicy, entity_id: str, values: dict[str, Any]
) -> None:
    """Mask the view's attribute features in place with the policy's operator of their column."""
    if policy.clear:
        return
    ctx = MaskContext(view.entity_type, entity_id)
    for feature in view.features:
        if feature.kind not in ("attribute", "last") or values.get(feature.name) is None:
            continue
        plan: Mapping[str, Any] = policy.tables.get((view.entity_type, feature.table), {})
        mask = plan.get(feature.column, policy.unlisted)
        if mask is not None:
            values[feature.name] = mask(values[feature.name], ctx)


def mask_columns(
    view: FeatureView, policy: MaskingPolicy, entity_of: Sequence[str], columns: dict[str, Column]
) -> None:
    """Mask the view's attribute columns in place; ``entity_of`` names each row's entity.

    Each distinct (entity, value) is masked once: an entity's rows at many times mostly
    share the value.
    """
    if policy.clear:
        return
    for feature in view.features:
        if feature.kind not in ("attribute", "last"):
            continue
        plan: Mapping[str, Any] = policy.tables.get((view.entity_type, feature.table), {})
        mask = plan.get(feature.column, policy.unlisted)
        if mask is None:
            continue
        masked: dict[tuple[str, Any], Any] = {}
        values = []
        for entity_id, value in zip(entity_of, columns[feature.name].to_pylist(), strict=True):
            if value is not None:
                key = (entity_id, value)
                if key not in masked:
                    masked[key] = mask(value, MaskContext(view.entity_type, entity_id))
                value = masked[key]
            values.append(value)
        columns[feature.name] = Column(feature.type, values)


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
        if as_of is None:
            moment = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        else:
            parsed = parse_time(as_of)
            if parsed is None:
                raise BadTimeError("as_of must be an ISO 8601 time, e.g. 2026-01-31T00:00:00Z")
            moment = parsed
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
