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
  SQLite on the next open.  Rows still queued are lost: up to the group-commit window
  (``NBFLOW_COMMIT_WINDOW``, 50 ms) plus the commit itself, which for the cache means
  those tasks run again, never that a result is half there.
* **Versioned schema.**  ``PRAGMA user_version`` holds the schema version; opening a
  store reads it first without taking any lock and, only when steps are missing, runs them
  in one write transaction; a store written by a newer nbflow is refused (clearly).
* **Never wait forever.**  Every wait for another process's write lock is bounded
  (``NBFLOW_LOCK_TIMEOUT``, :mod:`.settings`) and announced in the log after a few seconds;
  a writer that cannot connect or commit retries with backoff, records the real failure in
  :attr:`Journal.failure`, and the run that was affected says so once.

Tables: ``runs``; ``nodes`` (the graph of each run); ``task_runs`` (one row per attempt,
attempt 0 being a cache hit); ``events``; ``blobs`` (every stored result: its checksum
name, size, and the bytes themselves when small); ``cache`` (cache key -> result);
``fingerprints`` and ``code`` (what each task's last stored result was computed from, so
that a miss can say what changed); ``cancel_requests`` (a run another process asked to
cancel: the dashboard writes the row, the run's own process watches for it); ``leases``
and ``lease_processes`` (a cache key a live run is computing, the processes running
cached runs, :mod:`.lease`); ``file_digests`` (content digests of
files by path, size, mtime and inode, :mod:`.filememo`).
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import NbflowError, StoreError
from . import parked, settings

log = logging.getLogger("nbflow.store")

SCHEMA_VERSION = 11
BUSY_TIMEOUT_MS = 30_000
GROUP_WINDOW = 0.05  # default of NBFLOW_COMMIT_WINDOW (see settings.commit_window)
# One SQLite busy wait: short, so that a long wait for a lock is a loop of these that can
# say what it waits for and give up at NBFLOW_LOCK_TIMEOUT (see retrying).
WRITE_BUSY_MS = 500
RUN_END_WAIT = 120.0  # seconds a finishing run waits for its rows to be committed
# How often the writer looks for cancel requests of the runs it watches (see watch_cancel):
# a request from the dashboard is seen within about this long.
CANCEL_POLL_S = 0.3

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
    # 2: each cache row signed with the user's key (store.signing), so a row cannot point a
    # cache key at another result.  Rows of version 1 have none: recomputed once.
    2: [
        "ALTER TABLE cache ADD COLUMN sig TEXT",
    ],
    # 3: task metrics of each attempt (nbflow.engine.metrics), read by nf.history().
    3: [
        "ALTER TABLE task_runs ADD COLUMN cpu_s REAL",
        "ALTER TABLE task_runs ADD COLUMN peak_rss INTEGER",
        "ALTER TABLE task_runs ADD COLUMN input_bytes INTEGER",
        "ALTER TABLE task_runs ADD COLUMN input_items INTEGER",
        "ALTER TABLE task_runs ADD COLUMN input_shape TEXT",
    ],
    # 4: batch runs (nbflow.batch): one row per `nbflow run` of a notebook, the workflow runs
    # it made, the parameters each run saw, and the named outputs a notebook recorded.
    4: [
        """CREATE TABLE IF NOT EXISTS batches(
            id TEXT PRIMARY KEY, kind TEXT, notebook TEXT, output TEXT, status TEXT NOT NULL,
            start REAL, end REAL, duration_s REAL, parameters TEXT, options TEXT, host TEXT,
            pid INTEGER, cwd TEXT, error TEXT, parent TEXT)""",
        """CREATE TABLE IF NOT EXISTS batch_runs(
            batch_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY(batch_id, run_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS run_params(
            run_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT, PRIMARY KEY(run_id, name)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS outputs(
            owner TEXT NOT NULL, name TEXT NOT NULL, run_id TEXT, batch_id TEXT, type TEXT,
            data BLOB NOT NULL, size INTEGER, preview TEXT, created REAL NOT NULL,
            PRIMARY KEY(owner, name)) WITHOUT ROWID""",
    ],
    # 5: cancel requests from other processes (the dashboard); the run's process watches them.
    # nodes.inputs: a map node's traced inputs, kept when its deps become its items at run
    # time, so the dashboard can redraw the graph as the live widget drew it.
    5: [
        """CREATE TABLE IF NOT EXISTS cancel_requests(
            run_id TEXT PRIMARY KEY, requested REAL NOT NULL, requested_by TEXT, host TEXT)""",
        "ALTER TABLE nodes ADD COLUMN inputs TEXT",
    ],
    # 6: data moved between Dask workers (the locality room), one row per fetched result
    6: [
        """CREATE TABLE IF NOT EXISTS transfers(
            run_id TEXT NOT NULL, producer TEXT, consumer TEXT, from_worker TEXT,
            to_worker TEXT, bytes INTEGER, seconds REAL, start REAL)""",
        "CREATE INDEX IF NOT EXISTS transfers_run ON transfers(run_id)",
    ],
    # 7: what each attempt printed (nbflow.engine.taskoutput), read by run.logs(key).
    7: [
        "ALTER TABLE task_runs ADD COLUMN output TEXT",
    ],
    # 8: leases (nbflow.store.lease): the cache key a live run is computing, so another
    # process running the same task waits for its result instead of computing it too; and
    # file digests (nbflow.store.filememo), so a new process does not re-read untouched files.
    8: [
        """CREATE TABLE IF NOT EXISTS leases(
            key TEXT PRIMARY KEY, run_id TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
            task TEXT, heartbeat REAL NOT NULL, expires REAL NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS lease_processes(
            host TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,
            heartbeat REAL NOT NULL, expires REAL NOT NULL, leasing INTEGER NOT NULL,
            PRIMARY KEY(host, pid)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS file_digests(
            path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL, digest TEXT NOT NULL, seen REAL)""",
    ],
    # 9: one events row for a batched map's chunk (nbflow.store.eventrows): ``items`` is the
    # number of per-item events it stands for (NULL: a row of one event).  Readers expand it.
    9: [
        "ALTER TABLE events ADD COLUMN items INTEGER",
    ],
    # 10: per-run, per-task sums of the measured columns (nbflow.store.summary), written as a
    # run ends, so that preparing the next run reads a row per task instead of every attempt.
    # A row with task '' sums the whole run and marks it summarised (older runs have none).
    10: [
        """CREATE TABLE IF NOT EXISTS task_means(
            run_id TEXT NOT NULL, task TEXT NOT NULL,
            n_duration INTEGER, sum_duration REAL, n_output INTEGER, sum_output REAL,
            n_input INTEGER, sum_input REAL, n_cpu INTEGER, sum_cpu REAL,
            n_rss INTEGER, sum_rss REAL, peaks INTEGER,
            PRIMARY KEY(run_id, task)) WITHOUT ROWID""",
    ],
    # 11: a workflow's runs by start time.  Every "recent runs of this workflow" question (a
    # run's preparation, the dashboard's and `nbflow runs`' filter by name) walked runs_start
    # from the newest run of *any* workflow, so its cost grew with every run in the store.
    # The same for a notebook's batches (`nbflow run`'s expected duration, --resume).
    11: [
        "CREATE INDEX IF NOT EXISTS runs_name_start ON runs(name, start)",
        "CREATE INDEX IF NOT EXISTS batches_notebook_start ON batches(notebook, start)",
    ],
}



