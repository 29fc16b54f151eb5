"""A run that failed on its own account (a stall, an engine failure), or whose failure a
``%%workflow`` cell raised, is freed by reference counting once the caller drops it and
the error.

As in ``tests/test_run_memory.py``: the cyclic garbage collector is off, weak references
watch the results (numpy arrays), one more small run lets ``nf.last_run()`` go.  The run
keeps its own error (``run.error``); raised as it was, that error collected the frames it
went through on its way to the caller (``self`` in ``Run.wait``, ``run`` in the caller's
own), and the frames of the run's thread and loop, which an engine failure's traceback
keeps for its report, held the run too: run, error and results one cycle, freed only by a
full collection.  The notebook's error display held its error in a closure of its own.
"""

from __future__ import annotations

import traceback
import weakref
from typing import Any

import numpy as np
import pytest
from gc_control import no_cyclic_gc

import nbflow as nf
from nbflow.engine import scheduler
from nbflow.engine.run import Run
from nbflow.notebook import magics

pytestmark = pytest.mark.timeout(120)


@nf.task(cache=False)
def make(n: int) -> np.ndarray:
    return np.ones(n)


@nf.task(cache=False)
def inc(a: np.ndarray) -> np.ndarray:
    return a + 1


@nf.task(cache=False)
def boom(a: np.ndarray) -> np.ndarray:
    raise ValueError(f"boom on {len(a)} values")


def assert_freed(watched: list[weakref.ref[Any]]) -> None:
    with nf.Workflow("failed-memory-other") as wf:  # nf.last_run() now holds this one
        make(1)
    wf.run(cache=False)
    alive = [w() for w in watched if w() is not None]
    assert alive == [], f"{len(alive)} of {len(watched)} results (or runs) outlived their run"


def test_a_stalled_run_is_freed_once_its_error_is_dropped() -> None:
    def go() -> list[weakref.ref[Any]]:
        with nf.Workflow("failed-memory-stall") as wf:
            a = make(1000)
            inc(inc(a))
        run = Run(wf, nf.RunOptions(cache=False))
        run._sched.waiting[1] += 1  # as if a completion were lost: the run stalls
        run.start_in_thread()
        try:  # (not pytest.raises: its ExceptionInfo and this frame would be a cycle)
            run.wait()
        except nf.StallError as e:
            assert "cannot make progress" in str(e)
        else:
            raise AssertionError("the run did not stall")
        assert isinstance(run.error, nf.StallError)
        return [weakref.ref(run[a]), weakref.ref(run)]

    with no_cyclic_gc():
        assert_freed(go())


def test_a_stalled_run_raises_its_error_again_each_time_asked() -> None:
    """Each raise gives the caller the run's error (type, message), not a growing one."""
    with nf.Workflow("failed-memory-stall-twice") as wf:
        inc(make(10))
    run = Run(wf, nf.RunOptions(cache=False))
    run._sched.waiting[1] += 1
    run.start_in_thread()
    run.wait(raise_on_error=False)
    raised = []
    for _ in range(2):
        try:
            run.raise_for_status()
        except nf.StallError as e:
            raised.append(e)
    assert [str(e) for e in raised] == [str(run.error)] * 2
    assert run.error.__traceback__ is None  # (made by the engine, never raised itself)


def test_a_run_whose_engine_failed_is_freed_once_its_error_is_dropped() -> None:
    def go() -> tuple[list[weakref.ref[Any]], list[str]]:
        with nf.Workflow("failed-memory-engine") as wf:
            make(1000)
        try:
            with pytest.MonkeyPatch.context() as m:
                m.setattr(scheduler.Scheduler, "_pop", None)  # the engine's own code fails calling it
                wf.run(cache=False)
        except nf.NbflowError as e:
            report = traceback.format_exception(e)
            run = nf.last_run()
        else:
            raise AssertionError("the engine did not fail")
        assert run is not None and run.error is not None
        return [weakref.ref(run)], report

    with no_cyclic_gc():
        watched, report = go()
        assert_freed(watched)
    # the report still shows where the engine failed, line by line
    text = "".join(report)
    assert "EngineError" in text and "NoneType" in text and "scheduler.py" in text


def test_a_workflow_cells_failure_is_freed_once_dropped() -> None:
    """What the ``%%workflow`` magic raises at a failed run's end (with its display for
    IPython attached) holds no cycle of its own (IPython's own references to the last error,
    ``sys.last_value`` and its cell result, are not nbflow's to drop)."""
    def go() -> list[weakref.ref[Any]]:
        with nf.Workflow("failed-memory-cell") as wf:
            a = inc(make(1000))
            boom(a)
        run = wf.start(cache=False)
        try:
            magics.raise_for_status(run, shell=None)
        except nf.WorkflowFailed as e:
            shown = e._render_traceback_()  # type: ignore[attr-defined]  # (what IPython shows)
            assert "ValueError: boom on 1000 values" in "\n".join(shown)
            assert shown[-1].startswith("WorkflowFailed: workflow 'failed-memory-cell'")
        else:
            raise AssertionError("the run did not fail")
        return [weakref.ref(run[a]), weakref.ref(run)]

    with no_cyclic_gc():
        assert_freed(go())


def test_a_run_whose_engine_failed_is_freed_without_ever_raising() -> None:
    """``wait(raise_on_error=False)``: the error is kept, never raised, and the engine's
    frames in its traceback let go of the run all the same."""
    def go() -> list[weakref.ref[Any]]:
        with nf.Workflow("failed-memory-engine-quiet") as wf:
            make(1000)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(scheduler.Scheduler, "_pop", None)  # the engine's own code fails calling it
            run = wf.run(cache=False, raise_on_error=False)
        assert run.error is not None and run.status == "failed"
        assert "scheduler.py" in "".join(traceback.format_exception(run.error))
        return [weakref.ref(run)]

    with no_cyclic_gc():
        assert_freed(go())
