"""What the app serves now, and replacing it whole: `POST /v1/admin/reload` and SIGHUP.

A reload opens the project again from its fabric.yaml and compiles everything a request
needs (masking policies, feature views, API keys, store and catalog) before anything changes.
If any of it fails, the reload is refused with every problem named and the old project keeps
serving. If it succeeds, the new project is swapped in with one assignment: a request takes
the current project once, as it starts, so requests in flight finish on the old one, which is
closed when the last of them lets go of it (garbage collection).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric.api.auth import Authenticator
from fabric.api.metrics import COLLECTOR
from fabric.errors import FabricError, ReloadError
from fabric.project import Project
from fabric.rules.operators import MaskContext
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService

__all__ = ["ProjectServices", "Reloader"]

log = logging.getLogger("fabric.api")


@dataclass(frozen=True)
class ProjectServices:
    """One consistent set of what requests use: a project and its services."""

    project: Project
    entities: EntityService
    features: FeatureService
    authenticate: Authenticator

    @classmethod
    def of(cls, project: Project) -> ProjectServices:
        """Compile and open everything now: a broken rule file or store fails here, not
        in a request."""
        # On the postgres backend a read past api.read_timeout_ms is stopped by the server.
        project.statement_timeout_ms = project.config.api.read_timeout_ms
        project.prepare()
        entities = EntityService(project)
        return cls(
            project, entities, FeatureService(project, entities), Authenticator(project.config)
        )

    def warm(self) -> None:
        """Do once the work of each kind of request, answering nobody, so the first requests
        do not pay for it: on the calling thread, its connections to the store and catalog;
        every mask function of every policy once (fake-value pools, the phone-number
        library's metadata, FPE plans); an entity read and masked per role's policy; and
        feature vectors per view, one and a batch. Otherwise the first vectors of a server
        stall, long enough to decide the 99th percentile of a whole run
        (benchmarks/README.md, "Warm-up").
        This counts as reads: :meth:`zero_counters` after."""
        project = self.project
        probe = "warm-up 555-0100 someone@example.com 4111 1111 1111 1111"
        policies = {p.name: p for p in map(project.policy_for, [*project.config.roles, None])}
        for policy in policies.values():
            for (entity_type, _), plan in policy.tables.items():
                for mask in plan.values():
                    if mask is not None:
                        with contextlib.suppress(Exception):  # any input it refuses is fine
                            mask(probe, MaskContext(entity_type, "warm-up"))
        with contextlib.suppress(FabricError):
            for entity_type in project.config.entities:
                for entity_id in project.catalog.first_ids(entity_type, 1):
                    for role in [*project.config.roles, None]:
                        self.entities.document(entity_type, entity_id, role=role)
            for view in project.views().values():
                # One vector, and a batch big enough for the vectorised paths (Arrow's
                # kernels load on their first use).
                ids = project.catalog.first_ids(view.entity_type, 200)
                if ids:
                    self.features.vector_batch([(view.name, ids[0], None, None)])
                    self.features.vectors(view.name, ids)

    def zero_counters(self) -> None:
        """Start the metrics' counts of reads and cache hits from zero."""
        self.entities.served = self.entities.cache_hits = self.entities.cache_misses = 0
        self.features.hits = self.features.online_hits = self.features.misses = 0


class Reloader:
    """The project the app serves, replaced whole on reload."""

    def __init__(self, project: Project) -> None:
        self.current = ProjectServices.of(project)
        self._lock = threading.Lock()
        #: the store's reload count this server has followed (see :meth:`follow`)
        self.seen = project.catalog.reload_generation()

    def reload(self, *, announce: bool = True) -> dict[str, Any]:
        """Open the project again from its fabric.yaml and serve it from now on.

        With ``announce``, the reload is counted in the catalog, so every other server of
        the store (another worker process, another node on the postgres backend) reloads its
        own files too when it next checks (:meth:`follow`).

        Raises:
            ReloadError: the configuration or a rule file is broken (every problem named);
                nothing changed.
        """
        path = self.current.project.config.path
        if path is None:
            raise ReloadError(["this app was not opened from a fabric.yaml"])
        with self._lock:
            project: Project | None = None
            try:
                project = Project.open(Path(path))
                fresh = ProjectServices.of(project)
                # Its compiled paths warm before it serves (this thread's connections too).
                fresh.warm()
                fresh.zero_counters()
            except FabricError as exc:
                if project is not None:
                    project.close()
                problems = [line.strip() for line in str(exc).splitlines() if line.strip()]
                log.warning("reload refused: %d problem(s)", len(problems))
                raise ReloadError(problems) from exc
            old = self.current
            self.current = fresh
            COLLECTOR.attach(fresh.project, fresh.entities, fresh.features)
            COLLECTOR.detach(old.project)
        if announce:
            try:
                self.seen = fresh.project.catalog.announce_reload()
            except Exception as exc:  # best effort: this server reloaded either way
                # A sync's long transaction can hold the embedded catalog's write lock past
                # its busy timeout: the other servers are told at the next reload.
                log.warning(
                    "reloaded, but the other servers of the store were not told (%s)",
                    type(exc).__name__,
                )
        log.info("reloaded %s (rules %s)", path.name, fresh.project.rules_version())
        return {
            "status": "reloaded",
            "rules_version": fresh.project.rules_version(),
            "views": sorted(fresh.project.views()),
        }

    def reload_quietly(self, *, announce: bool = True) -> None:
        """Reload and log the outcome (SIGHUP, or another server's reload: nobody to
        answer)."""
        try:
            self.reload(announce=announce)
        except FabricError as exc:
            log.warning("%s", str(exc).splitlines()[0])

    def follow(self) -> bool:
        """Reload if another server of the store was told to since this one last looked;
        whether it did. A refused reload is logged and not tried again until the next one.
        """
        generation = self.current.project.catalog.reload_generation()
        if generation <= self.seen:
            return False
        self.seen = generation
        log.info("another server of this store reloaded (reload %d): reloading", generation)
        self.reload_quietly(announce=False)
        return True

    def follow_every(self, stopped: threading.Event) -> None:
        """:meth:`follow` every ``api.reload_check_ms`` until ``stopped`` (a thread's loop;
        a store that does not answer is asked again next time)."""
        while True:
            interval = self.current.project.config.api.reload_check_ms
            if stopped.wait(interval / 1000 if interval else 5.0):
                return
            if interval:
                try:
                    self.follow()
                except FabricError as exc:
                    log.warning("checking for reloads: %s", str(exc).splitlines()[0])
