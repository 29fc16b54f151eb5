"""The watcher's hand-offs between Dask's client loop and a run's loop, without a cluster.

On a ``LocalCluster`` Dask's scheduler runs on the client loop, so a wake-up of that loop
for nothing delays the next task's start.  A future the client does not hold (an
intermediate sent unheld) only waits for its announcement: it is filed on the run's loop
and the client loop is not woken for it; a held future is still awaited there.  Whatever
the order of the announcement and the filing, the callback runs once.  No timings.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nbflow.engine.backends import dask_watch


class _Loop:
    def __init__(self) -> None:
        self.callbacks: list[tuple[Any, ...]] = []

    def add_callback(self, fn: Any, *args: Any) -> None:
        self.callbacks.append((fn, *args))


class _Client:
    def __init__(self) -> None:
        self.loop = _Loop()


class _Future:
    def __init__(self, key: str, status: str | None) -> None:
        self.key = key
        self.status = status


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_an_unheld_future_waits_for_its_announcement_without_waking_the_client_loop() -> None:
    async def scenario() -> None:
        client, told = _Client(), set()
        watcher = dask_watch.Watcher(client, asyncio.get_running_loop(), told=told.__contains__,
                                     located=True)
        got: list[str] = []
        watcher.watch(_Future("a-0a1b2c3d-1", None), lambda f: got.append(f.key))
        await _turns()
        assert client.loop.callbacks == [] and watcher.filed == 1 and got == []
        # the announcement arrives on the client loop (another thread)
        told.add("a-0a1b2c3d-1")
        t = threading.Thread(target=watcher.announced, args=("a-0a1b2c3d-1",))
        t.start()
        t.join()
        await _turns()
        assert got == ["a-0a1b2c3d-1"] and watcher.completions == 1
        assert client.loop.callbacks == []

    asyncio.run(scenario())


def test_an_unheld_future_told_already_is_handed_over_at_once() -> None:
    async def scenario() -> None:
        client = _Client()
        watcher = dask_watch.Watcher(client, asyncio.get_running_loop(),
                                     told=lambda key: True, located=True)
        got: list[str] = []
        watcher.watch(_Future("b-0a1b2c3d-2", None), lambda f: got.append(f.key))
        watcher.watch(_Future("c-0a1b2c3d-3", None), lambda f: got.append(f.key))
        await _turns()
        assert got == ["b-0a1b2c3d-2", "c-0a1b2c3d-3"] and watcher.filed == 0
        assert client.loop.callbacks == [] and watcher.wakeups == 1  # (one drain for both)

    asyncio.run(scenario())


def test_a_held_future_is_still_awaited_on_the_client_loop() -> None:
    async def scenario() -> None:
        client = _Client()
        watcher = dask_watch.Watcher(client, asyncio.get_running_loop(),
                                     told=lambda key: False, located=True)
        held, unheld = _Future("d-0a1b2c3d-4", "pending"), _Future("e-0a1b2c3d-5", None)
        watcher.watch(held, lambda f: None)
        watcher.watch(unheld, lambda f: None)
        await _turns()
        [(fn, items)] = client.loop.callbacks  # one hand-over, with the held future only
        assert fn == watcher._start and [f for f, _ in items] == [held]
        assert watcher.filed == 1

    asyncio.run(scenario())


def test_an_announcement_racing_the_filing_is_not_lost() -> None:
    # the announcement lands while the run's loop is checking whether the key was told:
    # it is taken after the filing, never lost between the check and the filing
    async def scenario() -> None:
        client, told = _Client(), set()
        threads: list[threading.Thread] = []

        def told_now(key: str) -> bool:
            known = key in told
            told.add(key)  # (the client loop learns it right after the check)
            t = threading.Thread(target=watcher.announced, args=(key,))
            t.start()
            threads.append(t)
            return known

        watcher = dask_watch.Watcher(client, asyncio.get_running_loop(), told=told_now,
                                     located=True)
        got: list[str] = []
        watcher.watch(_Future("f-0a1b2c3d-6", None), lambda f: got.append(f.key))
        await _turns()
        for t in threads:
            t.join()
        await _turns()
        assert got == ["f-0a1b2c3d-6"] and watcher._unheld == {}

    asyncio.run(scenario())
