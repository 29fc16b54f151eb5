"""Cancelling a run from another process, through the store.

A run belongs to the process that started it (a kernel, a ``nbflow run`` batch, a
script); only that process can stop its tasks.  So the dashboard does not signal anything:
it writes a row in the store's ``cancel_requests`` table, and every running run's process
watches that table for its own id and calls ``run.cancel()`` when the row appears.  The
run then ends ``cancelled`` exactly as if it had been cancelled locally, and its journal
says so.

The watch is attached to every run journaled in a store, through ``nf.on_run``, and costs
the run no thread and no connection of its own: the journal's writer thread, which lives
while a run is journaled and wakes every group-commit window anyway, looks for the
requests of every run it watches with one indexed query every :data:`POLL_S` seconds (so
a request is seen within about that long; a run shorter than that costs no query) and
calls ``run.cancel()`` on a hit (:meth:`nbflow.store.journal.Journal.watch_cancel`).  The
run's ``RunFinished`` event ends the watch.  ``NBFLOW_CANCEL_WATCH=0`` switches watching
off for the runs of a process.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..store.journal import CANCEL_POLL_S, Journal, connect, migrate, write_transaction

if TYPE_CHECKING:
    from ..engine.run import Run

POLL_S = CANCEL_POLL_S
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
    """Watches the store for a cancel request for one run (an event subscriber of the run);
    the looking is done by the journal's writer thread (see the module doc)."""

    def __init__(self, run: Run, journal: Journal) -> None:
        self.run = run
        self.journal = journal
        self.requested = False
        journal.watch_cancel(run.id, self._requested)

    accepts_batches = True  # (it reads RunFinished only; a chunk's TaskBatch changes nothing)

    def __call__(self, event: ev.Event) -> None:
        if type(event) is ev.RunFinished:
            self.close()

    def close(self) -> None:
        """Stop watching."""
        self.journal.unwatch_cancel(self.run.id)

    def _requested(self) -> None:  # (on the writer thread: run.cancel is safe from any thread)
        self.requested = True
        self.run.cancel()


def watch_for_cancel(run: Run) -> CancelWatcher | None:
    """``nf.on_run`` factory: a watcher for every run journaled in a store."""
    if os.environ.get("NBFLOW_CANCEL_WATCH", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    from ..store.store import get_store

    store = get_store(warn=False)
    if store is None:
        return None
    return CancelWatcher(run, store.journal)


def install() -> None:
    """Register :func:`watch_for_cancel` with ``nf.on_run`` (once per process)."""
    global _installed
    if _installed is None:
        _installed = ev.on_run(watch_for_cancel)
