"""Adaptive map batching: many tiny map items, few backend calls, per-item results.

A map over 100 000 items of 20 µs each spends far more time handing items to threads or
processes (tens of µs per hand-off) than running them.  So the items of a map stay one
node each in the graph — with their own key, state, cache entry, retries and error, so
``run[ref]``, ``run.tasks``, ``run.errors()`` and the cache see nothing different — but
when a worker takes one item, it takes the map's next ready items with it (a *chunk*) and
runs them all in **one** backend call.  Inside that call each item runs on its own: an
item that raises fails that item only (it is retried alone if the task has retries), and
each item's duration is measured separately.

Where the ready items of a batched map wait: not one heap entry each, but in their
group's queue (:attr:`Group.ready`, in the order they became ready), with at most one heap
entry (a *token*) per parallel slot standing for the group in its class's heap.  A worker
that pops a token takes the group's next ready item and, in :func:`take`, the next items
after it, with no heap operation per item.  A token whose queue is empty by then (another
chunk took the items) is dropped.

How big a chunk is:

* ``batch=False``: no chunks (one call per item, as for any task).
* ``batch=N``: chunks of ``N`` items.
* default (``batch=None``) and ``batch=True``: *adaptive*.  :class:`ChunkSizer` keeps a
  running estimate of the time one item takes (from the chunks that already ran) and
  sizes the next chunk to about :data:`TARGET_S` of work; it starts with a single item,
  and grows at most :data:`GROWTH` times per chunk so that one slow first measurement or
  one fast one cannot swing it far.  No chunk is larger than a fair share of the items
  left (items left / parallel slots), so a short map still uses every worker.  Chunks of
  one map that run at the same time share the machine (Python code: one GIL), so each
  item's wall time also counts the other chunks' turns; the sizer is given each chunk's
  share (its items' seconds divided by the chunks of the map running with it), so the
  target is the work in a chunk, not the wall time it takes among others.

When batching is on by default (:func:`plan`): for a map of at least :data:`MIN_ITEMS`
items (a map over a Ref decides when it expands and the count is known) of a plain
``def`` task with no ``timeout``.  Coroutine tasks already run on the event loop without a
hand-off, so batching them gains nothing; a ``timeout`` is a limit on one item, which a
shared call cannot enforce per item.  ``batch=True`` or ``batch=N`` turns it on for any
count; with a timeout or on an ``async def`` task it is refused (:func:`check_option`).

Per-item metrics of a chunk: each item's wall seconds are measured around its own call.
Its CPU time is its *share* of the chunk's: the CPU time of the whole call (the worker
thread's ``thread_time``, or the worker process's ``process_time``) divided between the
items in proportion to their wall seconds, so the shares add up to what the chunk used.
(Reading a CPU clock is a system call, ~0.7 µs on a VM, a large part of a 20 µs item; two
readings per chunk cost nothing per item.) Peak memory (process and Dask chunks) is the
worker's peak after the chunk, given to every item: as for a single task, an upper bound.
Input features are recorded per item from its own arguments. What a thread chunk's items
print is kept per item, as for any thread task. Items served from the cache never enter a
chunk's call. When the call itself fails rather than an item (the chunk's results cannot
be pickled back from a worker process because one item's result cannot, a worker is lost),
that error is the failed attempt of every item of the chunk.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ..core import events as ev
from ..core.errors import StoreIntegrityError, WorkflowDefinitionError
from ..core.remote import Remote, has_remote, localise
from ..core.sizes import output_size
from ..core.states import READY
from . import taskoutput
from .metrics import _peak_rss
from .taskstate import cancelled

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .spec import TaskSpec

MIN_ITEMS = 64  # maps shorter than this are not batched unless asked (batch=True/N)
TARGET_S = 0.03  # seconds of work per chunk the adaptive sizer aims at
GROWTH = 4.0  # a chunk is at most this many times the previous size
SMOOTHING = 0.5  # weight of the newest measurement in the per-item estimate
MAX_CHUNK = 100_000  # upper bound on any chunk (a fixed batch=N may not exceed it either)


def check_option(name: str, spec: TaskSpec, batch: Any) -> None:
    """Refuse a ``batch=`` value that is not ``None``/``True``/``False``/a count >= 1, or
    batching asked for where it cannot apply (``async def`` task, per-item timeout)."""
    if batch is None or batch is False:
        return
    if batch is not True and (isinstance(batch, bool) or not isinstance(batch, int)
                              or not 1 <= batch <= MAX_CHUNK):
        raise WorkflowDefinitionError(
            f"{name}.map(batch=...) must be False (one call per item), True or None (adaptive "
            f"chunks) or a whole number of items per chunk from 1 to {MAX_CHUNK}, got {batch!r}")
    if spec.is_async:
        raise WorkflowDefinitionError(
            f"{name}.map(batch={batch!r}): {name} is an `async def` task, which runs on the event "
            "loop without a hand-off to batch away; drop batch=")
    if spec.timeout is not None:
        raise WorkflowDefinitionError(
            f"{name}.map(batch={batch!r}): {name} has timeout={spec.timeout:g}, a limit per item "
            "that a chunk of items sharing one call cannot enforce; drop batch= or the timeout")


def plan(spec: TaskSpec, batch: Any, n_items: int) -> int | None:
    """The chunking of a map: ``None`` (off), ``0`` (adaptive) or a fixed chunk size."""
    if batch is False:
        return None
    if batch is None:
        if n_items < MIN_ITEMS or spec.is_async or spec.timeout is not None:
            return None
        return 0
    if batch is True:
        return 0
    return int(batch)


class ChunkSizer:
    """Chunk sizes for one map, from measured per-item time (a pure controller: no clock).

    ``fixed`` > 0 gives that size always; ``fixed == 0`` is adaptive: :meth:`observe` takes
    the number of items a chunk ran and the seconds their calls took, :meth:`size` returns
    the next chunk's size given how many items are left and how many run in parallel.
    """

    __slots__ = ("fixed", "last", "per_item", "target")

    def __init__(self, fixed: int = 0, target: float = TARGET_S) -> None:
        self.fixed = fixed
        self.target = target
        self.per_item: float | None = None  # seconds per item, smoothed
        self.last = 1  # the size most recently handed out

    def observe(self, n: int, seconds: float) -> None:
        if n <= 0 or not seconds >= 0:
            return
        each = seconds / n
        self.per_item = each if self.per_item is None else (
            SMOOTHING * each + (1.0 - SMOOTHING) * self.per_item)

    def size(self, left: int, parallel: float) -> int:
        if self.fixed:
            want = self.fixed
        elif self.per_item is None:
            want = 1  # nothing measured yet: one item, to learn its time
        else:
            ideal = self.target / self.per_item if self.per_item > 0 else float(MAX_CHUNK)
            want = round(max(1.0, min(ideal, self.last * GROWTH, MAX_CHUNK)))
        if not self.fixed and math.isfinite(parallel) and parallel >= 1:
            want = min(want, max(1, math.ceil(left / parallel)))  # keep every slot busy
        self.last = max(1, want)
        return self.last


@dataclass(slots=True)
class Group:
    """The items of one map that run in chunks (indexes ``first`` .. ``first + count - 1``)."""

    first: int
    count: int
    sizer: ChunkSizer
    started: int = 0  # items handed to chunks so far (attempts, retries included)
    running: int = 0  # chunks of this group in their backend call now
    ready: deque[int] = field(default_factory=deque)  # ready items, in the order they got ready
    queued: int = 0  # heap entries (tokens) standing for this group now
    slots: int = 0  # at most this many tokens (the parallel slots; set on the first push)

    def __contains__(self, i: int) -> bool:
        return self.first <= i < self.first + self.count

    def push(self, i: int) -> bool:
        """Queue ready item ``i``; True when the group needs one more heap token for it."""
        self.ready.append(i)
        if self.queued < self.slots and self.queued < len(self.ready):
            self.queued += 1
            return True
        return False

    def next_ready(self, state: list[str]) -> int | None:
        """A token was popped: the group's first item still ready (None: none left)."""
        self.queued -= 1
        ready = self.ready
        while ready:
            j = ready.popleft()
            if state[j] is READY:  # (not skipped while queued, e.g. by a saga's rollback)
                return j
        return None


