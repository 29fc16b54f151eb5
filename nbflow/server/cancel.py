"""Cancelling a run from another process, through the store.

A run belongs to the process that started it (a kernel, a ``nbflow run`` batch, a
script); only that process can stop its tasks.  So the dashboard does not signal anything:
it writes a row in the store's ``cancel_requests`` table, and every running run's process
watches that table for its own id and calls ``run.cancel()`` when the row appears.  The
run then ends ``cancelled`` exactly as if it had been cancelled locally, and its journal
says so.

The watcher is attached to every run through ``nf.on_run``: a daemon thread that checks
the table with one indexed read-only query every :data:`POLL_S` seconds (so a request is
seen within about that long) and stops when the run finishes: the run's ``RunFinished``
event wakes it and joins it, so no watcher outlives its run.  ``NBFLOW_CANCEL_WATCH=0``
switches watching off for the runs of a process.
"""

from __future__ import annotations

import getpass
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..store.journal import connect, migrate, write_transaction

if TYPE_CHECKING:
    from ..engine.run import Run

POLL_S = 0.3
JOURNAL = "journal.sqlite"
_installed: Any = None


def request_cancel(home: Path, run_id: str, by: str | None = None) -> None:
    """Ask the process running ``run_id`` to cancel it (asking twice is the same as once)."""
    path = home / JOURNAL
    conn = connect(path)
    try:
        migrate(conn, path)  # a store last opened by an older nbflow gets the table first

        write_transaction(conn, lambda c: c.execute(
            "INSERT OR IGNORE INTO cancel_requests(run_id, requested, requested_by, host) VALUES(?,?,?,?)",
            (run_id, time.time(), by or _user(), socket.gethostname())), "cancel request")
    finally:
        conn.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user name in this environment
        return "unknown"


class CancelWatcher:
    """Watches the store for a cancel request for one run (an event subscriber of the run)."""

    def __init__(self, run: Run, journal: Path, poll_s: float = POLL_S) -> None:
        self.run = run
        self.journal = journal
        self.poll_s = poll_s
        self.requested = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"nbflow-cancel-watch-{run.id}", daemon=True)
        self._thread.start()

    accepts_batches = True  # (it reads RunFinished only; a chunk's TaskBatch changes nothing)

    def __call__(self, event: ev.Event) -> None:
        if type(event) is ev.RunFinished:
            self.close()

    def close(self) -> None:
        """Stop watching and wait for the thread (it is at most in one quick query)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        run_id = self.run.id
        try:
            while not self._stop.wait(self.poll_s):
                try:
                    if conn is None:
                        conn = connect(self.journal, readonly=True)
                    hit = conn.execute("SELECT 1 FROM cancel_requests WHERE run_id = ?", (run_id,)).fetchone()
                except sqlite3.Error:  # busy, or the table not there yet: look again next time
                    continue
                if hit:
                    self.requested = True
                    self.run.cancel()
                    return
        finally:
            if conn is not None:
                conn.close()


def watch_for_cancel(run: Run) -> CancelWatcher | None:
    """``nf.on_run`` factory: a watcher for every run journaled in a store."""
    if os.environ.get("NBFLOW_CANCEL_WATCH", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    from ..store.store import get_store

    store = get_store(warn=False)
    if store is None:
        return None
    return CancelWatcher(run, store.home / JOURNAL)


def install() -> None:
    """Register :func:`watch_for_cancel` with ``nf.on_run`` (once per process)."""
    global _installed
    if _installed is None:
        _installed = ev.on_run(watch_for_cancel)
