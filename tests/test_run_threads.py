"""The threads and reads a run costs nbflow's process, counted (never timed).

A Dask run whose client stays open reads the workers' transfer logs after it has returned;
the journal's writer waits for those rows instead of exiting at the run's end and being
started again for them a moment later: one writer thread per run.  (A stand-in client
logs one transfer: whether a real cluster moves bytes depends on where Dask ran the tasks.)
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import pytest

from nbflow.locality.agent import LocalityAgent
from nbflow.store import hooks, journal
from nbflow.store.store import get_store


def _writers_started(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Every journal writer thread started from now on (one entry per start)."""
    started: list[threading.Thread] = []
    real = journal.Journal._main

    def counted(self: journal.Journal) -> None:
        started.append(threading.current_thread())
        real(self)

    monkeypatch.setattr(journal.Journal, "_main", counted)
    return started


class _LogClient:
    """Stands in for a distributed.Client whose workers logged one transfer."""

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        log = [{"keys": {"d-1": 10}, "who": "tcp://a", "start": 1.0, "duration": 0.5}]
        memory = {"limit": 0, "peak": 0, "pause_at": None, "spilled": {}}
        return {"tcp://b": {"log": log, "memory": memory}}

    def run_on_scheduler(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        return {}


_META = journal.Op("INSERT OR REPLACE INTO meta VALUES(?, ?)")


def test_the_deferred_read_keeps_the_journal_writer_until_its_rows_are_committed(monkeypatch):
    store = get_store()
    assert store is not None
    started = _writers_started(monkeypatch)
    run = type("R", (), {"id": "run-deferred"})()
    sink = hooks.transfer_sink(run)
    agent = LocalityAgent()
    agent.sink = sink
    agent.node_of = {"d-1": "make-0"}
    store.journal.run_started()  # (the run itself, as its recorder does: it writes rows)
    store.journal.put(_META, ("run-deferred", "running"))
    coming: futures.Future[Any] = futures.Future()
    agent.closing(_LogClient(), stays_open=True, after=[coming])
    store.journal.run_finished()  # the run ends while its read waits for the gather
    writer = store.journal._thread
    assert writer is not None and writer.is_alive()  # held for the rows still to come
    coming.set_result(None)
    agent.settle()
    assert [t.name for t in started] == ["nbflow-journal"]  # the run's writer, once
    assert store.journal._thread is None and not writer.is_alive()  # gone once they are in
    # (and the row the read made is in the journal)
    assert hooks.stored_transfers("run-deferred") == [("make-0", None, "tcp://a", "tcp://b", 10, 0.5, 1.0)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_reader_that_fails_still_lets_the_writer_go(monkeypatch):
    store = get_store()
    assert store is not None
    sink = hooks.transfer_sink(type("R", (), {"id": "run-failing"})())
    agent = LocalityAgent()
    agent.sink = sink

    def broken(*a: Any, **k: Any) -> None:
        raise RuntimeError("the read broke")

    monkeypatch.setattr(agent, "_read", broken)
    store.journal.run_started()
    agent.closing(_LogClient(), stays_open=True)
    store.journal.run_finished()
    agent.settle()
    assert store.journal._active == 0 and store.journal._thread is None