class StoreBusy(StoreError):
    """Another process held the store's write lock longer than ``NBFLOW_LOCK_TIMEOUT``."""


# -- operations the writer thread knows --------------------------------------------------


class Op:
    """A kind of write: one SQL statement, and optionally a function making its row.

    Within one transaction the rows of each kind are written together with one
    ``executemany``, in the order they were queued; kinds are written in the order they
    first appear.  A ``barrier`` kind (a DELETE) is never reordered: everything queued
    before it is written first.  ``convert`` (if any) runs on the writer thread, off the
    event loop.  With ``many``, ``convert`` makes many rows from one queued item (the items
    of a batched chunk: one queue entry, one call, for all of them) and returns them with
    the Op that writes them: ``(op, rows)``.
    """

    __slots__ = ("barrier", "convert", "many", "ncols", "prefix", "row", "sparse", "sql", "urgent")

    def __init__(self, sql: str, convert: Callable[..., Any] | None = None, *,
                 barrier: bool = False, urgent: bool = False, many: bool = False,
                 sparse: bool = False) -> None:
        self.sql = sql
        self.convert = convert
        self.many = many
        # An insert whose rows often leave columns NULL: a column that is NULL in every row
        # written together is left out of the statement (see _without_empty_columns).
        self.sparse = sparse
        self.barrier = barrier
        self.urgent = urgent  # commit without waiting for the group-commit window
        # "INSERT ... VALUES(?,?)": written as multi-row statements (see _write_rows)
        at = sql.upper().rfind("VALUES(")
        self.prefix = sql[: at + 6] if at >= 0 and sql.rstrip().endswith(")") else None
        self.row = sql[at + 6:].strip() if self.prefix else None
        self.ncols = self.row.count("?") if self.row else 0