class Batches:
    """The map groups of one run, looked up by node index (see the module docstring)."""

    def __init__(self) -> None:
        self.group_of: list[Group | None] | None = None  # None: no map of this run batches

    def add(self, n_nodes: int, first: int, count: int, chunking: int) -> Group:
        if self.group_of is None:
            self.group_of = [None] * n_nodes
        elif len(self.group_of) < n_nodes:
            self.group_of.extend([None] * (n_nodes - len(self.group_of)))
        g = Group(first, count, ChunkSizer(chunking))
        self.group_of[first:first + count] = [g] * count
        return g

    def of(self, i: int) -> Group | None:
        gs = self.group_of
        return gs[i] if gs is not None and i < len(gs) else None


def from_graph(nodes: Sequence[Any]) -> Batches:
    """The groups of the maps over lists traced into ``nodes`` (their item ranges are known)."""
    out = Batches()
    wf = nodes[0].wf if nodes else None
    for first, count, spec, batch in getattr(wf, "map_batches", ()):
        if first + count > len(nodes):  # (a graph cut down after tracing: not this one's)
            continue
        chunking = plan(spec, batch, count)
        if chunking is not None:
            out.add(len(nodes), first, count, chunking)
    return out


def slots(limit: float, backend: Any) -> int:
    """How many chunks of one group can run at once: heap tokens the group may hold."""
    parallel = min(limit, getattr(backend, "capacity", math.inf))
    return int(parallel) if math.isfinite(parallel) and parallel >= 1 else 64


