"""A Run: one execution of a workflow, its control surface and its results.

The Run owns the event stream and the backends; the :mod:`scheduler` does the work.  It is
made by the composition point (:mod:`nbflow.workflow`), which has already checked the graph,
and which hands it the run's result cache (:meth:`Run.attach_cache`) and subscribers: the
engine itself knows nothing of the store or the checks.  ``Run.start_in_thread`` runs it on a
fresh event loop in a helper thread (this works the same in a plain script and inside a
Jupyter kernel, whose thread already runs a loop); ``await run.execute()`` runs it on the
caller's loop instead.  Control calls (``cancel``, ``pause``, ``resume``) are safe from any
thread: they are handed to the run's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.counting import TaskCounts, count_tasks
from ..core.errors import (
    RefUsageError,
    TaskNotFinished,
    WorkflowCancelled,
    WorkflowDefinitionError,
    WorkflowFailed,
)
from ..core.explain import Explanation, Explanations
from ..core.frames import COLUMNS, graph_nodes, tasks_frame
from ..core.graphs import runs_of
from ..core.kinds import APPROVAL, INLINE, MAP
from ..core.options import RunOptions
from ..core.protocols import ResultCache
from ..core.ref import Ref
from ..core.remote import localise
from ..core.states import CANCELLED, COMPLETED, FAILED, RUNNING, SKIPPED
from ..core.validation import validate_run_options
from . import approvals, taskoutput
from .backends import AsyncBackend, ThreadBackend
from .constructs import interactive_approvals
from .internal import run_error
from .priority import longest_remaining_path
from .scheduler import Scheduler

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

log = logging.getLogger("nbflow")

_last_run: Run | None = None

# A Dask run's subscribers may put off work until its first graph is in Dask's client
# (Run.defer_until_started); a run that sends none this long after it began does it then.
# (The journal's default group-commit window: the run's first rows, whose writer waits
# for this, are then committed no later than any other row.)
FIRST_SEND_WAIT_S = 0.05
# A Dask run whose first graph went before its thread started, with the scheduler in this
# process, starts its engine once the cluster tells of its first task, or this long after
# its thread began (Run._send_first_graph).
FIRST_NEWS_WAIT_S = 0.05


def last_run() -> Run | None:
    """The most recently started run in this process."""
    return _last_run


def run_on_fresh_loop(main: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """``await main()`` on a new asyncio event loop in this thread (``loop``, if given: one
    made for it and never run before), then close the loop.

    A bare loop, not ``anyio.run`` nor ``asyncio.run``: the engine uses anyio on top of
    asyncio, which anyio supports on any loop (the task ``run_until_complete`` drives is
    its root task: the worker threads of ``anyio.to_thread`` it started stop when it
    ends), and a run's thread has no signals to handle.  Each run makes and closes its
    loop (no thread outlives its run), and this costs a third of what ``anyio.run`` costs
    in CPU per run (its runner's set-up and close).  Closing does what the runners do:
    what is still scheduled is cancelled and awaited, async generators and the default
    executor are shut down -- in the root task itself, after ``main`` (:func:`_then_tidy`),
    not as further ``run_until_complete`` calls: each of those is a task and two turns of
    the loop, and each turn a ``select`` that lets go of the GIL (which on a Dask run the
    scheduler's thread in this process may then hold), on the way to ``wf.run``
    returning.  Nothing to tidy (the usual case) costs no turn."""
    if loop is None:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_then_tidy(main))
    finally:
        try:
            if asyncio.all_tasks(loop):  # (only if the loop itself was stopped by an error)
                loop.run_until_complete(_tidy())
        finally:
            loop.close()


async def _then_tidy(main: Any) -> None:
    """``await main()``, then :func:`_tidy`, in one task (see :func:`run_on_fresh_loop`)."""
    try:
        await main()
    finally:
        await _tidy()


async def _tidy() -> None:
    """What closing a loop asks for: the tasks still scheduled (the engine leaves none; a
    user's task might) cancelled and awaited, async generators and the default executor
    shut down.  Each step returns without a turn of the loop when it has nothing to do."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks(loop) if t is not me]
    if left:
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


def executor_of(ref: Ref, backend_kind: str) -> str:
    """The executor a node runs on in a run whose backend is ``backend_kind``."""
    if ref.kind == MAP or ref.kind == APPROVAL or ref.kind in INLINE:
        return "inline"
    spec = ref.task.spec
    if spec.is_async:
        return "async"
    if spec.executor is not None:
        if spec.executor == "dask" and backend_kind != "dask":
            raise WorkflowDefinitionError(
                f"task {ref.key!r} asks for executor='dask' but the run's backend is "
                f"{backend_kind!r}; run with backend='dask' or a scheduler address"
            )
        return str(spec.executor)
    return {"local": "thread", "process": "process", "dask": "dask"}[backend_kind]


def _asks_run(run: Run) -> Callable[[], bool]:
    """``run.interactive_approvals``, looked up when asked: the scheduler keeps this, and a
    closure over the run itself would make run and scheduler a reference cycle."""
    ref = weakref.ref(run)

    def interactive() -> bool:
        r = ref()
        return bool(r is not None and r.interactive_approvals)

    return interactive


def _first_sent(run: Run) -> Callable[[], None]:
    """``run._first_sent``, for its Dask backend to call once the run's first tasks are
    in Dask's client: weak, like :func:`_asks_run` (the backend is the run's; a bound
    method would make them a cycle)."""
    ref = weakref.ref(run)

    def sent() -> None:
        r = ref()
        if r is not None:
            r._first_sent()

    return sent


def _new_run_id() -> str:
    # Sortable by start time, unique without coordination.
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class Run:
    """One execution of a workflow.  See the README for the full surface."""

    def __init__(
        self,
        workflow: Any,
        options: RunOptions,
        *,
        findings: Sequence[Any] = (),
        extra_edges: Sequence[tuple[int, int]] = (),
    ) -> None:
        validate_run_options(name=workflow.name)  # (the options were checked as RunOptions)
        self.id = _new_run_id()
        self.workflow = workflow
        self.name: str = workflow.name
        self.options = options
        # (the options, also one by one, as a Run has always shown them)
        self.workers = options.workers
        self.backend = options.backend
        self.backend_kind = options.backend_kind
        self.cache = options.cache
        self.continue_on_error = options.continue_on_error
        self.rerun = options.rerun
        self.strict = options.strict
        self.capacity = dict(options.capacity)
        self.status = "pending"
        self.started_at: float = math.nan
        self.finished_at: float = math.nan
        # The run's own record of its events; a batched chunk's items may come as one
        # TaskBatch there, expanded when ``events`` is read (core.events.EventLog).
        self._log = ev.EventLog()
        self.stream = ev.EventStream([self._log])
        self.error: BaseException | None = None  # an error of the run itself (not of a task)
        self.nodes: list[Ref] = list(workflow.nodes)
        self.findings = findings
        self.serialized_edges = [(self.nodes[a].key, self.nodes[b].key) for a, b in extra_edges]
        # Building the scheduler validates the graph (executors, resource demands): a
        # workflow that cannot run is refused here, in the caller's thread, before a run
        # exists anywhere.
        self.backends = self._make_backends()
        self._sched: Scheduler = Scheduler(
            self.nodes,
            backends=self.backends,
            # (the backend kind, not a method of this run: the scheduler keeps it)
            executor_of=functools.partial(executor_of, backend_kind=options.backend_kind),
            workers=options.workers,
            capacity=self.capacity,
            continue_on_error=options.continue_on_error,
            emit=self.stream.emit,
            stream=self.stream,
            sagas=workflow.sagas,
            extra_edges=list(extra_edges),
        )
        # Can a person answer nf.approval()s of this run (buttons in a background widget)?
        # Headless by default: on_timeout decides at once.  The notebook room turns this on
        # for --background runs shown with a widget, before the run's first event.
        self.interactive_approvals = interactive_approvals()
        self._sched.interactive = _asks_run(self)
        self.result_cache: ResultCache | None = None
        self.learned_priorities = False  # set by the composition point when history weighs them
        self.predicted_memory: dict[str, float] = {}  # task -> bytes demanded, set the same way
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope: Any = None
        self._cancel_requested = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._index: dict[str, int] | None = None
        # What the locality room shows of this run (run.transfers, run.locality_report());
        # handed in by the composition point, like the cache.
        self.locality: Any = None
        global _last_run
        displaced, _last_run = _last_run, self
        workflow.last_run = self
        # The run nf.last_run() held until now, when its results may be on a Dask cluster:
        # kept until this run's first tasks are on theirs (see _let_go_of_displaced); None
        # once let go.  (Any other is let go of here: its memory is freed at once.)
        self._displaced: Run | None = None
        if "dask" in self.backends and displaced is not None and "dask" in displaced.backends:
            self._displaced = displaced
        del displaced
        # What waits for the run's first graph (defer_until_started); None once it went.
        self._on_started: list[Callable[[], None]] | None = []
        self._started_timer: asyncio.TimerHandle | None = None
        # What the run's thread waits for before its engine starts, when its first graph
        # went before the thread started (_send_first_graph); None: nothing.
        self._news: threading.Event | None = None
        if "dask" in self.backends:
            self.backends["dask"].on_first_send = _first_sent(self)

    @property
    def events(self) -> list[ev.Event]:
        """Every event of the run so far, in order, one per task state change."""
        return self._log.events()

    def weigh_priorities(self, weights: Sequence[float]) -> None:
        """Dispatch by the heaviest remaining path with these per-node ``weights`` (e.g.
        predicted durations) instead of one per task; call before the run starts."""
        sched = self._sched
        if len(weights) != len(sched.nodes):
            raise ValueError(f"weigh_priorities needs one weight per node ({len(sched.nodes)}), "
                             f"got {len(weights)}")
        sched.level = longest_remaining_path(sched.succs, weights, order=sched._topological_order())

    def add_demands(self, demands: Mapping[int, Mapping[str, float]]) -> None:
        """Add admission demands per node index (e.g. predicted memory from history: a task
        then starts only when its amount of the run's capacity is free); call before the
        run starts.  Declared resources keep their amounts; see ``Scheduler.add_demand``."""
        if self.status != "pending":
            raise RuntimeError("add_demands must be called before the run starts")
        for i, extra in demands.items():
            self._sched.add_demand(i, extra)

    def state_now(self) -> dict[str, list[Any]]:
        """A cheap copy of the run's per-node state, as of now, for listeners that predict
        (an ETA) while it goes on: ``nodes``, ``state``, ``start``, ``duration``,
        ``input_bytes`` (NaN when unknown), ``level`` (the dispatch priority) and ``cached``
        (served from the result cache: its duration is a lookup's, not the task's), every
        list of the same length (see ``TaskStates.records``: safe on any thread)."""
        s = self._sched
        rec = s.tasks.records(("start", "duration"), level=s.level)
        n = len(rec["state"])
        known = s.metrics.input_bytes
        cache = self.result_cache
        return {
            "nodes": rec["nodes"], "state": rec["state"], "start": rec["start"],
            "duration": rec["duration"], "level": rec["level"],
            "input_bytes": [float(b) if (b := known.get(i)) is not None else math.nan for i in range(n)],
            "cached": [cache.cached(i) for i in range(n)] if cache is not None else [False] * n,
        }

    def attach_cache(self, cache: ResultCache | None) -> None:
        """Give the run its result cache (before it starts); None runs without one."""
        self.result_cache = cache
        self._sched.cache = cache
        if cache is not None:
            # (weak: the scheduler holds the cache; a strong reference back would keep the
            # two, and every result, a cycle after the run is dropped)
            cache.bind(weakref.proxy(self._sched))

    # -- execution -----------------------------------------------------------------------

    def subscribe(self, fn: ev.Subscriber) -> Any:
        """Receive every event of this run (call before it starts to see them all)."""
        return self.stream.subscribe(fn)

    def defer_until_started(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once this run's first work is on its way: on Dask, once its first
        graph is in Dask's client, or :data:`FIRST_SEND_WAIT_S` after the run began if it
        sends none by then, or as it ends, whichever comes first; on any other backend, at
        once (a run that never starts never calls it).  For a subscriber's own work that
        nothing before the graph needs (the journal's writer thread, held from the run's
        first row: :meth:`nbflow.store.journal.Journal.hold`).  Until the graph is queued,
        Dask's scheduler thread in this process has nothing to do, so every millisecond
        the run's thread spends before it is a millisecond of the run's makespan; after
        it, the run's loop mostly waits."""
        if self._on_started is None or "dask" not in self.backends:
            fn()
        else:
            self._on_started.append(fn)

    def _first_sent(self) -> None:
        """The run's first tasks are in Dask's client (its backend says so, once)."""
        self._let_go_of_displaced()
        self._work_out()

    def _work_out(self) -> None:
        """Call what waited for the run's first work to be on its way (once)."""
        waiting, self._on_started = self._on_started, None
        if self._started_timer is not None:
            self._started_timer.cancel()
            self._started_timer = None
        for fn in waiting or ():
            try:
                fn()
            except Exception:  # (a subscriber's: it must not break the run)
                log.warning("nbflow: a run's start callback %r raised", fn, exc_info=True)

    def start_in_thread(self) -> None:
        """Run on a fresh event loop in a helper thread; :meth:`wait` blocks until the end."""
        # (a method, not a closure over the run: the frame of a failed run's thread stays in
        # its error's traceback, and a closure there would hold the run through it)
        # The loop is made here, before the thread starts: making it (a selector, a
        # self-pipe) lets go of the GIL on its system calls, and the caller, woken by the
        # new thread's start, took it there while the run's thread waited to get it back
        # (small: under load, paired, the first graph of a Dask run 0.2-0.5 ms sooner;
        # benchmarks/RESULTS.md, Session 12 (B)).  The run's thread closes it.
        loop = asyncio.new_event_loop()
        self._send_first_graph()
        self._thread = threading.Thread(target=self._in_thread, args=(loop,), name=f"nbflow-run-{self.id}",
                                        daemon=True)
        try:
            self._thread.start()
        except BaseException:
            loop.close()  # (no thread to close it)
            raise

    def _send_first_graph(self) -> None:
        """(In the caller, before the run's thread starts.)  A Dask run sends its first
        graph now when its backend can without a round trip
        (:meth:`~nbflow.engine.backends.dask.DaskBackend.send_first_graph`): the thread's
        start, its loop's first turns, the run's first events and the engine's first
        scheduling pass (~2 ms on a quiet machine, while the cluster had nothing to do)
        come after the graph, not before it.  The engine adopts those tasks as it starts
        them; what waits for the first graph (:meth:`defer_until_started`) is done on the
        run's thread, at its first flush.  The run's start is dated from here (its tasks
        may begin on their workers before its thread runs).

        With the scheduler in this process, the engine then starts once the cluster tells
        of the run's first task (:data:`FIRST_NEWS_WAIT_S` at most; a cancel at once):
        started at once, the run's thread took the GIL from the scheduler's thread while
        it took in that graph and dispatched it, and the graph's head start was lost by
        the first task (``benchmarks/RESULTS.md``, Session 13 (A)).  Nothing the engine
        does is needed for the cluster to run what was sent.

        A run cancelled before it began sends nothing; a failure here is logged and the
        run sends its graph from its thread as before."""
        dask = self.backends.get("dask")
        if dask is None or self._cancel_requested or self.status != "pending":
            return
        first_sent, dask.on_first_send = dask.on_first_send, None
        began = time.time()
        try:
            if dask.send_first_graph():
                self.started_at = began
                self._news = dask.news if dask.scheduler_here() else None
        except Exception:
            log.warning("nbflow: run %s could not send its first graph before its thread started",
                        self.id, exc_info=True)
        finally:
            dask.on_first_send = first_sent

    def _in_thread(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        news = self._news
        if news is not None and not self._cancel_requested:  # (see _send_first_graph)
            news.wait(FIRST_NEWS_WAIT_S)
        try:
            run_on_fresh_loop(self.execute, loop)
        except BaseException as e:  # recorded; wait() raises it in the caller's thread
            if self.error is None:
                self.error = e
        finally:  # (an engine that failed before its own end still releases wait())
            self._done.set()

    def _make_backends(self) -> dict[str, Any]:
        backends: dict[str, Any] = {
            "async": AsyncBackend(), "thread": ThreadBackend(self.workers), "inline": None,
        }
        self.capacity["executor:thread"] = backends["thread"].capacity
        # (once per task run)
        needed = {executor_of(self.nodes[a], self.backend_kind) for a, _ in runs_of(self.nodes)}
        if "process" in needed or self.backend_kind == "process":
            from .backends.process import ProcessBackend

            backends["process"] = ProcessBackend(self.workers)
            self.capacity["executor:process"] = backends["process"].capacity
        if self.backend_kind == "dask":
            from .backends.dask import DaskBackend

            backends["dask"] = DaskBackend(self.backend)
            self.capacity["executor:dask"] = math.inf  # known once connected
        return backends

    async def execute(self) -> None:
        """Run to the end on the current event loop."""
        import anyio

        loop = self._loop = asyncio.get_running_loop()
        taskoutput.install()  # what tasks print is kept with them (engine.taskoutput)
        backends = self.backends
        sched = self._sched
        self._subscribe_registered()
        emit = self.stream.emit
        self.status = RUNNING
        if math.isnan(self.started_at):  # (else dated as its first graph went: _send_first_graph)
            self.started_at = time.time()
        t0 = time.perf_counter()
        if "dask" in backends and self._on_started is not None:  # (see defer_until_started)
            self._started_timer = loop.call_later(FIRST_SEND_WAIT_S, self._work_out)
        try:
            if "dask" in backends and self.error is None:
                await self._open_dask(backends["dask"])
            emit(ev.RunStarted(self.started_at, self.id, self.name, len(self.nodes),
                               self.backend_kind, self.workers))
            with anyio.CancelScope() as scope:
                self._scope = scope
                if self._cancel_requested or self.error is not None:
                    # cancelled, or failed, before it began: nothing starts (the scheduler's
                    # first fill starts the ready tasks before its first await, a cancel point)
                    scope.cancel()
                    await anyio.sleep(0)
                await sched.run()
            if scope.cancelled_caught or (sched.first_failure is not None and not self.continue_on_error):
                sched.finish_cancelled()
            if sched.stall is not None or sched.error is not None:
                sched.finish_cancelled()
                self.error = sched.error or sched.stall
        except BaseException as e:
            sched.finish_cancelled()
            if not isinstance(e, anyio.get_cancelled_exc_class()) and self.error is None:
                self.error = run_error(e)  # (an engine failure: one NbflowError, not a group)
            if isinstance(e, anyio.get_cancelled_exc_class()):
                self._cancel_requested = True
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for b in backends.values():
                    if b is not None:
                        await b.aclose(self._cancel_requested)
            if self.result_cache is not None:
                with contextlib.suppress(Exception):
                    self.result_cache.close()
            self._work_out()  # (a run that sent nothing: before its end is recorded)
            self.finished_at = time.time()
            self.status = self._final_status()
            err = self.error
            emit(ev.RunFinished(self.finished_at, self.id, self.status, time.perf_counter() - t0,
                                f"{type(err).__name__}: {err}" if err is not None else None))
            self._release()
            self._done.set()

    def fail_before_start(self, error: BaseException) -> None:
        """End this run, which has not started, as failed with ``error``: raised while it was
        prepared, once it existed (by the store's hooks, the predictions, the locality
        room).  It starts no task and sends nothing to a cluster, and ends in its own
        thread as every run ends: its subscribers are told (the store records it
        ``failed``, the error's type and message with it), the backends and the cache it
        was given are closed.  ``run.error`` is ``error`` itself; :meth:`wait` for the end
        (the caller raises ``error`` as it was)."""
        if self.status != "pending" or self._thread is not None:
            raise RuntimeError(f"run {self.id} has already started: fail_before_start is for a "
                               "run whose preparation failed; cancel() a started run")
        self.error = error
        # (not start_in_thread: a Dask run's first graph must not go to the cluster)
        self._thread = threading.Thread(target=self._in_thread, name=f"nbflow-run-{self.id}", daemon=True)
        self._thread.start()

    def _subscribe_registered(self) -> None:
        """Subscribe what ``nf.on_run`` registered (``factory(run)`` for each).  A factory
        that raises fails the run before it starts, with that error as it was raised (once
        every other factory has subscribed, so the store's journal, one of them, records
        the run failed); it used to leave the run ``pending`` for good, unrecorded, with
        the journal counting it as a run in progress."""
        for factory in list(ev._global_subscribers):
            try:
                sub = factory(self)
            except Exception as e:
                if self.error is None:
                    self.error = e
                continue
            if sub is not None:
                self.stream.subscribe(sub)

    async def _open_dask(self, dask: Any) -> None:
        """Connect the Dask backend (its client, the cluster's workers).  Its error (no
        scheduler at the address, an asynchronous client) fails the run before it starts,
        as it was raised: it is the user's cluster's, not an engine failure, and the run is
        still recorded (``RunStarted`` follows, then the run's failed end)."""
        try:
            await dask.open()
        except Exception as e:
            self.error = e
            return
        self._sched.avail["executor:dask"] = dask.capacity

    def _let_go_of_displaced(self) -> None:
        """Drop the run this one displaced from ``nf.last_run()`` (if nothing else holds it,
        its results are freed now).

        On a Dask run this waits for the run's first tasks to be sent: freeing a run whose
        results are on the cluster sends the scheduler a release, and Dask's client sends
        what follows a message no sooner than its batching interval (10 ms) after it, so a
        release sent while the new run prepares held its first graph back by up to that
        (measured: the first compute started ~6 ms later on a 50 ms run).  Sent after the
        graph, the release waits instead.  A run that is not on Dask, or that displaced one
        that was not, lets go at once, in ``__init__`` (a local run's results are freed
        then, as before); a Dask run that sends nothing lets go as it ends
        (:meth:`_release`)."""
        self._displaced = None

    def _release(self) -> None:
        """The run has ended: let go of what served it while it ran.

        The subscribers (journal, summary, cancel watcher, views) and the event loop hold
        the run, and the run holds them: left in place, run, scheduler and every result
        stay one reference cycle after the user drops the run, freed only by a full
        garbage collection (which large arrays, being few objects, rarely trigger).  No
        event follows ``RunFinished``; ``run.events`` stays (the log is kept)."""
        self.stream.close(keep=self._log)
        self._sched.ended()
        self._let_go_of_displaced()
        self._work_out()
        self._scope = None
        self._loop = None

    def _final_status(self) -> str:
        s = self._sched
        if self._cancel_requested:
            return CANCELLED
        if self.error is not None or s is None or s.unhandled_failures():
            return FAILED
        return COMPLETED

    # -- control (any thread) ------------------------------------------------------------

    def _call_in_loop(self, fn: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def cancel(self) -> None:
        """Cancel the run: running tasks are cancelled, nothing new starts."""
        self._cancel_requested = True
        news = self._news
        if news is not None:  # (its thread waits for the cluster's first news: not for a cancel)
            news.set()

        def do() -> None:
            if self._scope is not None:
                self._scope.cancel()

        self._call_in_loop(do)

    def pause(self) -> None:
        """Start nothing new until :meth:`resume`; running tasks finish."""

        def do() -> None:
            if self._sched is not None and not self._sched.paused:
                self._sched.paused = True
                self.stream.emit(ev.RunPaused(time.time(), self.id))

        self._call_in_loop(do)

    def resume(self) -> None:
        def do() -> None:
            s = self._sched
            if s is not None and s.paused:
                s.paused = False
                self.stream.emit(ev.RunResumed(time.time(), self.id))
                s._fill()
                s._check_progress()

        self._call_in_loop(do)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None, raise_on_error: bool = True) -> Run:
        """Block until the run ends (Ctrl-C cancels it, waits for it, and re-raises).

        Raises :class:`WorkflowFailed` / :class:`WorkflowCancelled` unless ``raise_on_error``
        is False.  With a ``timeout`` that passes first, returns with the run still going.
        """
        if self._thread is None and not self._done.is_set():
            raise RuntimeError("this run was started with arun(); await it instead of wait()")
        try:
            # (woken as the engine ends, then joining the thread as it closes its loop: waiting
            # for the thread alone was measured slower, its wake-up then coming last)
            finished = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait()
            if self._thread is not None:
                self._thread.join()
            raise
        if not finished:
            return self
        if self._thread is not None:
            self._thread.join()
        if raise_on_error:
            self.raise_for_status()  # (which lets the kept error's engine frames go, too)
        elif self.error is not None:  # (kept, maybe never raised: it must not hold the run)
            from .tracebacks import let_go_of_locals

            let_go_of_locals(self.error)
        return self

    def raise_for_status(self) -> None:
        """Raise :class:`WorkflowFailed` / :class:`WorkflowCancelled` (or the run's own error)
        if the run did not complete."""
        if self.status == CANCELLED:
            raise WorkflowCancelled(self)
        if self.error is not None:
            from .tracebacks import let_go_of_locals, twin_to_raise

            # (the error the run keeps must not hold the run through frames: the engine's,
            # or those of the way up to the caller, which a twin collects instead)
            if self.done:
                let_go_of_locals(self.error)
            raise twin_to_raise(self.error)
        if self.status == FAILED:
            s = self._sched
            unhandled = s.unhandled_failures()
            i = unhandled[0] if unhandled else s.first_failure
            err = s.errors.get(i) if i is not None else None
            key = s.nodes[i].key if i is not None else None
            raise WorkflowFailed(self, key, self._failure_message(key, err)) from err

    def _failure_message(self, key: str | None, err: BaseException | None) -> str:
        if err is None:
            msg = f"workflow {self.name!r} (run {self.id}) failed"
        else:
            msg = (f"workflow {self.name!r} (run {self.id}) failed: task {key!r} raised "
                   f"{type(err).__name__}: {err}")
        failed = self.count(FAILED)
        if failed > 1:
            msg += f" ({failed} tasks failed; see run.tasks)"
        for rb in self.rollbacks:
            msg += (f"; saga {rb['saga']} rolled back: compensated {rb['compensated'] or 'nothing'}"
                    + (f", compensation failed for {rb['compensation_failed']}"
                       if rb["compensation_failed"] else ""))
        return msg

    # -- results -------------------------------------------------------------------------

    def _lookup(self, ref: Ref | str) -> int:
        if type(ref) is Ref:
            if ref.wf is not self.workflow:
                raise RefUsageError(f"{ref.key} belongs to workflow {ref.wf.name!r}, not to this run's")
            return ref.index
        if isinstance(ref, str):
            index = self._index
            # (made again when the graph has grown since: a map's items, added as it expands)
            if index is None or (ref not in index and len(index) < len(self.nodes)):
                index = self._index = {r.key: r.index for r in self.nodes}
            if ref not in index:
                raise KeyError(f"no task {ref!r} in run {self.id}")
            return index[ref]
        raise TypeError(f"index a run with a Ref or a task key, not {type(ref).__name__}")

    def __getitem__(self, ref: Ref | str) -> Any:
        i = self._lookup(ref)
        s = self._sched
        if s is None:
            raise TaskNotFinished(self.nodes[i].key, "pending", "the run has not started")
        state = s.state[i]
        if state == COMPLETED:
            # A remote result comes here now (once); only a Dask run has any, so other runs
            # skip looking at every element of a long list (a map's results).
            return localise(s.results[i]) if s.has_remote else s.results[i]
        if state == FAILED:
            err = s.errors[i]
            raise TaskNotFinished(s.nodes[i].key, state, f"{type(err).__name__}: {err}") from err
        if state == SKIPPED:
            raise TaskNotFinished(s.nodes[i].key, state, s.reasons.get(i))
        raise TaskNotFinished(s.nodes[i].key, state)

    def count(self, state: str) -> int:
        s = self._sched
        return 0 if s is None else s.state.count(state)

    @property
    def counts(self) -> dict[str, int]:
        s = self._sched
        out: dict[str, int] = {}
        for st in s.state if s is not None else ():
            out[st] = out.get(st, 0) + 1
        return out

    @property
    def task_counts(self) -> TaskCounts:
        """Counts as every view shows them (:func:`nbflow.core.counting.count_tasks`): the
        tasks a map added at run time included, a collector waiting for its items pending."""
        s = self._sched
        cache = self.result_cache
        n = len(s.nodes)
        cached = [cache.cached(i) for i in range(n)] if cache is not None else [False] * n
        return count_tasks(zip(list(s.state), cached, [r.kind for r in s.nodes[:n]], strict=False))

    @property
    def duration_s(self) -> float:
        end = self.finished_at if not math.isnan(self.finished_at) else time.time()
        return end - self.started_at

    def _rows(self) -> dict[str, list[Any]]:
        """The columns of ``run.tasks``, from a copy of the records taken as of now (read on
        any thread while the run goes: ``TaskStates.records``)."""
        s = self._sched
        if s is None:
            return {c: [] for c in COLUMNS}
        rec = s.tasks.records()
        nodes = rec["nodes"]
        n = len(nodes)
        cache = self.result_cache
        errors: list[str | None] = [None] * n
        for i, e in rec["errors"].items():
            errors[i] = f"{type(e).__name__}: {e}"
        for i, r in rec["reasons"].items():
            errors[i] = r
        return {
            "key": [r.key for r in nodes],
            "task": [r.name for r in nodes],
            "state": rec["state"],
            "attempts": rec["attempts"],
            "start": rec["start"],
            "end": rec["end"],
            "duration_s": rec["duration"],
            "cached": [cache.cached(i) for i in range(n)] if cache is not None else [False] * n,
            "output_bytes": rec["output_bytes"],
            "error": errors,
            "executor": [e or "inline" for e in rec["executor"]],
            "reason": [cache.info(i)[0] for i in range(n)] if cache is not None
            else ["cache off" if r.kind not in INLINE and r.kind != MAP else None for r in nodes],
            **s.metrics.columns(n),
        }

    @property
    def tasks(self) -> pd.DataFrame:
        """One row per task: key, task, state, attempts, start, end, duration_s, cached,
        output_bytes, error (message, or the reason a task was skipped), executor, reason."""
        return tasks_frame(self._rows())

    @property
    def graph(self) -> nx.DiGraph:
        """The run's graph (including nodes added while running), task attributes on nodes."""
        rows = self._rows()
        g = graph_nodes(rows, run_id=self.id, name=self.name, status=self.status)
        s = self._sched
        nodes = s.nodes if s is not None else self.nodes
        # Only the nodes of the rows (read while the run goes, a map may add items after
        # them; its node, collecting them, then names them among its inputs)
        n = len(rows["key"])
        for r in nodes[:n]:
            for d in r.deps:
                if d < n:
                    g.add_edge(nodes[d].key, r.key)
        for a, b in s.extra_edges:
            g.add_edge(nodes[a].key, nodes[b].key, serialized=True)
        return g

    def explain(self, what: Any) -> Explanation | Explanations:
        """Why a task ran or was served from the cache, with the fingerprint parts that
        differ from what was stored before.  ``what``: a Ref, a task key, a task name or a
        Task (a name matching several tasks gives :class:`Explanations`, one per task)."""
        nodes = self._sched.nodes
        if type(what) is Ref:
            if what.wf is not self.workflow:
                raise KeyError(f"{what.key} belongs to workflow {what.wf.name!r}, not to this run's")
            targets = [what.index]
        else:
            spec = getattr(what, "spec", None)
            name = spec.name if spec is not None else what
            if not isinstance(name, str):
                raise TypeError(f"explain takes a Ref, a task key, a task name or a Task, not {what!r}")
            targets = [r.index for r in nodes if r.key == name]
            if not targets:
                targets = [r.index for r in nodes if r.task is not None and r.task.spec.name == name
                           and r.kind != MAP]
            if not targets:
                raise KeyError(f"no task or task key {name!r} in run {self.id}")
        cache = self.result_cache
        out = []
        for i in targets:
            if cache is not None:
                out.append(cache.explain(i))
            else:
                why = "wf.run(cache=False)" if not self.cache else "no usable store (see the warning)"
                r = nodes[i]
                out.append(Explanation(r.key, r.name, False, "cache off", [],
                                       f"{r.key}: ran: cache off ({why})"))
        return out[0] if len(out) == 1 else Explanations(out)

    @property
    def rollbacks(self) -> list[dict[str, Any]]:
        """One entry per saga that rolled back: the saga, the task whose failure triggered it,
        and per compensated task whether its undo ``completed`` or ``failed``."""
        out = []
        s = self._sched
        for info in s.rollbacks:
            undone = {key: s.state[j] for key, j in info["undo"]}
            out.append({
                "saga": info["saga"],
                "failed_task": info["failed_task"],
                "compensated": [k for k, st in undone.items() if st == COMPLETED],
                "compensation_failed": [k for k, st in undone.items() if st == FAILED],
                "undo_states": undone,
            })
        return out

    @property
    def pending_approvals(self) -> list[str]:
        """Keys of approvals waiting for an answer."""
        s = self._sched
        # (a copy first: the run's thread adds an approval's entry as it asks, and a loop
        # over the live dict then fails; dict.copy is one C call, see TaskStates.records)
        answers = s.answers.copy()
        return [s.nodes[i].key for i, a in answers.items() if not isinstance(a, bool)
                and s.state[i] == RUNNING]

    def approve(self, ref: Ref | str, approved: bool = True) -> None:
        """Answer an ``nf.approval`` (True approves, False rejects); safe from any thread.

        An answer given before the approval asks (the run not started, or what comes before
        the approval still running) is kept and taken when it asks; one given after it
        ended changes nothing (:mod:`.approvals`).  A task that is not an approval is
        refused with :class:`~nbflow.core.errors.RefUsageError`."""
        i = self._lookup(ref)
        node = self.nodes[i]
        if node.kind != APPROVAL:
            raise RefUsageError(
                f"run.approve({node.key!r}): {node.key!r} is not an nf.approval, so there is "
                f"nothing to answer; run.pending_approvals lists the approvals waiting")
        s = self._sched
        if self._loop is None and self.status == "pending":
            # no loop to hand it to yet: kept where the approval will look (safe from this
            # thread, and if the loop started meanwhile it is handed to it below as well)
            approvals.keep(s, i, approved)
        self._call_in_loop(lambda: s.answer(i, approved))

    @property
    def transfers(self) -> pd.DataFrame:
        """Data moved between Dask workers: one row per fetched result (see the README)."""
        return self._locality().transfers()

    def locality_report(self) -> Any:
        """Bytes moved (total, per edge), the share already local, and suggestions."""
        return self._locality().report()

    def _locality(self) -> Any:
        if self.locality is None:
            raise WorkflowDefinitionError(
                "this run has no locality view (it was not made by nf.Workflow.run/start/arun)")
        return self.locality

    def logs(self, ref: Ref | str) -> str | None:
        """What a task's latest attempt printed (thread and async tasks; None when nothing was
        printed).  Bounded: past 64 KiB the text says it was truncated."""
        i = self._lookup(ref)
        cap = self._sched.outputs.get(i)
        return cap.text() if cap is not None else None

    def errors(self) -> dict[str, BaseException]:
        """The original exception of each failed task, by key."""
        s = self._sched
        # (a copy first, as in pending_approvals: the run's thread adds failures)
        return {} if s is None else {s.nodes[i].key: e for i, e in s.errors.copy().items()}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"<nf.Run {self.id} {self.name!r} {self.status}: {counts}>"
