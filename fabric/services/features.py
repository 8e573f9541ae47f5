"""Feature vectors of entities, masked for the caller's role: the online side.

The same :func:`fabric.features.compute.compute_many` as exports, on the entity's rows as
stored (read as exports read them), so online and offline values agree. Vectors of many
requests are computed together, and current vectors are cached until their horizon.
Features that show a column's value are masked by the role's policy like any read of the
column, with the entity's names at hand as for documents; features computed from a column the
role does not see in clear are withheld (see :func:`mask_plan`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache

from fabric.clock import Clock, Freshness, monotonic
from fabric.errors import BadTimeError, EntityNotFoundError, FabricError, InvalidRequestError
from fabric.features.compute import Column, columns_read, compute_many, micros, parse_time
from fabric.features.spec import Feature, FeatureView
from fabric.project import Project
from fabric.rules.masking import NAMED_OPS, MaskingPolicy
from fabric.rules.operators import MaskContext, MaskFunction
from fabric.services.entities import EntityService, check_id
from fabric.store.online import OnlineVector

__all__ = [
    "MAX_BATCH",
    "FeatureService",
    "MaskPlan",
    "compute_vectors",
    "mask_attributes",
    "mask_columns",
    "mask_plan",
]

#: Most entities one call of :meth:`FeatureService.vectors` computes.
MAX_BATCH = 1000


#: Features whose value is a value of a column: masked like that column for the role.
_VALUE_KINDS = ("attribute", "last", "min", "max")
#: Features computed from a column's values that show none of them as it is: withheld from a
#: role that does not see that column in clear (a sum as of just past one row is that row's
#: value). ``distinct`` counts pass over a column masked one to one (tokens, hashes, FPE):
#: the masked values give the same count.
_COMPUTED_KINDS = ("sum", "avg", "distinct")
_ONE_TO_ONE = frozenset({"tokenize", "hash", "fpe"})


@dataclass(frozen=True)
class MaskPlan:
    """How one view's features are masked for one policy."""

    #: feature -> the mask of the column whose value it shows
    masks: Mapping[str, MaskFunction]
    #: features withheld (null): computed from values the role does not see in clear
    withheld: frozenset[str]
    #: some mask looks at the entity's names: it needs the entity's rows (see contexts)
    needs_names: bool
    #: ``existed`` withheld (null): it tells when the entity's first row was, and a time
    #: the view reads is one the role does not see in clear
    hide_existed: bool = False


def _times_of(feature: Feature) -> list[tuple[str, str]]:
    """The (table, column) of each time a feature is computed as of: its rows' timestamps,
    or the times ``age`` looks at."""
    if feature.kind == "age":
        return list(feature.times)
    return [(feature.table, feature.timestamp)] if feature.timestamp else []


def mask_plan(view: FeatureView, policy: MaskingPolicy) -> MaskPlan:
    """How ``policy`` masks ``view``.

    - A feature that shows a column's value (``attribute``, ``last``, ``min``, ``max``) is
      masked like that column, with the same entity context (names included) as documents.
    - A feature computed from a column the role does not see in clear (``sum``, ``avg``,
      ``distinct``) is withheld: computed from clear values, it could give them away.
    - A feature whose rows' times the role does not see in clear (a date-shifted timestamp)
      is withheld, whatever its kind, counts and recency and age included: asked as of times
      a caller picks, it would tell when each row was. ``existed`` too.
    - A derived feature reading, directly or through others, one masked or withheld is
      withheld (``upper(country)``).

    Other counts pass: a count is of rows, and its filter is the view's, not the caller's.
    """
    masks: dict[str, MaskFunction] = {}
    withheld: set[str] = set()
    needs_names = hide_existed = False
    if policy.clear:
        return MaskPlan(masks, frozenset(), False)

    def mask_of(table: str, column: str) -> tuple[MaskFunction | None, str]:
        plan: Mapping[str, MaskFunction | None] = policy.tables.get((view.entity_type, table), {})
        return plan.get(column, policy.unlisted), policy.op_of(view.entity_type, table, column)

    for feature in view.features:  # derived ones come after what they read
        if any(mask_of(table, column)[0] is not None for table, column in _times_of(feature)):
            withheld.add(feature.name)
            hide_existed = True
        elif feature.kind in _VALUE_KINDS:
            mask, op = mask_of(feature.table, feature.column)
            if mask is not None:
                masks[feature.name] = mask
                needs_names = needs_names or op in NAMED_OPS
        elif feature.kind in _COMPUTED_KINDS:
            mask, op = mask_of(feature.table, feature.column)
            if mask is not None and not (feature.kind == "distinct" and op in _ONE_TO_ONE):
                withheld.add(feature.name)
        elif feature.kind == "derive" and set(feature.reads) & (set(masks) | withheld):
            withheld.add(feature.name)
    return MaskPlan(masks, frozenset(withheld), needs_names, hide_existed)


