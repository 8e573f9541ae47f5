"""A Dask cluster on this machine's loopback for the benchmarks, and the processes it runs.

The cluster runs in the benchmark's process (its scheduler and nannies are threads and an
event loop there) and starts one single-threaded worker process per worker; syncs in other
processes connect to its address. Benchmarks that count CPU time or memory need the worker
processes' ids: they are this process's children that appeared while the cluster started.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import TracebackType
from typing import Any, Self

from _common import descendant_pids, log

__all__ = ["LoopbackCluster"]


class LoopbackCluster:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes.

    Bound to 127.0.0.1, without a dashboard; closed on exit. Starting it is not timed by
    anything here: callers start it outside their timed regions.
    """

    def __init__(self, workers: int) -> None:
        # Imported when a cluster is asked for; its LocalCluster is untyped (Any).
        distributed: Any = importlib.import_module("distributed")
        before = set(descendant_pids(str(os.getpid())))
        self._cluster: Any = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.workers = workers
        #: the scheduler's address, for open_sync_executor(scheduler=...)
        self.address: str = self._cluster.scheduler_address
        #: the process the scheduler (and the nannies) run in: this one
        self.scheduler_pid = os.getpid()
        #: processes the cluster started (its workers, and whatever they started)
        self.pids: tuple[int, ...] = tuple(
            sorted(int(pid) for pid in set(descendant_pids(str(os.getpid()))) - before)
        )
        log(
            f"started a Dask LocalCluster at {self.address}: {workers} workers, processes "
            f"{', '.join(map(str, self.pids))}"
        )

    def close(self) -> None:
        """Stop the workers and the scheduler."""
        self._cluster.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