_SIZES = (1024, 256, 64, 16)  # rows per multi-row statement (see _write_rows)
_NARROW: dict[tuple[str, tuple[int, ...]], Op] = {}  # (sql, kept columns) -> the narrower insert


def _without_empty_columns(op: Op, rows: list[Any]) -> tuple[Op, list[Any]]:
    """The same rows without the columns that are NULL in all of them, and the insert that
    writes only the others (which leaves those NULL too).  SQLite's cost of a row grows
    with the values bound to it (~0.5 µs each here); a task's row has ~20 columns, half of
    them usually empty (no error, no stored result, no printed output, no input features)."""
    cols = list(zip(*rows, strict=True))
    keep = tuple(k for k, c in enumerate(cols) if c.count(None) < len(c))
    if len(keep) == len(cols):
        return op, rows
    narrow = _NARROW.get((op.sql, keep))
    if narrow is None:
        head, _, _ = op.sql.partition(" VALUES")
        table, _, names = head.partition("(")
        names_list = [c.strip() for c in names.rstrip(")").split(",")]
        narrow = _NARROW[(op.sql, keep)] = Op(
            f"{table}({', '.join(names_list[k] for k in keep)}) VALUES({','.join('?' * len(keep))})")
    return narrow, list(zip(*[cols[k] for k in keep], strict=True))


def _write_rows(conn: sqlite3.Connection, op: Op, rows: list[Any], max_vars: int) -> None:
    """Write ``rows`` of one kind.  Inserts go as multi-row ``VALUES (..),(..)`` statements:
    SQLite releases the GIL around every statement step, and one step per row made the writer
    queue behind the event loop thread for the GIL once per row (milliseconds each).

    The statements have a few fixed sizes (:data:`_SIZES` rows), the rest goes row by row:
    compiling a statement costs about as much per row as running it, and a statement of
    any other length would be compiled afresh for every commit (the connection caches
    compiled statements by their text), which doubled the cost of a run of short tasks."""
    if op.sparse and rows:
        op, rows = _without_empty_columns(op, rows)
    n = len(rows)
    if op.prefix is None or n < _SIZES[-1]:
        conn.executemany(op.sql, rows)
        return
    most = max_vars // op.ncols
    j = 0
    for size in _SIZES:
        if size > most:
            continue
        if n - j >= size:
            sql = op.prefix + ",".join([op.row] * size)  # type: ignore[list-item]
            while n - j >= size:
                chunk = rows[j:j + size]
                conn.execute(sql, [v for r in chunk for v in r])
                j += size
    if j < n:
        conn.executemany(op.sql, rows[j:])


_FLUSH = object()


def _max_variables(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))  # type: ignore[attr-defined]  # (3.11+)
    except (AttributeError, sqlite3.Error):  # Python < 3.11
        return 999


