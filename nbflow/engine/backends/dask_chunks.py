"""A chunk of map items run as one Dask task, with each item's result left on the worker.

Adaptive map batching (``engine/batching.py``) runs several items of a map in one backend
call; on Dask that call is one task whose result is the list of the items' outcomes
``(ok, value or exception, seconds)`` with the call's CPU time and peak RSS
(:data:`Chunk`), held by the worker that ran it.  Bringing that list
here would bring every item's value through this process, which single Dask tasks avoid
(their results stay on the workers until asked for).  So the chunk's list stays where it
is and is taken apart there:

1. a tiny task next to the list (:func:`_outline`) sends back only what the engine needs
   to record each item: whether it succeeded, its exception if not, its seconds, and the
   size of its value as Dask measures it;
2. each item whose value is large (at least :data:`REMOTE_MIN` bytes) gets a future of
   its own, a tiny task that selects its element of the list on the same worker
   (:func:`_pick`), submitted and not waited for: the item completes with a remote result
   like a single task's, so a downstream Dask task is sent the future (the data moves
   worker to worker, if at all), the cache hashes it where it is (with the cache on, the
   outline task already did, and wrote its blob: ``dask_cache``), and it comes here only
   when someone asks for it;
3. an item whose value is small comes back inside the outline: a future per item would
   cost a Dask task each (about a millisecond of scheduling), more than sending a few
   bytes, and keeping per-item cost low is what batching is for.

The client lets go of the chunk's own future when this returns; Dask keeps the list until
the selections that need it have run, and its elements then stay alive under the items'
own keys (no copy: on the worker a selection is the same object).  Dask keeps the
lineage: an item lost with its worker is recomputed from the chunk's task.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import anyio

from . import dask_cache

REMOTE_MIN = 64 * 1024  # an item's value at least this big stays on its worker

Outcome = tuple[Any, ...]  # (ok, value or exception, seconds[, Dask's size of the value])
Chunk = tuple[list[Outcome], "float | None", "int | None"]  # (outcomes, cpu_s, peak_rss)
Outline = tuple[list[tuple[bool, Any, float, int]], "float | None", "int | None"]


def _outline(chunk: Chunk, small: int, prepare: list[Any] | None = None) -> Outline:
    """On the worker: per item ``(ok, exception / small value / None, seconds, bytes)``,
    with the chunk's CPU time and peak RSS.  With ``prepare`` (the cache's work per item,
    see ``dask_cache``), a large item's entry carries what it gave as a fifth element."""
    from dask.sizeof import sizeof

    outcomes, cpu_s, peak_rss = chunk
    out: list[Any] = []
    for k, (ok, value, seconds) in enumerate(outcomes):
        if not ok:
            out.append((False, value, seconds, 0))
            continue
        nbytes = int(sizeof(value))
        if nbytes >= small and prepare is not None and prepare[k] is not None:
            out.append((True, None, seconds, nbytes, dask_cache.prepare_here(value, prepare[k])))
            continue
        out.append((True, value if nbytes < small else None, seconds, nbytes))
    return out, cpu_s, peak_rss


def _pick(chunk: Chunk, k: int) -> Any:
    """On the worker: item ``k``'s value, the very object the chunk made."""
    return chunk[0][k][1]


async def _result(fut: Any) -> Any:
    """``fut``'s result, awaited on the event loop (so that a cancelled run stops waiting
    at once).  The done callback only signals: ``distributed`` runs every future's
    callbacks in one shared thread, and reading the result there blocks that thread
    whenever the data was lost with its worker and is being recomputed, which would stop
    every other future's callback (the run would hang).  The result is read in a thread
    of our own instead."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not waiter.done():
            waiter.set_result(None)

    fut.add_done_callback(lambda f: loop.call_soon_threadsafe(settle))
    await waiter
    return await anyio.to_thread.run_sync(fut.result, abandon_on_cancel=True)


async def split(backend: Any, chunk: Any, keys: list[str]) -> tuple[list[Outcome], float | None, int | None]:
    """The outcomes of the chunk ``chunk`` (a ``DaskResult`` of the chunk's task) for the
    items ``keys``, large values as remote results of their own (see the module), with the
    chunk's CPU time and peak RSS."""
    client = backend.client
    hint = {"workers": [chunk.worker], "allow_other_workers": True} if chunk.worker else {}
    prepare = backend.in_task.for_items(keys) if backend.in_task is not None else None
    outline_fut = client.submit(_outline, chunk.future, REMOTE_MIN, prepare, pure=False,
                                key=f"nbflow-aux-{uuid.uuid4().hex[:10]}", **hint)
    backend._futures.add(outline_fut)
    try:
        outline, cpu_s, peak_rss = await _result(outline_fut)
    finally:
        backend._futures.discard(outline_fut)
        outline_fut.release()
    out: list[Outcome] = []
    placement = backend.placement
    for k, (ok, value, seconds, nbytes, *facts) in enumerate(outline):
        if not ok:
            out.append((ok, value, seconds))
            continue
        if nbytes < REMOTE_MIN:  # a small value came back inside the outline, with its size
            backend.client_bytes += nbytes  # as Dask measured it on the worker, which is
            out.append((ok, value, seconds, nbytes))  # the item's output_bytes (core.sizes)
            continue
        # The item's own future: a selection on the chunk's worker.  It is not waited for
        # (that would be one more round trip while the chunk holds its slot); a task that
        # takes it waits on the cluster, and fetching or hashing it waits for it there.
        unique = f"{keys[k]}-{backend._tag}-{uuid.uuid4().hex[:6]}"
        fut = client.submit(_pick, chunk.future, k, key=unique, pure=False, **hint)
        result = type(chunk)(keys[k], fut, backend, nbytes, chunk.worker)
        if facts and facts[0] is not None:  # (hashed, and stored, next to the chunk: dask_cache)
            result.prepared = tuple(facts[0])
        backend._results.add(result)
        if placement is not None:
            placement.finished(keys[k], unique, chunk.worker, nbytes, seconds)
        out.append((True, result, seconds, nbytes))
    return out, cpu_s, peak_rss
