"""What the app serves now, and replacing it whole: `POST /v1/admin/reload` and SIGHUP.

A reload opens the project again from its fabric.yaml and compiles everything a request
needs (masking policies, feature views, API keys, store and catalog) before anything changes.
If any of it fails, the reload is refused with every problem named and the old project keeps
serving. If it succeeds, the new project is swapped in with one assignment: a request takes
the current project once, as it starts, so requests in flight finish on the old one, which is
closed when the last of them lets go of it (garbage collection).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric.api.auth import Authenticator
from fabric.api.metrics import COLLECTOR
from fabric.entities import EntityService
from fabric.errors import FabricError
from fabric.features.service import FeatureService
from fabric.project import Project

__all__ = ["ReloadError", "Served", "Serving"]

log = logging.getLogger("fabric.api")


class ReloadError(FabricError):
    """A new configuration was refused; the old one keeps serving."""

    code = "bad_request"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        # One line (error bodies keep the first line): every problem, separated.
        super().__init__(
            "the new configuration was refused and the old one keeps serving: "
            + " | ".join(problems)
        )


@dataclass(frozen=True)
class Served:
    """One consistent set of what requests use: a project and its services."""

    project: Project
    service: EntityService
    features: FeatureService
    authenticate: Authenticator

    @classmethod
    def of(cls, project: Project) -> Served:
        """Compile and open everything now: a broken rule file or store fails here, not
        in a request."""
        project.prepare()
        service = EntityService(project)
        return cls(
            project, service, FeatureService(project, service), Authenticator(project.config)
        )


class Serving:
    """The project the app serves, replaced whole on reload."""

    def __init__(self, project: Project) -> None:
        self.current = Served.of(project)
        self._lock = threading.Lock()

    def reload(self) -> dict[str, Any]:
        """Open the project again from its fabric.yaml and serve it from now on.

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
                fresh = Served.of(project)
            except FabricError as exc:
                if project is not None:
                    project.close()
                problems = [line.strip() for line in str(exc).splitlines() if line.strip()]
                log.warning("reload refused: %d problem(s)", len(problems))
                raise ReloadError(problems) from exc
            old = self.current
            self.current = fresh
            COLLECTOR.attach(fresh.project, fresh.service)
            COLLECTOR.detach(old.project)
        log.info("reloaded %s (rules %s)", path.name, fresh.project.rules_version())
        return {
            "status": "reloaded",
            "rules_version": fresh.project.rules_version(),
            "views": sorted(fresh.project.views()),
        }

    def reload_quietly(self) -> None:
        """Reload and log the outcome (SIGHUP: nobody to answer)."""
        try:
            self.reload()
        except FabricError as exc:
            log.warning("%s", str(exc).splitlines()[0])
