"""The scheduler: runs one traced graph to the end on an anyio event loop.

How it works, in one place:

* **Plain state.**  Nodes are integers (their index in the run's node list).  Per node the
  scheduler keeps the number of inputs it still waits for, its successors, its dispatch
  level and its demand class.  The node's *records* (state, attempts, times, result,
  error, skip reason) and the count of nodes still open belong to
  :class:`~nbflow.engine.taskstate.TaskStates`, whose ``enter`` is the only way a node
  changes state: it checks the move against the transition table (when checking is on),
  records it, counts terminal nodes and emits the event that announces it.  The
  scheduler's ``state``, ``results``, ``attempts``, ... are those same lists.  There are no
  per-task objects beyond the traced ``Ref`` itself.
* **Ready set.**  A node whose wait count reaches zero becomes *ready* and is pushed onto a
  heap ordered by :func:`~nbflow.engine.priority.ready_key`: longest remaining path first
  (the critical path keeps moving), then the task's ``priority``, then FIFO.  (Items of a
  batched map wait in their group's queue instead, with one heap token per parallel slot:
  :mod:`~nbflow.engine.batching`.)  Ready nodes
  are grouped in one heap per *demand class* (backend plus declared resources), so that
  finding the best node that fits the free capacity costs O(classes), not O(ready).
* **Constructs.**  Nodes that are not plain tasks (joins, branch gates, constants, loops,
  approvals) are not queued: when one becomes ready, the resolver registered for its kind
  in :data:`~nbflow.engine.resolvers.RESOLVERS` decides it on the spot (or, for an
  approval, waits for a person without taking a slot).  Sagas (undo what a failed saga's
  members did) live in :mod:`~nbflow.engine.sagas`.
* **Admission.**  A node starts only when its demand fits: one slot of the run's
  ``workers`` limit, one slot of its backend (threads, processes, Dask threads), and its
  declared ``resources``.  Admitted demand never exceeds capacity.
* **Workers, not polling.**  Work is done by worker coroutines in the run's task group.  A
  worker pops the best admissible node, awaits its backend call, records the outcome,
  releases the node's demand, makes successors ready, and loops; with nothing admissible
  left it exits.  New workers are spawned one at a time, each new worker spawning the next
  while there is more admissible work than free workers, up to the limit.  So completion
  of a task is what wakes the scheduler: there is no loop that polls and no sleep.  A chain
  of quick coroutines runs in one worker without a task spawn per task; a worker yields to
  the event loop every few dozen tasks so the loop (widgets, Ctrl-C) stays responsive.
* **Work done elsewhere first.**  A backend that runs work before the engine starts it (Dask,
  whose tasks are sent ahead of their inputs) says when one finished
  (:meth:`Scheduler.finished_elsewhere`).  The engine takes it in without an engine slot
  (it holds no thread of the cluster any more) as soon as it is ready, or at once if it
  is: the usual attempt (cache lookup, adoption of the finished call, the cache's commit,
  then completion) runs outside the admission count, so a completion is not held back
  behind slots taken by tasks still running.  Nothing about order changes: a node is
  taken in only once ready (its inputs completed, in the engine's view too), and its
  events are those of any attempt.  A paused run takes such work in too (it is done; pause
  keeps new work from starting).  A node whose own attempt is waiting for the cache's
  answer is not taken in a second time: that attempt adopts the finished work.
* **Cache.**  With a result cache (handed over by the run), a task's first attempt asks it
  for a stored result first; a hit completes the task without calling it.  A value that
  was computed is offered to the cache before the task completes.  If the cache itself
  breaks, the run goes on without it (with one warning).
* **Retries** wait on a timer (capped exponential backoff with jitter) outside any slot,
  then queue again.  **Timeouts** are a cancel scope around the backend call.
* **Failure** of a node skips its descendants (each with a reason); independent branches
  go on, and tolerant joins (``first``, ``gather``, compensations) count the input as
  ended.  With ``continue_on_error=False`` the first failure cancels the rest instead.
* **Cancellation** is the run's cancel scope: every worker stops at its next await; the
  nodes still open are marked cancelled.  **Pause** closes a gate before dispatch: running
  nodes finish, nothing new starts until resume.
* **Growth.**  A ``map`` over a Ref expands when the Ref's value is known: new nodes are
  appended to the plain state and queued; the map node then waits for them.  Loops and
  compensations grow the graph the same way.
* **Stall.**  If nodes remain open but nothing is running, ready, or waiting on a timer,
  the run ends with an error naming the waiting nodes instead of hanging.
* **Garbage collector.**  While running, the graph is kept out of the cyclic collector's
  scans (:mod:`~nbflow.engine.gcpolicy`).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import math
import random
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from ..core import events as ev
from ..core.errors import (
    CycleError,
    NbflowStoreWarning,
    StallError,
    StoreIntegrityError,
    TaskTimeout,
    WorkflowDefinitionError,
)
from ..core.graphs import find_cycles, topological_order
from ..core.kinds import APPROVAL, COLLECT, GATE, GATHER, INLINE, LOOP, MAP, TASK, TOLERANT
from ..core.protocols import ResultCache
from ..core.ref import Ref
from ..core.remote import Remote, has_remote, localise
from ..core.states import COMPLETED, PENDING, READY, RETRYING, RUNNING
from . import approvals, batching, taskoutput
from .constructs import interactive_approvals
from .gcpolicy import graph_out_of_gc
from .metrics import Measured, TaskMetrics
from .priority import longest_remaining_path
from .resolvers import RESOLVERS, expand_map
from .sagas import Sagas
from .taskstate import TaskStates, cancelled, ran_of, timed_out
from .tracebacks import drop_engine_frames

YIELD_EVERY = 64  # tasks a worker may run back to back before yielding to the event loop
_CANCELLABLE = (PENDING, READY, RUNNING, RETRYING)  # open states (cancelled at the end)


class _Class:
    """Ready nodes that make the same demand, in priority order."""

    __slots__ = ("backend", "backend_name", "demand", "heap")

    def __init__(self, backend_name: str, demand: dict[str, float]) -> None:
        self.backend_name = backend_name
        self.backend: Any = None
        self.demand = demand
        self.heap: list[tuple[float, int, int, int]] = []


class Scheduler:
    """Runs one graph: ``await run()``, then read the per-node records (see the module)."""

    def __init__(
        self,
        nodes: list[Ref],
        *,
        backends: dict[str, Any],
        executor_of: Callable[[Ref], str],
        workers: int | None,
        capacity: dict[str, float],
        continue_on_error: bool,
        emit: Callable[[ev.Event], None],
        stream: ev.EventStream | None = None,
        seed: int | None = None,
        sagas: list[Any] | None = None,
        extra_edges: list[tuple[int, int]] | None = None,
    ) -> None:
        self.nodes = nodes
        self.backends = backends
        self.executor_of = executor_of
        self.limit = float(workers) if workers else math.inf
        self.avail = dict(capacity)
        self.continue_on_error = continue_on_error
        self.emit = emit
        self.rand = random.Random(seed)

        n = len(nodes)
        succs: list[list[int]] = [[] for _ in range(n)]
        self.succs = succs
        waiting = self.waiting = [0] * n
        forward = True  # every edge from a lower index to a higher one (creation order)
        for ref in nodes:
            i = ref.index
            deps = ref.deps
            waiting[i] = len(deps)
            for d in deps:
                succs[d].append(i)
                if d >= i:
                    forward = False
        self.extra_edges = list(extra_edges or ())  # ordering added for this run (serialize)
        for a, b in self.extra_edges:
            succs[a].append(b)
            waiting[b] += 1
            if a >= b:
                forward = False
        # Index order is already a topological order when every edge goes forward (no
        # .after() against creation order): no sort, and no cycle to look for.
        self.level = longest_remaining_path(succs, order=None if forward else self._topological_order())

        # The per-node records and the open count: changed only through self.enter.
        tasks = self.tasks = TaskStates(nodes, emit, stream)
        self.enter = tasks.enter
        self.state = tasks.state
        self.attempts = tasks.attempts
        self.results = tasks.results
        self.start = tasks.start  # wall-clock epoch seconds of the last attempt
        self.end = tasks.end
        self.duration = tasks.duration  # monotonic seconds of the last attempt
        self.output_bytes = tasks.output_bytes
        self.errors = tasks.errors
        self.reasons = tasks.reasons
        self.executor = tasks.executor

        self.classes: dict[Any, _Class] = {}
        self.class_of: list[_Class | None] = [None] * n
        self.seq = 0
        self.busy = 0  # workers executing a node
        self.n_workers = 0  # worker coroutines alive (busy, or about to pick)
        self.starting = 0  # spawned workers that have not begun yet
        self.timers = 0  # retries waiting on their backoff timer, approvals on their answer
        # Nodes whose work finished elsewhere (finished_elsewhere): taken in without a slot,
        # node -> when it started where it ran (NaN: unknown), until their attempt ends;
        # those waiting for the taker, those not ready yet; is the taker running?
        self.slotless: dict[int, float] = {}
        self.to_take: collections.deque[int] = collections.deque()
        self.early: set[int] = set()
        # Nodes whose attempt waits for the cache's answer: still READY, but already being
        # attempted (a node that finished elsewhere meanwhile is not taken in a second time:
        # this attempt adopts its work).
        self.looking: set[int] = set()
        self.taking = False
        self.paused = False
        self.first_failure: int | None = None
        self.stall: StallError | None = None
        self.error: BaseException | None = None  # an error of the run itself (abort())
        self.tg: Any = None
        self.cancellations: list[BaseException] = []  # of running tasks (see ended())
        self.retried: list[BaseException] = []  # errors of attempts retried (see ended())
        self.cache: ResultCache | None = None  # the run's result cache (from the store), if any
        self.metrics = TaskMetrics()  # CPU time, peak RSS, input features (nbflow.engine.metrics)
        self.outputs: dict[int, taskoutput.Capture] = {}  # what tasks printed (engine.taskoutput)
        self.has_remote = "dask" in backends  # results may be Remote (core.remote)
        self.loop_iters: dict[int, int] = {}  # loop node -> iterations started
        self._last_iteration: dict[int, int] = {}  # loop node -> its latest iteration's node
        self.answers: dict[int, Any] = {}  # approval node -> anyio.Event, then the answer
        self.interactive: Callable[[], bool] = interactive_approvals  # can a person answer?
        self.batches = batching.from_graph(nodes)  # map items that run in chunks (engine.batching)
        self.sagas = Sagas(self, sagas)
        self.saga_of = self.sagas.of
        self.rollbacks = self.sagas.rollbacks  # one entry per saga that rolled back
        # Up front: a bad demand is refused before anything runs.  A node calling the same
        # task in the same kind as the one before it (a map's items) has its class.
        class_of, executor = self.class_of, self.executor
        last: Any = None
        for i in range(n):
            ref = nodes[i]
            if ref.kind not in INLINE and ref.kind != APPROVAL:
                if last is not None and ref.task is last.task and ref.kind == last.kind:
                    class_of[i], executor[i] = class_of[last.index], executor[last.index]
                    continue
                class_of[i] = self._classify(i)
                last = ref
        self.done: anyio.Event | None = None  # made on the run's loop
        for b in backends.values():  # a backend that submits work ahead (Dask) sees the graph
            if hasattr(b, "bind_scheduler"):  # (weakly: this scheduler holds the backend)
                b.bind_scheduler(weakref.proxy(self))

    @property
    def open(self) -> int:
        """Nodes not yet in a terminal state."""
        return self.tasks.open

    # -- planning ------------------------------------------------------------------------

    def _topological_order(self) -> list[int]:
        """The nodes in dependency order; a cycle is reported with its tasks in order."""
        order = topological_order(succs=self.succs, indegree=self.waiting, lowest_first=False)
        if order is None:
            cycles = find_cycles(self.nodes)
            if cycles:
                raise CycleError([self.nodes[u].key for u in cycles[0][0]])
            # Only the run's added ordering edges close a cycle: look at every edge.
            import networkx as nx

            g = nx.DiGraph((a, b) for a, succs in enumerate(self.succs) for b in succs)
            raise CycleError([self.nodes[u].key for u, _ in nx.find_cycle(g)])
        return order

    def _classify(self, i: int) -> _Class:
        ref = self.nodes[i]
        name = self.executor_of(ref)
        self.executor[i] = name
        spec = ref.task.spec if ref.task is not None else None
        res = spec.resources if spec is not None and ref.kind == TASK else {}
        ident = (name, tuple(sorted(res.items())) if res else ())
        cls = self.classes.get(ident)
        if cls is None:
            demand = dict(res)
            if name not in ("async", "inline"):
                demand[f"executor:{name}"] = 1.0
            for r, amount in demand.items():
                cap = self.avail.get(r)
                if cap is None:
                    raise WorkflowDefinitionError(
                        f"task {ref.key!r} needs resource {r!r} but the run declares no capacity "
                        f"for it; pass wf.run(resources={{{r!r}: ...}})"
                    )
                if amount > cap:
                    raise WorkflowDefinitionError(
                        f"task {ref.key!r} needs {amount:g} of {r!r} but the run's capacity is "
                        f"{cap:g}: it could never start. Lower its demand or raise the capacity "
                        f"with wf.run(resources={{{r!r}: ...}})"
                    )
            cls = self.classes[ident] = _Class(name, demand)
            cls.backend = self.backends.get(name)
        return cls

    def add_demand(self, i: int, extra: Mapping[str, float]) -> None:
        """Add ``extra`` (e.g. a predicted ``memory``) to node ``i``'s admission demand,
        before the run starts.  A resource the task declares itself keeps its declared
        amount, one the run has no capacity for is ignored, and an amount above the
        capacity is capped to it: an estimate must never make a task unrunnable."""
        cls = self.class_of[i]
        if cls is None:
            return
        demand = dict(cls.demand)
        for r, amount in extra.items():
            if r not in demand and r in self.avail and amount > 0:
                demand[r] = min(float(amount), self.avail[r])
        if demand == cls.demand:
            return
        ident = ("added", cls.backend_name, tuple(sorted(demand.items())))
        new = self.classes.get(ident)
        if new is None:
            new = self.classes[ident] = _Class(cls.backend_name, demand)
            new.backend = cls.backend
        self.class_of[i] = new

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        self.done = anyio.Event()
        with graph_out_of_gc():
            await self._run()

    async def _run(self) -> None:
        async with anyio.create_task_group() as tg:
            self.tg = tg
            # The nodes ready at the start, in index order; plain tasks in runs entered in
            # one call (a long map's items), constructs resolved where they come.
            nodes, waiting, state = self.nodes, self.waiting, self.state
            plain: list[int] = []
            for i in range(len(nodes)):
                if waiting[i] == 0 and state[i] == PENDING:
                    if nodes[i].kind in RESOLVERS:
                        self._make_ready_many(plain)
                        plain = []
                        self._make_ready(i)
                    else:
                        plain.append(i)
            self._make_ready_many(plain)
            self._fill()
            self._check_progress()
            await self.done.wait()  # type: ignore[union-attr]
            tg.cancel_scope.cancel()  # nothing should be left; make sure (timers of a stall)

    def ended(self) -> None:
        """The run has ended: let go of what only served it while it ran (see
        ``Run._release``).  Each failed task's exception, and each retried attempt's, keeps
        its traceback from the task's own frame on: the engine frames in front of it hold
        this scheduler."""
        self.tg = None
        for err in (*self.errors.values(), *self.retried):
            drop_engine_frames(err)
        self.retried.clear()
        # A cancellation ends in anyio's task_done, whose frame keeps it: a cycle that holds
        # the frames it went through (this scheduler, the task's arguments).  Those frames
        # have returned; clearing their locals leaves that cycle nothing of the run's.
        for exc in self.cancellations:
            traceback.clear_frames(exc.__traceback__)
        self.cancellations.clear()

    def finish_cancelled(self) -> None:
        """After cancellation: every node still open is cancelled."""
        now = time.time()
        nodes, attempts, enter = self.nodes, self.attempts, self.enter
        for i, s in enumerate(self.state):
            if s in _CANCELLABLE:
                enter(ev.TaskCancelled(now, i, nodes[i].key, attempts[i]))

    # -- ready set and workers -----------------------------------------------------------

    def _make_ready(self, i: int) -> None:
        ref = self.nodes[i]
        resolve = RESOLVERS.get(ref.kind)
        if resolve is not None:  # a construct: decided on the spot, not queued
            resolve(self, i, ref)
            return
        self.enter(ev.TaskReady(time.time(), i, ref.key))
        self._push(i)

    def _make_ready_many(self, ready: list[int]) -> None:
        """:meth:`_make_ready` for plain task nodes (no resolver), their events in one call."""
        if not ready:
            return
        self.tasks.enter_batch(ev.TaskReady, time.time(), ready)
        group_of = self.batches.group_of
        if group_of is None:
            for i in ready:
                self._push(i)
            return
        groups: dict[int, batching.Group] = {}  # batched items: queued, then tokens once
        known = len(group_of)
        last: batching.Group | None = None
        queue = None
        for i in ready:
            g = group_of[i] if i < known else None
            if g is None:
                self._push(i)
            elif g is last:  # (a map's items come in a row: one lookup per map)
                queue(i)  # type: ignore[misc]
            else:
                g.ready.append(i)
                groups[id(g)] = last = g
                queue = g.ready.append
        for g in groups.values():
            batching.top_up(self, g)

    def _push(self, i: int) -> None:
        if self.early and i in self.early:  # it finished elsewhere before it was ready
            self.early.discard(i)
            if self._take_in(i):
                return
        cls = self.class_of[i]
        if self.batches.group_of is not None:
            g = self.batches.of(i)
            if g is not None:  # a batched map item: queued in its group, a token on the heap
                if not g.slots:
                    g.slots = batching.slots(self.limit, cls.backend)  # type: ignore[union-attr]
                if not g.push(i):
                    return
        self._enqueue(i)

    def _enqueue(self, i: int) -> None:
        """One heap entry for ready node ``i`` (for a batched item: a token of its group)."""
        cls = self.class_of[i]
        task = self.nodes[i].task
        self.seq += 1
        prio = task.spec.priority if task is not None else 0
        heapq.heappush(cls.heap, (-self.level[i], -prio, self.seq, i))  # type: ignore[union-attr]

    def _fits(self, cls: _Class) -> bool:
        avail = self.avail
        for r, amount in cls.demand.items():
            if avail[r] < amount:
                return False
        return True

    def _admissible(self) -> int:
        """How many ready nodes could start now (bounded by free capacity)."""
        total = 0
        for cls in self.classes.values():
            if cls.heap:
                room = len(cls.heap)
                for r, amount in cls.demand.items():
                    if amount > 0:
                        room = min(room, int(self.avail[r] // amount))
                total += room
        return total

    def _pop(self) -> int | None:
        if self.paused or self.busy >= self.limit:
            return None
        best: _Class | None = None
        for cls in self.classes.values():
            if cls.heap and (best is None or cls.heap[0] < best.heap[0]) and self._fits(cls):
                best = cls
        if best is None:
            return None
        i = heapq.heappop(best.heap)[3]
        g = self.batches.of(i) if self.batches.group_of is not None else None
        if g is not None:  # a batched map's token: its group's next ready item
            j = g.next_ready(self.state)
            if j is None:  # (the items it stood for went with an earlier chunk)
                return self._pop()
            i = j
        elif self.state[i] is not READY or (self.slotless and i in self.slotless):
            return self._pop()  # skipped while queued (a saga rolled back), or taken in: drop it
        for r, amount in best.demand.items():
            self.avail[r] -= amount
        self.busy += 1
        return i

    def _release(self, i: int) -> None:
        if self.slotless and i in self.slotless:  # (taken in without a slot: none to give back)
            del self.slotless[i]
            return
        self.busy -= 1
        for r, amount in self.class_of[i].demand.items():  # type: ignore[union-attr]
            self.avail[r] += amount

    def _fill(self) -> None:
        """Spawn a worker if admissible work outnumbers free workers (one at a time)."""
        if self.starting or self.paused:
            return
        if self.tg.cancel_scope.cancel_called:  # the run is ending (an error): a new worker
            return                              # would only start another, forever
        free = self.n_workers - self.busy
        if self.n_workers < self.limit and free < self._admissible():
            self.n_workers += 1
            self.starting += 1
            self.tg.start_soon(self._worker)

    async def _worker(self) -> None:
        self.starting -= 1
        self._fill()  # ramp up: the next worker, if still needed
        ran = 0
        try:
            while (i := self._pop()) is not None:
                await self._execute(i)
                ran += 1
                if ran % YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
        finally:
            self.n_workers -= 1
        self._check_progress()

    def _check_progress(self) -> None:
        if self.tasks.open == 0:
            self.done.set()  # type: ignore[union-attr]
        elif (self.n_workers == 0 and self.timers == 0 and not self.taking and not self.paused
              and self._admissible() == 0):
            waiting = [self.nodes[i].key for i, s in enumerate(self.state) if s in (PENDING, READY)]
            self.stall = StallError(
                f"the run cannot make progress: {len(waiting)} task(s) wait but nothing is "
                f"running, ready or scheduled to retry (first: {waiting[:10]})"
            )
            self.done.set()  # type: ignore[union-attr]

    # -- work finished elsewhere ---------------------------------------------------------

    def finished_elsewhere(self, i: int) -> None:
        """Node ``i``'s backend already ran its call (a Dask task sent ahead that finished on
        the cluster): take it in now if it is ready, else as soon as it is (see the
        module).  Call on the run's loop.  A node already started is not affected."""
        state = self.state[i]
        if state is READY:
            self._take_in(i)
        elif state is PENDING:
            self.early.add(i)

    def _take_in(self, i: int) -> bool:
        """Start ready node ``i``'s attempt outside the admission count, if its backend
        confirms its work is done with the inputs it now has (``done_ahead``)."""
        cls = self.class_of[i]
        done = getattr(cls.backend, "done_ahead", None) if cls is not None else None
        if (done is None or i in self.slotless or i in self.looking or self.tg is None
                or self.tg.cancel_scope.cancel_called):
            return False
        started = done(i)
        if started is None:
            return False
        self.slotless[i] = started  # (its heap entry, if any, is dropped when popped)
        self.to_take.append(i)
        if not self.taking:
            self.taking = True
            self.tg.start_soon(self._taker)
        return True

    async def _taker(self) -> None:
        """Runs the attempts of the nodes taken in, one after the other (each is quick: its
        work is done; one coroutine for a burst of them, not one each)."""
        ran = 0
        try:
            while self.to_take:
                i = self.to_take.popleft()
                if self.state[i] is READY:  # (not skipped or cancelled meanwhile)
                    await self._execute(i)
                else:
                    self.slotless.pop(i, None)
                ran += 1
                if ran % YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
        finally:
            self.taking = False
        self._check_progress()

    # -- one attempt ---------------------------------------------------------------------

    async def _execute(self, i: int) -> None:
        ref = self.nodes[i]
        if ref.kind == MAP:
            self._release(i)
            expand_map(self, i)
            return
        group = self.batches.of(i) if self.batches.group_of is not None else None
        if group is not None:  # a map item that runs with its ready siblings, in one call
            await batching.execute(self, i, group)
            return
        spec = ref.task.spec
        cache = self.cache
        if cache is not None and self.attempts[i] == 0:  # store hook: a stored result for this key?
            t0 = time.perf_counter()
            self.looking.add(i)  # (its work finishing elsewhere meanwhile is not a second attempt)
            try:
                hit = await cache.lookup(i)
            except StoreIntegrityError as e:  # strict=True and a damaged stored result
                self._release(i)
                self.abort(e)
                await anyio.lowlevel.checkpoint()  # the cancellation is raised right here
                return
            except Exception as e:
                self._cache_broke(e)
                hit = None
            finally:
                self.looking.discard(i)
            if self.state[i] is not READY:  # skipped or cancelled while the cache answered:
                self._release(i)            # this attempt is not to be
                return
            if hit is not None:
                self.enter(ev.TaskStarted(time.time(), i, ref.key, 0, "cache"))
                self._release(i)
                self._complete(i, hit[0], time.perf_counter() - t0, hit[1], cached=True)
                return
        attempt = self.attempts[i] + 1
        started = time.time()
        if self.slotless:  # taken in after it ran elsewhere: it started when it ran there
            there = self.slotless.get(i, math.nan)
            if there == there:
                started = there
        self.enter(ev.TaskStarted(started, i, ref.key, attempt, self.executor[i]))  # type: ignore[arg-type]
        args, kwargs = self._arguments(ref)
        backend = self.class_of[i].backend  # type: ignore[union-attr]
        if self.has_remote and not getattr(backend, "accepts_remote", False):
            args, kwargs = await _bring_here(args, kwargs)  # remote results -> values
        if hasattr(backend, "note_inputs"):  # (process backend: counts the bytes of each edge)
            backend.note_inputs(ref.key, [(self.nodes[d].key, self.results[d]) for d in ref.deps])
        # Metrics hook.  A Dask result that stays on its worker cannot travel in the metrics
        # envelope (a downstream task would receive the envelope): the worker notes the CPU
        # time and peak memory with Dask's own record of the task, and they come with the
        # completion on the remote result (``Remote.worker_metrics``).
        executor = self.executor[i]
        if executor == "dask" and getattr(backend, "keep_remote", False):
            executor = "async"  # (wrap() then measures nothing in the worker)
        fn = self.metrics.wrap(i, spec.fn, executor, args, kwargs)
        # Output hook: what the task prints is kept with it (engine.taskoutput).
        token = None
        if attempt > 1:
            self.outputs.pop(i, None)  # (a retry's output replaces the failed attempt's)
        if executor == "thread":
            fn = taskoutput.capturing(fn, self.outputs, i, ref.key)
        elif executor == "async":
            token = taskoutput.start(self.outputs, i, ref.key)
        t0 = time.perf_counter()
        try:
            if spec.timeout is None:
                value, size = await backend.call(ref.key, fn, args, kwargs)
            else:
                noted = None  # what its backend noted on the cancellation that stopped the call
                with anyio.move_on_after(spec.timeout) as scope:
                    try:
                        value, size = await backend.call(ref.key, fn, args, kwargs)
                    except anyio.get_cancelled_exc_class() as exc:
                        noted = ran_of(exc)  # (not the exception: its frames would be kept)
                        raise
                if scope.cancelled_caught:
                    if hasattr(backend, "abandon"):
                        backend.abandon(ref.key)
                    # (timed where it ran, when its backend says: a Dask task; taskstate.timed_out)
                    raise timed_out(TaskTimeout(
                        f"task {ref.key!r} timed out after {spec.timeout:g} s"
                        + (" (its thread cannot be interrupted; it finishes in the background "
                           "and its result is discarded)" if self.executor[i] == "thread" else "")
                    ), noted, time.time())
        except anyio.get_cancelled_exc_class() as exc:
            self._release(i)
            # (timed where it ran, when its backend says: a Dask task; taskstate.cancelled)
            gone, took = cancelled(i, ref.key, self.attempts[i], exc, time.time(), time.perf_counter() - t0)
            self.enter(gone, None, took)
            self.cancellations.append(exc)  # (its frames are cleared as the run ends)
            raise
        except Exception as e:  # the task's own error (or its timeout)
            self._release(i)
            self._failed_attempt(i, e, time.perf_counter() - t0)
            return
        finally:
            if token is not None:
                taskoutput.stop(token)
        duration = time.perf_counter() - t0
        ran = None
        if type(value) is Measured:  # metrics hook: a process/Dask worker's envelope
            value = self.metrics.unwrap(i, value)
        elif isinstance(value, Remote):  # (left remote)
            ran = value.ran  # when its call ran on its worker (our clock), if told
            if value.worker_metrics is not None:
                self.metrics.note(i, *value.worker_metrics)
            # the seconds its worker measured: the engine may learn of a Dask completion
            # later than it happened (dask_plugin's window), so its own clock would not do
            if value.compute_s is not None:
                duration = value.compute_s
        if cache is not None and self.cache is not None:  # store hook: hash, store if cacheable
            try:
                size = await cache.commit(i, value, size)
            except Exception as e:
                self._cache_broke(e)
        self._release(i)
        self._complete(i, value, duration, size, ran=ran)

    def _arguments(self, ref: Ref) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        if ref.nested == 0:
            return ref.args, ref.kwargs
        results = self.results
        if ref.nested == 1:
            args = tuple([results[a.index] if type(a) is Ref else a for a in ref.args])
            kw = ref.kwargs
            if kw:
                kw = {k: results[v.index] if type(v) is Ref else v for k, v in kw.items()}
            return args, kw
        args = tuple([self._resolve(a) for a in ref.args])
        kw = {k: self._resolve(v) for k, v in ref.kwargs.items()} if ref.kwargs else None
        return args, kw

    def _resolve(self, obj: Any) -> Any:
        t = type(obj)
        if t is Ref:
            return self.results[obj.index]
        if t is list:
            return [self._resolve(x) for x in obj]
        if t is tuple:
            return tuple([self._resolve(x) for x in obj])
        if t is dict:
            return {k: self._resolve(v) for k, v in obj.items()}
        if t is set or t is frozenset:
            return t(self._resolve(x) for x in obj)
        return obj

    # -- outcomes ------------------------------------------------------------------------

    def _complete(
        self, i: int, value: Any, duration: float, size: int | None, inline: bool = False,
        cached: bool = False, ran: tuple[float, float] | None = None,
    ) -> None:
        """Node ``i`` completed with ``value``.  ``ran``: when its call started and stopped
        where it ran (a Dask worker), which the records keep as its start and end instead
        of the moments the engine started it and learned of its end (see the module)."""
        node = self.nodes[i]
        cache = self.cache
        if cache is None:
            reason, key, blob = ("cache off" if node.kind == TASK else None), None, None
        else:
            reason, key, blob = cache.info(i)
        self.enter(ev.TaskCompleted(time.time() if ran is None else ran[1], i, node.key,
                                    self.attempts[i], duration, size, cached, reason, key, blob,
                                    None if cached else self.metrics.row(i), self._output(i),
                                    None if ran is None else ran[0]),
                   value)
        if self.saga_of and i in self.saga_of:
            self.sagas.member_ended(i)
        waiting = self.waiting
        state = self.state
        for s in self.succs[i]:
            w = waiting[s] = waiting[s] - 1
            # RUNNING here is an expanded map waiting for its items: it collects now.
            if w == 0 and (state[s] is PENDING or state[s] is RUNNING):
                self._make_ready(s)
        if not inline:
            self._fill()
            if self.tasks.open == 0:
                self.done.set()  # type: ignore[union-attr]

    def _complete_many(self, items: list[int], values: list[Any], durations: list[float],
                       sizes: list[int | None], ran: tuple[float, float] | None = None) -> None:
        """:meth:`_complete` (inline, computed) for the items of a batched chunk that
        succeeded: one event each, entered in one call, then their successors.  ``ran``:
        when the chunk's call started and stopped where it ran (a Dask worker), which the
        records keep as the items' start and end, as :meth:`_complete` does for a task."""
        if not items:
            return
        nodes, attempts, cache = self.nodes, self.attempts, self.cache
        output = self._output
        columns: dict[str, list[Any]] = {
            "attempt": [attempts[i] for i in items], "duration_s": durations, "output_bytes": sizes,
            "metrics": self.metrics.rows(items)}
        common: dict[str, Any] = {"cached": False}
        if ran is not None:
            common["started"] = ran[0]
        if self.outputs:
            columns["output"] = [output(i) for i in items]
        if cache is None:  # (a chunk's items are one map's: all of the same kind)
            common["reason"] = "cache off" if nodes[items[0]].kind == TASK else None
        else:
            info = [cache.info(i) for i in items]
            columns["reason"] = [r for r, _, _ in info]
            columns["cache_key"] = [k for _, k, _ in info]
            columns["blob"] = [b for _, _, b in info]
        self.tasks.enter_batch(ev.TaskCompleted, time.time() if ran is None else ran[1], items,
                               columns, common, values)
        waiting, state, succs = self.waiting, self.state, self.succs
        saga_of = self.saga_of
        for i in items:
            if saga_of and i in saga_of:
                self.sagas.member_ended(i)
            for s in succs[i]:
                w = waiting[s] = waiting[s] - 1
                if w == 0 and (state[s] is PENDING or state[s] is RUNNING):
                    self._make_ready(s)

    def _failed_attempt(self, i: int, error: Exception, duration: float,
                        ran: tuple[float, float] | None = None) -> None:
        """``ran``: when the attempt started and stopped where it ran (a batched Dask
        chunk's worker times); else as its error says (a Dask task's: taskstate.ran_of),
        whose span is then the attempt's duration."""
        ref = self.nodes[i]
        spec = ref.task.spec
        if ran is None and (ran := ran_of(error)) is not None:
            duration = ran[1] - ran[0]  # (NaN when its start there is not known: timed_out)
        if self.attempts[i] <= spec.retries:
            delay = spec.backoff(self.attempts[i], self.rand.random())
            self.enter(ev.TaskRetrying(time.time() if ran is None else ran[1], i, ref.key,
                                       self.attempts[i], delay, error, self._reason(i),
                                       self.metrics.row(i), self._output(i),
                                       None if ran is None else ran[0]),
                       None, duration)
            self.retried.append(error)  # (kept in the run's events; trimmed by ended())
            self.timers += 1
            self.tg.start_soon(self._retry_after, i, delay)
            self._fill()
            return
        self._fail(i, error, duration, ran)
        self._fill()
        if self.tasks.open == 0:
            self.done.set()  # type: ignore[union-attr]

    def _fail(self, i: int, error: BaseException, duration: float = 0.0,
              ran: tuple[float, float] | None = None) -> None:
        ref = self.nodes[i]
        if self.first_failure is None:
            self.first_failure = i
        self.enter(ev.TaskFailed(time.time() if ran is None else ran[1], i, ref.key,
                                 max(self.attempts[i], 1), duration, error, self._reason(i),
                                 self.metrics.row(i), self._output(i),
                                 None if ran is None else ran[0]))
        if not self.continue_on_error:
            self.tg.cancel_scope.cancel()
            return
        self._propagate_end(i, f"upstream task {ref.key!r} failed")
        if self.saga_of:
            self.sagas.member_failed(i, ref.key)

    def _skip(self, i: int, reason: str) -> None:
        self.enter(ev.TaskSkipped(time.time(), i, self.nodes[i].key, reason))
        self._propagate_end(i, reason)

    def _output(self, i: int) -> str | None:
        """What node ``i``'s latest attempt printed (None: nothing, or not captured)."""
        cap = self.outputs.get(i) if self.outputs else None
        return cap.text() if cap is not None else None

    def _reason(self, i: int) -> str | None:
        """Why node ``i`` ran (what its events carry)."""
        cache = self.cache
        return "cache off" if cache is None else cache.info(i)[0]

    def abort(self, error: BaseException) -> None:
        """End the run with ``error`` (an error of the run, not of a task): stop everything."""
        if self.error is None:
            self.error = error
        self.tg.cancel_scope.cancel()

    def _cache_broke(self, error: Exception) -> None:
        """The store failed while the run was using it: go on without cache (said once)."""
        if self.cache is None:
            return
        cache, self.cache = self.cache, None
        warnings.warn(
            f"nbflow: the run store failed ({type(error).__name__}: {error}); this run goes on "
            "without the cache. Check the store directory (nbflow runs shows where it is).",
            NbflowStoreWarning, stacklevel=2)
        with contextlib.suppress(Exception):
            cache.close()

    def unhandled_failures(self) -> list[int]:
        """Failed nodes whose failure was not absorbed by a ``gather`` that completed."""
        out = []
        for i in self.errors:
            succs = self.succs[i]
            absorbed = bool(succs) and all(
                self.nodes[s].kind == GATHER and self.state[s] == COMPLETED for s in succs)
            if not absorbed:
                out.append(i)
        return sorted(out, key=lambda i: self.end[i])

    async def _retry_after(self, i: int, delay: float) -> None:
        try:
            await anyio.sleep(delay)  # a backoff timer, not a poll
        finally:
            self.timers -= 1
        if self.state[i] is not RETRYING:  # skipped meanwhile (a saga rolled back)
            self._check_progress()
            return
        self.enter(ev.TaskReady(time.time(), i, self.nodes[i].key))
        self._push(i)
        self._fill()
        self._check_progress()

    def _propagate_end(self, i: int, reason: str) -> None:
        """Node ``i`` failed or was skipped: skip what needed its value (with ``reason``),
        and let tolerant joins count it as ended."""
        stack = [i]
        now = time.time()
        nodes, state, waiting = self.nodes, self.state, self.waiting
        while stack:
            j = stack.pop()
            for s in self.succs[j]:
                st = state[s]
                kind = nodes[s].kind
                # A join tolerates inputs that ended without a value, but not its own branch
                # side being untaken: the gate is a control dependency, not an input.
                if kind in TOLERANT and nodes[j].kind != GATE:
                    w = waiting[s] = waiting[s] - 1
                    # (RUNNING: a tolerant map over a Ref, expanded, waiting for its items)
                    if w == 0 and (st is PENDING or st is RUNNING):
                        self._make_ready(s)
                # PENDING, or RUNNING for an expanded map or a loop waiting on its items.
                elif st is PENDING or (st is RUNNING and (kind in (COLLECT, LOOP))):
                    self.enter(ev.TaskSkipped(now, s, nodes[s].key, reason))
                    stack.append(s)

    # -- growth --------------------------------------------------------------------------

    def _append_node(
        self, parent: Ref, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
        deps: list[int], key: str, succs: list[int], kind: str,
    ) -> Ref:
        """Grow the graph while running (map items, loop iterations, compensations)."""
        k = len(self.nodes)
        node = Ref(parent.wf, k, task, args, kwargs, deps, key, 0, kind)
        self.tasks.append(node)  # the node, its records, and one more open node
        self.succs.append(succs)
        self.waiting.append(len(deps))
        self.level.append(max((self.level[s] for s in succs), default=0.0) + 1.0)
        self.class_of.append(None)
        self.class_of[k] = self._classify(k)
        for d in deps:
            self.succs[d].append(k)
        return node

    # -- approvals -----------------------------------------------------------------------

    def answer(self, i: int, approved: bool) -> None:
        """Record a person's answer to approval node ``i`` (call on the run's loop)."""
        approvals.answer(self, i, approved)


async def _bring_here(args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                      ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Arguments for a backend that runs here: fetch remote results (off the loop)."""
    if not has_remote(args) and not (kwargs and has_remote(kwargs)):
        return args, kwargs
    return await anyio.to_thread.run_sync(
        lambda: (localise(args), localise(kwargs) if kwargs else kwargs))
