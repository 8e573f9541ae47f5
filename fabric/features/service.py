"""Feature vectors of entities, masked for the caller's role: the online side.

The same :func:`fabric.features.compute.compute_many` as exports, on the entity's rows as
stored (read as exports read them), so online and offline values agree. Vectors of many
requests are computed together, and current vectors are cached until their horizon.
Attributes are masked by the role's policy like any read of the column; aggregates are
numbers computed from the rows and carry no value of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache

from fabric.entities import EntityService, InvalidRequestError, check_id
from fabric.errors import EntityNotFoundError, FabricError
from fabric.features.compute import (
    BadTimeError,
    Column,
    columns_read,
    compute_many,
    micros,
    parse_time,
)
from fabric.features.spec import FeatureView
from fabric.project import Project
from fabric.rules.masking import MaskingPolicy
from fabric.rules.operators import MaskContext
from fabric.store.online import OnlineVector

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
    _apply_masks(view.entity_type, entity_id, values, *_masks(view, policy))


def _apply_masks(
    entity_type: str,
    entity_id: str,
    values: dict[str, Any],
    masks: Mapping[str, Any],
    withheld: set[str],
) -> None:
    ctx = MaskContext(entity_type, entity_id)
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


#: One request of a coalesced batch: (view, entity id, as_of, role).
VectorAsk = tuple[str, str, str | None, str | None]


#: A kept vector: entity id, version, computed_at, until, existed, feature names, their
#: values (in that order), checked_at.
_Entry = tuple[str, int, int, int, bool, tuple[str, ...], tuple[Any, ...], float]


def _entry(vector: OnlineVector, checked_at: float) -> _Entry:
    """A vector as the cache keeps it: one flat tuple of plain values, its features as two
    tuples (a dict, even of plain values, would keep it tracked). The garbage collector stops
    tracking such a tuple within its first two passes (the inner tuples first); an
    OnlineVector, and a pair holding it, stay tracked as long as they are kept, and 100,000
    of them made every pass of the collector's older generations take tens of milliseconds
    (a request's p99)."""
    return (
        vector.entity_id,
        vector.version,
        vector.computed_at,
        vector.until,
        vector.existed,
        tuple(vector.values),
        tuple(vector.values.values()),
        checked_at,
    )


def compute_vectors(
    entities: EntityService,
    view: FeatureView,
    entity_ids: Sequence[str],
    moment: int,
    *,
    horizons: bool = True,
) -> list[OnlineVector]:
    """The vectors of stored entities at ``moment`` (microseconds), with their horizons
    (without: each holds at ``moment`` alone): one pass over all of them, as an export
    computes. Ids no longer stored are left out."""
    stored = entities.project.store.get_many(view.entity_type, entity_ids)
    blobs = [stored[e] for e in entity_ids if e in stored]
    if not blobs:
        return []
    rows = entities.read_flat(blobs, columns_read(view))
    done = compute_many(view, rows, range(len(blobs)), [moment] * len(blobs), horizons=horizons)
    existed = done.existed.tolist()
    until = done.until.tolist() if done.until is not None else [moment + 1] * len(blobs)
    names = list(done.columns)
    values = [column.to_pylist() for column in done.columns.values()]
    return [
        OnlineVector(
            blob.entity_id,
            blob.version,
            moment,
            until[at],
            existed[at],
            {name: column[at] for name, column in zip(names, values, strict=True)},
        )
        for at, blob in enumerate(blobs)
    ]


def _vector(entry: _Entry) -> OnlineVector:
    entity_id, version, computed_at, until, existed, names, values, _ = entry
    features = dict(zip(names, values, strict=True))
    return OnlineVector(entity_id, version, computed_at, until, existed, features)


class FeatureService:
    """Feature vectors over a project's entities; safe to share between threads.

    Current vectors are cached by entity version until their horizon: a vector computed at
    *t* stays the same until a row enters or leaves one of its windows, a day count ticks
    over or an ``as_of`` filter may turn (:attr:`fabric.features.compute.Computed.until`),
    unless the entity changes, which gives it a new version. Cached vectors are unmasked
    and masked per request, so every role's vector comes from the same computation.
    """

    def __init__(self, project: Project, entities: EntityService | None = None) -> None:
        self.project = project
        self.entities = entities or EntityService(project)
        #: (view, entity) -> its vector, and when (monotonic) its entity's version was last
        #: checked: served while the version holds, from memory alone within ``fresh_ms``
        #: (kept as one flat tuple, see :func:`_entry`)
        self._cache: LRUCache[tuple[str, str], _Entry] = LRUCache(
            maxsize=project.config.api.vector_cache
        )
        self._fresh = project.config.api.fresh_ms / 1000
        self._lock = threading.Lock()
        #: (view, policy) -> its feature masks and withheld features
        self._mask_plans: dict[tuple[str, str], tuple[dict[str, Any], set[str]]] = {}
        #: vectors served from this process's cache, from the online store, and computed
        self.hits = 0
        self.online_hits = 0
        self.misses = 0

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

    def _vectors(
        self, view: FeatureView, entity_ids: Sequence[str], moment: int, *, current: bool = True
    ) -> dict[str, OnlineVector]:
        """Asked id -> the vector of the entity holding it at ``moment`` (microseconds):
        from this process's cache, else the online store, while it holds for the entity's
        version and ``moment``; else computed for all such ids together. Ids no entity
        holds are left out. A vector of another time than now (not ``current``) is looked
        up in this process's cache only, and computed without a horizon and not kept: the
        online store holds vectors of the last sync's time on, and a time asked for is
        rarely asked for again.

        Raises:
            InvalidRequestError: a malformed id.
        """
        checked_at = time.monotonic()  # before the versions are read
        holders = self.entities.holders(view.entity_type, entity_ids)
        found: dict[str, OnlineVector] = {}
        with self._lock:
            for entity_id, version in holders.values():
                entry = self._cache.get((view.name, entity_id))
                if entry is None:
                    continue
                if entry[1] == version and entry[2] <= moment < entry[3]:
                    found[entity_id] = _vector(entry)
                    if current:
                        self._cache[(view.name, entity_id)] = (*entry[:7], checked_at)
            self.hits += len(found)
        wanted = {e: v for e, v in holders.values() if e not in found}
        if wanted:
            # Materialized by sync, for entity versions and times they hold at.
            stored = self.project.online.get_many(view, wanted, moment) if current else {}
            computed = []
            missing = [e for e in wanted if e not in stored]
            if missing:
                computed = compute_vectors(self.entities, view, missing, moment, horizons=current)
            with self._lock:
                self.online_hits += len(stored)
                self.misses += len(computed)
                for vector in [*stored.values(), *computed]:
                    found[vector.entity_id] = vector
                    if current and self._cache.maxsize:
                        self._cache[(view.name, vector.entity_id)] = _entry(vector, checked_at)
        return {asked: found[holder] for asked, (holder, _) in holders.items() if holder in found}

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
            InvalidRequestError: a malformed id.
        """
        (answer,) = self.vector_batch([(view_name, entity_id, as_of, role)])
        if isinstance(answer, Exception):
            raise answer
        return answer

    def vector_batch(self, asks: Sequence[VectorAsk]) -> list[dict[str, Any] | Exception]:
        """:meth:`vector` of each ask, computed together: the answer, or the error that ask
        alone raised. Asks of one view and ``as_of`` share one computation and one "now"."""
        out: dict[int, dict[str, Any] | Exception] = {}
        groups: dict[tuple[str, str | None], list[int]] = {}
        for at, (view_name, _, as_of, _) in enumerate(asks):
            groups.setdefault((view_name, as_of), []).append(at)
        for (view_name, as_of), members in groups.items():
            try:
                view = self.view(view_name)
                moment = self._moment(as_of)
            except FabricError as exc:
                for at in members:
                    out[at] = exc
                continue
            valid = []
            for at in members:
                try:
                    check_id(asks[at][1], "entity id")
                    valid.append(at)
                except FabricError as exc:
                    out[at] = exc
            found = self._vectors(
                view, [asks[at][1] for at in valid], micros(moment), current=as_of is None
            )
            not_found: str | None = None  # its message: asking the catalog once per group
            for at in valid:
                entity_id, role = asks[at][1], asks[at][3]
                vector = found.get(entity_id)
                if vector is None:
                    if not_found is None:
                        not_found = str(self.entities.not_found(view.entity_type))
                    out[at] = EntityNotFoundError(not_found)
                    continue
                out[at] = self._answer(view, moment, entity_id, vector, role)
        return [out[at] for at in range(len(asks))]

    def _answer(
        self,
        view: FeatureView,
        moment: datetime,
        asked: str,
        vector: OnlineVector,
        role: str | None,
    ) -> dict[str, Any]:
        """What `GET /v1/features/{view}/{id}` answers."""
        policy = self.project.policy_for(role)
        answer: dict[str, Any] = {
            "view": view.name,
            "version": view.version,
            "entity_id": vector.entity_id,
            "as_of": moment.isoformat(),
            "existed": vector.existed,
            "policy": policy.name,
            "features": self._masked(view, policy, vector),
        }
        if vector.entity_id != asked:
            answer["merged_from"] = asked
        return answer

    def recent_vector(
        self, view_name: str, entity_id: str, role: str | None
    ) -> dict[str, Any] | None:
        """:meth:`vector` of now, from memory (safe on the event loop), if the entity's
        version was checked less than ``api.fresh_ms`` ago and the vector still holds now;
        else None."""
        if not self._fresh:
            return None
        with self._lock:
            entry = self._cache.get((view_name, entity_id))
        if entry is None or time.monotonic() - entry[7] >= self._fresh:
            return None
        moment = self._moment(None)
        if not entry[2] <= micros(moment) < entry[3]:  # computed_at <= now < until
            return None
        with self._lock:
            self.hits += 1
        return self._answer(self.view(view_name), moment, entity_id, _vector(entry), role)

    def _masked(
        self, view: FeatureView, policy: MaskingPolicy, vector: OnlineVector
    ) -> dict[str, Any]:
        """A copy of the vector's values, masked for the policy (see :func:`_masks`)."""
        values = dict(vector.values)
        if policy.clear:
            return values
        masks = self._mask_plans.get((view.name, policy.name))
        if masks is None:
            masks = self._mask_plans[(view.name, policy.name)] = _masks(view, policy)
        _apply_masks(view.entity_type, vector.entity_id, values, *masks)
        return values

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
        found = self._vectors(view, entity_ids, micros(moment), current=as_of is None)
        vectors = [(asked, found[asked]) for asked in entity_ids if asked in found]
        masked = [self._masked(view, policy, vector) for _, vector in vectors]
        out: dict[str, Any] = {
            "view": view.name,
            "version": view.version,
            "as_of": moment.isoformat(),
            "policy": policy.name,
        }
        if layout == "columns":
            out |= {
                "entity_ids": [v.entity_id for _, v in vectors],
                "existed": [v.existed for _, v in vectors],
                "features": {f.name: [values[f.name] for values in masked] for f in view.features},
            }
        else:
            out["vectors"] = [
                {"entity_id": vector.entity_id, "existed": vector.existed, "features": values}
                for (_, vector), values in zip(vectors, masked, strict=True)
            ]
        out["not_found"] = [asked for asked in entity_ids if asked not in found]
        out["merged_from"] = {
            asked: vector.entity_id for asked, vector in vectors if vector.entity_id != asked
        }
        return out
