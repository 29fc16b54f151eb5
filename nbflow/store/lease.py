"""Leases: one process computes a cache key while the others wait for its result.

Two kernels (or a kernel and ``nbflow run``) that run the same workflow on the same store
would otherwise compute every task twice: each looks the key up, misses, and runs it.  A
lease is a row of the journal's ``leases`` table saying "cache key K is being computed by
run R in process P on host H; heartbeat at T, good until E":

* **Taking one.**  After a miss, the cache takes the lease in one ``BEGIN IMMEDIATE``
  transaction (so two processes cannot both take it): the result may have been committed
  meanwhile (then it is a hit after all); a lease held by a *live* holder is left alone and
  its holder returned; a missing, released, expired or dead holder's lease is replaced.
* **Live.**  A holder is live while its lease has not expired and, on this host, its
  process exists.  So a ``kill -9`` of the holder is noticed at once on the same machine,
  and after the lease's time to live (``NBFLOW_LEASE_TTL``) anywhere.
* **Heartbeat.**  While a process holds leases, one thread of it (``nbflow-lease``) pushes
  their expiry forward every third of the time to live; it exits when none are held.  A
  task longer than the time to live keeps its lease for as long as its process lives.
* **Release.**  The lease row is deleted through the journal's queue *after* the rows that
  store the result, in the same or a later transaction: a waiter never sees the lease gone
  before the result is there.  A failed, skipped or cancelled task releases it too, and a
  finishing run releases whatever it still holds.
* **Waiting** (:meth:`Leases.wait`) is a poll with backoff (50 ms doubling to 1 s) that
  sleeps on the event loop, so the waiting task holds one worker slot, as a running task
  would, and every other task of the run goes on.

``NBFLOW_LEASE=off`` switches leases off (each process then computes what it misses).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio

from . import settings
from .journal import Journal, Op, retrying

HOST = socket.gethostname()

RELEASE = Op("DELETE FROM leases WHERE key = ? AND run_id = ? AND pid = ? AND host = ?", barrier=True)

TAKE = ("INSERT OR REPLACE INTO leases(key, run_id, pid, host, task, heartbeat, expires) "
        "VALUES(?,?,?,?,?,?,?)")
BEAT = "UPDATE leases SET heartbeat = ?, expires = ? WHERE key = ? AND pid = ? AND host = ?"

POLL_FIRST = 0.05
POLL_MAX = 1.0


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease."""

    run_id: str
    pid: int
    host: str
    task: str | None
    expires: float

    def describe(self) -> str:
        where = f"process {self.pid}" + ("" if self.host == HOST else f" on {self.host}")
        return f"run {self.run_id} in {where}"


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` exist on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (it exists, as another user)
        return True
    except OSError:
        return False
    return True


def live(h: Holder, now: float) -> bool:
    """Is ``h`` still computing (see the module)?"""
    if h.expires <= now:
        return False
    return h.host != HOST or pid_alive(h.pid)


class Leases:
    """The leases of one store, as this process sees them (one per Store)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.held: dict[str, str] = {}  # cache key -> run id, held by this process
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self.journal.reader()
        return self._conn

    # -- taking and releasing ------------------------------------------------------------

    def acquire(self, key: str, run_id: str, task: str) -> Holder | bool:
        """Take the lease on ``key`` for ``run_id`` (blocking; call it in a worker thread).

        True: taken, compute.  False: the result is stored already.  A :class:`Holder`:
        another live run is computing it; wait (:meth:`wait`)."""
        ttl = settings.lease_ttl()
        pid = os.getpid()

        def txn() -> Holder | bool:
            with self._lock:  # (one connection, used by one thread at a time)
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone():
                        conn.execute("COMMIT")
                        return False
                    row = conn.execute("SELECT run_id, pid, host, task, expires FROM leases WHERE key = ?",
                                       (key,)).fetchone()
                    now = time.time()
                    if row is not None:
                        h = Holder(*row)
                        if live(h, now) and not (h.pid == pid and h.host == HOST and h.run_id == run_id):
                            conn.execute("COMMIT")
                            return h
                    conn.execute(TAKE, (key, run_id, pid, HOST, task, now, now + ttl))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return True

        got = retrying(txn, "taking a lease", path=self.journal.path)
        if got is True:
            with self._lock:
                self.held[key] = run_id
            self._ensure_heartbeat()
        return got

    def release(self, key: str) -> None:
        """Give up the lease on ``key`` (queued behind the rows that store its result)."""
        with self._lock:
            run_id = self.held.pop(key, None)
        if run_id is not None:
            self.journal.put(RELEASE, (key, run_id, os.getpid(), HOST))

    def release_run(self, run_id: str) -> None:
        """Give up every lease ``run_id`` still holds (the run ended)."""
        with self._lock:
            keys = [k for k, r in self.held.items() if r == run_id]
        for k in keys:
            self.release(k)

    # -- waiting -------------------------------------------------------------------------

    def holder(self, conn: sqlite3.Connection, key: str) -> Holder | None:
        row = conn.execute("SELECT run_id, pid, host, task, expires FROM leases WHERE key = ?",
                           (key,)).fetchone()
        return Holder(*row) if row is not None else None

    async def wait(self, conn: sqlite3.Connection, key: str, holder: Holder) -> str:
        """Sleep until ``key``'s result is stored (``"stored"``) or its lease is no longer
        held by a live holder (``"gone"``: released without a result, expired, or its process
        died).  Polls with backoff on the event loop; never blocks it."""
        delay = POLL_FIRST
        while True:
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            if conn.execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone():
                return "stored"
            h = self.holder(conn, key)
            if h is None or not live(h, time.time()):
                # (the result and the release are committed together or in this order)
                if conn.execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone():
                    return "stored"
                return "gone"

    # -- heartbeat -----------------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        with self._lock:
            if self._beat is not None and self._beat.is_alive():
                return
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name="nbflow-lease", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        pid = os.getpid()
        conn = self.journal.reader()
        try:
            while True:
                ttl = settings.lease_ttl()
                if self._stop.wait(max(ttl / 3, 0.05)):
                    return
                with self._lock:
                    keys = list(self.held)
                    if not keys:
                        self._beat = None
                        return
                now = time.time()

                def beat(keys: list[str] = keys, now: float = now, ttl: float = ttl) -> None:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        conn.executemany(BEAT, [(now, now + ttl, k, pid, HOST) for k in keys])
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise

                try:
                    retrying(beat, "lease heartbeat", path=self.journal.path)
                except Exception:  # the store went away: the leases expire, waiters compute
                    return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def enabled() -> bool:
    """Are leases on (``NBFLOW_LEASE``, default on)?"""
    return os.environ.get("NBFLOW_LEASE", "").strip().lower() not in ("0", "off", "false", "no")


def leases_of(store: Any) -> Leases:
    """The :class:`Leases` of ``store`` (made on first use)."""
    lz = getattr(store, "_leases", None)
    if lz is None:
        lz = store._leases = Leases(store.journal)
    return lz
