"""The task state machine: one owner of a run's per-node records, one way to change a state.

A run keeps its per-node records in plain lists indexed by node (nodes are integers):
``state``, ``attempts``, ``start``, ``end``, ``duration``, ``output_bytes``, ``executor``,
``results``, plus ``errors`` and ``reasons`` keyed by node, and ``open``, the number of nodes
not yet in a terminal state (the run is over when it reaches zero).  :class:`TaskStates`
owns them all, and :meth:`TaskStates.enter` is the only code that changes a state (its bulk
form :meth:`TaskStates.enter_many`, for the items of a batched chunk, applies the same rules
to a list of events of one state in one call).  Given the event that announces the move, it

1. checks the move against :data:`nbflow.core.states.TRANSITIONS` when checking is on,
2. records what the new state needs (start time and attempt for ``running``; value, end
   time, duration and size for ``completed``, and its start again when the event knows
   better: a Dask task's start on its worker, ``TaskCompleted.started``, likewise for a
   failed or retried attempt and a batched chunk's items; for an interrupted
   ``cancelled`` attempt its end, and its start and duration where it ran when the event
   says (a Dask attempt the cluster never reported has none: :func:`cancelled`, nor
   has one that timed out so: :func:`timed_out`); the error for ``failed``; the reason
   for ``skipped``; ...), taking the figures from the event itself,
3. decrements ``open`` exactly when the node enters a terminal state, and
4. emits the event.

Every event class declares the state it means (``TaskStarted.state == "running"``), so the
state a node enters and the event listeners see cannot disagree.  Events that change no
state (``ApprovalRequested``, ``TasksAdded``) are emitted directly by the scheduler.

Checking costs a dictionary lookup per move, so it is off by default and on when the
environment variable ``NBFLOW_CHECK_TRANSITIONS=1`` is set when nbflow is imported (nbflow's
own test suite sets it) or after :func:`check_transitions` ``(True)``.  A refused move raises
:class:`~nbflow.core.errors.TransitionError` naming the node, both states and the open count.

Growth while running (map items, loop iterations, compensations) appends a node with
:meth:`TaskStates.append`, which extends every list and counts the node as open.

Only the run's own thread changes the records.  Another thread (``run.tasks``, an ETA, a
view) reads them through :meth:`TaskStates.records`: a copy taken without looping over a
live dict, every list cut to the same length.

Nothing here needs threads, an event loop or a clock: the unit tests drive it directly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..core import events as ev
from ..core.errors import TransitionError
from ..core.states import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    READY,
    RETRYING,
    RUNNING,
    SKIPPED,
    TERMINAL,
    TRANSITIONS,
)

NAN = math.nan

# An attribute of a failed attempt's error: ``(start, stop)`` when the call ran where it ran
# (this process's clock), noted by a backend that knows (a Dask worker's times: dask_clock)
RAN = "_nbflow_ran"

E = TypeVar("E", bound=BaseException)


def ran_of(error: BaseException) -> tuple[float, float] | None:
    """When the failed attempt that raised ``error`` ran where it ran, if its backend told
    (see :data:`RAN`); None: the engine's own times stand.  (On a cancellation: NaNs when
    the backend cannot tell that the attempt started there; see :func:`cancelled`.  On a
    timeout with no such news: a NaN start, and the timeout's moment: :func:`timed_out`.)"""
    got = getattr(error, RAN, None)
    return got if type(got) is tuple and len(got) == 2 else None


def cancelled(i: int, key: str, attempt: int, cancel: BaseException, now: float,
              took: float) -> tuple[ev.TaskCancelled, float]:
    """The event of node ``i``'s attempt that ``cancel`` interrupted at ``now``, and the
    attempt's duration.  The engine's own times (``now``, ``took`` since it started it),
    unless its backend noted on the cancellation where it ran (:data:`RAN`; a Dask task,
    whose start in the engine is only when it was sent): its worker's start and stop, as
    a finished attempt's; or, when the backend cannot tell that it started there, no start
    and no duration (``TaskCancelled.started`` NaN)."""
    ran = ran_of(cancel)
    if ran is None:
        return ev.TaskCancelled(now, i, key, attempt), took
    began, stopped = ran
    if began != began or stopped != stopped:  # (NaN: not known to have started there)
        return ev.TaskCancelled(now, i, key, attempt, NAN), NAN
    return ev.TaskCancelled(stopped, i, key, attempt, began), stopped - began