def mask_attributes(
    view: FeatureView, policy: MaskingPolicy, context: MaskContext, values: dict[str, Any]
) -> None:
    """Mask one vector's values in place for the policy (see :func:`mask_plan`); ``context``
    is the entity's (:meth:`FeatureService.contexts`)."""
    _apply_masks(mask_plan(view, policy), context, values)


def _apply_masks(plan: MaskPlan, context: MaskContext, values: dict[str, Any]) -> None:
    for name, mask in plan.masks.items():
        if values.get(name) is not None:
            values[name] = mask(values[name], context)
    for name in plan.withheld:
        values[name] = None


def mask_columns(
    plan: MaskPlan,
    entity_of: Sequence[str],
    columns: dict[str, Column],
    context_of: Callable[[str], MaskContext],
) -> None:
    """Mask columns of many vectors in place as ``plan`` says (:meth:`FeatureService.plan`);
    ``entity_of`` names each row's entity, and ``context_of`` gives an entity's mask context
    (:meth:`FeatureService.contexts`).

    Each distinct (entity, value) is masked once: an entity's rows at many times mostly
    share the value.
    """
    contexts: dict[str, MaskContext] = {}
    for name, mask in plan.masks.items():
        masked: dict[tuple[str, Any], Any] = {}
        values = []
        for entity_id, value in zip(entity_of, columns[name].to_pylist(), strict=True):
            if value is not None:
                key = (entity_id, value)
                if key not in masked:
                    context = contexts.get(entity_id)
                    if context is None:
                        context = contexts[entity_id] = context_of(entity_id)
                    masked[key] = mask(value, context)
                value = masked[key]
            values.append(value)
        columns[name] = Column(columns[name].type, values)
    for name in plan.withheld:
        columns[name] = Column(columns[name].type, [None] * len(entity_of))


#: One request of a coalesced batch: (view, entity id, as_of, role).
VectorAsk = tuple[str, str, str | None, str | None]


#: A kept vector: entity id, version, computed_at, until, existed, feature names, their
#: values (in that order), checked_at.
_Entry = tuple[str, int, int, int, bool, tuple[str, ...], tuple[Any, ...], float]


