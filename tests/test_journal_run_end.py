"""A run's end in the journal: its rows committed, and the writer gone, when the run returns;
the last run's end wakes the run once (the writer's exit), a run that is not the last is
woken by its rows' commit.  Counted and gated, never timed."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from nbflow.store import journal
from nbflow.store.store import get_store

_META = journal.Op("INSERT OR REPLACE INTO meta VALUES(?, ?)")


def _journal() -> journal.Journal:
    store = get_store()
    assert store is not None
    return store.journal


def _stored(j: journal.Journal, key: str) -> list[tuple[Any, ...]]:
    conn = j.reader()  # (not j.query: that flushes first)
    try:
        return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
    finally:
        conn.close()


def _flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Journal.flush call from now on (by the calling thread's name)."""
    calls: list[str] = []
    real = journal.Journal.flush

    def counted(self: journal.Journal, timeout: float | None = None) -> bool:
        calls.append(threading.current_thread().name)
        return real(self, timeout)

    monkeypatch.setattr(journal.Journal, "flush", counted)
    return calls


def test_the_last_runs_end_waits_for_the_writers_exit_alone(monkeypatch):
    j = _journal()
    flushes = _flushes(monkeypatch)
    j.run_started()
    j.put(_META, ("last-run", "ended"))
    writer = j._thread
    assert writer is not None
    j.run_finished()
    # committed, and the writer gone, when it returns...
    assert _stored(j, "last-run") == [("ended",)]
    assert not writer.is_alive() and j._thread is None
    # ...without a wait for the commit's marker first (a wake-up of its own, then a
    # second one for the exit)
    assert flushes == []


def test_a_run_that_is_not_the_last_is_woken_by_its_commit(monkeypatch):
    j = _journal()
    j.run_started()  # (another run, still going)
    j.run_started()
    j.put(_META, ("not-last", "ended"))
    writer = j._thread
    j.run_finished()
    assert _stored(j, "not-last") == [("ended",)]
    assert writer is not None and writer.is_alive()  # (kept for the run still going)
    j.run_finished()
    assert not writer.is_alive()


def test_a_run_starting_while_the_last_one_commits_does_not_hold_its_end(monkeypatch):
    # The last run's end waits for the writer's exit; a run that starts meanwhile keeps the
    # writer alive, and the end returns on its rows' commit instead of waiting for an exit
    # that will not come (until the lock timeout: set far beyond the test's own wait).
    monkeypatch.setenv("NBFLOW_LOCK_TIMEOUT", "600")
    j = _journal()
    entered, gate = threading.Event(), threading.Event()
    real = journal.Journal._commit

    def held(self: journal.Journal, conn: Any, batch: list[Any]) -> None:
        if any(p == ("racing", "ended") for _, p in batch):
            entered.set()
            assert gate.wait(60)
        real(self, conn, batch)

    monkeypatch.setattr(journal.Journal, "_commit", held)
    j.run_started()
    j.put(_META, ("racing", "ended"))
    ending = threading.Thread(target=j.run_finished, name="ending")
    ending.start()
    assert entered.wait(60)  # the writer is committing the ending run's rows
    j.run_started()  # another run begins
    gate.set()
    ending.join(60)
    assert not ending.is_alive(), "the end waited for the writer's exit"
    assert _stored(j, "racing") == [("ended",)]
    writer = j._thread
    assert writer is not None and writer.is_alive()
    j.run_finished()
    assert not writer.is_alive()
