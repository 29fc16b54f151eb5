"""A cancelled attempt's times, as the records and the journal keep them (no clock, no loop).

The engine's start of an attempt is when it started it.  For a thread, that is when it ran;
for a Dask task, only when it was sent: a Dask backend notes on the cancellation when its
worker ran the call (``dask_clock.took_cancel``), or NaNs when the cluster had not said it
ran.  :func:`nbflow.engine.taskstate.cancelled` makes the event from that, the records take
its start, end and duration, and the journal's row says the same (no start: NULL).  The
real Dask runs are in ``test_dask_cancelled_times``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from nbflow.core import events as ev
from nbflow.engine.backends import dask_clock
from nbflow.engine.taskstate import TaskStates, cancelled
from nbflow.store import recorder


class Node:
    def __init__(self, index: int) -> None:
        self.index = index
        self.key = f"t-{index}"


def _running(executor: str = "dask") -> TaskStates:
    """One node, started by the engine at t=100 (for Dask: when it was sent)."""
    emitted: list[ev.Event] = []
    states = TaskStates([Node(0)], emitted.append)
    states.enter(ev.TaskReady(99.0, 0, "t-0"))
    states.enter(ev.TaskStarted(100.0, 0, "t-0", 1, executor))
    return states


def _cancellation(span: tuple[float, float] | None, noted: bool = True) -> BaseException:
    import asyncio

    exc = asyncio.CancelledError()
    if noted:
        dask_clock.took_cancel(exc, span)
    return exc


def test_a_cancelled_attempt_the_cluster_never_reported_has_no_start() -> None:
    states = _running()
    gone, took = cancelled(0, "t-0", 1, _cancellation(None), now=130.0, took=30.0)
    states.enter(gone, None, took)
    assert math.isnan(states.start[0])  # not the engine's 100: when it was sent
    assert math.isnan(states.duration[0])
    assert states.end[0] == 130.0  # (the attempt ended as it was cancelled)
    assert states.state[0] == "cancelled" and states.open == 0


def test_a_cancelled_attempt_the_cluster_said_ran_has_its_workers_times() -> None:
    states = _running()
    gone, took = cancelled(0, "t-0", 1, _cancellation((110.0, 112.5)), now=130.0, took=30.0)
    states.enter(gone, None, took)
    assert (states.start[0], states.end[0], states.duration[0]) == (110.0, 112.5, 2.5)


def test_a_cancellation_no_backend_noted_keeps_the_engines_times() -> None:
    """A thread's (or any backend that notes nothing): it ran from when the engine started it."""
    states = _running("thread")
    gone, took = cancelled(0, "t-0", 1, _cancellation(None, noted=False), now=130.0, took=30.0)
    states.enter(gone, None, took)
    assert (states.start[0], states.end[0], states.duration[0]) == (100.0, 130.0, 30.0)


class _Journal:
    """Stands in for the store's journal: keeps what the recorder queues."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, Any]] = []

    def run_started(self) -> None:
        pass

    def put(self, op: Any, args: Any) -> None:
        self.queued.append((op, args))


class _Store:
    def __init__(self) -> None:
        self.journal = _Journal()


class _Run:
    id = "run-1"
    name = "cancelled"
    nodes: tuple[Any, ...] = ()


@pytest.mark.parametrize("span", [None, (110.0, 112.5)])
def test_the_journal_row_of_a_cancelled_dask_attempt_says_the_same(span: tuple[float, float] | None) -> None:
    store = _Store()
    rec = recorder.RunRecorder(store, _Run())  # type: ignore[arg-type]
    rec(ev.TaskStarted(100.0, 0, "t-0", 1, "dask"))
    gone, _ = cancelled(0, "t-0", 1, _cancellation(span), now=130.0, took=30.0)
    rec(gone)
    (row_args,) = [args for op, args in store.journal.queued if op is recorder.TASK_RUN]
    row = recorder._task_row(*row_args)
    start, end, duration = row[6], row[7], row[8]
    if span is None:
        assert (start, end, duration) == (None, 130.0, None)  # no start, no duration
    else:
        assert (start, end, duration) == (110.0, 112.5, 2.5)
    # the event's own row is JSON (an unknown start is null, not NaN)
    (event_args,) = [args for op, args in store.journal.queued
                     if op is recorder.EVENT and type(args[2]) is ev.TaskCancelled]
    data = recorder._event_row(*event_args)[-1]

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the event row's JSON: {data}")

    parsed = json.loads(data, parse_constant=refuse)
    assert parsed["started"] == (None if span is None else 110.0)
