"""A Dask cluster on this machine's loopback for the benchmarks, and the processes it runs.

The cluster runs in the benchmark's process (its scheduler and nannies are threads and an
event loop there) and starts one single-threaded worker process per worker; syncs in other
processes connect to its address. Benchmarks that count CPU time or memory need the worker
processes' ids: they are this process's children that appeared while the cluster started.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any, Self

from _common import descendant_pids, log

from fabric.executors import start_loopback_cluster

__all__ = ["LoopbackCluster"]


class LoopbackCluster:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes.

    The one fabric starts (:func:`fabric.executors.start_loopback_cluster`); closed on exit.
    Starting it is not timed by anything here: callers start it outside their timed regions.
    """

    def __init__(self, workers: int) -> None:
        before = set(descendant_pids(str(os.getpid())))
        # The cluster `fabric sync --executor dask` starts, for syncs in other processes.
        self._cluster: Any = start_loopback_cluster(workers)
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
