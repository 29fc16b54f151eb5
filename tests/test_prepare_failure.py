"""A run whose preparation fails once it exists is recorded failed, with the error.

The Run is made, then given what the store gives a run (the journal, which counts it from
then on, the cache), its predictions (priorities, memory admission) and the locality room;
as it starts, its thread subscribes what ``nf.on_run`` registered and, on Dask, connects
its backend.  An error at any of those steps used to end the run ``cancelled`` with no
error (the store showing a run someone stopped), or, in the run's thread, leave it
``pending`` and unrecorded (a subscriber factory that raised), or recorded nothing at all
and raised an ``EngineError`` "not an error of your tasks" in place of the cluster's own
error (a Dask backend that could not connect).  Now each ends ``failed``: ``run.error``
and the store's ``runs.error`` name the error's type and message, no task starts, nothing
the run was given is left, and the caller gets the error as it was raised.

Each fault is one real step of the preparation, patched to raise: no timing.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import nbflow_threads_left

import nbflow as nf
from nbflow import locality, workflow
from nbflow.core import events as ev
from nbflow.store import get_store
from nbflow.store import hooks as store_hooks

pytestmark = pytest.mark.timeout(120)


class PrepareBroke(Exception):
    """The injected fault (a type of the test's own: nothing else raises it)."""


@nf.task
def add_one(x: int) -> int:
    return x + 1


CALLS: list[int] = []


@nf.task(cache=False)
def counted(x: int) -> int:
    CALLS.append(x)
    return x


def _wf() -> Any:
    with nf.Workflow("failed-in-prepare") as wf:
        add_one(add_one(1))
        counted(0)  # (never cached: runs whenever the run starts tasks)
    return wf


def _stored(run_id: str) -> tuple[str, str | None]:
    journal = get_store().journal
    journal.flush()
    rows = journal.query("SELECT status, error FROM runs WHERE id = ?", (run_id,))
    assert len(rows) == 1, f"run {run_id} recorded {len(rows)} times"
    return rows[0][0], rows[0][1]


def _break(monkeypatch: pytest.MonkeyPatch, step: str, error: BaseException) -> None:
    """The next run's ``step`` raises ``error`` (once: a later run goes through it)."""

    def once(owner: Any, name: str) -> None:
        real = getattr(owner, name)
        raised: list[bool] = []

        def broken(*args: Any, **kwargs: Any) -> Any:
            if raised:
                return real(*args, **kwargs)
            raised.append(True)
            raise error

        monkeypatch.setattr(owner, name, broken)

    if step == "cache":  # the store's result cache for the run (its lease registration)
        once(store_hooks, "run_cache")
    elif step == "memory":  # memory admission from the recorded peaks
        once(workflow, "apply_predicted_memory")
    elif step == "priorities":
        once(workflow, "apply_learned_priorities")
    elif step == "locality":  # the locality room, after the journal and the cache
        once(locality, "attach")
    elif step == "on_run":  # a factory registered with nf.on_run, called in the run's thread
        def factory(run: Any) -> Any:
            unregister()
            raise error

        # (a copy of the registered factories, put back after the test: this one goes
        # with it even if no run ever called it)
        monkeypatch.setattr(ev, "_global_subscribers", list(ev._global_subscribers))
        unregister = ev.on_run(factory)
    else:
        raise AssertionError(step)


@pytest.mark.parametrize("start", ["run", "start", "arun"])
@pytest.mark.parametrize("step", ["cache", "memory", "priorities", "locality", "on_run"])
def test_a_failed_preparation_is_recorded_failed_with_its_error(
        monkeypatch: pytest.MonkeyPatch, step: str, start: str) -> None:
    _wf().run()  # history and an open store: the preparation does every step
    before = set(nbflow_threads_left())
    journal = get_store().journal
    injected = PrepareBroke(f"the {step} step broke")
    _break(monkeypatch, step, injected)
    CALLS.clear()
    wf = _wf()
    with pytest.raises(PrepareBroke) as raised:
        if start == "run":
            wf.run()
        elif start == "start":
            wf.start().wait()
        else:
            import asyncio

            asyncio.run(wf.arun())
    # the caller gets the error as it was raised: the very object, where the step raised it
    # inside the preparation; a twin (same type, message and traceback) once the run's
    # thread raised it
    if step != "on_run":
        assert raised.value is injected
    assert type(raised.value) is PrepareBroke and str(raised.value) == f"the {step} step broke"
    run = nf.last_run()
    assert run is not None and run.done
    assert run.status == "failed"
    assert run.error is injected
    assert CALLS == []  # no task started
    assert set(run.tasks["state"]) == {"cancelled"}  # never started: the run stopped them all
    assert _stored(run.id) == ("failed", f"PrepareBroke: the {step} step broke")
    assert journal._active == 0  # no run in progress counted for good
    assert nbflow_threads_left(before) == []  # the lease watcher and the journal's writer ended

    # The process is as it was: the next run goes through the same steps and completes.
    again = _wf().run()
    assert again.status == "completed" and CALLS == [0]
    assert journal._active == 0
    assert nbflow_threads_left(before) == []


def test_a_dask_backend_that_cannot_connect_fails_the_run_with_its_own_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Connecting is the last step of a Dask run's preparation, in its thread: its error
    (no scheduler at the address) is the cluster's, raised as it was, not an EngineError
    asking for a bug report; and the run is recorded (it was not: its end updated a row
    that its start, never announced, had not written)."""
    from nbflow.engine.backends.dask import DaskBackend

    async def cannot_connect(self: Any) -> None:
        raise OSError("Timed out trying to connect to tcp://127.0.0.1:9")

    monkeypatch.setattr(DaskBackend, "open", cannot_connect)
    monkeypatch.setattr(DaskBackend, "open_known", lambda self: False)
    _wf().run()
    before = set(nbflow_threads_left())
    CALLS.clear()
    with pytest.raises(OSError, match="Timed out trying to connect") as raised:
        _wf().run(backend="tcp://127.0.0.1:9")
    assert type(raised.value) is OSError
    run = nf.last_run()
    assert run is not None and run.done and run.status == "failed"
    assert isinstance(run.error, OSError)
    assert CALLS == []
    assert _stored(run.id) == ("failed", "OSError: Timed out trying to connect to tcp://127.0.0.1:9")
    assert get_store().journal._active == 0
    # nothing of the run waits for a cluster it never reached (the end-of-run read's thread
    # parked for it), though nf.last_run() still holds the run
    assert nbflow_threads_left(before) == []


def test_a_dask_run_whose_preparation_failed_never_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed before it started, a Dask run connects to no cluster (its address may be the
    very thing that is wrong) and sends nothing; it is recorded failed as any other."""
    from nbflow.engine.backends.dask import DaskBackend

    opened: list[Any] = []

    async def open_recorded(self: Any) -> None:
        opened.append(self)
        raise AssertionError("a run that failed before it started opened its Dask backend")

    monkeypatch.setattr(DaskBackend, "open", open_recorded)
    monkeypatch.setattr(DaskBackend, "open_known", lambda self: False)
    _wf().run()
    before = set(nbflow_threads_left())
    _break(monkeypatch, "locality", PrepareBroke("the locality step broke"))
    with pytest.raises(PrepareBroke):
        _wf().run(backend="tcp://127.0.0.1:9")
    run = nf.last_run()
    assert run is not None and run.status == "failed" and "dask" in run.backends
    assert opened == []
    assert _stored(run.id) == ("failed", "PrepareBroke: the locality step broke")
    assert nbflow_threads_left(before) == []  # (as above)


def test_fail_before_start_refuses_a_started_run() -> None:
    """Only a run that has not started can be failed before it: a started one is refused
    with an error that names the way to stop it."""
    run = _wf().start()
    run.wait()
    with pytest.raises(RuntimeError, match="cancel"):
        run.fail_before_start(PrepareBroke("late"))
    assert run.status == "completed" and run.error is None