# -- the worker side -----------------------------------------------------------------------

# (ok, value or exception, wall seconds) of one item; a backend that measured a succeeded
# item's output_bytes where it ran adds it as a fourth element (Dask: dask_chunks.split)
Outcome = tuple[Any, ...]
#: What a chunk's call returns: each item's outcome, the CPU seconds of the whole call
#: (None when not measured) and the worker's peak RSS in bytes after it (process/Dask).
ChunkResult = tuple[list[Outcome], float | None, int | None]


def run_chunk(fn: Callable[..., Any], calls: Sequence[tuple[tuple[Any, ...], dict[str, Any] | None]],
              capture: tuple[dict[int, Any], Sequence[int], Sequence[str]] | None = None,
              clock: str = "thread") -> ChunkResult:
    """Run ``fn`` once per ``(args, kwargs)``: each item's outcome, and the call's CPU time.

    Runs wherever the backend runs it (a pool thread, a worker process, a Dask worker); an
    exception of one call is that item's outcome, not the chunk's.  ``capture`` (the run's
    outputs, the items' node indexes and keys) keeps what each item prints with that item
    (thread chunks).  ``clock`` is the CPU clock of the call: ``"thread"`` (the worker
    thread's), ``"process"`` (the worker process's, with its peak RSS) or ``""`` (none).
    """
    out: list[Outcome] = []
    append = out.append
    wall = time.perf_counter
    cpu = time.thread_time if clock == "thread" else time.process_time if clock else None
    c0 = cpu() if cpu is not None else 0.0
    # One context-variable set for the chunk; the cursor follows the item that runs.
    cursor = taskoutput.ChunkCursor(*capture) if capture else None
    token = taskoutput.start_chunk(cursor) if cursor is not None else None
    try:
        for k, (args, kwargs) in enumerate(calls):
            if cursor is not None:
                cursor.k = k
            t0 = wall()
            try:
                value = fn(*args, **kwargs) if kwargs else fn(*args)
            except Exception as e:
                append((False, e, wall() - t0))
            else:
                append((True, value, wall() - t0))
    finally:
        if token is not None:
            taskoutput.stop(token)
    cpu_s = cpu() - c0 if cpu is not None else None
    return out, cpu_s, (_peak_rss() if clock == "process" else None)


# -- the scheduler side --------------------------------------------------------------------


def take(s: Scheduler, i: int, g: Group) -> list[int]:
    """Node ``i`` (its token just popped) and the next ready items of its group, as one chunk."""
    cls = s.class_of[i]
    parallel = min(s.limit, getattr(cls.backend, "capacity", math.inf))  # type: ignore[union-attr]
    n = g.sizer.size(g.count - g.started, parallel)
    members = [i]
    state = s.state
    ready = g.ready
    popleft = ready.popleft
    while (want := min(n - len(members), len(ready))) > 0:
        # (taken in slices: an item skipped while queued, e.g. by a saga's rollback, is
        # dropped and the next slice makes up for it)
        members += [j for j in [popleft() for _ in range(want)] if state[j] is READY]
    g.started += len(members)
    # Items left in the queue keep tokens on the heap (up to one per slot), so that free
    # workers find them: the tokens popped so far may have been all there were.
    top_up(s, g)
    return members


def top_up(s: Scheduler, g: Group) -> None:
    """Heap tokens for ``g``: one per queued item, at most one per parallel slot."""
    if not g.slots:
        g.slots = slots(s.limit, s.class_of[g.first].backend)  # type: ignore[union-attr]
    ready = g.ready
    while g.queued < g.slots and g.queued < len(ready):
        g.queued += 1
        s._enqueue(ready[0])


