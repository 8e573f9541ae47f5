"""Offload: results and exceptions reach the awaiting request; coalesced items are computed
together and each gets its own result; nothing runs on the event loop's thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from fabric.api.offload import MAX_COALESCED, Offload


@pytest.fixture
def offload() -> Iterator[Offload]:
    pool = Offload(threads=2)
    yield pool
    pool.close()


def test_run_returns_results_and_raises_exceptions_off_the_loop(offload: Offload) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        threads = await asyncio.gather(*[offload.run(threading.get_ident) for _ in range(200)])
        assert loop_thread not in threads
        assert await offload.run(lambda a, b=0: a + b, 2, b=3) == 5
        with pytest.raises(ZeroDivisionError):
            await offload.run(lambda: 1 / 0)
        # One failure does not reach the calls queued with it.
        results = await asyncio.gather(
            *[offload.run(lambda n=n: 10 // n) for n in range(-50, 50)], return_exceptions=True
        )
        assert sum(isinstance(r, ZeroDivisionError) for r in results) == 1
        assert [r for r in results if not isinstance(r, Exception)] == [
            10 // n for n in range(-50, 50) if n
        ]

    asyncio.run(main())


def test_gather_coalesces_waiting_items_and_answers_each(offload: Offload) -> None:
    calls: list[list[int]] = []
    gate = threading.Event()

    def square_all(items: list[int]) -> list[object]:
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i == 7 else i * i for i in items]

    async def main() -> None:
        # Keep both threads busy so the items wait, and coalesce.
        blockers = [offload.run(gate.wait) for _ in range(2)]
        tasks = [
            asyncio.ensure_future(offload.gather("squares", square_all, i)) for i in range(150)
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(*blockers)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[7], ValueError) and str(results[7]) == "bad 7"
        assert [r for i, r in enumerate(results) if i != 7] == [i * i for i in range(150) if i != 7]

    asyncio.run(main())
    assert sorted(i for call in calls for i in call) == list(range(150))
    assert len(calls) < 150  # they were coalesced
    assert max(len(c) for c in calls) <= MAX_COALESCED


def test_a_batch_function_that_fails_fails_every_item_of_its_batch(offload: Offload) -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("batch failed")

    def short(items: list[int]) -> list[int]:
        return []

    async def main() -> None:
        with pytest.raises(RuntimeError, match="batch failed"):
            await offload.gather("b", broken, 1)
        with pytest.raises(RuntimeError, match="wrong count"):
            await offload.gather("s", short, 1)
        assert await offload.run(lambda: "still serving") == "still serving"

    asyncio.run(main())


def test_no_call_runs_before_every_thread_is_initialized_and_ready_has_run() -> None:
    events: list[str] = []
    lock = threading.Lock()
    slow = threading.Event()

    def initializer() -> None:
        with lock:
            first = not events
            events.append("init")
        if first:
            slow.wait(0.2)  # one thread is slow to warm up

    pool = Offload(threads=3, initializer=initializer, ready=lambda: events.append("ready"))
    try:

        async def main() -> None:
            await asyncio.gather(*[pool.run(events.append, "call") for _ in range(5)])

        asyncio.run(main())
        assert pool.wait_ready(0)
        assert events[:4] == ["init", "init", "init", "ready"] and events[4:] == ["call"] * 5
    finally:
        pool.close()


def test_one_thread_takes_the_calls_while_it_keeps_up() -> None:
    # A helper would join only after a second on one call: none of these comes near.
    pool = Offload(threads=2, stall_ms=1000)
    try:

        async def main() -> set[int]:
            return set(await asyncio.gather(*[pool.run(threading.get_ident) for _ in range(300)]))

        assert len(asyncio.run(main())) == 1
    finally:
        pool.close()


def test_a_helper_takes_the_calls_waiting_behind_a_stuck_one() -> None:
    pool = Offload(threads=2, stall_ms=5)
    stuck = threading.Event()

    def wait_then_say_who() -> int:
        stuck.wait(10)
        return threading.get_ident()

    try:

        async def main() -> None:
            blocker = asyncio.ensure_future(pool.run(wait_then_say_who))
            await asyncio.sleep(0.01)  # the first thread is on it
            helped = await asyncio.wait_for(
                asyncio.gather(*[pool.run(threading.get_ident) for _ in range(50)]), timeout=5
            )
            assert not blocker.done()  # answered while the first thread was still stuck
            stuck.set()
            first = await blocker
            assert first not in helped and threading.get_ident() not in helped
            # Free again, the first thread takes calls once more.
            later = await asyncio.gather(*[pool.run(threading.get_ident) for _ in range(20)])
            assert first in later

        asyncio.run(main())
    finally:
        stuck.set()
        pool.close()