def timed_out(error: E, noted: tuple[float, float] | None, now: float) -> E:
    """``error`` (the attempt's ``TaskTimeout``), given what its backend noted on the
    cancellation that stopped the call at ``now`` (``noted``: :func:`ran_of` of it, as for
    a cancelled attempt: :func:`cancelled`).  A Dask task's engine start is when it was
    sent, so the span sent → timeout is no time it ran: the failed attempt gets its
    worker's start and stop when the cluster told that it ran, and, when it did not, no
    start and no duration, ending ``now`` (``(NaN, now)``).  A backend that noted nothing
    (threads: it ran from when the engine started it) leaves the engine's times."""
    if noted is not None:
        try:
            setattr(error, RAN, noted if noted[0] == noted[0] else (NAN, now))
        except Exception:  # (an error that takes no attributes: the engine's times stand)
            pass
    return error


# The records :meth:`TaskStates.records` copies by default (``results`` is left out: a
# reader asks for a value by node), and those of them that are dicts by node
RECORDS = ("state", "attempts", "start", "end", "duration", "output_bytes", "executor", "errors",
           "reasons")
DICTS = ("errors", "reasons")


CHECK = os.environ.get("NBFLOW_CHECK_TRANSITIONS", "").strip().lower() in ("1", "true", "yes", "on")


def check_transitions(on: bool) -> bool:
    """Turn checking of every state change on or off (for all runs); returns the old setting."""
    global CHECK
    old, CHECK = CHECK, bool(on)
    return old


