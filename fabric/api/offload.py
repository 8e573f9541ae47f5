"""Run blocking work (apsw reads, masking, feature computation) off the event loop, cheaply.

Litestar's ``sync_to_thread`` hands each call to anyio's thread pool and wakes the loop once
per call, which cost more CPU than reading and serving a cached entity (benchmarks/README.md,
"Offload"). Here a few threads of our own take calls from one queue and, while more calls are
waiting, run them back to back and wake the loop once for the whole burst. Under load the
cost of crossing threads is shared by every call of the burst; with one call in flight it is
one wake-up each way, as before.

Calls may also be *coalesced*: :meth:`Offload.gather` queues an item for a batch function,
and items of the same batch key that wait together are handed to one call of it (feature
vectors of many requests computed in one pass, as an export computes them).

One thread takes the calls; the others only help while it is stuck on one call (longer than
``stall_ms``) and calls wait behind it. Two threads taking calls side by side contend for the
GIL on every SQLite call they make: uniform entity lookups had a lower p99 and a higher rate
this way than with both threads taking calls (benchmarks/README.md, "Offload"). But a call
that takes long (a huge entity, a read stopped only by ``api.read_timeout_ms``) must not hold
up every request of the process: then a helper takes the calls waiting behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Offload"]

T = TypeVar("T")
log = logging.getLogger("fabric.api")

#: Completed calls handed to the loop in one wake-up, at most.
_BURST = 64
#: Items handed to one call of a batch function, at most.
MAX_COALESCED = 64
#: How long the taking thread may be on one call, with calls waiting, before a helper joins.
STALL_MS = 5


@dataclass
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    run: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class _Batch:
    """Items waiting for one call of ``run(items) -> results`` (one result per item)."""

    key: Hashable
    loop: asyncio.AbstractEventLoop
    run: Callable[[list[Any]], Sequence[Any]]
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


def _settle(done: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the loop: give each waiting request its result or its exception."""
    for future, ok, value in done:
        if future.cancelled():  # the client went away
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Offload:
    """Worker threads behind one queue: the first takes the calls, the others help while it
    has been on one call for ``stall_ms`` and calls wait. :meth:`close` stops them. Each
    thread runs ``initializer`` first (a warm-up), then ``ready`` runs once, before any call
    is taken."""

    def __init__(
        self,
        threads: int = 2,
        initializer: Callable[[], object] | None = None,
        ready: Callable[[], None] | None = None,
        stall_ms: float = STALL_MS,
    ) -> None:
        self._initializer = initializer
        self._stall = stall_ms / 1000
        #: calls the first thread has started, and when it started the current one (0: idle)
        self._taken = 0
        self._busy_since = 0.0
        #: set while the first thread is on calls: helpers look only then
        self._working = threading.Event()
        self._closed = False
        # No thread takes a call before every thread has run its initializer and ``ready``
        # has run once: a warm-up can then be told apart from the work that follows.
        self._ready = threading.Event()

        def all_started() -> None:
            try:
                if ready is not None:
                    ready()
            finally:
                self._ready.set()

        self._started = threading.Barrier(threads, action=all_started)
        self._queue: queue.SimpleQueue[_Call | _Batch | None] = queue.SimpleQueue()
        self._batches: dict[Hashable, _Batch] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._work, args=(n == 0,), name=f"fabric-offload-{n}", daemon=True
            )
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until every thread has run its initializer; False if ``timeout`` passed."""
        return self._ready.wait(timeout)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on a worker thread; its result, or its exception
        raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(loop, future, function, args, kwargs))
        return await future

    async def gather(
        self, key: Hashable, function: Callable[[list[Any]], Sequence[Any]], item: Any
    ) -> Any:
        """``function([... item ...])[i]``: ``item`` computed with others of the same ``key``
        waiting at the same time (up to :data:`MAX_COALESCED`), in one call on a worker.

        ``function`` must return one result per item, in order; an exception it raises is
        raised to every request of the batch, so it should report per-item problems as
        results (for example an exception instance, which is raised to that request alone).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            batch = self._batches.get(key)
            if batch is None or len(batch.items) >= MAX_COALESCED:
                batch = self._batches[key] = _Batch(key, loop, function)
                self._queue.put(batch)
            batch.items.append(item)
            batch.futures.append(future)
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop the threads once the calls already queued have run."""
        self._closed = True
        self._working.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _take(self, batch: _Batch) -> tuple[list[Any], list[asyncio.Future[Any]]]:
        """Close a batch to new items (later ones start another) and return what it holds."""
        with self._lock:
            if self._batches.get(batch.key) is batch:
                del self._batches[batch.key]
            return batch.items, batch.futures

    def _stalled(self) -> int | None:
        """The number of the call the first thread is stuck on, while calls wait behind it;
        None when it is not stuck."""
        since, taken = self._busy_since, self._taken
        if since and time.monotonic() - since >= self._stall and not self._queue.empty():
            return taken
        return None

    def _next_stall(self) -> tuple[_Call | _Batch | None, int]:
        """A helper's wait: the next call to take while the first thread is stuck (and that
        call's number), or None once closed. Looks every ``stall_ms`` while the first thread
        is on calls (a few hundred wake-ups a second under load, none when idle)."""
        while not self._closed:
            self._working.wait()
            time.sleep(self._stall)
            stuck_on = self._stalled()
            if stuck_on is not None:
                try:
                    return self._queue.get_nowait(), stuck_on
                except queue.Empty:
                    continue
        return None, 0

    def _work(self, first: bool) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except Exception:  # a warm-up that failed leaves the work to the first request
                log.warning("offload thread initializer failed", exc_info=True)
        try:
            self._started.wait()
        except threading.BrokenBarrierError:  # ``ready`` failed: serve all the same
            log.warning("offload threads started without their ready action")
        pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        while True:
            if first:
                task, stuck_on = self._queue.get(), 0
                self._working.set()
            else:
                task, stuck_on = self._next_stall()
            while task is not None:
                if first:
                    self._taken += 1
                    self._busy_since = time.monotonic()
                if isinstance(task, _Batch):
                    items, futures = self._take(task)
                    try:
                        results = list(task.run(items))
                        if len(results) != len(items):
                            raise RuntimeError("a batch function returned a wrong count")
                        outcomes = [(f, True, r) for f, r in zip(futures, results, strict=True)]
                    except BaseException as exc:  # handed to every waiting request
                        outcomes = [(f, False, exc) for f in futures]
                    pending.setdefault(task.loop, []).extend(outcomes)
                else:
                    try:
                        outcome = (task.future, True, task.run(*task.args, **task.kwargs))
                    except BaseException as exc:  # raised in the request's own task
                        outcome = (task.future, False, exc)
                    pending.setdefault(task.loop, []).append(outcome)
                if sum(len(done) for done in pending.values()) >= _BURST:
                    self._flush(pending)
                if not first and self._taken != stuck_on:
                    break  # the first thread is free again: it takes the rest
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
            if first:
                self._busy_since = 0.0
                self._working.clear()
            self._flush(pending)
            if task is None and (first or self._closed):
                return

    @staticmethod
    def _flush(
        pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]],
    ) -> None:
        for loop, done in pending.items():
            if done:
                # A closed loop raises RuntimeError: nobody is waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, done)
        pending.clear()
