"""A run's end in the journal: its rows committed, and the writer gone, when the run returns.
While the writer sleeps (its group-commit window), the run's end commits its rows itself,
through the writer's connection: no hand-off.  Otherwise the last run's end is woken once
(the writer's exit), a run that is not the last by its rows' commit.  Counted and gated,
never timed."""

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
    monkeypatch.setattr(journal.Journal, "_commit_here", lambda self: False)  # (writer busy)
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


def _commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread of every commit from now on."""
    threads: list[str] = []
    real = journal.Journal._commit

    def counted(self: journal.Journal, conn: Any, batch: list[Any]) -> None:
        threads.append(threading.current_thread().name)
        real(self, conn, batch)

    monkeypatch.setattr(journal.Journal, "_commit", counted)
    return threads


def _sleeping_writer(monkeypatch: pytest.MonkeyPatch, j: journal.Journal) -> threading.Thread:
    """A writer that has its connection and sleeps in a group-commit window far longer
    than the test (it wakes only when told to)."""
    monkeypatch.setenv("NBFLOW_COMMIT_WINDOW", "600")
    j.run_started()
    j.put(_META, ("first", "row"))
    writer = j._thread
    assert writer is not None
    for _ in range(6000):  # (polled: it connects, then sleeps without touching the connection)
        if j._conn is not None:
            break
        writer.join(0.01)
    assert j._conn is not None
    return writer


def test_a_runs_end_commits_its_rows_itself_while_the_writer_sleeps(monkeypatch):
    j = _journal()
    writer = _sleeping_writer(monkeypatch, j)
    j.run_started()  # (another run, or a Dask run's deferred read, keeps the writer)
    commits = _commits(monkeypatch)
    flushes = _flushes(monkeypatch)
    j.put(_META, ("own", "rows"))
    j.run_finished()
    assert _stored(j, "own") == [("rows",)] and _stored(j, "first") == [("row",)]
    assert commits == ["MainThread"] and flushes == []  # (no hand-off to the writer, and back)
    assert writer.is_alive()  # (still kept)
    j.run_finished()  # the last: committed here too, and the writer told to go at once
    assert not writer.is_alive() and j._thread is None and j._conn is None
    assert commits == ["MainThread"]  # (nothing was left for it to write)


def test_a_runs_end_while_the_writer_commits_leaves_the_connection_to_it(monkeypatch):
    j = _journal()
    j.run_started()  # (another run, still going)
    j.run_started()
    entered, gate = threading.Event(), threading.Event()
    real = journal.Journal._commit

    def held(self: journal.Journal, conn: Any, batch: list[Any]) -> None:
        if any(p == ("busy", "writer") for _, p in batch):
            entered.set()
            assert gate.wait(60)
        real(self, conn, batch)

    monkeypatch.setattr(journal.Journal, "_commit", held)
    commits = _commits(monkeypatch)
    waiting = threading.Event()
    flush = journal.Journal.flush

    def flushing(self: journal.Journal, timeout: float | None = None) -> bool:
        waiting.set()
        return flush(self, timeout)

    monkeypatch.setattr(journal.Journal, "flush", flushing)
    j.put(_META, ("busy", "writer"))
    assert entered.wait(60)  # the writer is in a commit, on its connection
    j.put(_META, ("behind", "it"))
    ending = threading.Thread(target=j.run_finished, name="ending")
    ending.start()
    assert waiting.wait(60)  # the end found the connection in use: it waits for the writer
    gate.set()
    ending.join(60)
    assert not ending.is_alive()
    assert _stored(j, "behind") == [("it",)]
    assert set(commits) == {"nbflow-journal"}  # (never two users of one connection)
    j.run_finished()


def test_a_run_starting_while_the_last_one_commits_does_not_hold_its_end(monkeypatch):
    # The last run's end waits for the writer's exit; a run that starts meanwhile keeps the
    # writer alive, and the end returns on its rows' commit instead of waiting for an exit
    # that will not come (until the lock timeout: set far beyond the test's own wait).
    monkeypatch.setenv("NBFLOW_LOCK_TIMEOUT", "600")
    j = _journal()
    # (the writer busy: the end waits for it, see the test above)
    monkeypatch.setattr(journal.Journal, "_commit_here", lambda self: False)
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
