"""The journal: one SQLite file that records runs and indexes stored results.

Why SQLite, and how it is used:

* **One file, many writers.**  Two kernels and a batch of papermill runs may share one
  store.  The database runs in WAL mode (readers never block the writer, nor it them);
  every write transaction starts with ``BEGIN IMMEDIATE`` so a writer waits for the write
  lock up front (inside SQLite's busy timeout) instead of failing half-way; a transaction
  that still meets "database is locked" is rolled back and retried with backoff, never
  reported to the user.
* **Off the hot path.**  Callers never write: they :meth:`Journal.put` an operation onto
  a queue (a deque append) and a single writer thread per process drains it, committing
  everything that has accumulated in one transaction (group commit).  Converting events
  to rows happens there too.  :meth:`Journal.flush` waits until what was queued before it
  is committed (read-your-writes for ``nf.runs()`` and friends); an ``atexit`` hook
  flushes on interpreter exit.
* **Crash safety.**  ``synchronous=NORMAL`` in WAL mode: a committed transaction survives
  the process being killed (SIGKILL) at any moment; a torn WAL tail is discarded by
  SQLite on the next open.  Only the last few milliseconds of queued rows can be lost,
  which for the cache means those tasks run again, never that a result is half there.
* **Versioned schema.**  ``PRAGMA user_version`` holds the schema version; opening a
  store runs the missing migration steps in one transaction, and refuses (clearly) a
  store written by a newer nbflow.

Tables: ``runs``; ``nodes`` (the graph of each run); ``task_runs`` (one row per attempt,
attempt 0 being a cache hit); ``events``; ``blobs`` (every stored result: its checksum
name, size, and the bytes themselves when small); ``cache`` (cache key -> result);
``fingerprints`` and ``code`` (what each task's last stored result was computed from, so
that a miss can say what changed).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import StoreError

log = logging.getLogger("nbflow.store")

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 30_000
GROUP_WINDOW = 0.05  # seconds the writer lets rows accumulate before a transaction
RUN_END_WAIT = 120.0  # seconds a finishing run waits for its rows to be committed

# MIGRATIONS[v] takes a store from version v-1 to v.  Append, never edit a released step.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)",
        """CREATE TABLE IF NOT EXISTS runs(
            id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
            start REAL, end REAL, duration_s REAL, backend TEXT, workers INTEGER,
            n_tasks INTEGER, host TEXT, pid INTEGER, cwd TEXT, error TEXT)""",
        "CREATE INDEX IF NOT EXISTS runs_start ON runs(start)",
        """CREATE TABLE IF NOT EXISTS nodes(
            run_id TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, task TEXT,
            kind TEXT, deps TEXT, PRIMARY KEY(run_id, idx)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS task_runs(
            run_id TEXT NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
            key TEXT NOT NULL, state TEXT NOT NULL, executor TEXT, start REAL, end REAL,
            duration_s REAL, cached INTEGER NOT NULL DEFAULT 0, output_bytes INTEGER,
            error TEXT, reason TEXT, cache_key TEXT, blob TEXT,
            PRIMARY KEY(run_id, idx, attempt)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS events(
            run_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, type TEXT NOT NULL,
            idx INTEGER, key TEXT, data TEXT, PRIMARY KEY(run_id, seq)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS blobs(
            key TEXT PRIMARY KEY, size INTEGER NOT NULL, inline BLOB, created REAL NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS cache(
            key TEXT PRIMARY KEY, blob TEXT NOT NULL, value_digest TEXT, task TEXT,
            size INTEGER, run_id TEXT, created REAL NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS cache_blob ON cache(blob)",
        """CREATE TABLE IF NOT EXISTS code(
            digest TEXT PRIMARY KEY, name TEXT, parts TEXT, notes TEXT)""",
        """CREATE TABLE IF NOT EXISTS fingerprints(
            workflow TEXT NOT NULL, key TEXT NOT NULL, task TEXT, cache_key TEXT NOT NULL,
            code TEXT, inputs TEXT, options TEXT, run_id TEXT, time REAL,
            PRIMARY KEY(workflow, key)) WITHOUT ROWID""",
    ],
    # 2: data moved between Dask workers (the locality room), one row per fetched result
    2: [
        """CREATE TABLE IF NOT EXISTS transfers(
            run_id TEXT NOT NULL, producer TEXT, consumer TEXT, from_worker TEXT,
            to_worker TEXT, bytes INTEGER, seconds REAL, start REAL)""",
        "CREATE INDEX IF NOT EXISTS transfers_run ON transfers(run_id)",
    ],
}



# -- operations the writer thread knows --------------------------------------------------


class Op:
    """A kind of write: one SQL statement, and optionally a function making its row.

    Within one transaction the rows of each kind are written together with one
    ``executemany``, in the order they were queued; kinds are written in the order they
    first appear.  A ``barrier`` kind (a DELETE) is never reordered: everything queued
    before it is written first.  ``convert`` (if any) runs on the writer thread, off the
    event loop.
    """

    __slots__ = ("barrier", "convert", "ncols", "prefix", "row", "sql", "urgent")

    def __init__(self, sql: str, convert: Callable[..., Sequence[Any]] | None = None, *,
                 barrier: bool = False, urgent: bool = False) -> None:
        self.sql = sql
        self.convert = convert
        self.barrier = barrier
        self.urgent = urgent  # commit without waiting for the group-commit window
        # "INSERT ... VALUES(?,?)": written as multi-row statements (see _write_rows)
        at = sql.upper().rfind("VALUES(")
        self.prefix = sql[: at + 6] if at >= 0 and sql.rstrip().endswith(")") else None
        self.row = sql[at + 6:].strip() if self.prefix else None
        self.ncols = self.row.count("?") if self.row else 0


def _write_rows(conn: sqlite3.Connection, op: Op, rows: list[Any], max_vars: int) -> None:
    """Write ``rows`` of one kind.  Inserts go as multi-row ``VALUES (..),(..)`` statements:
    SQLite releases the GIL around every statement step, and one step per row made the writer
    queue behind the event loop thread for the GIL once per row (milliseconds each)."""
    if op.prefix is None or len(rows) < 4:
        conn.executemany(op.sql, rows)
        return
    per = max(1, min(2000, max_vars // op.ncols))
    for j in range(0, len(rows), per):
        chunk = rows[j:j + per]
        sql = op.prefix + ",".join([op.row] * len(chunk))  # type: ignore[list-item]
        conn.execute(sql, [v for r in chunk for v in r])


_FLUSH = object()


def _max_variables(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    except (AttributeError, sqlite3.Error):  # Python < 3.11
        return 999


def _is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every nbflow connection uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-32000")  # 32 MB: a big run's pages stay in memory
        conn.execute("PRAGMA wal_autocheckpoint=4000")  # fewer checkpoints (each one fsyncs)
    return conn


def retrying(fn: Callable[[], Any], what: str, attempts: int = 60) -> Any:
    """Run ``fn`` (one whole transaction), retrying while the database is busy or locked."""
    delay = 0.005
    for n in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or n == attempts - 1:
                raise
            time.sleep(delay * (0.5 + random.random()))  # backoff with jitter, not a poll
            delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")  # pragma: no cover


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""

    def wal() -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network file system
            log.warning("nbflow: %s could not switch to WAL mode (%s); concurrent use is slower", path, mode)

    retrying(wal, "journal mode")

    def step() -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"the store {path} has schema version {found}, newer than this nbflow "
                    f"understands ({SCHEMA_VERSION}); upgrade nbflow, or point NBFLOW_HOME elsewhere"
                )
            for v in range(found + 1, SCHEMA_VERSION + 1):
                for sql in MIGRATIONS[v]:
                    conn.execute(sql)
            if found != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("INSERT OR REPLACE INTO meta VALUES('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
            return found
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    return retrying(step, "migration")


class Journal:
    """The SQLite file of a store and this process's writer thread for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = connect(path)
        try:
            migrate(conn, path)
        finally:
            conn.close()
        self._queue: deque[tuple[Any, Any]] = deque()
        self._wake = threading.Event()
        self._signalled = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last: threading.Thread | None = None
        self._active = 0
        self._flushing = 0
        self._urgent = False
        self._failed_batches = 0
        self.on_commit: list[Callable[[list[tuple[Any, Any]]], None]] = []
        _JOURNALS.add(self)

    # -- writing -------------------------------------------------------------------------
    #
    # The writer thread lives while runs are active or writes are queued: it exits when the
    # queue is empty and no run is active, and the next write starts it again.  So once a
    # run has returned, no thread it caused is left running.

    def put(self, op: Op, params: Any) -> None:
        """Queue one write (from any thread; cheap)."""
        self._queue.append((op, params))
        if not self._signalled:
            self._signal()
        if op.urgent:
            self._urgent = True
            self._wake.set()

    def put_many(self, op: Op, rows: Iterable[Any]) -> None:
        self._queue.extend((op, r) for r in rows)
        if not self._signalled:
            self._signal()

    def _signal(self) -> None:
        with self._lock:
            self._signalled = True
            if self._thread is None:
                self._thread = self._last = threading.Thread(target=self._main, name="nbflow-journal",
                                                             daemon=True)
                self._thread.start()
        self._wake.set()

    def run_started(self) -> None:
        """A run began writing: keep the writer thread alive until :meth:`run_finished`."""
        with self._lock:
            self._active += 1

    def run_finished(self) -> None:
        """A run ended: wait until its rows are committed (and, if it was the last active
        run, until the writer thread has exited)."""
        with self._lock:
            self._active -= 1
            last = self._active == 0
        if not self.flush(RUN_END_WAIT):
            log.warning("nbflow: the run journal %s is still busy after %.0f s (another process holds "
                        "its lock?); the run's last rows are written in the background", self.path,
                        RUN_END_WAIT)
            return
        if last:
            self._join_idle()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is committed; False on timeout."""
        if not self._queue and self._thread is None:
            return True
        done = threading.Event()
        self._flushing += 1
        try:
            self._queue.append((_FLUSH, done))
            self._signal()
            return done.wait(timeout)
        finally:
            self._flushing -= 1

    def close(self) -> None:
        """Commit everything queued and wait for the writer thread to exit."""
        self.flush()
        self._join_idle()

    def _join_idle(self) -> None:
        with self._lock:
            t = self._thread or self._last  # an exiting writer has already cleared _thread
            idle = self._active == 0
        if t is None or not idle or t is threading.current_thread():
            return
        while t.is_alive():  # it exits once idle, unless another run starts meanwhile
            t.join(0.1)
            with self._lock:
                if self._active > 0:
                    return

    def _main(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                self._wake.wait()
                if not self._flushing and not self._urgent:
                    # Group-commit window: let rows accumulate, so that the writer takes the
                    # GIL (and a transaction) a few times per second rather than per row.
                    self._wake.clear()
                    self._wake.wait(GROUP_WINDOW)
                self._wake.clear()
                self._signalled = False
                self._urgent = False
                self._drain(conn)
                with self._lock:
                    if not self._queue and self._active == 0:
                        self._thread = None
                        self._signalled = False
                        return
                    if self._queue:
                        self._signalled = True
                        self._wake.set()
        finally:
            conn.close()

    def _drain(self, conn: sqlite3.Connection) -> None:
        """Write everything queued, one transaction per batch (group commit)."""
        q = self._queue
        while q:
            batch: list[tuple[Any, Any]] = []
            markers: list[threading.Event] = []
            while q and len(batch) < 100_000:
                item = q.popleft()
                if item[0] is _FLUSH:
                    markers.append(item[1])
                else:
                    batch.append(item)
            if batch:
                self._commit(conn, batch)
            for m in markers:
                m.set()

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[Any, Any]]) -> None:
        groups: list[tuple[Op, list[Any]]] = []
        open_groups: dict[Op, list[Any]] = {}
        for op, params in batch:
            if op.convert is not None:
                try:
                    params = op.convert(*params)
                except Exception:  # a row we cannot make must not lose the others
                    log.warning("nbflow: could not record %r", params, exc_info=True)
                    continue
            if op.barrier:
                open_groups.clear()
                groups.append((op, [params]))
                continue
            rows = open_groups.get(op)
            if rows is None:
                rows = open_groups[op] = []
                groups.append((op, rows))
            rows.append(params)

        max_vars = _max_variables(conn)

        def txn() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op, rows in groups:
                    _write_rows(conn, op, rows, max_vars)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

        try:
            retrying(txn, "journal write", attempts=200)
        except Exception as e:
            self._failed_batches += 1
            log.warning("nbflow: the run journal %s could not record %d rows (%s: %s)",
                        self.path, len(batch), type(e).__name__, e)
            return
        for hook in self.on_commit:
            try:
                hook(batch)
            except Exception:  # pragma: no cover - hooks are ours and simple
                log.warning("nbflow: journal commit hook failed", exc_info=True)

    # -- reading -------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """A new connection for reading (the caller closes it)."""
        return connect(self.path)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Flush this process's writes, then run one read query."""
        self.flush()
        conn = self.reader()
        try:
            return retrying(lambda: conn.execute(sql, params).fetchall(), "query")
        finally:
            conn.close()


_JOURNALS: weakref.WeakSet[Journal] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for j in list(_JOURNALS):
        with contextlib.suppress(Exception):
            j.close()


atexit.register(_flush_all_at_exit)


def _after_fork_in_child() -> None:
    # The writer thread does not exist in a forked child; the child starts its own if it
    # writes.  Rows queued by the parent are the parent's to write.
    for j in list(_JOURNALS):
        j._thread = j._last = None
        j._queue = deque()
        j._signalled = False
        j._active = 0
        j._wake = threading.Event()
        j._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dumps(obj: Any) -> str:
    """JSON for journal columns (compact; unknown types as their str)."""
    return json.dumps(obj, separators=(",", ":"), default=str)
