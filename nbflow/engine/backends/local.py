"""In-process backends: coroutines on the run's event loop, and a per-run thread pool.

Threads cannot be interrupted from outside.  When a thread task times out, the scheduler
stops waiting for it, marks it failed with :class:`~nbflow.TaskTimeout` and frees its slot;
the thread itself runs on until the function returns and its late result is discarded.
When a run is cancelled, ``aclose`` waits up to ``cancel_grace`` seconds for threads still
running task code, so that normally nothing the run started outlives it; a thread still
busy after that is left to finish on its own and named in a warning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import anyio

from ...core.sizes import output_size

DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)  # same default as concurrent.futures


class AsyncBackend:
    """Runs coroutine functions directly on the run's event loop."""

    name = "async"
    capacity = math.inf
    size_of = staticmethod(output_size)  # a result's output_bytes (a cache hit's too)

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        value = await (fn(*args, **kwargs) if kwargs else fn(*args))
        return value, output_size(value)

    async def aclose(self, cancelled: bool) -> None:
        return None


class ThreadBackend:
    """Runs plain functions in a thread pool owned by the run."""

    name = "thread"
    size_of = staticmethod(output_size)  # a result's output_bytes (a cache hit's too)

    def __init__(self, threads: int | None = None, cancel_grace: float = 10.0) -> None:
        self.capacity = float(threads or DEFAULT_THREADS)
        self.cancel_grace = cancel_grace
        self._pool: cf.ThreadPoolExecutor | None = None
        self._running: dict[cf.Future[Any], str] = {}  # future -> task key, while we wait on it

    def _executor(self) -> cf.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(int(self.capacity), thread_name_prefix="nbflow-task")
        return self._pool

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        fut = self._executor().submit(call)
        self._running[fut] = key
        try:
            value = await asyncio.wrap_future(fut)
        finally:
            # A call we stopped waiting for (cancel, timeout) stays listed while its thread
            # runs, so that aclose can wait for it; a timed-out one is abandon()ed instead.
            if fut.done():
                self._running.pop(fut, None)
        return value, output_size(value)

    def abandon(self, key: str) -> None:
        """Forget a call whose task timed out: its thread finishes on its own."""
        for fut, k in list(self._running.items()):
            if k == key:
                del self._running[fut]

    async def aclose(self, cancelled: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        busy = {f: k for f, k in self._running.items() if not f.done()}
        self._running.clear()
        if busy:
            await _wait_done(list(busy), self.cancel_grace)
            not_done = [f for f in busy if not f.done()]
            if not_done:
                warnings.warn(
                    "nbflow: thread tasks still running after the run ended "
                    f"(they cannot be interrupted and will finish on their own): "
                    f"{sorted(busy[f] for f in not_done)}",
                    RuntimeWarning,
                    stacklevel=1,
                )


async def _wait_done(futures: list[cf.Future[Any]], timeout: float) -> None:
    """Wait (shielded from cancellation, at most ``timeout`` s) until all futures are done.

    Completion callbacks wake us; no extra thread is started for the wait.
    """
    loop = asyncio.get_running_loop()
    left = len(futures)
    all_done = anyio.Event()

    def one_done(_: cf.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if left == 0:
            all_done.set()

    for f in futures:
        f.add_done_callback(lambda f: loop.call_soon_threadsafe(one_done, f))
    with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
        await all_done.wait()