async def execute(s: Scheduler, i: int, g: Group) -> None:
    """Run a chunk that starts with node ``i`` (whose slot the worker holds) in one call."""
    members = take(s, i, g)
    spec = s.nodes[i].task.spec
    cache = s.cache
    nodes = s.nodes
    run: list[int] = []
    hits: list[tuple[int, Any, float]] = []
    if cache is None:
        run = members
    asked = cache is not None
    for j in members if cache is not None else ():
        if s.state[j] is not READY:  # (skipped during an earlier item's lookup: see below)
            continue
        if cache is not None and s.attempts[j] == 0:  # (None: the cache broke on an item before)
            t0 = time.perf_counter()
            try:
                hit = await cache.lookup(j)
            except Exception as e:  # the same handling as for a single task
                if isinstance(e, StoreIntegrityError):  # strict=True and a damaged result
                    for k in members:
                        if k != i:  # back to the queue; the run is aborting anyway
                            s._push(k)
                    s._release(i)
                    s.abort(e)
                    await anyio.lowlevel.checkpoint()
                    return
                s._cache_broke(e)
                cache = None
                hit = None
            if hit is not None:
                hits.append((j, hit, time.perf_counter() - t0))
                continue
        run.append(j)
    if asked:
        # Each lookup was an await: a saga's rollback may have skipped items meanwhile (it
        # skips READY members).  Those are not started, nor completed from the cache.
        state = s.state
        run = [j for j in run if state[j] is READY]
        hits = [h for h in hits if state[h[0]] is READY]
    now = time.time()
    enter_many = s.tasks.enter_many
    if hits:
        enter_many([ev.TaskStarted(now, j, nodes[j].key, 0, "cache") for j, _, _ in hits])
    attempts = s.attempts
    s.tasks.enter_batch(ev.TaskStarted, now, run, {"attempt": [attempts[j] + 1 for j in run]},
                        {"executor": s.executor[i]})
    outcomes: list[Outcome] = []
    ran: tuple[float, float] | None = None  # (when the chunk ran on its Dask worker)
    inflight = 1
    if run:
        g.running += 1
        try:
            outcomes, ran = await _call(s, i, spec.fn, run)
        finally:
            # Chunks of one group that run at once share the machine (and, for Python code,
            # the GIL): each item's wall time then counts the others' turns too.  The sizer
            # is given each chunk's share of the time, or a CPU-bound map sharing one GIL
            # between 6 threads would get chunks of 1/6 of the target's work, and 6 times
            # the per-chunk cost (measured: 250-300 chunks of ~300 items at 100 000 items).
            inflight = max(1, g.running)
            g.running -= 1
    s._release(i)
    # Items complete "inline" (no worker refill per item); one refill after the chunk.
    for j, hit, t in hits:
        s._complete(j, hit[0], t, hit[1], inline=True, cached=True)
    measured = 0.0
    if cache is None and not s.has_remote and run and all([o[0] for o in outcomes]):
        # (the common case, every item succeeded and nothing to store: columns at once)
        walls = [o[2] for o in outcomes]
        s._complete_many(run, [o[1] for o in outcomes], walls, _sizes(s, i, outcomes), ran)
        g.sizer.observe(len(run), sum(walls) / inflight)
        s._fill()
        if s.tasks.open == 0:
            s.done.set()  # type: ignore[union-attr]
        return
    # Items that succeeded complete in runs (one call each, their events entered in one
    # go); a failed item ends the run before it, so events keep the items' order.
    done: list[int] = []
    values: list[Any] = []
    took: list[float] = []
    sizes: list[int | None] = []
    size_of = _size_of(s, i)
    for j, (ok, value, seconds, *known) in zip(run, outcomes, strict=True):
        measured += seconds
        if not ok:
            s._complete_many(done, values, took, sizes, ran)
            done, values, took, sizes = [], [], [], []
            s._failed_attempt(j, value, seconds, ran)
            continue
        # output_bytes as a single task's (core.sizes): as measured where the item ran
        # (a Dask chunk's items, on their worker), else as the backend measures it here
        size = known[0] if known else size_of(value)
        if cache is not None and s.cache is not None:
            try:
                size = await cache.commit(j, value, size)
            except Exception as e:
                s._cache_broke(e)
                cache = None
        done.append(j)
        values.append(value)
        took.append(seconds)
        sizes.append(size)
    s._complete_many(done, values, took, sizes, ran)
    if run:
        g.sizer.observe(len(run), measured / inflight)
    s._fill()
    if s.tasks.open == 0:
        s.done.set()  # type: ignore[union-attr]


