"""Sync tasks on a Dask cluster through ``distributed``.

``backend="dask"`` starts a temporary ``LocalCluster`` for the run and closes it after;
``backend="tcp://host:port"`` connects to a running scheduler (and disconnects after);
a ``distributed.Client`` is used as is and left open.  Functions and arguments travel with
cloudpickle (Dask's own serialisation), so notebook-defined functions work.  Each attempt is
submitted under a unique key with ``pure=False``, so Dask never merges two calls.
Cancelling the run cancels the submitted futures.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from typing import Any

import anyio


def _apply(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    return fn(*args, **kwargs) if kwargs else fn(*args)


class DaskBackend:
    name = "dask"

    def __init__(self, target: Any) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise ImportError(
                "backend='dask' needs the distributed package: pip install 'nbflow[dask]'"
            ) from None
        self.target = target
        self.client: Any = None
        self._cluster: Any = None
        self._own_client = False
        self._futures: set[Any] = set()
        self._tag = uuid.uuid4().hex[:8]
        self.capacity = math.inf  # set from the cluster's thread count once connected

    @property
    def description(self) -> str:
        if self.client is not None:
            return f"dask ({self.client.scheduler.address})"
        return f"dask ({self.target})"

    async def open(self) -> None:
        from distributed import Client, LocalCluster

        if isinstance(self.target, Client):
            if self.target.asynchronous:
                raise ValueError(
                    "nbflow needs a synchronous distributed.Client (asynchronous=False); it "
                    "drives the client from its own event loop"
                )
            self.client = self.target
        elif self.target == "dask":
            def start() -> Any:
                cluster = LocalCluster(dashboard_address=None, processes=True, threads_per_worker=1)
                return cluster, Client(cluster, set_as_default=False)

            self._cluster, self.client = await anyio.to_thread.run_sync(start)
            self._own_client = True
        else:
            self.client = await anyio.to_thread.run_sync(
                lambda: Client(self.target, set_as_default=False, timeout="10s")
            )
            self._own_client = True
        threads = sum(self.client.nthreads().values())
        self.capacity = float(threads) if threads else math.inf

    async def call(
        self, key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, int | None]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        unique = f"{key}-{self._tag}-{uuid.uuid4().hex[:6]}"
        fut = self.client.submit(_apply, fn, args, kwargs, key=unique, pure=False)
        self._futures.add(fut)

        def settle(outcome: tuple[bool, Any]) -> None:
            if not waiter.done():
                waiter.set_result(outcome)

        def done(f: Any) -> None:  # runs in a distributed callback thread
            try:
                outcome = (True, f.result())
            except BaseException as e:  # the task's own exception, re-raised below
                outcome = (False, e)
            loop.call_soon_threadsafe(settle, outcome)

        fut.add_done_callback(done)
        try:
            ok, value = await waiter
        except BaseException:
            fut.cancel()
            raise
        finally:
            self._futures.discard(fut)
        if not ok:
            raise value
        return value, None

    async def aclose(self, cancelled: bool) -> None:
        futures, self._futures = list(self._futures), set()
        client, cluster = self.client, self._cluster
        self.client = self._cluster = None

        def close() -> None:
            if futures and client is not None:
                client.cancel(futures)
            if self._own_client and client is not None:
                client.close()
            if cluster is not None:
                cluster.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)
