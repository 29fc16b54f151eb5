"""What the notebook views know about a run: its graph and each task's state.

A :class:`RunModel` is an event subscriber.  It is built from the traced workflow before the
run starts, then every event of the run updates a few plain lists in O(1) (events arrive on
the run's loop thread, so the work per event must stay tiny).  Views (the live widget, the
headless progress printer, the static HTML) read it from their own thread at their own
pace; ``version`` and ``structure`` tell them whether anything changed since they last
looked.  Nothing here calls back into the run.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core import states
from ..core.counting import TaskCounts, count_tasks

if TYPE_CHECKING:
    from ..engine.run import Run
    from ..workflow import Workflow

STATES = states.ALL
DONE_STATES = states.TERMINAL
THROUGHPUT_WINDOW = 30.0  # seconds of recent finishes the widget's tasks/s is measured over


class RunModel:
    """Per-task state of one run (or of a traced workflow that has not run)."""

    def __init__(self, wf: Workflow, run: Run | None = None) -> None:
        self.name = wf.name
        self.run = run
        nodes = list(wf.nodes)
        self.keys: list[str] = [r.key for r in nodes]
        self.names: list[str] = [r.name for r in nodes]
        self.kinds: list[str] = [r.kind for r in nodes]
        self.deps: list[list[int]] = [list(r.deps) for r in nodes]
        # The function a node runs ("clean" for the items of clean.map); None for a collect.
        self.funcs: list[str | None] = [r.task.spec.name if r.task is not None else None for r in nodes]
        self.parent: list[int | None] = [None] * len(nodes)  # map node of a run-time map item
        self.n = n = len(nodes)
        self.state: list[str] = ["pending"] * n
        self.attempts = [0] * n
        self.duration = [math.nan] * n
        self.start = [math.nan] * n
        self.cached = [False] * n
        self.output_bytes: list[int | None] = [None] * n
        self.errors: dict[int, BaseException] = {}
        self.reasons: dict[int, str] = {}
        self.retry_errors: dict[int, BaseException] = {}
        self.counts: dict[str, int] = {"pending": n}
        self.ended_at: list[float] = []
        # Bytes moved from producer to consumer key (Dask's run.transfers), when known:
        # the drawn edges get thicker with them (else with the producers' output sizes).
        self.edge_bytes: dict[tuple[str, str], int] = {}
        # What a task printed, by key; None: ask the run (run.logs).  A stored run's view
        # sets it to its preloaded outputs.
        self.logs: Any = None  # times tasks finished (completed or failed), in order
        self.retries = 0
        self.status = "pending"
        self.run_id: str | None = run.id if run is not None else None
        self.started_at = math.nan  # epoch seconds
        self.finished_at = math.nan
        self.version = 0  # bumps on every change
        self.structure = 0  # bumps when nodes are added
        self.finished = threading.Event()
        self._index = {k: i for i, k in enumerate(self.keys)}
        # (the class's functions, not bound methods: a table of this object's own bound
        # methods would make it a cycle, keeping its run until a full garbage collection)
        self._handlers: dict[type, Any] = _HANDLERS

    def __len__(self) -> int:
        return self.n

    # -- the subscriber --------------------------------------------------------------------

    accepts_batches = True  # a chunk's TaskBatch: taken item by item, as the events it stands for

    def __call__(self, event: ev.Event) -> None:
        if type(event) is ev.TaskBatch:
            for e in event.expand():
                self(e)
            return
        state = event.state  # the state a task event means (declared by its class)
        if state is not None:
            self._move(event.index, state)  # type: ignore[attr-defined]
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(self, event)
        if state is not None or handler is not None:
            self.version += 1

    def _move(self, i: int, new: str) -> None:
        if i >= self.n:
            return
        counts = self.counts
        old = self.state[i]
        counts[old] -= 1
        counts[new] = counts.get(new, 0) + 1
        self.state[i] = new

    def _started(self, e: ev.TaskStarted) -> None:
        self.attempts[e.index] = e.attempt
        self.start[e.index] = e.time

    def _retrying(self, e: ev.TaskRetrying) -> None:
        self.retries += 1
        self.retry_errors[e.index] = e.error

    def _ended(self, e: ev.TaskCompleted | ev.TaskFailed) -> None:
        """The end of task ``e.index``'s attempt, done or failed: when and how long."""
        ends = self.ended_at
        if ends and e.time < ends[-1]:  # (a Dask task's end is its worker's: may come late)
            bisect.insort(ends, e.time)
        else:
            ends.append(e.time)
        if e.started is not None:  # (where it ran, known only at its end: a Dask task)
            self.start[e.index] = e.started
        self.duration[e.index] = e.duration_s

    def _completed(self, e: ev.TaskCompleted) -> None:
        i = e.index
        self._ended(e)
        self.output_bytes[i] = e.output_bytes
        self.cached[i] = e.cached
        if e.attempt:
            self.attempts[i] = e.attempt

    def _failed(self, e: ev.TaskFailed) -> None:
        self._ended(e)
        self.errors[e.index] = e.error

    def _cancelled(self, e: ev.TaskCancelled) -> None:
        """Its start as the records keep it (``run.tasks``): when it started where it ran,
        if its backend told (a Dask worker's), no start if it cannot tell that it started
        there (NaN: TaskStarted was only when the task was sent); else TaskStarted's."""
        if e.started is not None:
            self.start[e.index] = e.started

    def _skipped(self, e: ev.TaskSkipped) -> None:
        self.reasons[e.index] = e.reason

    def _added(self, e: ev.TasksAdded) -> None:
        parent = self._index.get(e.parent)
        if parent is None or (e.indexes and e.indexes[0] != self.n):
            return  # not a growth of this graph (never expected)
        # The items of a run-time map take the map's inputs; the map node collects them.
        deps = list(self.deps[parent])
        func = self.funcs[parent]
        k = len(e.keys)
        for j, key in enumerate(e.keys):
            self._index[key] = self.n + j
        # Extend every list before publishing the new length, so that a view reading from
        # another thread never sees a node with some of its fields missing.
        self.keys.extend(e.keys)
        self.names.extend([func or key for key in e.keys])
        self.kinds.extend(["task"] * k)
        self.deps.extend([list(deps) for _ in range(k)])
        self.funcs.extend([func] * k)
        self.parent.extend([parent] * k)
        self.state.extend(["pending"] * k)
        self.attempts.extend([0] * k)
        self.duration.extend([math.nan] * k)
        self.start.extend([math.nan] * k)
        self.cached.extend([False] * k)
        self.output_bytes.extend([None] * k)
        self.counts["pending"] = self.counts.get("pending", 0) + k
        self.kinds[parent] = "collect"
        self.deps[parent] = list(e.indexes)
        self.n += k
        self.structure += 1

    def _run_started(self, e: ev.RunStarted) -> None:
        self.status = "running"
        self.run_id = e.run_id
        self.started_at = e.time

    def _run_finished(self, e: ev.RunFinished) -> None:
        self.status = e.status
        self.finished_at = e.time
        self.finished.set()

    # -- reading ---------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (its duration once it has finished)."""
        if math.isnan(self.started_at):
            return 0.0
        end = self.finished_at if not math.isnan(self.finished_at) else time.time()
        return max(0.0, end - self.started_at)

    def task_counts(self) -> TaskCounts:
        """Counts as every view shows them (:func:`nbflow.core.counting.count_tasks`): the
        items a map added at run time included, a collector waiting for its items pending."""
        n = self.n  # (the lists are extended before n grows: read n first)
        return count_tasks(zip(self.state[:n], self.cached[:n], self.kinds[:n], strict=True))

    def output_of(self, key: str) -> str | None:
        """What task ``key`` printed (bounded by the capture), or None."""
        source = self.logs if self.logs is not None else getattr(self.run, "logs", None)
        if source is None:
            return None
        try:
            return source(key)
        except (KeyError, LookupError, TypeError):  # a node the run does not know (yet)
            return None

    @property
    def done(self) -> int:
        return self.task_counts().done

    def count_items(self) -> dict[str, int]:
        """Counts by state, only the non-zero ones, in the canonical state order."""
        return dict(self.task_counts().by_state)

    def cached_count(self) -> int:
        return self.task_counts().cached

    def throughput(self, window: float = THROUGHPUT_WINDOW, now: float | None = None) -> float | None:
        """Tasks finished per second over the last ``window`` seconds of the run (None before
        anything finished).  Early in a run the window is the time since it started."""
        ends = self.ended_at
        if not ends or math.isnan(self.started_at):
            return None
        now = (self.finished_at if not math.isnan(self.finished_at) else time.time()) if now is None else now
        since = max(self.started_at, now - window)
        span = now - since
        if span <= 0:
            return None
        k = len(ends) - bisect.bisect_left(ends, since)
        return k / span


_HANDLERS: dict[type, Any] = {
    ev.TaskStarted: RunModel._started,
    ev.TaskRetrying: RunModel._retrying,
    ev.TaskCompleted: RunModel._completed,
    ev.TaskFailed: RunModel._failed,
    ev.TaskCancelled: RunModel._cancelled,
    ev.TaskSkipped: RunModel._skipped,
    ev.TasksAdded: RunModel._added,
    ev.RunStarted: RunModel._run_started,
    ev.RunFinished: RunModel._run_finished,
}
