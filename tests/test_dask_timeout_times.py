"""A Dask attempt that times out is timed where it ran, or not at all.

A task's ``timeout`` runs from the engine's start of the attempt, which for a Dask task is
when it was sent to the cluster.  A timed-out Dask attempt kept those times: a start when
it was sent and a duration up to the timeout, though the cluster may never have run it.
Now it is a failed attempt (``nf.TaskTimeout``) timed as a cancelled one is
(``test_cancelled_times``): with its worker's start and stop when the cluster told the run
that it ran, and with no start and no duration, ending at the timeout, when it did not.
A thread's timeout keeps the engine's times: the thread ran from when the engine started it.

The real Dask run holds the cluster's only threads, so the task cannot start before its
timeout, however long that takes; the case where the cluster told is driven on the records
and the journal's row directly (no clock, no loop).
"""

from __future__ import annotations

import math
import threading

import pandas as pd
import pytest
from test_cancelled_times import Node, _Run, _Store
from test_dask_attempt_times import Held, _journal

import nbflow as nf
from nbflow.core import events as ev
from nbflow.engine.taskstate import TaskStates, ran_of, timed_out
from nbflow.store import recorder

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client(dask_cluster):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@nf.task(timeout=0.5)
def quick(x: int) -> int:
    return x


def test_a_dask_task_that_timed_out_before_its_worker_ran_it_has_no_start(client):
    held = Held(client)  # (the task cannot start until released, after the run ended)
    with nf.Workflow("timed-out-unrun") as wf:
        r = quick(1)
    try:
        run = wf.run(backend=client, cache=False, raise_on_error=False)
    finally:
        held.release()
    assert run.status == "failed"
    assert isinstance(run.errors()[r.key], nf.TaskTimeout)
    row = run.tasks.set_index("key").loc[r.key]
    assert row["state"] == "failed" and row["attempts"] == 1
    assert pd.isna(row["start"]), row  # it never ran: no start (not when it was sent) ...
    assert pd.isna(row["duration_s"]), row  # ... and no duration (not sent -> timeout)
    assert pd.notna(row["end"])  # (the attempt ended at its timeout)
    (stored,) = _journal(run).loc[lambda h: h["key"] == r.key].itertuples()
    assert stored.state == "failed" and stored.attempt == 1
    assert pd.isna(stored.start) and pd.isna(stored.duration_s), stored


def test_a_thread_task_that_timed_out_keeps_the_engines_times():
    release = threading.Event()

    @nf.task(timeout=0.2)
    def hang() -> str:
        release.wait(60)
        return "late"

    with nf.Workflow("timed-out-thread") as wf:
        r = hang()
    try:
        run = wf.run(cache=False, raise_on_error=False)
    finally:
        release.set()
    assert isinstance(run.errors()[r.key], nf.TaskTimeout)
    row = run.tasks.set_index("key").loc[r.key]
    assert pd.notna(row["start"]) and row["end"] >= row["start"]
    assert row["duration_s"] > 0  # (the engine's: from its start to the timeout)


def test_the_times_a_backend_noted_on_the_cancellation_go_to_the_timeout() -> None:
    told = timed_out(nf.TaskTimeout("t"), (110.0, 112.5), now=130.0)
    assert ran_of(told) == (110.0, 112.5)  # where it ran, as the cluster told
    untold = ran_of(timed_out(nf.TaskTimeout("t"), (math.nan, math.nan), now=130.0))
    assert untold is not None and math.isnan(untold[0]) and untold[1] == 130.0
    assert ran_of(timed_out(nf.TaskTimeout("t"), None, now=130.0)) is None  # a thread's


@pytest.mark.parametrize("span", [(math.nan, 130.0), (110.0, 112.5)], ids=["untold", "told"])
def test_the_records_and_the_journal_row_of_a_timed_out_dask_attempt(span) -> None:
    """The failed event the engine makes of such a timeout (``Scheduler._fail``: at the
    span's end, started at its start, lasting its length) in the records and the journal."""
    error = timed_out(nf.TaskTimeout("t"), span if span[0] == span[0] else (math.nan, math.nan),
                      now=130.0)
    began, stopped = ran_of(error)  # type: ignore[misc]
    failed = ev.TaskFailed(stopped, 0, "t-0", 1, stopped - began, error, None, None, None, began)
    states = TaskStates([Node(0)], lambda e: None)
    states.enter(ev.TaskReady(99.0, 0, "t-0"))
    states.enter(ev.TaskStarted(100.0, 0, "t-0", 1, "dask"))  # (when it was sent)
    states.enter(failed)
    store = _Store()
    rec = recorder.RunRecorder(store, _Run())  # type: ignore[arg-type]
    rec(ev.TaskStarted(100.0, 0, "t-0", 1, "dask"))
    rec(failed)
    (row_args,) = [args for op, args in store.journal.queued if op is recorder.TASK_RUN]
    row = recorder._task_row(*row_args)
    start, end, duration = row[6], row[7], row[8]
    if span[0] == span[0]:
        assert (states.start[0], states.end[0], states.duration[0]) == (110.0, 112.5, 2.5)
        assert (start, end, duration) == (110.0, 112.5, 2.5)
    else:
        assert math.isnan(states.start[0]) and math.isnan(states.duration[0])
        assert states.end[0] == 130.0 and states.state[0] == "failed"
        assert end == 130.0 and start is None and duration is None  # NULL, not NaN
