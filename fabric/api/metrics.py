"""`GET /metrics`: Prometheus text, from a well-kept client (``prometheus-client``).

Requests are counted and timed by :class:`fabric.api.observe.RequestObserver`. A collector of
ours adds, read when scraped: entities served, the read cache's hits and misses, sync runs by
status and the last one's duration, entities per type and the store's size on disk. Labels
carry route templates, statuses and entity types only: no id, key or value reaches the
metrics.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime

from litestar import Controller, Response, get
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fabric.project import Project
from fabric.services.entities import EntityService
from fabric.services.features import FeatureService

__all__ = ["COLLECTOR", "FabricCollector", "MetricsController"]


class MetricsController(Controller):
    """``/metrics`` without authentication (ops scrapers), documented as the text it is.

    Under a server of several processes with ``PROMETHEUS_MULTIPROC_DIR`` set, the figures of
    every process are merged, as the client library does it.
    """

    path = "/metrics"

    @get(
        media_type=CONTENT_TYPE_LATEST,
        sync_to_thread=False,
        tags=["ops"],
        summary="Prometheus text; no auth",
    )
    def metrics(self) -> Response[bytes]:
        """The default registry in Prometheus' text format."""
        registry: CollectorRegistry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class FabricCollector(Collector):
    """fabric's own figures, read at each scrape, of the app serving in this process.

    One collector per process, registered once: an app attaches its project as it starts
    and detaches it as it stops (tests run several apps in one process; a server, one).
    """

    def __init__(self) -> None:
        self._apps: list[tuple[Project, EntityService, FeatureService]] = []
        self._lock = threading.Lock()

    def attach(self, project: Project, service: EntityService, features: FeatureService) -> None:
        """Report on this app's project from now on."""
        with self._lock:
            self._apps.append((project, service, features))

    def detach(self, project: Project) -> None:
        """Stop reporting on this project."""
        with self._lock:
            self._apps = [app for app in self._apps if app[0] is not project]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if not self._apps:
                return
            project, service, features = self._apps[-1]
        served = CounterMetricFamily("fabric_entities_served", "Entity documents served")
        served.add_metric([], service.served)
        yield served
        cache = CounterMetricFamily(
            "fabric_entity_cache_reads",
            "Entity reads, from the read cache or decoded",
            labels=["result"],
        )
        cache.add_metric(["hit"], service.cache_hits)
        cache.add_metric(["miss"], service.cache_misses)
        yield cache
        ratio = GaugeMetricFamily("fabric_entity_cache_hit_ratio", "Share of reads from the cache")
        reads = service.cache_hits + service.cache_misses
        ratio.add_metric([], service.cache_hits / reads if reads else 0.0)
        yield ratio
        vectors = CounterMetricFamily(
            "fabric_vector_cache_reads",
            "Feature vectors: from this process's cache (current until their horizon), from "
            "the online store (materialized by sync), or computed",
            labels=["result"],
        )
        vectors.add_metric(["hit"], features.hits)
        vectors.add_metric(["online"], features.online_hits)
        vectors.add_metric(["miss"], features.misses)
        yield vectors
        catalog = project.catalog
        runs = CounterMetricFamily(
            "fabric_sync_runs", "Sync runs recorded, by status", labels=["status"]
        )
        for status, count in catalog.runs_by_status().items():
            runs.add_metric([status], count)
        yield runs
        last = catalog.runs(1)
        seconds = GaugeMetricFamily(
            "fabric_sync_last_run_seconds",
            "Duration of the latest finished sync run",
            labels=["mode", "status"],
        )
        if last and last[0].finished_at:
            took = datetime.fromisoformat(last[0].finished_at) - datetime.fromisoformat(
                last[0].started_at
            )
            seconds.add_metric([last[0].mode, last[0].status], took.total_seconds())
        yield seconds
        entities = GaugeMetricFamily(
            "fabric_entities", "Entities stored, by type", labels=["entity_type"]
        )
        for entity_type in project.config.entities:
            entities.add_metric([entity_type], catalog.count(entity_type))
        yield entities
        size = GaugeMetricFamily(
            "fabric_store_file_bytes", "Bytes of the store's shard files on disk"
        )
        size.add_metric([], project.store.disk_bytes())
        yield size


#: The process's collector, in the default registry that ``/metrics`` serves.
COLLECTOR = FabricCollector()
REGISTRY.register(COLLECTOR)
