"""A Dask run's first graph goes to Dask's client before the journal's writer thread starts.

Starting a thread waits for it to run, and the new writer then takes the GIL for its start
and the run's first commit; on a Dask run that was on the path to the first graph, while
the scheduler's thread in this process had nothing to do.  The run's recorder now holds
the writer's start (:meth:`Journal.hold`) until the run's first graph is in Dask's client
(:meth:`Run.defer_until_started`), or a short while after the run began if it sends
nothing, or its end; a flush (a read of this process's writes, the run's end) never waits
for that.  What is checked is the order of things and what is committed, never how long
anything took.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.engine import run as run_module
from nbflow.store import journal
from nbflow.store.store import get_store
from nbflow.workflow import prepare, run_options

distributed = pytest.importorskip("distributed")

_META = journal.Op("INSERT OR REPLACE INTO meta VALUES(?, ?)")


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _writer_starts(monkeypatch: pytest.MonkeyPatch, order: list[str]) -> None:
    """Append "writer started" to ``order`` when a journal's writer thread is started, on
    the thread that starts it (so its place among that thread's steps is exact)."""
    real = journal.Journal._signal

    def signal(self: journal.Journal, *a: Any, **k: Any) -> None:
        before = self._thread
        real(self, *a, **k)
        if before is None and self._thread is not None:
            order.append("writer started")

    monkeypatch.setattr(journal.Journal, "_signal", signal)


def _graphs_queued(monkeypatch: pytest.MonkeyPatch, client: Any, order: list[str]) -> None:
    """Append "graph" to ``order`` when a graph is handed to Dask's client."""
    real = type(client)._send_to_scheduler

    def queued(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph":
            order.append("graph")
        return real(self, msg)

    monkeypatch.setattr(type(client), "_send_to_scheduler", queued)


def _committed_status(path: Path, run_id: str) -> str | None:
    """The run's status as committed in the journal file (a connection of its own: no
    flush of this process's queued rows)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    except sqlite3.OperationalError:  # (no table yet)
        return None
    finally:
        conn.close()
    return row[0] if row else None


def _idle_writer() -> journal.Journal:
    store = get_store()
    assert store is not None
    j = store.journal
    j.flush()
    j._join_idle()
    assert j._thread is None, "a journal writer was already running before the run"
    return j


@pytest.mark.timeout(300)
def test_a_dask_runs_journal_writer_starts_after_its_first_graph_is_in_dasks_client(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # (the bound for a run that sends nothing never comes first, however slow the machine)
    monkeypatch.setattr(run_module, "FIRST_SEND_WAIT_S", 3600.0)
    with nf.Workflow("journal-after-graph") as wf:
        end = total(inc(make(80_000)), inc(make(80_000, 2.0)))
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    j = _idle_writer()
    order: list[str] = []
    _writer_starts(monkeypatch, order)
    _graphs_queued(monkeypatch, client, order)
    run.start_in_thread()
    run.wait()
    assert run[end] == 80_000 // 8 * 2 + 80_000 // 8 * 3
    assert "graph" in order and "writer started" in order, order
    assert order.index("graph") < order.index("writer started"), (
        f"the journal's writer was started before the run's first graph went to Dask: {order}")
    # (the run returns once its rows are committed, as before)
    assert _committed_status(j.path, run.id) == "completed"


_OPEN = threading.Event()


@nf.task
async def gate(x: int) -> int:
    """Runs on the run's loop (not on Dask) until the test opens it (bounded)."""
    for _ in range(30_000):
        if _OPEN.is_set():
            break
        await asyncio.sleep(0.01)
    return x


@pytest.mark.timeout(300)
def test_a_dask_run_that_sends_nothing_yet_still_has_its_start_committed_while_it_runs(
        client: Any) -> None:
    """Its first task is not Dask's and waits: the writer is not held until the graph."""
    with nf.Workflow("journal-nothing-sent-yet") as wf:
        end = inc(make(gate(800)))
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    j = _idle_writer()
    _OPEN.clear()
    run.start_in_thread()
    try:
        deadline = time.monotonic() + 60
        status = None
        while status is None and time.monotonic() < deadline and not run.done:
            time.sleep(0.02)
            status = _committed_status(j.path, run.id)
        assert status == "running", "a Dask run that sent nothing had no committed start while it ran"
        assert run.backends["dask"].batch is None or run.backends["dask"].batch.messages == 0
    finally:
        _OPEN.set()
        run.wait()
    assert float(run[end].sum()) == 800 // 8 * 2


def test_a_dask_run_prepared_but_never_started_does_not_hold_the_journal(client: Any) -> None:
    """Its recorder is made as it is prepared; the hold is taken only as it runs (which
    releases it), so a run that never starts leaves none behind for later writes."""
    with nf.Workflow("journal-never-started") as wf:
        inc(make(800))
    j = _idle_writer()
    writer = j._last
    prepare(wf, run_options(wf, backend=client, cache=False))  # (never started)
    j.put(_META, ("after-an-unstarted-run", "1"))
    assert j._last is not writer, "a write did not start the writer: a run that never ran holds it"
    assert j.flush(30)
    assert _meta(j.path, "after-an-unstarted-run") == "1"
    # (its recorder counted it as a run writing rows: ended here, so that the writer exits
    # and no thread outlives the test)
    j.run_finished()
    assert j._thread is None


def test_defer_until_started_runs_at_once_on_a_run_that_is_not_on_dask() -> None:
    with nf.Workflow("journal-local") as wf:
        inc(make(800))
    run = prepare(wf, run_options(wf, cache=False))
    called: list[int] = []
    run.defer_until_started(lambda: called.append(1))
    assert called == [1]
    run.start_in_thread()
    run.wait()


def test_defer_until_started_waits_for_a_dask_runs_first_graph(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "FIRST_SEND_WAIT_S", 3600.0)  # (never first: see above)
    with nf.Workflow("journal-deferred-call") as wf:
        inc(make(800))
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _graphs_queued(monkeypatch, client, order)
    run.defer_until_started(lambda: order.append("called"))
    assert order == []
    run.start_in_thread()
    run.wait()
    assert order[:2] == ["graph", "called"], order
    assert order.count("called") == 1, order


# -- the journal's hold itself ---------------------------------------------------------


def _meta(path: Path, key: str) -> str | None:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def test_a_held_journal_queues_without_starting_its_writer_until_released(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "j.sqlite")
    release = j.hold()
    j.put(_META, ("held", "1"))
    j.put_many(_META, [("held-2", "2")])
    assert j._last is None, "a write started the writer while it was held"
    release()
    assert j._last is not None, "the release did not start the writer"
    assert j.flush(30)
    assert (_meta(j.path, "held"), _meta(j.path, "held-2")) == ("1", "2")
    j.close()


def test_a_flush_does_not_wait_for_the_hold(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "j.sqlite")
    release = j.hold()
    j.put(_META, ("flushed", "1"))
    assert j.flush(30), "a flush waited for the hold"
    assert _meta(j.path, "flushed") == "1"
    release()
    j.close()


def test_holds_nest_and_a_release_counts_once(tmp_path: Path) -> None:
    j = journal.Journal(tmp_path / "j.sqlite")
    first, second = j.hold(), j.hold()
    j.put(_META, ("nested", "1"))
    first()
    first()  # (again: does not release the second hold)
    assert j._last is None, "the writer started while a hold was still on"
    second()
    assert j.flush(30)
    assert _meta(j.path, "nested") == "1"
    j._join_idle()
    writer = j._last
    third = j.hold()  # (the count did not go below zero: a new hold still holds)
    j.put(_META, ("later", "1"))
    assert j._last is writer, "the writer started again while held"
    third()
    assert j._last is not writer, "the last release did not start the writer"
    assert j.flush(30)
    j.close()


def test_what_was_put_while_held_waits_the_group_commit_window_even_if_urgent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Dask run's first row asks to be committed at once; held until its graph went, it
    is committed within the window instead, not while Dask's scheduler handles the graph."""
    monkeypatch.setenv("NBFLOW_COMMIT_WINDOW", "60")
    urgent = journal.Op("INSERT OR REPLACE INTO meta VALUES(?, ?)", urgent=True)
    j = journal.Journal(tmp_path / "j.sqlite")
    committed = threading.Event()
    j.on_commit.append(lambda batch: committed.set())
    release = j.hold()
    j.put(urgent, ("first-row", "1"))
    release()
    assert not committed.wait(2), "a row put while held was committed at once, not within the window"
    assert j.flush(30)
    assert _meta(j.path, "first-row") == "1"
    committed.clear()
    j.put(urgent, ("not-held", "1"))  # (a writer running, no hold: urgent as always)
    assert committed.wait(30)
    j.close()
