"""A Ctrl-C inside a run's preparation, once its Run exists, cancels that run.

``prepare`` makes the Run, then gives it what the store gives a run: the journal's writer
(kept alive for it), the cache with its lease registration (a ``lease_processes`` row and
the ``nbflow-lease`` watcher thread).  A KeyboardInterrupt landing there used to leave the
run half-made: never started, so never ended, and all of that kept for the life of the
process (the watcher heartbeating, the journal's writer never let go).  Now the run is
cancelled as one interrupted before its start is: it ends, the store shows it cancelled,
and nothing it was given is left.  The interrupt is raised at one exact point (a patched
step of the preparation that receives the run): no timing.  The ``%%workflow`` cell's case
is in ``test_notebook_interrupt`` ("prepare-late").
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import pytest
from conftest import nbflow_threads_left

import nbflow as nf
from nbflow import locality
from nbflow.store import get_store
from nbflow.store.lease import HOST

pytestmark = pytest.mark.timeout(120)


@nf.task
def add_one(x: int) -> int:
    return x + 1


CALLS: list[int] = []


@nf.task(cache=False)
def counted(x: int) -> int:
    CALLS.append(x)
    return x


def _wf() -> Any:
    with nf.Workflow("interrupted-in-prepare") as wf:
        add_one(add_one(1))
        counted(0)  # (never cached: runs whenever the run starts tasks)
    return wf


def _interrupt_in_prepare(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The next preparation raises KeyboardInterrupt once its run has its store hooks (at
    the locality step, after the journal and the cache); returns the run once made."""
    made: list[Any] = []
    real = locality.attach

    def interrupted(run: Any) -> Any:
        if made:  # (once)
            return real(run)
        made.append(run)
        raise KeyboardInterrupt

    monkeypatch.setattr(locality, "attach", interrupted)
    return made


def _lease_rows_of_this_process() -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(get_store().journal.path)
    try:
        return conn.execute("SELECT host, pid FROM lease_processes WHERE host = ? AND pid = ?",
                            (HOST, os.getpid())).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("start", ["run", "start"])
def test_a_ctrl_c_in_prepare_cancels_the_run_it_made(monkeypatch: pytest.MonkeyPatch, start: str) -> None:
    _wf().run()  # history and an open store: the preparation does everything it can
    before = set(nbflow_threads_left())
    made = _interrupt_in_prepare(monkeypatch)
    wf = _wf()
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        wf.run() if start == "run" else wf.start()
    (run,) = made
    assert run.done and run.status == "cancelled" and nf.last_run() is run
    assert CALLS == []  # cancelled from its first moment: no task started
    stored = nf.runs()
    assert list(stored.loc[stored["id"] == run.id, "status"]) == ["cancelled"]  # the store says so
    assert nbflow_threads_left(before) == []  # the lease watcher and the journal's writer ended
    assert _lease_rows_of_this_process() == []  # no process row claiming a cached run goes on

    # The process is as it was: the next run ends and lets its writer go, as the first did.
    again = _wf().run()
    assert again.status == "completed"
    assert nbflow_threads_left(before) == []


# -- any other error inside the preparation ----------------------------------------------------


def _fail_in_prepare(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The next preparation raises a RuntimeError at the locality step (after the journal
    and the cache with its lease registration); returns the run once made."""
    made: list[Any] = []
    real = locality.attach

    def broken(run: Any) -> Any:
        if made:  # (once)
            return real(run)
        made.append(run)
        raise RuntimeError("broken step")

    monkeypatch.setattr(locality, "attach", broken)
    return made


@pytest.mark.parametrize("start", ["run", "start"])
@pytest.mark.parametrize("error", ["rerun-typo", "late-step"])
def test_an_error_in_prepare_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, start: str,
                                                   error: str) -> None:
    """``wf.run(rerun=["typo"])``'s WorkflowDefinitionError came from the cache's bind,
    after the run was given the journal (which counted it as a run in progress): that count
    was never given back, so the next run's end did not let the journal's writer go; it is
    now refused by the static checks, before a run exists, and no run is recorded.  A
    later step's error (after the lease registration too) left its watcher going.  The
    user's error is raised unchanged; the half-made run is ended (failed, with that error:
    ``test_prepare_failure``) without starting a task."""
    _wf().run()  # history and an open store
    before = set(nbflow_threads_left())
    journal = get_store().journal
    journal.flush()
    (runs_before,) = journal.query("SELECT COUNT(*) FROM runs")[0]
    made = _fail_in_prepare(monkeypatch) if error == "late-step" else []
    options: dict[str, Any] = {"rerun": ["typo"]} if error == "rerun-typo" else {}
    wf = _wf()
    expected = nf.WorkflowDefinitionError if error == "rerun-typo" else RuntimeError
    CALLS.clear()
    with pytest.raises(expected) as raised:
        wf.run(**options) if start == "run" else wf.start(**options)
    assert CALLS == []  # refused: no task ran
    assert ("typo" if error == "rerun-typo" else "broken step") in str(raised.value)  # the user's error
    assert journal._active == 0  # no run in progress counted
    assert nbflow_threads_left(before) == []  # the lease watcher and the journal's writer ended
    assert _lease_rows_of_this_process() == []
    if made:
        assert made[0].done and made[0].status == "failed"
    journal.flush()
    (runs_after,) = journal.query("SELECT COUNT(*) FROM runs")[0]
    # a refused rerun= records no run at all; a run that existed is recorded, failed
    assert runs_after == runs_before + (1 if made else 0)

    # The process is as it was: the next run ends and lets its writer go, as the first did.
    again = _wf().run()
    assert again.status == "completed"
    assert journal._active == 0
    assert nbflow_threads_left(before) == []