def _entry(vector: OnlineVector, checked_at: float) -> _Entry:
    """A vector as the cache keeps it: one flat tuple of plain values, its features as two
    tuples (a dict, even of plain values, would keep it tracked), ``checked_at`` last (by
    the service's :class:`fabric.clock.Freshness`). The garbage collector stops tracking
    such a tuple within its first two passes (the inner tuples first); an OnlineVector, and
    a pair holding it, stay tracked as long as they are kept, and a full cache of them made
    every pass of the collector's older generations walk them all, which showed in a
    request's p99 (``benchmarks/http_bench.py``)."""
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

    ``clock`` (:mod:`fabric.clock`) tells how long ago an entity's version was checked
    (``api.fresh_ms``); it is the service's own :class:`EntityService`'s when that is made
    here.
    """

    def __init__(
        self,
        project: Project,
        entities: EntityService | None = None,
        *,
        clock: Clock = monotonic,
    ) -> None:
        self.project = project
        self.entities = entities or EntityService(project, clock=clock)
        #: (view, entity) -> its vector, and when (by ``clock``) its entity's version was last
        #: checked: served while the version holds, from memory alone within ``fresh_ms``
        #: (kept as one flat tuple, see :func:`_entry`)
        self._cache: LRUCache[tuple[str, str], _Entry] = LRUCache(
            maxsize=project.config.api.vector_cache
        )
        self._fresh = Freshness(project.config.api.fresh_ms, clock)
        self._lock = threading.Lock()
        #: (view, policy) -> how it masks the view's features
        self._mask_plans: dict[tuple[str, str], MaskPlan] = {}
        #: vectors served from this process's cache, from the online store, and computed
        self.hits = 0
        self.online_hits = 0
        self.misses = 0

    def view(self, name: str) -> FeatureView:
        """A feature view by name (:meth:`Project.view`).

        Raises:
            EntityNotFoundError: no such view.
        """
        return self.project.view(name)

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
        checked_at = self._fresh.now()  # before the versions are read
        scope = (view.name, view.definition_hash)
        online = self.project.online.vectors
        # The versions, and with them the materialized vectors where one statement can read
        # both (PostgreSQL); else those are read below, for what this process's cache lacks.
        held: dict[str, OnlineVector] | None = None
        if current:
            holders, held = self.entities.holders_with(
                view.entity_type, entity_ids, online, scope, moment
            )
        else:
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
            if not current:
                stored = {}
            elif held is None:
                stored = online.get(scope, wanted, moment)
            else:
                stored = {e: held[e] for e in wanted if e in held}
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
            "existed": None if self.plan(view, policy).hide_existed else vector.existed,
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
        if entry is None or not self._fresh.holds(entry[7]):
            return None
        moment = self._moment(None)
        if not entry[2] <= micros(moment) < entry[3]:  # computed_at <= now < until
            return None
        view, vector = self.view(view_name), _vector(entry)
        if self.plan(view, self.project.policy_for(role)).needs_names and (
            self.entities.kept_names(view.entity_type, vector.entity_id, vector.version) is None
        ):
            return None  # its names would be a read of the store: not on the event loop
        with self._lock:
            self.hits += 1
        return self._answer(view, moment, entity_id, vector, role)

    def plan(self, view: FeatureView, policy: MaskingPolicy) -> MaskPlan:
        """How ``policy`` masks ``view`` (:func:`mask_plan`), made once."""
        plan = self._mask_plans.get((view.name, policy.name))
        if plan is None:
            plan = self._mask_plans[(view.name, policy.name)] = mask_plan(view, policy)
        return plan

    def contexts(self, view: FeatureView, policy: MaskingPolicy) -> Callable[[str], MaskContext]:
        """An entity's mask context for the view's masks under ``policy``: with its names
        (read from the entity) when a mask looks at them, as a document's masks do."""
        entity_type = view.entity_type
        if not self.plan(view, policy).needs_names:
            return lambda entity_id: MaskContext(entity_type, entity_id)
        return functools.partial(self.entities.mask_context, policy, entity_type)

    def _masked(
        self, view: FeatureView, policy: MaskingPolicy, vector: OnlineVector
    ) -> dict[str, Any]:
        """A copy of the vector's values, masked for the policy (see :func:`mask_plan`)."""
        values = dict(vector.values)
        if policy.clear:
            return values
        plan = self.plan(view, policy)
        if plan.masks or plan.withheld:
            context = (
                self.entities.mask_context(
                    policy, view.entity_type, vector.entity_id, vector.version
                )
                if plan.needs_names
                else MaskContext(view.entity_type, vector.entity_id)
            )
            _apply_masks(plan, context, values)
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
        hide = self.plan(view, policy).hide_existed
        existed = [None if hide else v.existed for _, v in vectors]
        out: dict[str, Any] = {
            "view": view.name,
            "version": view.version,
            "as_of": moment.isoformat(),
            "policy": policy.name,
        }
        if layout == "columns":
            out |= {
                "entity_ids": [v.entity_id for _, v in vectors],
                "existed": existed,
                "features": {f.name: [values[f.name] for values in masked] for f in view.features},
            }
        else:
            out["vectors"] = [
                {"entity_id": vector.entity_id, "existed": was, "features": values}
                for (_, vector), was, values in zip(vectors, existed, masked, strict=True)
            ]
        out["not_found"] = [asked for asked in entity_ids if asked not in found]
        out["merged_from"] = {
            asked: vector.entity_id for asked, vector in vectors if vector.entity_id != asked
        }
        return out
