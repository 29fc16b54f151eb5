"""A cancelled attempt's times in a batched chunk and in the live view.

A batched chunk is one backend call for all its items.  When it is cancelled after its
backend said where it ran (a Dask worker's start and stop, noted on the cancellation by
``dask_clock.took_cancel``), each item keeps that span as its start and end, and its share
of it as its duration: the items' durations add up to what the chunk took, as completed
items' own seconds do.  The live view (:class:`RunModel`) takes a cancelled attempt's start
as the records do.  No clock is read: the spans are given, the run is cancelled once the
chunk's call is known to be waiting.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import anyio
import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.engine.backends import dask_clock
from nbflow.engine.backends.local import ThreadBackend
from nbflow.notebook.model import RunModel


@nf.task
def item(x: int) -> int:
    return x


SPAN = (110.0, 112.0)  # where the chunk "ran", as a Dask backend would note it


def test_a_cancelled_chunks_items_share_the_span_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    entered = threading.Event()
    original = ThreadBackend.call

    async def call(self: Any, key: str, fn: Any, args: Any, kwargs: Any) -> Any:
        if "+" not in key:  # (one item alone: not the chunk this test is about)
            return await original(self, key, fn, args, kwargs)
        entered.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class() as e:  # as DaskBackend.call notes it
            dask_clock.took_cancel(e, SPAN)
            raise

    monkeypatch.setattr(ThreadBackend, "call", call)
    with nf.Workflow("cancelled-chunk") as wf:
        item.map(range(4), batch=4)
    run = wf.start(workers=1, cache=False)
    assert entered.wait(60), "the chunk's call never started"
    run.cancel()
    with pytest.raises(nf.WorkflowCancelled):
        run.wait(timeout=60)
    rows = run.tasks[run.tasks.task == "item"]
    assert len(rows) == 4 and set(rows.state) == {"cancelled"}
    assert rows.duration_s.tolist() == pytest.approx([0.5] * 4)  # a quarter of the span each
    assert rows.duration_s.sum() == pytest.approx(SPAN[1] - SPAN[0])  # not 4 times it
    starts = [t.timestamp() for t in rows.start]
    ends = [t.timestamp() for t in rows.end]
    assert starts == pytest.approx([SPAN[0]] * 4) and ends == pytest.approx([SPAN[1]] * 4)
    # The live view, given the run's events, says the same starts (not the engine's)
    model = RunModel(wf, run)
    for e in run.events:
        model(e)
    by_key = dict(zip(model.keys, model.start, strict=True))
    assert [by_key[k] for k in rows.key] == pytest.approx(starts)


def _model() -> RunModel:
    with nf.Workflow("view") as wf:
        item(1)
    model = RunModel(wf)
    model(ev.TaskReady(99.0, 0, model.keys[0]))
    model(ev.TaskStarted(100.0, 0, model.keys[0], 1, "dask"))  # (for Dask: when it was sent)
    return model


def test_the_view_of_a_cancelled_task_the_cluster_never_reported_has_no_start() -> None:
    model = _model()
    model(ev.TaskCancelled(130.0, 0, model.keys[0], 1, math.nan))
    assert model.state[0] == "cancelled"
    assert math.isnan(model.start[0])  # as run.tasks: not the 100 it was sent at


def test_the_view_of_a_cancelled_task_that_ran_on_a_worker_starts_there() -> None:
    model = _model()
    model(ev.TaskCancelled(112.5, 0, model.keys[0], 1, 110.0))
    assert model.start[0] == 110.0


def test_the_view_of_a_cancelled_task_with_no_backend_times_keeps_its_start() -> None:
    model = _model()
    model(ev.TaskCancelled(130.0, 0, model.keys[0], 1))  # (started None: TaskStarted's stands)
    assert model.start[0] == 100.0