def _is_busy(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


def connect(path: Path, *, readonly: bool = False, busy_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """A connection with the pragmas every nbflow connection uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=busy_ms / 1000,
                               isolation_level=None, check_same_thread=False)
    else:
        _create_private(path)
        conn = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None,
                               check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    if not readonly:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-32000")  # 32 MB: a big run's pages stay in memory
        conn.execute("PRAGMA wal_autocheckpoint=4000")  # fewer checkpoints (each one fsyncs)
    return conn


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its -wal and -shm
    files the same mode); an existing file is left as it is."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def retrying(fn: Callable[[], Any], what: str, attempts: int = 60, *, path: Any = None) -> Any:
    """Run ``fn`` (one whole transaction), retrying while the database is busy or locked.

    Gives up with :class:`StoreBusy` once the lock has been waited for ``NBFLOW_LOCK_TIMEOUT``
    seconds in total (or after ``attempts`` tries), and logs once, after
    ``NBFLOW_LOCK_NOTICE`` seconds, that it is waiting.
    """
    delay = 0.005
    start = time.monotonic()
    limit = notice = 0.0  # (read at the first wait: most transactions and queries never wait)
    told = False
    n = 0
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e):
                raise
            n += 1
            if n == 1:
                limit, notice = settings.lock_timeout(), settings.lock_notice()
            waited = time.monotonic() - start
            if waited >= limit or n >= attempts:
                raise StoreBusy(
                    f"the run store {path or ''} stayed locked by another process for {waited:.1f} s "
                    f"({what}); another nbflow process (or a program holding journal.sqlite open "
                    "in a write transaction) has its write lock. Wait for it, stop it, or raise "
                    "NBFLOW_LOCK_TIMEOUT"
                ) from e
            if not told and waited >= notice:
                told = True
                log.warning("nbflow: waiting for the write lock of the run store %s (%s) for %.1f s "
                            "already; another process holds it (giving up after %.0f s)",
                            path or "", what, waited, limit)
            time.sleep(delay * (0.5 + random.random()))  # backoff with jitter, not a poll
            delay = min(delay * 2, 0.25)



def write_transaction(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], Any], what: str,
                      *, path: Any = None) -> Any:
    """``body(conn)`` as one ``BEGIN IMMEDIATE`` transaction, committed, or rolled back if it
    raises; retried while another process holds the write lock (see :func:`retrying`).
    ``body`` may run more than once, so it must only touch the database."""
    def txn() -> Any:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return out

    return retrying(txn, what, path=path)

def _current(conn: sqlite3.Connection, path: Path) -> int | None:
    """The schema version if the store needs no write to be used (current schema, WAL mode
    already on), read without taking the write lock; None if a migration is needed."""
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    except sqlite3.OperationalError as e:
        if _is_busy(e):
            return None
        raise
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the store {path} has schema version {found}, newer than this nbflow "
            f"understands ({SCHEMA_VERSION}); upgrade nbflow, or point NBFLOW_HOME elsewhere"
        )
    return found if found == SCHEMA_VERSION and mode == "wal" else None


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
    found = _current(conn, path)
    if found is not None:  # the common case: no write, no lock, nothing to wait for
        return found

    def wal() -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. a network file system
            log.warning("nbflow: %s could not switch to WAL mode (%s); concurrent use is slower", path, mode)

    retrying(wal, "journal mode", path=path)

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

    return retrying(step, "migration", path=path)


class Journal:
    """The SQLite file of a store and this process's writer thread for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = connect(path, busy_ms=WRITE_BUSY_MS)
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
        self._holds = 0  # (see hold: while > 0 a write does not start the writer thread)
        self._owed = False  # a write came while held: the writer starts at the last release
        self._flushing = 0
        self._urgent = False
        self._failed_batches = 0
        # The last thing that went wrong writing (None while all is well): what a run that
        # lost rows reports, instead of guessing.  ``failures`` counts them.
        self.failure: str | None = None
        self.failures = 0
        self.on_commit: list[Callable[[list[tuple[Any, Any]]], None]] = []
        # Runs whose cancel requests the writer looks for (see watch_cancel): run id -> what
        # to call when one appears; ``cancel_polls`` counts the queries made.
        self._cancel_watch: dict[str, Callable[[], None]] = {}
        self._next_poll = 0.0
        self.cancel_polls = 0
        _JOURNALS.add(self)

    # -- writing -------------------------------------------------------------------------
    #
    # The writer thread lives while runs are active or writes are queued: it exits when the
    # queue is empty and no run is active, and the next write starts it again.  So once a
    # run has returned, no thread it caused is left running, except for rows the run left
    # to come: a Dask run's transfer rows, read after it returned, hold the writer (as a run
    # does: run_started/run_finished) until they are committed, so the run's writer writes
    # them instead of a second one started for them.  Its connection is not
    # closed but parked for the next writer (.parked: opening and the checkpoint of the
    # last close cost more than a small run's rows).  A Dask run's start holds the writer's
    # start back until its first graph is out (see hold).

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

    def _signal(self, force: bool = False) -> None:
        with self._lock:
            self._signalled = True
            if self._thread is None:
                if self._holds and not force:  # (started at the last release: see hold)
                    self._owed = True
                    return
                self._owed = False
                self._thread = self._last = threading.Thread(target=self._main, name="nbflow-journal",
                                                             daemon=True)
                # (woken before it starts: set after, it could land once the new writer had
                # begun its group-commit window, and cut that window short)
                self._wake.set()
                self._thread.start()
                return
        self._wake.set()

    def hold(self) -> Callable[[], None]:
        """Keep the writer thread from being *started* until the returned function is
        called (once; calling it again does nothing); holds nest.

        Rows put meanwhile are queued as always, and a writer already running is woken as
        always; a :meth:`flush` (a read of this process's writes, a run's end, the
        interpreter's exit) starts it regardless.  A writer started by the last release
        commits what was put meanwhile within its group-commit window, even a row that
        asked to be committed at once (a run's first row): whoever held it is busy.  Why:
        starting a thread waits for the new thread to run, and it then takes the GIL for
        its start and its first commit.  A Dask run's start put its first rows on the path
        to its first graph: 0.3 ms on a quiet machine, over 1.5 ms under load, while the
        scheduler's thread in this process sat idle waiting for that graph; committed at
        once after the graph, they took the GIL from the scheduler handling it
        (``Run.defer_until_started`` holds the writer until the graph is in Dask's client;
        ``benchmarks/RESULTS.md``, Session 12 (B))."""
        with self._lock:
            self._holds += 1
        pending = [True]

        def release() -> None:
            with self._lock:
                if not pending:
                    return
                pending.clear()
                self._holds -= 1
                owed = self._holds == 0 and self._owed
                if owed:  # (what came meanwhile, urgent or not, waits the window: see above)
                    self._urgent = False
            if owed:
                self._signal()

        return release

    def watch_cancel(self, run_id: str, on_request: Callable[[], None]) -> None:
        """Call ``on_request()`` (once, on the writer thread) when a cancel request for
        ``run_id`` appears in the ``cancel_requests`` table (another process wrote it: the
        dashboard).  The writer thread, which lives while a run is journaled and wakes every
        group-commit window anyway, looks with one indexed query every
        :data:`CANCEL_POLL_S` seconds for all the runs it watches: no thread and no
        connection of its own per run.  The first look is :data:`CANCEL_POLL_S` after the
        watch begins (a run shorter than that costs no query), and it sees a request
        written before then too."""
        with self._lock:
            first = not self._cancel_watch
            if first:
                self._next_poll = time.monotonic() + CANCEL_POLL_S
            self._cancel_watch[run_id] = on_request
            asleep = first and self._thread is not None
        if asleep:  # (a writer already running sleeps until rows come: it must look from now)
            self._wake.set()

    def unwatch_cancel(self, run_id: str) -> None:
        """Stop looking for ``run_id``'s cancel request (its run ended)."""
        with self._lock:
            self._cancel_watch.pop(run_id, None)

    def _poll_timeout(self) -> float | None:
        """How long the writer may sleep before its next look for cancel requests (None:
        no run is watched, sleep until woken)."""
        if not self._cancel_watch:
            return None
        return max(0.0, self._next_poll - time.monotonic())

    def _poll_cancels(self, conn: sqlite3.Connection) -> None:
        """One query for every watched run's cancel request, when it is time to look."""
        now = time.monotonic()
        if not self._cancel_watch or now < self._next_poll:
            return
        self._next_poll = now + CANCEL_POLL_S
        with self._lock:
            ids = list(self._cancel_watch)
        try:
            hits = conn.execute(f"SELECT run_id FROM cancel_requests WHERE run_id IN "
                                f"({','.join('?' * len(ids))})", ids).fetchall()
        except sqlite3.Error:  # busy, or the table not there yet: look again next time
            return
        finally:
            self.cancel_polls += 1
        for (run_id,) in hits:
            with self._lock:
                call = self._cancel_watch.pop(run_id, None)
            if call is not None:
                try:
                    call()
                except Exception:  # pragma: no cover - the callbacks are ours and simple
                    log.warning("nbflow: cancelling run %s failed", run_id, exc_info=True)

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
        wait = min(RUN_END_WAIT, settings.lock_timeout() + 5.0)
        if not self.flush(wait):
            why = self.failure or "its write lock is held by another process"
            log.warning("nbflow: the run journal %s could not commit this run's last rows within "
                        "%.0f s (%s); they are written in the background", self.path, wait, why)
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
            self._signal(force=True)  # (a reader or a run's end waits: never held back)
            return done.wait(timeout)
        finally:
            self._flushing -= 1

    def close(self) -> None:
        """Commit everything queued, wait for the writer thread to exit, and close its
        connection."""
        self.flush()
        self._join_idle()
        parked.close(self)
        # (and this thread's kept reader: the last connection to close folds the WAL into
        # the database file, which a copy of the file alone then holds)
        close_kept_readers(self)

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

    def _connect(self) -> sqlite3.Connection | None:
        """The writer's connection, retried with backoff; None (failure recorded) if the
        database cannot be opened at all -- the queued rows are then dropped, so that no
        one waits for them, and the next write starts a new writer that tries again."""
        delay = 0.05
        deadline = time.monotonic() + min(5.0, settings.lock_timeout())
        while True:
            try:
                conn = connect(self.path, busy_ms=WRITE_BUSY_MS)
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # a real, usable journal?
                return conn
            except (sqlite3.Error, OSError) as e:
                with contextlib.suppress(Exception):
                    conn.close()
                permanent = isinstance(e, sqlite3.DatabaseError) and not (
                    isinstance(e, sqlite3.OperationalError) and _is_busy(e))
                if permanent or time.monotonic() + delay > deadline:  # (damage does not heal)
                    self._record_failure(f"cannot open {self.path} ({type(e).__name__}: {e})")
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _record_failure(self, what: str) -> None:
        repeated = what == self.failure
        self.failure = what
        self.failures += 1
        if not repeated:  # (a store that stays broken is reported once, not per batch)
            log.warning("nbflow: the run journal failed: %s", what)

    def _drop_queue(self) -> None:
        """Without a database: release everyone waiting (flush markers), drop the rows."""
        q = self._queue
        while q:
            item = q.popleft()
            if item[0] is _FLUSH:
                item[1].set()

    def _main(self) -> None:
        # (the previous writer's connection when the files are as it left them: see .parked)
        conn = parked.take(self, self.path) or self._connect()
        if conn is None:
            with self._lock:
                self._drop_queue()
                self._thread = None
                self._signalled = False
            return
        try:
            window = settings.commit_window()
        except NbflowError:  # (refused when the run started; never kill the writer over it)
            window = GROUP_WINDOW
        self.window = window  # the group-commit window this writer uses (seconds)
        idle = False
        try:
            while True:
                # (with runs to watch for cancel requests, it wakes to look at least every
                # CANCEL_POLL_S; otherwise only when rows are queued)
                if self._wake.wait(self._poll_timeout()):
                    if not self._flushing and not self._urgent and window > 0:
                        # Group-commit window: let rows accumulate, so that the writer takes
                        # the GIL (and a transaction) a few times per second rather than per row.
                        self._wake.clear()
                        self._wake.wait(window)
                    self._wake.clear()
                    self._signalled = False
                    self._urgent = False
                    self._drain(conn)
                self._poll_cancels(conn)
                with self._lock:
                    if not self._queue and self._active == 0:
                        self._thread = None
                        self._signalled = False
                        idle = True
                        return
                    if self._queue:
                        self._signalled = True
                        self._wake.set()
        finally:
            if idle:  # (every transaction has ended: kept for the next writer, see .parked)
                parked.park(self, conn, self.path)
            else:
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
            if op.many:  # (convert gave (the Op that writes them, rows))
                sub, many = params
                rows = open_groups.get(sub)
                if rows is None:
                    rows = open_groups[sub] = []
                    groups.append((sub, rows))
                rows.extend(many)
            else:
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
            retrying(txn, "journal write", attempts=1_000_000, path=self.path)
        except Exception as e:
            self._failed_batches += 1
            self._record_failure(f"could not record {len(batch)} rows in {self.path} "
                                 f"({type(e).__name__}: {e})")
            if isinstance(e, StoreBusy):  # the wait was bounded once: the rows queued behind
                with self._lock:          # this batch are dropped too, not waited for again
                    self._drop_queue()
            return
        for hook in self.on_commit:
            try:
                hook(batch)
            except Exception:  # pragma: no cover - hooks are ours and simple
                log.warning("nbflow: journal commit hook failed", exc_info=True)

    # -- reading -------------------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """A new connection for reading (the caller closes it)."""
        return connect(self.path, busy_ms=WRITE_BUSY_MS)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Flush this process's writes, then run one read query (inside
        :func:`one_reader`, through the block's connection)."""
        self.flush()
        held = getattr(_held, "conns", None)
        if held is not None:
            conn = held.get(self)
            if conn is None:
                conn = held[self] = _held.pool.pop(self, None) or self.reader()
            return retrying(lambda: conn.execute(sql, params).fetchall(), "query", path=self.path)
        conn = self.reader()
        try:
            return retrying(lambda: conn.execute(sql, params).fetchall(), "query", path=self.path)
        finally:
            conn.close()


_held = threading.local()  # .conns: {Journal: its reader} inside one_reader() blocks


@contextlib.contextmanager
def one_reader(keep: bool = False) -> Iterator[None]:
    """Within the block (in this thread), :meth:`Journal.query` reads each journal through
    one connection, opened at its first query and closed when the block ends.  Opening a
    connection costs ~0.6 ms of CPU (the file, the pragmas), more than a small query: a
    run being prepared asks the store two or three questions about its history.  Each query
    is still its own read (autocommit), so it sees every commit made before it.  With
    ``keep`` the connections stay open for this thread's next such block (a run's
    preparation: one per run), while the journal file is the same and in the same process."""
    if getattr(_held, "conns", None) is not None:  # (nested: the outer block's connections)
        yield
        return
    _held.conns = {}
    _held.pool = _kept_readers() if keep else {}  # (taken by the first query of each journal)
    try:
        yield
    finally:
        conns, _held.conns = _held.conns, None
        unused, _held.pool = _held.pool, {}
        if keep:  # (only the journals read in this block stay open; a block that read none,
            if not conns:  # e.g. a preparation told its history ahead, leaves them as they were)
                conns, unused = unused, {}
            _kept.conns = {j: (c, os.getpid(), _file_id(j.path)) for j, c in conns.items()}
            conns = unused
        else:
            conns.update(unused)
        for conn in conns.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()


_kept = threading.local()  # .conns: {Journal: (reader, pid, file id)} between one_reader(keep=True)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def close_kept_readers(journal: Journal | None = None) -> None:
    """Close this thread's readers kept by ``one_reader(keep=True)`` (of ``journal`` only,
    if given)."""
    kept = getattr(_kept, "conns", None) or {}
    for j in [j for j in kept if journal is None or j is journal]:
        conn = kept.pop(j)[0]
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def _kept_readers() -> dict[Journal, sqlite3.Connection]:
    """This thread's kept readers that still read the journal's file (not one replaced or
    removed since), in this process (a forked child opens its own)."""
    out = {}
    pid = os.getpid()
    for j, (conn, owner, file_id) in (getattr(_kept, "conns", None) or {}).items():
        if owner != pid:
            continue
        if file_id is not None and _file_id(j.path) == file_id:
            out[j] = conn
        else:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
    _kept.conns = {}
    return out


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
        j._holds = 0
        j._owed = False
        j._wake = threading.Event()
        j._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dumps(obj: Any) -> str:
    """JSON for journal columns (compact; unknown types as their str)."""
    return json.dumps(obj, separators=(",", ":"), default=str)
