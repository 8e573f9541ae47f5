"""Where a run's tasks execute: this process, local worker processes, or a Dask cluster.

Every parallel stage of fabric (a sync's match values, builds and patches; materializing;
exporting) hands pure tasks to an :class:`Executor`: a picklable function of a picklable job,
whose result depends on the job alone. So a task can run here, in a worker process, or on a
remote Dask worker, and be run again after a worker died, without changing the result.

This is the one place worker processes are started. Local workers fork from a server process
(multiprocessing's ``forkserver``) that imported the task modules once: spawning each worker
paid for all of fabric's imports again, and forking this process would copy its open
databases into the children. A worker that dies (killed, out of memory) fails the run with an
:class:`~fabric.errors.ExecutorError` instead of waiting forever for its result; a run
killed outright takes its workers with it.

Dask (``distributed``) is imported only when asked for. Its scheduler and workers unpickle
and run whatever a client sends, and a sync's tasks carry source rows and the store's keys, so
a plain ``tcp://`` address must be on this machine's loopback; anything else must be
``tls://`` (see the README, "Running a sync on a Dask cluster").
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import ipaddress
import logging
import multiprocessing
import multiprocessing.context
import os
import pickle
import select
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from fabric.errors import ExecutorError

__all__ = [
    "EXECUTOR_KINDS",
    "NO_DISK_SPILL",
    "DaskExecutor",
    "Executor",
    "ExecutorKind",
    "InProcessExecutor",
    "LocalExecutor",
    "check_scheduler_address",
    "open_executor",
    "start_loopback_cluster",
]

J = TypeVar("J")
R = TypeVar("R")

ExecutorKind = Literal["local", "dask"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "dask")

#: Modules every local worker imports before its first task, in the fork server.
_PRELOAD = ["fabric.project"]
#: Dask settings for workers that hold a sync's data: nothing spilled to disk under memory
#: pressure (``distributed`` writes what a worker holds to its local directory, in clear).
NO_DISK_SPILL = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
}
#: Seconds to wait for a Dask scheduler to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10.0
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class Executor:
    """Runs tasks, ``fn(job)``, somewhere; results come back to this process."""

    #: "inline", "local" or "dask"
    kind = "inline"
    #: how many tasks run at once
    workers = 1
    #: tasks may run on another machine: they must carry their data, not paths to it
    remote = False

    def map(
        self,
        fn: Callable[[J], R],
        jobs: Iterable[J],
        *,
        ahead: int | None = None,
        ordered: bool = True,
    ) -> Iterator[R]:
        """Run ``fn`` over ``jobs``; yield each result (in the jobs' order when ``ordered``).

        ``ahead``: most jobs submitted and not yet yielded (default: two per worker), so a
        large input is not all in flight at once.
        """
        for job in jobs:
            yield fn(job)

    def start(
        self, fn: Callable[[J], R], jobs: Iterable[J], *, ordered: bool = True
    ) -> Iterator[R]:
        """Submit every job now; yield the results as they are consumed.

        For work that should proceed while this process does something else first. Inline,
        nothing runs before the results are asked for.
        """
        return self.map(fn, jobs, ordered=ordered)

    def describe(self) -> str:
        """Where tasks run, for people: "inline", "local: 2 workers", "dask: 2 workers"."""
        if self.kind == "inline":
            return "inline"
        return f"{self.kind}: {self.workers} worker{'s' if self.workers != 1 else ''}"

    def close(self) -> None:
        """Stop the workers this executor started (none for an inline one)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Every task in this process, one after the other: one worker, nothing to start."""


def _windowed(
    submit: Callable[[J], Future[R]],
    jobs: Iterable[J],
    ahead: int,
    ordered: bool,
    wait_any: Callable[[list[Future[R]]], Future[R]],
) -> Iterator[Future[R]]:
    """Submit jobs keeping at most ``ahead`` in flight; yield futures as they are due."""
    pending: deque[Future[R]] = deque()
    source = iter(jobs)
    exhausted = False
    while True:
        while not exhausted and len(pending) < ahead:
            try:
                pending.append(submit(next(source)))
            except StopIteration:
                exhausted = True
        if not pending:
            return
        if ordered:
            yield pending.popleft()
        else:
            done = wait_any(list(pending))
            pending.remove(done)
            yield done


def _first_done(futures: list[Future[Any]]) -> Future[Any]:
    return next(iter(wait(futures, return_when=FIRST_COMPLETED).done))


#: Longest temporary directory the fork server's socket fits under: a Unix socket's path is
#: at most 107 bytes, and multiprocessing puts it ~40 bytes deep in a directory of its own.
_SOCKET_DIR_MAX = 64


def _context() -> multiprocessing.context.BaseContext:
    """The fork server, with the task modules preloaded; or, when the temporary directory's
    path is too long for its socket (a deep ``TMPDIR``), spawned workers, slower to start."""
    if len(os.fsencode(tempfile.gettempdir())) > _SOCKET_DIR_MAX:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_PRELOAD))
    return context


def _nothing() -> None:
    """A task that only makes the workers start."""


def _end_with(owner: int) -> None:
    """End this worker process as soon as ``owner`` (the process whose executor started it)
    has ended, from a thread of its own.

    A pool's workers otherwise outlive an owner killed with SIGKILL: forked from the fork
    server, they are not its children, and one sending a result back when it died blocks on
    the full result pipe (whose reading end the workers hold too) forever, the others behind
    it, each holding its memory and the project's files open. They write nothing (the owner
    is the store's only writer), so ending them at once loses nothing.
    """

    def watch() -> None:
        try:
            handle = os.pidfd_open(owner)  # readable once the process has ended (Linux)
        except ProcessLookupError:
            pass  # already gone
        except (AttributeError, OSError):  # no pidfd here: ask every half second
            while _alive(owner):
                time.sleep(0.5)
        else:
            select.select([handle], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="fabric-owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or its pid now someone else's
        return False
    return True


def _start_worker(
    collect: bool, initializer: Callable[..., None] | None, args: tuple[Any, ...], owner: int
) -> None:
    _end_with(owner)
    if not collect:
        # A sync's tasks allocate millions of small objects that form no cycles; a full
        # collection walks all of them again and again (benchmarks/README.md, "Sync
        # collector"). Reference counting frees them.
        gc.disable()
    if initializer is not None:
        initializer(*args)


class LocalExecutor(Executor):
    """Worker processes on this machine, forked from a server that imported fabric once.

    Args:
        workers: processes to start.
        preload: modules of the tasks, imported in the fork server before any worker forks
            (once per process: a later executor's modules are imported by its workers).
        initializer: called with ``initargs`` in each worker as it starts (open a project).
        collect: keep Python's cyclic garbage collector on in the workers.
    """

    kind = "local"

    def __init__(
        self,
        workers: int,
        *,
        preload: Iterable[str] = (),
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
        collect: bool = True,
    ) -> None:
        self.workers = workers
        for module in preload:
            if module not in _PRELOAD:
                _PRELOAD.append(module)
        context = _context()
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(collect, initializer, initargs, os.getpid()),
        )

    def map(
        self,
        fn: Callable[[J], R],
        jobs: Iterable[J],
        *,
        ahead: int | None = None,
        ordered: bool = True,
    ) -> Iterator[R]:
        window = ahead if ahead is not None else 2 * self.workers
        return self._results(
            _windowed(
                lambda job: self._pool.submit(fn, job), jobs, max(1, window), ordered, _first_done
            )
        )

    def start(
        self, fn: Callable[[J], R], jobs: Iterable[J], *, ordered: bool = True
    ) -> Iterator[R]:
        futures = [self._pool.submit(fn, job) for job in jobs]
        return self._results(iter(futures) if ordered else as_completed(futures))

    def warm_up(self) -> None:
        """Start the workers (and their initializer) now, from a thread, without waiting for
        them: they would otherwise start with the first task. Starting the fork server
        waits for its imports, which this process can spend on other work meanwhile."""

        def start() -> None:
            # Closed before it started (the run failed first): nothing to start.
            with contextlib.suppress(RuntimeError):
                self._pool.submit(_nothing)

        threading.Thread(target=start, name="fabric-workers-start", daemon=True).start()

    @staticmethod
    def _results(futures: Iterator[Future[R]]) -> Iterator[R]:
        try:
            for future in futures:
                yield future.result()
        except BrokenProcessPool as exc:
            raise ExecutorError(
                "a worker process died before finishing its task (killed, or out of memory?); "
                "the run stopped: run it again"
            ) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_scheduler_address(address: str, *, allow_plaintext: bool = False) -> str:
    """Check a Dask scheduler address; return it.

    Tasks carry source rows and keys, so a plaintext ``tcp://`` connection must stay on this
    machine: a remote scheduler needs ``tls://`` (or ``allow_plaintext`` on a network the user
    trusts with the data).

    Raises:
        ExecutorError: not an address, or plaintext to another machine.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.port is None:
        raise ExecutorError(
            f"not a Dask scheduler address: {address!r} (expected tcp://HOST:PORT or "
            "tls://HOST:PORT)"
        )
    if parts.scheme == "tcp" and not allow_plaintext and not _is_loopback(parts.hostname):
        raise ExecutorError(
            f"the Dask scheduler {address} is not on this machine's loopback and the "
            "connection would be plaintext: tasks carry source rows and store keys. Use a "
            "tls:// address with certificates (README, 'Running a sync on a Dask cluster'), "
            "or set executor.allow_plaintext: true on a network you trust with the data"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _reachable(address: str, timeout: float) -> None:
    """Fail fast, naming the address, when nothing listens there."""
    parts = urlsplit(address)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutorError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


def start_loopback_cluster(workers: int) -> Any:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded worker processes (each
    under a nanny that restarts it), bound to 127.0.0.1, without a dashboard, that never
    spill what they hold to disk: a sync's tasks hold source data in clear (the workers take
    this configuration as they start). The caller closes it."""
    distributed = _distributed()
    with importlib.import_module("dask").config.set(NO_DISK_SPILL):
        return distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


def _quiet(package: str) -> list[tuple[logging.Logger, int]]:
    """Set every logger of ``package`` to CRITICAL; return each with the level it had."""
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name == package or name.startswith(f"{package}.")
    ]
    loud = [(logging.getLogger(name), logging.getLogger(name).level) for name in names]
    for logger, _ in loud:
        logger.setLevel(logging.CRITICAL)
    return loud


def _distributed() -> Any:
    """dask.distributed, imported when a run asks for it (it is untyped: Any)."""
    return importlib.import_module("distributed")


def _pickled(fn: Callable[[J], R], job: J) -> bytes:
    """``fn(job)`` on a Dask worker, pickled there: one frame Dask sends as it is. Handed a
    list, Dask's own serializer walks it element by element; sending a full sync's match
    values back that way cost its workers more than computing them (profiled: 555 samples
    serializing to 371 computing)."""
    return pickle.dumps(fn(job), protocol=pickle.HIGHEST_PROTOCOL)


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: one whose scheduler is given, or a new loopback one.

    Args:
        scheduler: the scheduler's address; None starts a ``LocalCluster`` of ``workers``
            single-threaded worker processes bound to 127.0.0.1, stopped on close.
        workers: workers of a started cluster (with a given scheduler: the cluster's own).
        allow_plaintext: see :func:`check_scheduler_address`.

    Raises:
        ExecutorError: the scheduler cannot be reached (naming its address).
    """

    kind = "dask"
    remote = True

    def __init__(
        self, scheduler: str | None, workers: int = 2, *, allow_plaintext: bool = False
    ) -> None:
        distributed = _distributed()
        self._cluster: Any = None
        # distributed logs a lost scheduler with tracebacks; the run reports it in one line
        # (ExecutorError), so its loggers are quiet while this executor is open.
        self._loud = _quiet("distributed")
        if scheduler is None:
            self._cluster = start_loopback_cluster(workers)
            scheduler = self._cluster.scheduler_address
        self.address = check_scheduler_address(scheduler, allow_plaintext=allow_plaintext)
        if self.address.startswith("tcp://"):
            _reachable(self.address, CONNECT_TIMEOUT_S)
        try:
            self._client = distributed.Client(
                self.address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {self.address}: {exc}"
            ) from None
        if self._cluster is None:
            try:
                # Tasks sent to a scheduler without workers would wait forever.
                self._client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                self.close()
                raise ExecutorError(
                    f"the Dask scheduler at {self.address} has no workers: start some with "
                    f"`dask worker {self.address} --nthreads 1`"
                ) from None
            self.workers = max(1, sum(self._client.nthreads().values()))
        else:
            self.workers = workers

    def map(
        self,
        fn: Callable[[J], R],
        jobs: Iterable[J],
        *,
        ahead: int | None = None,
        ordered: bool = True,
    ) -> Iterator[R]:
        distributed = _distributed()

        window = ahead if ahead is not None else 2 * self.workers
        done = distributed.as_completed(loop=self._client.loop)

        def submit(job: J) -> Any:
            future = self._submit(fn, job)
            done.add(future)
            return future

        def wait_any(futures: list[Any]) -> Any:
            return next(done)

        return self._results(_windowed(submit, jobs, max(1, window), ordered, wait_any))

    def start(
        self, fn: Callable[[J], R], jobs: Iterable[J], *, ordered: bool = True
    ) -> Iterator[R]:
        distributed = _distributed()

        futures = [self._submit(fn, job) for job in jobs]
        if ordered or not futures:
            return self._results(iter(futures))
        return self._results(distributed.as_completed(futures, loop=self._client.loop))

    def _submit(self, fn: Callable[[J], R], job: J) -> Any:
        # pure=False: two equal jobs are still two tasks, each with a key of its own.
        return self._client.submit(_pickled, fn, job, pure=False)

    def _results(self, futures: Iterator[Any]) -> Iterator[Any]:
        distributed = _distributed()

        try:
            for future in futures:
                yield pickle.loads(future.result())
        except (OSError, TimeoutError, distributed.client.FutureCancelledError) as exc:
            raise ExecutorError(
                f"lost the Dask scheduler at {self.address} during the run "
                f"({type(exc).__name__}); the run stopped: run it again"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            client = getattr(self, "_client", None)
            if client is not None:
                client.close(timeout=CONNECT_TIMEOUT_S)
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close(timeout=CONNECT_TIMEOUT_S)
            self._cluster = None
        for logger, level in self._loud:
            logger.setLevel(level)
        self._loud = []


def open_executor(
    kind: ExecutorKind = "local",
    workers: int = 1,
    *,
    scheduler: str | None = None,
    allow_plaintext: bool = False,
    preload: Iterable[str] = (),
    collect: bool = True,
) -> Executor:
    """The executor a run asked for: ``local`` with one worker runs inline.

    Raises:
        ExecutorError: a Dask scheduler that cannot be reached or may not be used.
    """
    if kind == "dask":
        return DaskExecutor(scheduler, workers, allow_plaintext=allow_plaintext)
    if workers <= 1:
        return InProcessExecutor()
    return LocalExecutor(workers, preload=preload, collect=collect)