def _size_of(s: Scheduler, i: int) -> Callable[[Any], int | None]:
    """How the backend of node ``i``'s chunk measures a result's ``output_bytes``."""
    measure = getattr(s.class_of[i].backend, "size_of", None)  # type: ignore[union-attr]
    return measure if measure is not None else output_size


def _sizes(s: Scheduler, i: int, outcomes: list[Outcome]) -> list[int | None]:
    """Each succeeded item's ``output_bytes``, as a single task's result would have: the
    size measured where the item ran when the backend tells it (a fourth element of the
    outcome: a Dask chunk's items, measured on their worker), else measured here."""
    size_of = _size_of(s, i)
    return [o[3] if len(o) > 3 else size_of(o[1]) for o in outcomes]


async def _call(s: Scheduler, i: int, fn: Callable[..., Any], run: list[int]
                ) -> tuple[list[Outcome], tuple[float, float] | None]:
    """One backend call for the items ``run``; a failure of the call itself fails each item.
    Records each item's metrics (its input features, its share of the chunk's CPU time).
    Returns the items' outcomes, and when the chunk's call started and stopped where it ran
    when the backend says (a Dask worker's times, in this process's clock: the items'
    start and end, as a single Dask task's; None: the engine's own times stand)."""
    ran = None
    nodes = s.nodes
    arguments = s._arguments
    # (an item whose arguments hold no Ref, as in a map over a list, passes them as traced)
    calls = [(r.args, r.kwargs) if r.nested == 0 else arguments(r) for r in map(nodes.__getitem__, run)]
    backend = s.class_of[i].backend  # type: ignore[union-attr]
    if s.has_remote and not getattr(backend, "accepts_remote", False) and has_remote(calls):
        calls = await anyio.to_thread.run_sync(localise, calls)
    key = nodes[run[0]].key if len(run) == 1 else f"{nodes[run[0]].key}+{len(run) - 1}"
    executor = s.executor[i]
    capture = None
    if executor == "thread":  # output hook: what each item prints is kept with that item
        outputs = s.outputs
        if outputs:
            for j in run:
                outputs.pop(j, None)  # (a retry's output replaces the failed attempt's)
        capture = (outputs, run, [nodes[j].key for j in run])
    clock = "thread" if executor == "thread" else "process" if executor in ("process", "dask") else ""
    t0 = time.perf_counter()
    try:
        if getattr(backend, "accepts_remote", False):
            # The items' arguments travel as the call's argument, not inside the function:
            # a backend that keeps results remote (Dask) swaps the remote results in them
            # for its handles, so each value reaches the worker from where it lives.
            value, _ = await backend.call(key, functools.partial(run_chunk, fn, capture=capture, clock=clock),
                                          (calls,), None)
        else:
            chunk = functools.partial(run_chunk, fn, calls, capture, clock)
            value, _ = await backend.call(key, chunk, (), None)
        if isinstance(value, Remote):  # a Dask chunk's outcomes, still on the worker:
            ran = value.ran
            split = getattr(backend, "split_chunk", None)  # items keep large values there
            if split is not None:
                value = await split(value, [nodes[j].key for j in run])
            else:
                value = await anyio.to_thread.run_sync(localise, value)
    except anyio.get_cancelled_exc_class() as exc:
        s._release(i)
        took = time.perf_counter() - t0
        share = 1 / len(run)
        for j in run:  # (timed where the chunk ran, when its backend says: taskstate.cancelled)
            gone, spent = cancelled(j, nodes[j].key, s.attempts[j], exc, time.time(), took)
            # The chunk's time is one call's, for all its items: each item's duration is its
            # share, so that they add up to what the chunk took (the items' own seconds are
            # in the outcomes, which a cancelled call never returns; a failed call's items
            # share its time the same way, below).  NaN, not known to have run, stays NaN.
            s.enter(gone, None, spent * share)
        s.cancellations.append(exc)  # (its frames are cleared as the run ends: Scheduler.ended)
        raise
    except Exception as e:  # the call itself (pickling, a lost worker): every item's attempt
        took = (time.perf_counter() - t0) / len(run)
        return [(False, e, took) for _ in run], None
    outcomes, cpu_s, peak_rss = value
    s.metrics.record_chunk(run, calls, [o[2] for o in outcomes], cpu_s, peak_rss)
    return list(outcomes), ran
