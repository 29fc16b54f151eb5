"""The lease watcher thread (``nbflow-lease``) across the ends and starts of runs.

A process running cached runs has one watcher: it notices other processes on the store and
keeps this process's rows alive (:mod:`nbflow.store.lease`).  Runs end and start at any
moment (a notebook re-runs a cell; a background run ends while another starts), so the
interleavings that a busy machine makes now and then are made here on purpose, with gates
and events, not sleeps:

* the watcher woken by the end of the last run, but not yet back on the CPU, when the next
  run starts: the new run must still get a watcher (it was left with none: no heartbeat, so
  its leases and its process row expired under a long task, and no other process was
  noticed);
* the watcher slow to end (a heartbeat waiting for the store's write lock): the run's end
  waits for it rather than leaving it behind after one second;
* the end of one run and the start of another in two threads: the row that says this
  process is on the store must stay while the second runs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nbflow.store import lease
from nbflow.store.store import get_store

pytestmark = pytest.mark.timeout(120)

LONG = 60.0  # generous limit for anything that must happen (a busy machine is slow)


def _leases() -> lease.Leases:
    store = get_store()
    assert store is not None
    return lease.Leases(store.journal)


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nbflow-lease" and t.is_alive()]


def _until(pred: Any, what: str) -> None:
    deadline = time.monotonic() + LONG
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class _WokenLate(threading.Event):
    """A stop event whose waiter, once woken, stays off the CPU until ``gate`` opens: the
    moment between being woken and running again, which a loaded machine stretches."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.woken = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        got = super().wait(timeout)
        if got:
            self.woken.set()
            self.gate.wait(LONG)
        return got


def test_a_run_started_while_the_last_watcher_wakes_to_stop_gets_a_watcher() -> None:
    before = set(_watchers())
    lz = _leases()
    gate = threading.Event()
    stop = lz._stop = _WokenLate(gate)  # (the watcher of the first run waits on it)
    lz.run_started("first")
    first = [t for t in _watchers() if t not in before]
    assert len(first) == 1
    ending = threading.Thread(target=lz.run_finished, args=("first",))
    ending.start()  # (it waits for its watcher, which the gate holds: in a thread of its own)
    assert stop.woken.wait(LONG)  # the watcher was told to stop and is on its way out ...
    lz.run_started("second")  # ... when the next run starts
    gate.set()
    ending.join(LONG)
    first[0].join(LONG)
    assert not first[0].is_alive()
    try:
        assert [t for t in _watchers() if t not in before], "the second run has no lease watcher"
    finally:
        lz.run_finished("second")
    assert [t for t in _watchers() if t not in before] == []


def test_the_end_of_the_last_run_waits_for_its_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher in the middle of a heartbeat (here held for up to 4 s, as a write lock held
    by another process would) ends before the run's end returns: no thread outlives it."""
    before = set(_watchers())
    lz = _leases()
    in_beat, returned = threading.Event(), threading.Event()
    txn = lz._txn

    def held_heartbeat(conn: sqlite3.Connection, what: str, body: Any) -> Any:
        if what == "lease heartbeat" and not in_beat.is_set():
            in_beat.set()
            returned.wait(4.0)  # (the run's end returning first would be the fault)
        return txn(conn, what, body)

    monkeypatch.setattr(lz, "_txn", held_heartbeat)
    lz.run_started("only")
    assert in_beat.wait(LONG)  # the watcher's first heartbeat has begun
    watcher = [t for t in _watchers() if t not in before]
    lz.run_finished("only")
    alive = [t.is_alive() for t in watcher]
    returned.set()
    assert alive == [False], "the run's end returned with its lease watcher still running"


def test_a_run_starting_as_another_ends_keeps_the_process_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one process in two threads: the first ends (its unregistering queued for
    the journal's writer) as the second starts and registers the process again.  The queued
    delete must not remove the second run's row: other processes would not see this one, so
    neither would lease, and both would compute the same tasks."""
    lz = _leases()
    journal = lz.journal
    home = Path(os.environ["NBFLOW_HOME"])
    queued: list[tuple[Any, Any]] = []
    put = journal.put

    def held_put(op: Any, params: Any) -> None:  # the writer is slow: the delete comes later
        if op is lease.UNREGISTER:
            queued.append((op, params))
        else:
            put(op, params)

    monkeypatch.setattr(journal, "put", held_put)
    lz.run_started("first")
    lz.run_finished("first")
    lz.run_started("second")  # registers the process again, at once
    monkeypatch.setattr(journal, "put", put)
    for op, params in queued:  # now the first run's delete is committed
        journal.put(op, params)
    assert journal.flush(LONG)
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        rows = db.execute("SELECT pid FROM lease_processes").fetchall()
        assert len(queued) == 1 and len(rows) == 1, "the second run's process row was deleted"
        lz.run_finished("second")
        assert journal.flush(LONG)
        assert db.execute("SELECT count(*) FROM lease_processes").fetchone()[0] == 0
    finally:
        db.close()
