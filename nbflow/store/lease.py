"""Leases: one process computes a cache key while the others wait for its result.

Two kernels (or a kernel and ``nbflow run``) that run the same workflow on the same store
would otherwise compute every task twice: each looks the key up, misses, and runs it.  A
lease is a row of the journal's ``leases`` table saying "cache key K is being computed by
run R in process P on host H; good until E".

**Only when another process is there.**  Taking a lease is a write transaction (hundreds of
microseconds), as much as the whole rest of a cached no-op task, so a process alone on its
store takes none.  Each process running cached runs has a row in ``lease_processes`` (host,
pid, heartbeat, expiry, ``leasing``), written when its first run starts:

* A process that finds another live one there when it registers leases from its first task
  (``leasing=1``).  One that was alone computes without leases, remembering the keys it is
  computing (*in flight*, an in-memory set).
* Its watcher thread (``nbflow-lease``) looks at the table every 250 ms.  When another
  process appears, it switches this process to leasing: new misses take leases from then on,
  the keys in flight get their leases now, results still queued for the journal are
  flushed, and only then is ``leasing=1`` written.
* A process that registered while others were there waits, before its first lease decision,
  until each of them is leasing (or dead): so a key computed by the first process before it
  knew of the second is always either leased or stored by the time the second looks.

**Taking one.**  After a miss, in one ``BEGIN IMMEDIATE`` transaction (so two processes
cannot both take it): the result may have been committed meanwhile (then it is a hit after
all); a lease held by a *live* holder is left alone and its holder returned; a missing,
released, expired or dead holder's lease is replaced.

**Live.**  A holder (or a registered process) is live while its row has not expired and, on
this host, its process exists: a ``kill -9`` is noticed at once on the same machine, and
after ``NBFLOW_LEASE_TTL`` seconds anywhere.  The watcher pushes the expiry of this
process's row and leases forward every third of that time; a task longer than it keeps its
lease for as long as its process lives.

**Release.**  The lease row is deleted through the journal's queue *after* the rows that
store the result, in the same or a later transaction: a waiter never sees the lease gone
before the result is there.  A failed, skipped or cancelled task releases it too, and a
finishing run releases whatever it still holds.

**Waiting** (:meth:`Leases.wait`) is a poll with backoff (50 ms doubling to 1 s) that sleeps
on the event loop, so the waiting task holds one worker slot, as a running task would, and
every other task of the run goes on.

``NBFLOW_LEASE=off`` or a run's ``lease=False`` switches leases off for the run (it then
computes what it misses, neither taking nor waiting for leases).  A run's ``lease_ttl=``
(default ``NBFLOW_LEASE_TTL``) is the life of the leases *it* takes; the process's own row
lives as long as the shortest TTL of its running runs, and the heartbeat comes every third
of that.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio

from ..core.processes import pid_alive
from . import settings
from .journal import Journal, Op, write_transaction

HOST = socket.gethostname()
log = logging.getLogger("nbflow.store")

RELEASE = Op("DELETE FROM leases WHERE key = ? AND run_id = ? AND pid = ? AND host = ?", barrier=True)
TAKE = ("INSERT OR REPLACE INTO leases(key, run_id, pid, host, task, heartbeat, expires) "
        "VALUES(?,?,?,?,?,?,?)")
BEAT = "UPDATE leases SET heartbeat = ?, expires = ? WHERE key = ? AND pid = ? AND host = ?"
REGISTER = ("INSERT OR REPLACE INTO lease_processes(host, pid, started, heartbeat, expires, leasing) "
            "VALUES(?,?,?,?,?,?)")
PRESENT = ("UPDATE lease_processes SET heartbeat = ?, expires = ?, leasing = MAX(leasing, ?) "
           "WHERE host = ? AND pid = ?")
OTHERS = "SELECT host, pid, expires, leasing FROM lease_processes WHERE NOT (host = ? AND pid = ?)"

POLL_FIRST = 0.05
POLL_MAX = 1.0
WATCH_EVERY = 0.25  # seconds between two looks at the other processes (a read query)
RUN_END_WAIT = 120.0  # the most a finishing run waits for its watcher to end (as the journal)


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




def alive(host: str, pid: int, expires: float, now: float) -> bool:
    """Is the holder or process ``(host, pid)`` with this expiry still there?"""
    if expires <= now:
        return False
    return host != HOST or pid_alive(pid)


def live(h: Holder, now: float) -> bool:
    """Is ``h`` still computing (see the module)?"""
    return alive(h.host, h.pid, h.expires, now)


class Leases:
    """The leases of one store, as this process sees them (one per Store)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.held: dict[str, str] = {}  # cache key -> run id: leases this process holds
        self.inflight: dict[str, str] = {}  # cache key -> run id: computing without a lease
        self.leasing = False  # does this process take leases (another process is there)?
        self.ready = False  # ... and has every other process switched to leasing too?
        self.runs = 0  # cached runs of this process now running on this store
        self.ttls: dict[str, float] = {}  # run id -> the lease TTL of that run (lease_ttl=)
        self._lock = threading.RLock()  # the state above (held for microseconds only)
        self._db = threading.Lock()  # the connection below, used by one thread at a time
        self._conn: sqlite3.Connection | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()  # the running watcher's own: set, it ends
        self._registered = 0.0  # the ``started`` of this process's row (see run_finished)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self.journal.reader()
        return self._conn

    def _txn(self, conn: sqlite3.Connection, what: str, body: Any) -> Any:
        return write_transaction(conn, body, what, path=self.journal.path)

    # -- the processes on this store -----------------------------------------------------

    def ttl(self, run_id: str | None = None) -> float:
        """The lease TTL of ``run_id``; without one, of this process (its runs' shortest)."""
        with self._lock:
            if run_id is not None and run_id in self.ttls:
                return self.ttls[run_id]
            return min(self.ttls.values(), default=settings.lease_ttl())

    def run_started(self, run_id: str = "", ttl: float | None = None) -> None:
        """A cached run of this process starts: register the process (the first run), and
        lease from now on if another live process is already there.  ``ttl``: the life of
        the leases the run takes (default ``NBFLOW_LEASE_TTL``)."""
        with self._lock:
            self.ttls[run_id] = settings.lease_ttl(ttl)
            self.runs += 1
            if self.runs > 1:
                return
        # (distinct from the last registration's: an UNREGISTER of that one, still queued,
        # must not delete this one's row)
        now, ttl = max(time.time(), self._registered + 1e-6), self.ttl()

        def register(conn: sqlite3.Connection) -> bool:
            # (what killed processes left behind is dropped here, once their rows expired)
            conn.execute("DELETE FROM lease_processes WHERE expires < ?", (now,))
            conn.execute("DELETE FROM leases WHERE expires < ?", (now,))
            others = [r for r in conn.execute(OTHERS, (HOST, os.getpid())).fetchall()
                      if alive(r[0], r[1], r[2], now)]
            conn.execute(REGISTER, (HOST, os.getpid(), now, now, now + ttl, 1 if others else 0))
            return bool(others)

        try:
            with self._db:
                others = self._txn(self._connection(), "registering for leases", register)
        except BaseException:
            with self._lock:
                self.runs -= 1
                self.ttls.pop(run_id, None)
            raise
        with self._lock:
            self.leasing = others  # (the first run of this process: nothing is in flight)
            self.ready = False
            self._registered = now
            # A watcher told to stop is never told to go on (it may be waking on its stop
            # event this very moment, and would end anyway): this run gets one of its own,
            # with a stop event of its own.
            if self._watcher is None or self._stop.is_set() or not self._watcher.is_alive():
                if self._stop.is_set():
                    self._stop = threading.Event()
                self._watcher = threading.Thread(target=self._watch, args=(self._stop,),
                                                 name="nbflow-lease", daemon=True)
                self._watcher.start()

    def run_finished(self, run_id: str) -> None:
        """A run ended: give up what it holds; the last one unregisters the process."""
        with self._lock:
            for k in [k for k, r in self.held.items() if r == run_id]:
                self.release(k)
            for k in [k for k, r in self.inflight.items() if r == run_id]:
                del self.inflight[k]
            self.ttls.pop(run_id, None)
            self.runs = max(0, self.runs - 1)
            if self.runs:
                return
            self._stop.set()
            watcher, registered = self._watcher, self._registered
        # (only the registration that ends here: a run started meanwhile in another thread
        # has registered the process again, and its row must stay)
        self.journal.put(UNREGISTER, (HOST, os.getpid(), registered))
        self._close_connection()  # (an open connection would keep the journal's WAL from
        #                            being checkpointed when the writer closes)
        if watcher is not None and watcher is not threading.current_thread():
            self._join(watcher)

    @staticmethod
    def _join(watcher: threading.Thread) -> None:
        """Wait for the watcher to end: no thread outlives the runs.  It wakes on its stop
        event at once, unless it is in a heartbeat or switch, which waits at most for the
        store's write lock (``NBFLOW_LOCK_TIMEOUT``) and for the journal's queue."""
        wait = min(RUN_END_WAIT, 2 * settings.lock_timeout() + 5.0)
        watcher.join(wait)
        if watcher.is_alive():
            log.warning("nbflow: the lease watcher did not end within %.0f s of the last run's end "
                        "(the store's write lock is held by another process); it ends in the "
                        "background", wait)

    def _others(self, conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        now = time.time()
        return [r for r in conn.execute(OTHERS, (HOST, os.getpid())).fetchall()
                if alive(r[0], r[1], r[2], now)]

    def _watch(self, stop: threading.Event) -> None:
        """The watcher thread: notice other processes, keep this one's rows alive; ends once
        ``stop`` (its own) is set."""
        conn = self.journal.reader()
        pid = os.getpid()
        next_beat = 0.0
        try:
            while not stop.wait(WATCH_EVERY):
                now = time.time()
                ttl = self.ttl()
                if not self.leasing and self._others(conn):
                    self._switch(conn)
                if now >= next_beat:
                    next_beat = now + ttl / 3
                    with self._lock:  # each lease lives as long as its run's TTL says
                        keys = [(k, self.ttls.get(r, ttl)) for k, r in self.held.items()]
                        leasing = 1 if self.leasing else 0

                    def beat(c: sqlite3.Connection, keys: list[tuple[str, float]] = keys, now: float = now,
                             ttl: float = ttl, leasing: int = leasing) -> None:
                        c.execute(PRESENT, (now, now + ttl, leasing, HOST, pid))
                        c.executemany(BEAT, [(now, now + t, k, pid, HOST) for k, t in keys])

                    self._txn(conn, "lease heartbeat", beat)
        except Exception:  # the store went away: the rows expire and others compute
            return
        finally:
            conn.close()

    def _switch(self, conn: sqlite3.Connection) -> None:
        """Another process appeared: lease what is in flight, make sure what was computed is
        committed, then say so (``leasing=1``), which the other process waits for."""
        now, pid = time.time(), os.getpid()
        with self._lock:
            self.leasing = True
            taken = dict(self.inflight)
            self.inflight.clear()
            self.held.update(taken)
            ttls = {r: self.ttls.get(r, settings.lease_ttl()) for r in taken.values()}
        self.journal.flush(settings.lock_timeout())  # results computed before now are stored

        def switch(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR IGNORE INTO leases(key, run_id, pid, host, task, heartbeat, expires) "
                          "VALUES(?,?,?,?,?,?,?)", [(k, r, pid, HOST, None, now, now + ttls[r])
                                                    for k, r in taken.items()])
            c.execute("UPDATE lease_processes SET leasing = 1 WHERE host = ? AND pid = ?", (HOST, pid))

        self._txn(conn, "switching to leases", switch)

    async def until_ready(self, conn: sqlite3.Connection) -> None:
        """Before the first lease decision: wait until every other live process leases too."""
        delay = POLL_FIRST
        while not self.ready:
            if all(r[3] for r in self._others(conn)):
                self.ready = True
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)

    # -- one key -------------------------------------------------------------------------

    def computing(self, key: str, run_id: str) -> bool:
        """A miss on ``key``: True when it is to be leased (:meth:`acquire`), else it is noted
        as in flight (the watcher leases it if another process appears meanwhile)."""
        with self._lock:
            if self.leasing:
                return True
            self.inflight[key] = run_id
            return False

    def acquire(self, key: str, run_id: str, task: str) -> Holder | bool:
        """Take the lease on ``key`` for ``run_id`` (blocking; call it in a worker thread).

        True: taken, compute.  False: the result is stored already.  A :class:`Holder`:
        another live run is computing it; wait (:meth:`wait`)."""
        ttl = self.ttl(run_id)
        pid = os.getpid()

        def take(conn: sqlite3.Connection) -> Holder | bool:
            if conn.execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone():
                return False
            h = self.holder(conn, key)
            now = time.time()
            if h is not None and live(h, now) and not (h.pid == pid and h.host == HOST):
                return h
            conn.execute(TAKE, (key, run_id, pid, HOST, task, now, now + ttl))
            return True

        with self._db:
            got: Holder | bool = self._txn(self._connection(), "taking a lease", take)
        if got is True:
            with self._lock:
                self.held[key] = run_id
        return got

    def done(self, key: str) -> None:
        """``key``'s result is stored, or its task ended without one: release its lease
        (queued behind the rows that store the result) or forget it in flight."""
        with self._lock:
            self.inflight.pop(key, None)
            self.release(key)

    def release(self, key: str) -> None:
        with self._lock:
            run_id = self.held.pop(key, None)
        if run_id is not None:
            self.journal.put(RELEASE, (key, run_id, os.getpid(), HOST))

    # -- waiting -------------------------------------------------------------------------

    def holder(self, conn: sqlite3.Connection, key: str) -> Holder | None:
        row = conn.execute("SELECT run_id, pid, host, task, expires FROM leases WHERE key = ?",
                           (key,)).fetchone()
        return Holder(*row) if row is not None else None

    async def wait(self, conn: sqlite3.Connection, key: str) -> str:
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

    def _close_connection(self) -> None:
        with self._db:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._close_connection()


UNREGISTER = Op("DELETE FROM lease_processes WHERE host = ? AND pid = ? AND started = ?", barrier=True)


def enabled(option: bool | None = None) -> bool:
    """Are leases on: the run's ``lease`` option, else ``NBFLOW_LEASE`` (default on)?"""
    return settings.leases_on(option)


def leases_of(store: Any) -> Leases:
    """The :class:`Leases` of ``store`` (made on first use)."""
    lz = getattr(store, "_leases", None)
    if lz is None:
        lz = store._leases = Leases(store.journal)
    return lz