class TaskStates:
    """The per-node records of one run, and the one method that changes a node's state.

    ``nodes`` is the run's node list (shared with the scheduler; only its keys are read
    here, for messages); ``emit`` delivers events to the run's subscribers.
    """

    __slots__ = ("attempts", "duration", "emit", "end", "errors", "executor", "nodes", "open",
                 "output_bytes", "reasons", "results", "start", "state", "stream")

    def __init__(self, nodes: list[Any], emit: Callable[[ev.Event], None],
                 stream: ev.EventStream | None = None) -> None:
        n = len(nodes)
        self.nodes = nodes
        self.emit = emit
        # The stream ``emit`` delivers to: asked whether every subscriber reads TaskBatch
        # events (enter_batch); None: never batch.
        self.stream = stream
        self.state: list[str] = [PENDING] * n
        self.attempts: list[int] = [0] * n
        self.results: list[Any] = [None] * n
        self.start: list[float] = [NAN] * n  # wall-clock epoch seconds of the last attempt
        self.end: list[float] = [NAN] * n
        self.duration: list[float] = [NAN] * n  # monotonic seconds of the last attempt
        self.output_bytes: list[int | None] = [None] * n
        self.executor: list[str | None] = [None] * n  # set when the node is classified
        self.errors: dict[int, BaseException] = {}
        self.reasons: dict[int, str] = {}
        self.open = n  # nodes not yet in a terminal state

    def append(self, node: Any) -> int:
        """Grow by one pending node (``node.index`` must be the next index); returns it."""
        k = len(self.state)
        if node.index != k:
            raise ValueError(f"appending node {node.key!r} with index {node.index}, expected {k}")
        if len(self.nodes) == k:
            self.nodes.append(node)
        self.state.append(PENDING)
        self.attempts.append(0)
        self.results.append(None)
        self.start.append(NAN)
        self.end.append(NAN)
        self.duration.append(NAN)
        self.output_bytes.append(None)
        self.executor.append(None)
        self.open += 1
        return k

    def enter(self, e: ev.TaskEvent, result: Any = None, duration: float = NAN) -> None:
        """Move node ``e.index`` to the state event ``e`` declares, record it, emit ``e``.

        ``result`` is the value of a ``completed`` node.  ``duration`` (monotonic seconds)
        is the length of the attempt that ended in ``retrying`` or ``cancelled``, which
        those events do not carry; ``completed`` and ``failed`` take theirs from the event.
        """
        i = e.index
        new = e.state
        d: Any = e  # read below through the fields of the event's own class
        if CHECK:
            self._check(i, new)
        # State constants are compared by identity: every state string comes from
        # nbflow.core.states (events declare theirs from there), and `is` keeps this cheap.
        if new is READY:
            pass
        elif new is RUNNING:
            self.start[i] = e.time
            self.attempts[i] = d.attempt  # 0: a cache hit being served
        elif new is COMPLETED:
            self.results[i] = result
            self.end[i] = t = e.time
            if d.started is not None:  # (where it ran, known only at its end: a Dask task)
                self.start[i] = d.started
            elif self.start[i] != self.start[i]:  # NaN: resolved without running (a join, a gate)
                self.start[i] = t
            self.duration[i] = d.duration_s
            self.output_bytes[i] = d.output_bytes
            self.open -= 1
        elif new is FAILED:
            self.errors[i] = d.error
            self.end[i] = t = e.time
            if d.started is not None:  # (where it ran, known only at its end: a Dask task)
                self.start[i] = d.started
            elif self.start[i] != self.start[i]:
                self.start[i] = t
            self.attempts[i] = d.attempt
            self.duration[i] = d.duration_s
            self.open -= 1
        elif new is RETRYING:
            self.duration[i] = duration
            if d.started is not None:  # (the failed attempt's, where it ran: a Dask task)
                self.start[i] = d.started
        elif new is SKIPPED:
            self.reasons[i] = d.reason
            self.open -= 1
        elif new is CANCELLED:
            if self.state[i] is RUNNING:  # interrupted: its attempt ends now
                self.end[i] = e.time
                if d.started is not None:  # (where it ran, or NaN: not known to: a Dask task)
                    self.start[i] = d.started
                    self.duration[i] = duration
                elif duration == duration:
                    self.duration[i] = duration
            self.open -= 1
        else:  # an event that declares no state must not come here
            raise TransitionError(f"{type(e).__name__} declares no task state; emit it directly")
        self.state[i] = new
        self.emit(e)

    def enter_many(self, events: Sequence[ev.TaskEvent], results: Sequence[Any] | None = None) -> None:
        """:meth:`enter` each of ``events`` in order, in one call (a batched chunk's items).

        ``results`` are the values of ``completed`` events, one per event.  For events that
        all declare ``ready``, ``running`` or ``completed`` the records are written here
        without a call per event; every move is still checked (when checking is on) before
        the node changes, and every event is still emitted, one by one, right after its own
        node changed.  Other events go through :meth:`enter` one at a time.
        """
        if not events:
            return
        new = events[0].state
        if new is not READY and new is not RUNNING and new is not COMPLETED:
            for k, e in enumerate(events):
                self.enter(e, results[k] if results is not None else None)
            return
        state, emit, check = self.state, self.emit, CHECK
        start, attempts = self.start, self.attempts
        values, end, duration, size = self.results, self.end, self.duration, self.output_bytes
        for k, e in enumerate(events):
            i = e.index
            if e.state is not new:
                raise TransitionError(
                    f"enter_many got a {type(e).__name__} among {type(events[0]).__name__} events; "
                    "the events of one call must all declare the same state (use enter for others)")
            if check:
                self._check(i, new)
            d: Any = e  # (its fields are read below through its own class)
            if new is RUNNING:
                start[i] = e.time
                attempts[i] = d.attempt
            elif new is COMPLETED:
                values[i] = results[k] if results is not None else None
                end[i] = t = e.time
                if d.started is not None:  # (where it ran: a Dask chunk's worker times)
                    start[i] = d.started
                elif start[i] != start[i]:  # NaN: resolved without running
                    start[i] = t
                duration[i] = d.duration_s
                size[i] = d.output_bytes
                self.open -= 1
            state[i] = new
            emit(e)

    def enter_batch(self, kind: type[ev.TaskEvent], time: float, indexes: list[int],
                    columns: dict[str, list[Any]] | None = None, common: dict[str, Any] | None = None,
                    results: Sequence[Any] | None = None) -> None:
        """Move each node of ``indexes`` to ``kind.state`` (``ready``, ``running`` or
        ``completed``) as the events ``kind(time, i, key, ...)`` would, announced as one
        :class:`~nbflow.core.events.TaskBatch` (fields per item in ``columns``, the same for
        all in ``common``; ``results`` are the completed values).

        The records written, the checks made (every move, before its node changes) and the
        open count are those of :meth:`enter_many` on the expanded events.  When a subscriber
        of the run does not read batches, the expanded events go through :meth:`enter_many`,
        one event per item delivered as before.  A refused move stops before its node: the
        items moved until then are announced (as a batch), then the error is raised.
        """
        if not indexes:
            return
        nodes = self.nodes
        batch = ev.TaskBatch(time, kind, indexes, [nodes[i].key for i in indexes],
                             columns or {}, common or {})
        new = kind.state
        stream = self.stream
        if (stream is None or not stream.batches
                or (new is not READY and new is not RUNNING and new is not COMPLETED)):
            self.enter_many(batch.expand(), results)
            return
        state, check = self.state, CHECK
        start, attempts = self.start, self.attempts
        k = 0
        try:
            if new is READY:
                for k, i in enumerate(indexes):  # noqa: B007  (k: read in finally)
                    if check:
                        self._check(i, new)
                    state[i] = new
            elif new is RUNNING:
                tried = batch.column("attempt")
                for k, i in enumerate(indexes):
                    if check:
                        self._check(i, new)
                    start[i] = time
                    attempts[i] = tried[k]
                    state[i] = new
            else:
                values, end, duration, size = self.results, self.end, self.duration, self.output_bytes
                took, sizes = batch.column("duration_s"), batch.column("output_bytes")
                # where the items ran, when known only at their end (a Dask chunk's worker)
                ran = batch.column("started") if _has(batch, "started") else None
                for k, i in enumerate(indexes):
                    if check:
                        self._check(i, new)
                    values[i] = results[k] if results is not None else None
                    end[i] = time
                    if ran is not None and ran[k] is not None:
                        start[i] = ran[k]
                    elif start[i] != start[i]:  # NaN: resolved without running
                        start[i] = time
                    duration[i] = took[k]
                    size[i] = sizes[k]
                    self.open -= 1
                    state[i] = new
            k = len(indexes)
        finally:
            if k < len(indexes):  # refused at item k: announce the items that moved
                batch = ev.TaskBatch(time, kind, indexes[:k], batch.keys[:k],
                                     {c: v[:k] for c, v in batch.columns.items()}, batch.common)
            if k:
                self.emit(batch)

    def _check(self, i: int, new: str | None) -> None:
        old = self.state[i]
        if new is None or new not in TRANSITIONS[old] or (new in TERMINAL and self.open <= 0):
            key = self.nodes[i].key if i < len(self.nodes) else "?"
            raise TransitionError(
                f"node {i} ({key!r}) cannot move from {old!r} to {new!r} (open count "
                f"{self.open}); allowed from {old!r}: {sorted(TRANSITIONS[old]) or 'nothing'}. "
                "This is a bug in nbflow's scheduler: please report it")

    def records(self, names: Sequence[str] = RECORDS, **more: list[Any]) -> dict[str, Any]:
        """A copy of the records as of now, safe to take on any thread while the run's own
        changes them: ``nodes`` and the records ``names`` (``state`` always), then the
        lists in ``more`` (the scheduler's, e.g. its ``level``), every list cut to one
        length ``n``, and the dicts among ``names`` (``errors``, ``reasons``) holding
        nodes ``0..n-1`` only.

        Why a copy: a Python loop over a dict the run's thread adds to can fail with
        "dictionary changed size during iteration", and lists that a node's growth extends
        one after another (:meth:`append`) may differ in length by one when read between
        two of its steps.  Each list is copied by a slice and each dict by ``dict.copy``:
        one C call each, with int keys no Python code runs inside it, so the GIL keeps it
        whole.  ``state`` is copied first: a move writes a node's records before its state
        (:meth:`enter`), so a copied state is never ahead of the records copied after it;
        the dicts come last, so the error or reason of every node copied as failed or
        skipped is there.
        """
        state = self.state[:]
        lists = {name: getattr(self, name)[:] for name in names if name != "state" and name not in DICTS}
        lists.update((name, values[:]) for name, values in more.items())
        lists["nodes"] = self.nodes[:]
        dicts = {name: getattr(self, name).copy() for name in names if name in DICTS}
        n = min(len(state), *(len(values) for values in lists.values()))
        for values in (state, *lists.values()):
            del values[n:]
        if len(self.state) > n:  # nodes added since: the dicts may hold theirs
            dicts = {name: {i: x for i, x in d.items() if i < n} for name, d in dicts.items()}
        return {"state": state, **lists, **dicts}

    def open_nodes(self) -> list[int]:
        """Nodes not yet in a terminal state, ascending."""
        return [i for i, s in enumerate(self.state) if s not in TERMINAL]


def _has(batch: ev.TaskBatch, name: str) -> bool:
    """Does ``batch`` give field ``name`` a value (per item, or one for all but None)?"""
    return name in batch.columns or batch.common.get(name) is not None
