"""A node checked ready, then awaited on, then started: what if it stopped being ready meanwhile?

The scheduler runs on one event loop, so between two awaits nothing else moves; but across
an await, a saga's rollback can skip a member that is READY (``Sagas.member_failed``), and a
skipped node must never be started.  ``test_scheduler_cache_race`` covers a single task's
cache lookup; these cover the other places where a node is decided on, then awaited over:

* a batched chunk (:mod:`nbflow.engine.batching`) takes its items, asks the cache about each
  one (an await per item), then starts them all: an item skipped during those lookups must
  not start (nor be completed from the cache);
* an approval (:mod:`nbflow.engine.approvals`) is made ready and its wait starts in a task
  of its own, on a later turn of the loop: an approval skipped in between must not start.

Each test makes its interleaving happen every time, with no timing: a fake cache whose
lookup waits for the failure to have happened, or a chunk whose own failed item rolls the
saga back in the same step that makes the approval ready.
"""

from __future__ import annotations

import anyio
import pytest
from fake_cache import FakeCache

import nbflow as nf
from nbflow.core import events as ev
from nbflow.core.kinds import APPROVAL
from nbflow.engine.backends.local import AsyncBackend, ThreadBackend
from nbflow.engine.scheduler import Scheduler

# -- a batched chunk whose items are skipped while the cache answers ------------------------


@nf.task
async def carrier_down():
    raise RuntimeError("carrier down")


@nf.task
def pack(x):
    return x * 10


class _LookupWaitsForFailure(FakeCache):
    """A result cache whose lookups of the map's items wait until a task has failed (the
    saga's rollback has then skipped its READY members); ``hit`` decides what they answer.
    Every other lookup answers at once (a miss).  ``waited`` lists the items whose lookup
    began before the failure."""

    def __init__(self, items: set[int], hit: bool) -> None:
        self.items = items
        self.hit = hit
        self.failed = anyio.Event()
        self.waited: list[int] = []
        self.lookups: list[int] = []

    async def lookup(self, i: int):
        self.lookups.append(i)
        if i not in self.items:
            return None
        if not self.failed.is_set():
            self.waited.append(i)
        await self.failed.wait()
        return (f"stored-{i}", 8) if self.hit else None


def _chunk_in_a_rolled_back_saga(hit: bool) -> tuple[Scheduler, list[int], list[ev.Event]]:
    cache: _LookupWaitsForFailure | None = None
    sched: Scheduler | None = None

    @nf.task
    async def outside_the_saga():
        # Keeps the run open until the chunk has given its slot back (else the run would
        # end, and cancel the chunk, as soon as the rollback left nothing else open).
        # Polled a turn of the loop at a time: no clock involved.
        await cache.failed.wait()  # type: ignore[union-attr]
        for _ in range(100_000):
            if sched.avail["executor:thread"] == 2.0:  # type: ignore[union-attr]
                return 1
            await anyio.lowlevel.checkpoint()
        raise AssertionError("the chunk never gave its slot back")

    with nf.Workflow("chunk-race") as wf:
        outside_the_saga()
        with nf.saga("order"):
            carrier_down()
            pack.map([1, 2, 3], batch=3)  # (one chunk of all three items)
    nodes = list(wf.nodes)
    items = [r.index for r in nodes if r.task is not None and r.task.spec.name == "pack"]
    assert len(items) == 3
    events: list[ev.Event] = []
    cache = _LookupWaitsForFailure(set(items), hit)

    def emit(e: ev.Event) -> None:
        events.append(e)
        if isinstance(e, ev.TaskFailed):
            cache.failed.set()

    threads = ThreadBackend(2)
    sched = Scheduler(nodes, backends={"async": AsyncBackend(), "thread": threads},
                      executor_of=lambda ref: "async" if ref.task.spec.is_async else "thread",
                      workers=None, capacity={"executor:thread": 2.0}, continue_on_error=True,
                      emit=emit, sagas=wf.sagas)
    sched.cache = cache  # type: ignore[assignment]

    async def main() -> None:
        try:
            await sched.run()
        finally:
            await threads.aclose(False)

    anyio.run(main)
    assert cache.waited, "the chunk was waiting for the cache when the saga rolled back"
    return sched, items, events


@pytest.mark.parametrize("hit", [False, True], ids=["miss", "hit"])
def test_items_of_a_chunk_skipped_while_the_cache_answers_do_not_start(hit: bool) -> None:
    sched, items, events = _chunk_in_a_rolled_back_saga(hit)
    assert [sched.state[j] for j in items] == ["skipped"] * 3
    started = {e.index for e in events if isinstance(e, ev.TaskStarted)}
    assert not started & set(items), "a skipped item started"
    assert all(sched.results[j] is None for j in items), "a skipped item got a value"
    assert sched.busy == 0 and sched.avail["executor:thread"] == 2.0, "the chunk kept its slot"
    assert sched.open == 0


# -- an approval skipped between becoming ready and its wait starting -----------------------


@nf.task
def step(x):
    if x == 1:
        raise RuntimeError("step 1 broke")
    return x


def test_an_approval_skipped_before_its_wait_starts_is_not_started() -> None:
    # Item 0 completes and item 1 fails in the same chunk: completing item 0 makes the
    # approval ready (its wait is started as a task of its own), and item 1's failure,
    # handled in the same step, rolls the saga back and skips the approval, still READY.
    with nf.Workflow("approval-race") as wf, nf.saga("order"):
        out = step.map([0, 1], batch=2)
        first_item = wf.nodes[out.deps[0]]
        ok = nf.approval("ship it?", after=(first_item,))
    run = wf.run(cache=False, workers=1, raise_on_error=False)
    assert run.error is None, run.error
    st = run.tasks.set_index("key")
    assert wf.nodes[ok.index].kind == APPROVAL
    assert st.loc[ok.key, "state"] == "skipped"
    assert "rolled back after" in st.loc[ok.key, "error"]
    assert not [e for e in run.events if isinstance(e, ev.TaskStarted) and e.key == ok.key]
    assert not [e for e in run.events if isinstance(e, ev.ApprovalRequested)]
    assert run.status == "failed"
