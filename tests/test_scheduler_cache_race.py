"""A node whose attempt waits for the cache's answer while its work finishes elsewhere.

On a Dask run a task is sent ahead of its inputs; the cluster may say it finished while the
engine's own attempt of that node is still awaiting the result cache's lookup.  The node is
then still READY, and it used to be taken in a second time (``finished_elsewhere`` ->
``_take_in``): two attempts of one node, the second entering ``TaskStarted`` on a node the
first had completed (``TransitionError: cannot move from 'completed' to 'running'``, seen once
in a whole-suite run).  Here a fake backend and cache make that interleaving happen every
time, with no cluster and no timing.
"""

from __future__ import annotations

import math

import anyio
from fake_cache import FakeCache

import nbflow as nf
from nbflow.core import events as ev
from nbflow.engine.scheduler import Scheduler


class _Ahead:
    """An async backend whose every task "ran elsewhere" and is done (``done_ahead``)."""

    name = "async"
    capacity = math.inf

    def __init__(self) -> None:
        self.calls: list[str] = []

    def done_ahead(self, i: int) -> float | None:
        return math.nan

    async def call(self, key, fn, args, kwargs):
        self.calls.append(key)
        return await fn(*args, **(kwargs or {})), 8


class _SlowFirstLookup(FakeCache):
    """A cache whose first lookup of a node waits while the node's work is said to have
    finished elsewhere; ``hit`` decides what every lookup answers."""

    def __init__(self, hit: bool) -> None:
        self.hit = hit
        self.sched: Scheduler | None = None
        self.lookups: list[int] = []
        self.second_asked = anyio.Event()

    async def lookup(self, i: int):
        self.lookups.append(i)
        if len(self.lookups) == 1:
            self.sched.finished_elsewhere(i)  # type: ignore[union-attr]  # as Dask's completion does
            # Let a second attempt (if the engine starts one) ask and finish first.
            with anyio.move_on_after(0.5):
                await self.second_asked.wait()
        else:
            self.second_asked.set()
        return ("cached", 8) if self.hit else None


def _run(hit: bool) -> tuple[Scheduler, _Ahead, _SlowFirstLookup, list[ev.Event]]:
    @nf.task
    async def inc(x):
        return x + 1

    with nf.Workflow("race") as wf:
        inc(1)
    events: list[ev.Event] = []
    backend = _Ahead()
    sched = Scheduler(list(wf.nodes), backends={"async": backend}, executor_of=lambda ref: "async",
                      workers=None, capacity={}, continue_on_error=True, emit=events.append)
    cache = _SlowFirstLookup(hit)
    cache.sched = sched
    sched.cache = cache  # type: ignore[assignment]
    anyio.run(sched.run)
    return sched, backend, cache, events


def test_a_node_that_finishes_elsewhere_during_its_cache_lookup_is_attempted_once() -> None:
    for hit in (True, False):
        sched, backend, cache, events = _run(hit)
        assert sched.state == ["completed"], (hit, sched.state)
        assert cache.lookups == [0], f"the node was attempted twice (hit={hit})"
        started = [e for e in events if isinstance(e, ev.TaskStarted)]
        assert len(started) == 1
        assert started[0].executor == ("cache" if hit else "async")
        assert backend.calls == ([] if hit else [wf_key(sched)])
        assert sched.busy == 0 and not sched.slotless and not sched.looking


def wf_key(sched: Scheduler) -> str:
    return sched.nodes[0].key


class _SkippedDuringLookup(_SlowFirstLookup):
    """A cache whose lookup sees the node skipped meanwhile (a saga member whose saga rolls
    back while it is READY: ``Sagas.member_failed`` skips READY members)."""

    async def lookup(self, i: int):
        self.lookups.append(i)
        self.sched._skip(i, "saga s rolled back")  # type: ignore[union-attr]
        await anyio.lowlevel.checkpoint()
        return ("cached", 8) if self.hit else None


def test_a_node_skipped_during_its_cache_lookup_is_not_started() -> None:
    @nf.task
    async def inc(x):
        return x + 1

    for hit in (True, False):
        with nf.Workflow("skipped") as wf:
            inc(1)
        events: list[ev.Event] = []
        backend = _Ahead()
        sched = Scheduler(list(wf.nodes), backends={"async": backend},
                          executor_of=lambda ref: "async", workers=1, capacity={},
                          continue_on_error=True, emit=events.append)
        cache = _SkippedDuringLookup(hit)
        cache.sched = sched
        sched.cache = cache  # type: ignore[assignment]
        anyio.run(sched.run)
        assert sched.state == ["skipped"], (hit, sched.state)
        assert not [e for e in events if isinstance(e, ev.TaskStarted)]
        assert backend.calls == []
        assert sched.busy == 0, "the skipped attempt kept its slot"
