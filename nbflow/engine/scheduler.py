"""The scheduler: runs one traced graph to the end on an anyio event loop.

How it works, in one place:

* **Plain state.**  Nodes are integers (their index in the run's node list).  Per node the
  scheduler keeps a list entry for its state, the number of inputs it still waits for,
  its successors, its result, its attempts and times.  There are no per-task objects
  beyond the traced ``Ref`` itself.
* **Ready set.**  A node whose wait count reaches zero becomes *ready* and is pushed onto a
  heap ordered by :func:`~nbflow.engine.priority.ready_key`: longest remaining path first
  (the critical path keeps moving), then the task's ``priority``, then FIFO.  Ready nodes
  are grouped in one heap per *demand class* (backend plus declared resources), so that
  finding the best node that fits the free capacity costs O(classes), not O(ready).
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
* **Retries** wait on a timer (capped exponential backoff with jitter) outside any slot,
  then queue again.  **Timeouts** are a cancel scope around the backend call.
* **Failure** of a node skips its descendants (each with a reason); independent branches
  go on.  With ``continue_on_error=False`` the first failure cancels the rest instead.
* **Cancellation** is the run's cancel scope: every worker stops at its next await; the
  nodes still open are marked cancelled.  **Pause** closes a gate before dispatch: running
  nodes finish, nothing new starts until resume.
* **Growth.**  A ``map`` over a Ref expands when the Ref's value is known: new nodes are
  appended to the plain state and queued; the map node then waits for them.
* **Stall.**  If nodes remain open but nothing is running, ready, or waiting on a timer,
  the run ends with an error naming the waiting nodes instead of hanging.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import math
import random
import time
from collections.abc import Callable
from typing import Any

import anyio

from . import events as ev
from .constructs import ApprovalTimeout, GatherError, LoopLimitError, interactive_approvals
from .errors import CycleError, NbflowError, TaskTimeout, WorkflowDefinitionError
from .graph import (
    APPROVAL,
    COLLECT,
    CONST,
    FIRST,
    GATE,
    GATHER,
    INLINE,
    LOOP,
    MAP,
    TASK,
    TOLERANT,
    UNDO,
    Ref,
)
from .metrics import Measured, TaskMetrics
from .priority import longest_remaining_path
from .state import CANCELLED, COMPLETED, FAILED, PENDING, READY, RETRYING, RUNNING, SKIPPED

YIELD_EVERY = 64  # tasks a worker may run back to back before yielding to the event loop
_frozen_runs = 0
_thresholds: tuple[int, ...] = gc.get_threshold()


@contextlib.contextmanager
def _graph_out_of_gc() -> Any:
    """Keep the (already built) graph out of the cyclic GC's scans while running.

    A 100k-task graph is half a million long-lived objects; every full collection during
    the run would walk them all, which made per-task cost grow with graph size (40 % of the
    time at 100k).  ``gc.freeze`` moves what exists now to a permanent generation until
    ``gc.unfreeze``; nothing is leaked, collection of those objects is only deferred.
    """
    global _frozen_runs, _thresholds
    if _frozen_runs == 0:
        gc.freeze()
        # Fewer, larger young collections while tasks churn through small objects; cyclic
        # garbage is still collected, just in batches of 20k allocations instead of 700.
        _thresholds = gc.get_threshold()
        gc.set_threshold(max(_thresholds[0], 20_000), *_thresholds[1:])
    _frozen_runs += 1
    try:
        yield
    finally:
        _frozen_runs -= 1
        if _frozen_runs == 0:
            gc.set_threshold(*_thresholds)
            gc.unfreeze()


class StallError(NbflowError, RuntimeError):
    """Nodes are waiting but nothing can make progress (a deadlock)."""


class _Class:
    """Ready nodes that make the same demand, in priority order."""

    __slots__ = ("backend", "backend_name", "demand", "heap")

    def __init__(self, backend_name: str, demand: dict[str, float]) -> None:
        self.backend_name = backend_name
        self.backend: Any = None
        self.demand = demand
        self.heap: list[tuple[float, int, int, int]] = []


class Scheduler:
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
        self.succs: list[list[int]] = [[] for _ in range(n)]
        self.waiting = [0] * n
        for ref in nodes:
            self.waiting[ref.index] = len(ref.deps)
            for d in ref.deps:
                self.succs[d].append(ref.index)
        self.extra_edges = list(extra_edges or ())  # ordering added for this run (serialize)
        for a, b in self.extra_edges:
            self.succs[a].append(b)
            self.waiting[b] += 1
        self.level = longest_remaining_path(self.succs, order=self._topological_order())
        self.state = [PENDING] * n
        self.attempts = [0] * n
        self.results: list[Any] = [None] * n
        self.start = [math.nan] * n  # wall-clock epoch seconds of the last attempt
        self.end = [math.nan] * n
        self.duration = [math.nan] * n  # monotonic seconds of the last attempt
        self.output_bytes: list[int | None] = [None] * n
        self.errors: dict[int, BaseException] = {}
        self.reasons: dict[int, str] = {}
        self.executor: list[str | None] = [None] * n

        self.classes: dict[Any, _Class] = {}
        self.class_of: list[_Class | None] = [None] * n
        self.seq = 0
        self.open = n  # nodes not yet in a terminal state
        self.busy = 0  # workers executing a node
        self.n_workers = 0  # worker coroutines alive (busy, or about to pick)
        self.starting = 0  # spawned workers that have not begun yet
        self.timers = 0  # retries waiting on their backoff timer
        self.paused = False
        self.first_failure: int | None = None
        self.stall: StallError | None = None
        self.tg: Any = None
        self.cache: Any = None  # the run's result cache (nbflow.store.cache.RunCache), if any
        self.metrics = TaskMetrics()  # CPU time, peak RSS, input features (nbflow.engine.metrics)
        self.loop_iters: dict[int, int] = {}  # loop node -> iterations started
        self._last_iteration: dict[int, int] = {}  # loop node -> its latest iteration's node
        self.answers: dict[int, Any] = {}  # approval node -> anyio.Event, then the answer
        self.interactive: Callable[[], bool] = interactive_approvals  # can a person answer?
        self.rollbacks: list[dict[str, Any]] = []  # one entry per saga that rolled back
        self.saga_of: dict[int, Any] = {}
        self._saga_done: dict[str, list[int]] = {}  # saga name -> members in completion order
        self._rolling: dict[str, dict[str, Any]] = {}
        for saga in sagas or ():
            for m in saga.members:
                self.saga_of[m] = saga  # nested sagas: the innermost block wins
        for i in range(n):  # up front: a bad demand is refused before anything runs
            if nodes[i].kind not in INLINE and nodes[i].kind != APPROVAL:
                self.class_of[i] = self._classify(i)
        self.done: anyio.Event | None = None  # made on the run's loop

    # -- planning ------------------------------------------------------------------------

    def _topological_order(self) -> list[int]:
        """Kahn's algorithm; a leftover means a cycle, reported with its tasks in order."""
        indeg = list(self.waiting)
        order = [i for i, d in enumerate(indeg) if d == 0]
        k = 0
        while k < len(order):
            for s in self.succs[order[k]]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    order.append(s)
            k += 1
        if len(order) < len(self.nodes):
            raise CycleError(self._find_cycle({i for i, d in enumerate(indeg) if d > 0}))
        return order

    def _find_cycle(self, left: set[int]) -> list[str]:
        import networkx as nx

        g = nx.DiGraph()
        g.add_edges_from((d, r.index) for r in self.nodes if r.index in left for d in r.deps if d in left)
        cycle = nx.find_cycle(g)
        return [self.nodes[u].key for u, _ in cycle]

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

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> None:
        self.done = anyio.Event()
        with _graph_out_of_gc():
            await self._run()

    async def _run(self) -> None:
        async with anyio.create_task_group() as tg:
            self.tg = tg
            for i in range(len(self.nodes)):
                if self.waiting[i] == 0 and self.state[i] == PENDING:
                    self._make_ready(i)
            self._fill()
            self._check_progress()
            await self.done.wait()  # type: ignore[union-attr]
            tg.cancel_scope.cancel()  # nothing should be left; make sure (timers of a stall)

    def finish_cancelled(self) -> None:
        """After cancellation: every node still open is cancelled."""
        now = time.time()
        for i, s in enumerate(self.state):
            if s in (PENDING, READY, RUNNING, RETRYING):
                self.state[i] = CANCELLED
                if s == RUNNING:
                    self.end[i] = now
                self.open -= 1
                self.emit(ev.TaskCancelled(now, i, self.nodes[i].key))

    # -- ready set and workers -----------------------------------------------------------

    def _make_ready(self, i: int) -> None:
        ref = self.nodes[i]
        kind = ref.kind
        if kind in INLINE:
            self._resolve_inline(i, ref)
            return
        self.state[i] = READY
        self.emit(ev.TaskReady(time.time(), i, ref.key))
        if kind == APPROVAL:  # waits for a person, not for a worker slot
            self.timers += 1
            self.tg.start_soon(self._approval, i)
            return
        self._push(i)

    def _push(self, i: int) -> None:
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
        if self.state[i] != READY:  # skipped while queued (a saga rolled back): drop it
            return self._pop()
        for r, amount in best.demand.items():
            self.avail[r] -= amount
        self.busy += 1
        return i

    def _release(self, i: int) -> None:
        self.busy -= 1
        for r, amount in self.class_of[i].demand.items():  # type: ignore[union-attr]
            self.avail[r] += amount

    def _fill(self) -> None:
        """Spawn a worker if admissible work outnumbers free workers (one at a time)."""
        if self.starting or self.paused:
            return
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
        if self.open == 0:
            self.done.set()  # type: ignore[union-attr]
        elif self.n_workers == 0 and self.timers == 0 and not self.paused and self._admissible() == 0:
            waiting = [self.nodes[i].key for i, s in enumerate(self.state) if s in (PENDING, READY)]
            self.stall = StallError(
                f"the run cannot make progress: {len(waiting)} task(s) wait but nothing is "
                f"running, ready or scheduled to retry (first: {waiting[:10]})"
            )
            self.done.set()  # type: ignore[union-attr]

    # -- one attempt ---------------------------------------------------------------------

    async def _execute(self, i: int) -> None:
        ref = self.nodes[i]
        if ref.kind == MAP:
            self._release(i)
            self._expand(i)
            return
        spec = ref.task.spec  # type: ignore[union-attr]
        cache = self.cache
        if cache is not None and self.attempts[i] == 0:  # store hook: a stored result for this key?
            t0 = time.perf_counter()
            hit = await cache.lookup(i)
            if hit is not None:
                self.state[i] = RUNNING
                self.start[i] = now = time.time()
                self.emit(ev.TaskStarted(now, i, ref.key, 0, "cache"))
                self._release(i)
                self._complete(i, hit[0], time.perf_counter() - t0, hit[1], cached=True)
                return
        attempt = self.attempts[i] = self.attempts[i] + 1
        self.state[i] = RUNNING
        self.start[i] = now = time.time()
        self.emit(ev.TaskStarted(now, i, ref.key, attempt, self.executor[i]))  # type: ignore[arg-type]
        args, kwargs = self._arguments(ref)
        backend = self.class_of[i].backend  # type: ignore[union-attr]
        fn = self.metrics.wrap(i, spec.fn, self.executor[i], args, kwargs)  # metrics hook
        t0 = time.perf_counter()
        try:
            if spec.timeout is None:
                value, size = await backend.call(ref.key, fn, args, kwargs)
            else:
                with anyio.move_on_after(spec.timeout) as scope:
                    value, size = await backend.call(ref.key, fn, args, kwargs)
                if scope.cancelled_caught:
                    if hasattr(backend, "abandon"):
                        backend.abandon(ref.key)
                    raise TaskTimeout(
                        f"task {ref.key!r} timed out after {spec.timeout:g} s"
                        + (" (its thread cannot be interrupted; it finishes in the background "
                           "and its result is discarded)" if self.executor[i] == "thread" else "")
                    )
        except anyio.get_cancelled_exc_class():
            self._release(i)
            self.state[i] = CANCELLED
            self.end[i] = time.time()
            self.duration[i] = time.perf_counter() - t0
            self.open -= 1
            self.emit(ev.TaskCancelled(self.end[i], i, ref.key))
            raise
        except Exception as e:  # the task's own error (or its timeout)
            self._release(i)
            self._failed_attempt(i, e, time.perf_counter() - t0)
            return
        duration = time.perf_counter() - t0
        if type(value) is Measured:  # metrics hook: a process/Dask worker's envelope
            value = self.metrics.unwrap(i, value)
        if cache is not None:  # store hook: hash the value, store it if cacheable
            size = await cache.commit(i, value, size)
        self._release(i)
        self._complete(i, value, duration, size)

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
        cached: bool = False,
    ) -> None:
        self.results[i] = value
        self.state[i] = COMPLETED
        self.end[i] = now = time.time()
        if inline:
            self.start[i] = now
        self.duration[i] = duration
        self.output_bytes[i] = size
        self.open -= 1
        if self.saga_of and i in self.saga_of:
            self._member_ended(i)
        self.emit(ev.TaskCompleted(now, i, self.nodes[i].key, self.attempts[i], duration, size, cached))
        waiting = self.waiting
        state = self.state
        for s in self.succs[i]:
            w = waiting[s] = waiting[s] - 1
            # RUNNING here is an expanded map waiting for its items: it collects now.
            if w == 0 and (state[s] == PENDING or state[s] == RUNNING):
                self._make_ready(s)
        if not inline:
            self._fill()
            if self.open == 0:
                self.done.set()  # type: ignore[union-attr]

    def _failed_attempt(self, i: int, error: Exception, duration: float) -> None:
        ref = self.nodes[i]
        spec = ref.task.spec  # type: ignore[union-attr]
        now = time.time()
        self.duration[i] = duration
        if self.attempts[i] <= spec.retries:
            delay = spec.backoff(self.attempts[i], self.rand.random())
            self.state[i] = RETRYING
            self.emit(ev.TaskRetrying(now, i, ref.key, self.attempts[i], delay, error))
            self.timers += 1
            self.tg.start_soon(self._retry_after, i, delay)
            self._fill()
            return
        self._fail(i, error, duration)
        self._fill()
        if self.open == 0:
            self.done.set()  # type: ignore[union-attr]

    def _fail(self, i: int, error: BaseException, duration: float = 0.0) -> None:
        ref = self.nodes[i]
        now = time.time()
        self.state[i] = FAILED
        self.end[i] = now
        if math.isnan(self.start[i]):
            self.start[i] = now
        self.attempts[i] = max(self.attempts[i], 1)
        self.errors[i] = error
        self.open -= 1
        if self.first_failure is None:
            self.first_failure = i
        self.emit(ev.TaskFailed(now, i, ref.key, self.attempts[i], duration, error))
        if not self.continue_on_error:
            self.tg.cancel_scope.cancel()
            return
        self._propagate_end(i, f"upstream task {ref.key!r} failed")
        saga = self.saga_of.get(i)
        if saga is not None:
            self._roll_back(saga, ref.key)

    def _skip(self, i: int, reason: str) -> None:
        self.state[i] = SKIPPED
        self.reasons[i] = reason
        self.open -= 1
        self.emit(ev.TaskSkipped(time.time(), i, self.nodes[i].key, reason))
        self._propagate_end(i, reason)

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
        if self.state[i] != RETRYING:  # skipped meanwhile (a saga rolled back)
            self._check_progress()
            return
        self.state[i] = READY
        self.emit(ev.TaskReady(time.time(), i, self.nodes[i].key))
        self._push(i)
        self._fill()
        self._check_progress()

    def _propagate_end(self, i: int, reason: str) -> None:
        """Node ``i`` failed or was skipped: skip what needed its value (with ``reason``),
        and let tolerant joins count it as ended."""
        stack = [i]
        now = time.time()
        while stack:
            j = stack.pop()
            for s in self.succs[j]:
                st = self.state[s]
                kind = self.nodes[s].kind
                # A join tolerates inputs that ended without a value, but not its own branch
                # side being untaken: the gate is a control dependency, not an input.
                if kind in TOLERANT and self.nodes[j].kind != GATE:
                    w = self.waiting[s] = self.waiting[s] - 1
                    if w == 0 and st == PENDING:
                        self._make_ready(s)
                # PENDING, or RUNNING for an expanded map or a loop waiting on its items.
                elif st == PENDING or (st == RUNNING and (kind in (COLLECT, LOOP))):
                    self.state[s] = SKIPPED
                    self.reasons[s] = reason
                    self.open -= 1
                    self.emit(ev.TaskSkipped(now, s, self.nodes[s].key, reason))
                    stack.append(s)

    # -- growth --------------------------------------------------------------------------

    def _expand(self, i: int) -> None:
        """A map over a Ref whose value is now known: one node per item, then collect."""
        ref = self.nodes[i]
        items_ref = ref.args[0]
        items = self.results[items_ref.index]
        try:
            items = list(items)
        except TypeError:  # not retried: the same input would fail the same way
            self._fail(i, TypeError(f"{ref.key}: map needs a list (or other iterable) from "
                                    f"{items_ref.key}, got {type(items).__name__}"))
            self._fill()
            self._check_progress()
            return
        self.attempts[i] = 1
        self.state[i] = RUNNING
        self.start[i] = now = time.time()
        self.emit(ev.TaskStarted(now, i, ref.key, 1, "map"))
        kwargs = {k: self._resolve(v) for k, v in ref.kwargs.items()} if ref.kwargs else None
        task = ref.task
        first = len(self.nodes)
        keys = []
        for j, item in enumerate(items):
            child = self._append_node(ref, task, (item,), kwargs, [], f"{ref.key}[{j}]", [i], TASK)
            keys.append(child.key)
        n = len(items)
        self.waiting[i] = n
        # The map node now collects its children; it completes when they all have.
        ref_collect = Ref(ref.wf, i, None, tuple(self.nodes[first:]), None, list(range(first, first + n)),
                          ref.key, 1, COLLECT)
        self.nodes[i] = ref_collect
        self.emit(ev.TasksAdded(now, ref.key, keys, list(range(first, first + n))))
        if n == 0:
            self._make_ready(i)
            self._fill()
            return
        for k in range(first, first + n):
            self._make_ready(k)
        self._fill()

    def _append_node(
        self, parent: Ref, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
        deps: list[int], key: str, succs: list[int], kind: str,
    ) -> Ref:
        """Grow the graph while running (map items, loop iterations, compensations)."""
        k = len(self.nodes)
        node = Ref(parent.wf, k, task, args, kwargs, deps, key, 0, kind)
        self.nodes.append(node)
        self.succs.append(succs)
        self.waiting.append(len(deps))
        self.level.append(max((self.level[s] for s in succs), default=0.0) + 1.0)
        self.state.append(PENDING)
        self.attempts.append(0)
        self.results.append(None)
        self.start.append(math.nan)
        self.end.append(math.nan)
        self.duration.append(math.nan)
        self.output_bytes.append(None)
        self.executor.append(None)
        self.class_of.append(None)
        self.class_of[k] = self._classify(k)
        for d in deps:
            self.succs[d].append(k)
        self.open += 1
        return node

    # -- constructs resolved by the scheduler itself (no backend) ------------------------

    def _value(self, a: Any) -> Any:
        return self.results[a.index] if type(a) is Ref else a

    def _resolve_inline(self, i: int, ref: Ref) -> None:
        kind = ref.kind
        if kind == COLLECT:
            self._complete(i, [self.results[p.index] for p in ref.args], 0.0, None, inline=True)
        elif kind == CONST:
            self._complete(i, ref.args[0], 0.0, None, inline=True)
        elif kind == GATE:
            cond, expect = ref.args
            value = self._value(cond)
            try:
                truth = bool(value)
            except Exception as e:  # e.g. the truth value of an array is ambiguous
                self._fail(i, TypeError(f"{ref.key}: cannot use {type(value).__name__} as a branch "
                                        f"condition ({e}); make the condition return True/False"))
                return
            if truth == expect:
                self._complete(i, None, 0.0, None, inline=True)
            else:
                what = cond.key if type(cond) is Ref else "the condition"
                self._skip(i, f"branch not taken: {what} is {_short(value)}")
        elif kind == FIRST:
            self._resolve_first(i, ref)
        elif kind == GATHER:
            self._resolve_gather(i, ref)
        elif kind == LOOP:
            self._loop_step(i, ref)

    def _resolve_first(self, i: int, ref: Ref) -> None:
        for a in ref.args:
            if type(a) is not Ref:
                self._complete(i, a, 0.0, None, inline=True)
                return
            st = self.state[a.index]
            if st == FAILED:
                self._skip(i, f"upstream task {a.key!r} failed")
                return
            if st == COMPLETED:
                self._complete(i, self.results[a.index], 0.0, None, inline=True)
                return
        self._skip(i, "every input of first() was skipped")

    def _resolve_gather(self, i: int, ref: Ref) -> None:
        values, failed, skipped = [], [], []
        for a in ref.args:
            if type(a) is not Ref:
                values.append(a)
            elif self.state[a.index] == COMPLETED:
                values.append(self.results[a.index])
            elif self.state[a.index] == FAILED:
                failed.append(a.key)
            else:
                skipped.append(a.key)
        need = ref.kwargs["min_success"]  # type: ignore[index]
        if len(values) >= need:
            self._complete(i, values, 0.0, None, inline=True)
        else:
            self._fail(i, GatherError(
                f"{ref.key} needed {need} of {len(ref.args)} inputs to complete, {len(values)} did "
                f"(failed: {failed or 'none'}, skipped: {skipped or 'none'})"))

    def _loop_step(self, i: int, ref: Ref) -> None:
        opts = ref.kwargs or {}
        n = self.loop_iters.get(i, 0)
        if n == 0:
            value = self._value(ref.args[0])
            self.state[i] = RUNNING
            self.attempts[i] = 1
            self.start[i] = now = time.time()
            self.emit(ev.TaskStarted(now, i, ref.key, 1, "loop"))
        else:
            value = self.results[self._last_iteration[i]]
            try:
                finished = bool(opts["until"](value))
            except Exception as e:
                self._fail(i, e)
                return
            if finished:
                start = self.start[i]
                self._complete(i, value, time.time() - start, None, inline=True)
                self.start[i] = start
                return
            if opts["max_iter"] is not None and n >= opts["max_iter"]:
                self._fail(i, LoopLimitError(
                    f"{ref.key}: until() was still false after max_iter={opts['max_iter']} "
                    f"iterations (last value: {_short(value)}); raise max_iter or check the "
                    "until condition"))
                return
        self.loop_iters[i] = n + 1
        child = self._append_node(ref, ref.task, (value,), None, [], f"{ref.key}[{n}]", [i], TASK)
        self._last_iteration[i] = child.index
        self.waiting[i] = 1
        self.emit(ev.TasksAdded(time.time(), ref.key, [child.key], [child.index]))
        self._make_ready(child.index)
        self._fill()

    # -- sagas ---------------------------------------------------------------------------

    def _roll_back(self, saga: Any, failed_key: str) -> None:
        """A member of ``saga`` failed: skip its members that have not started, then (once
        none is running) compensate the completed ones in reverse order of completion."""
        if saga.name in self._rolling:
            self._maybe_compensate(saga)
            return
        self._rolling[saga.name] = {"saga": saga.name, "failed_task": failed_key, "undo": []}
        reason = f"saga {saga.name} rolled back after {failed_key!r} failed"
        for m in saga.members:
            if self.state[m] in (PENDING, READY, RETRYING):
                self._skip(m, reason)
        self._maybe_compensate(saga)

    def _maybe_compensate(self, saga: Any) -> None:
        info = self._rolling.get(saga.name)
        if info is None or info.get("started"):
            return
        if any(self.state[m] in (RUNNING, RETRYING) for m in saga.members):
            return  # wait: a running member's end calls this again
        info["started"] = True
        done = [m for m in self._saga_done.get(saga.name, []) if self.state[m] == COMPLETED]
        prev: list[int] = []
        first_undo = None
        for m in reversed(done):
            member = self.nodes[m]
            undo = member.task.spec.compensate if member.task is not None else None  # type: ignore[union-attr]
            if undo is None:
                continue
            from .spec import Task, _make_spec

            # never served from a cache: a compensation must really run
            undo_task = Task(_make_spec(undo, name=f"{member.name}.undo", cache=False))
            node = self._append_node(member, undo_task, (self.results[m],), None, prev,
                                     f"{member.key}.undo", [], UNDO)
            info["undo"].append((member.key, node.index))
            self.emit(ev.TasksAdded(time.time(), member.key, [node.key], [node.index]))
            prev = [node.index]
            first_undo = node.index if first_undo is None else first_undo
        self.rollbacks.append(info)
        if first_undo is not None:
            self._make_ready(first_undo)
            self._fill()

    def _member_ended(self, i: int) -> None:
        saga = self.saga_of.get(i)
        if saga is None:
            return
        if self.state[i] == COMPLETED:
            self._saga_done.setdefault(saga.name, []).append(i)
        self._maybe_compensate(saga)

    # -- approvals -----------------------------------------------------------------------

    async def _approval(self, i: int) -> None:
        ref = self.nodes[i]
        opts = ref.kwargs or {}
        try:
            self.state[i] = RUNNING
            self.attempts[i] = 1
            self.start[i] = now = time.time()
            self.emit(ev.TaskStarted(now, i, ref.key, 1, "approval"))
            self.emit(ev.ApprovalRequested(now, i, ref.key, ref.args[0], opts.get("timeout"),
                                           opts.get("on_timeout", "approve")))
            answer = None
            if self.interactive():
                event = self.answers[i] = anyio.Event()
                with anyio.move_on_after(opts.get("timeout")):
                    await event.wait()
                answer = self.answers.get(i) if event.is_set() else None
            t = time.time() - now
        finally:
            self.timers -= 1
        if isinstance(answer, bool):
            self._complete(i, answer, t, None)
        elif opts.get("on_timeout") == "fail":
            self._fail(i, ApprovalTimeout(f"{ref.key}: nobody answered {ref.args[0]!r} in time"), t)
            self._fill()
        else:
            self._complete(i, opts.get("on_timeout", "approve") == "approve", t, None)
        self._check_progress()

    def answer(self, i: int, approved: bool) -> None:
        """Record a person's answer to approval node ``i`` (call on the run's loop)."""
        event = self.answers.get(i)
        if isinstance(event, anyio.Event) and not event.is_set():
            self.answers[i] = bool(approved)
            event.set()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
