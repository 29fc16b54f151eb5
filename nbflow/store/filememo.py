"""File digests that outlive the process: the ``file_digests`` table of the journal.

``nf.File`` hashes a file's bytes once per content and keeps the digest with the file's
size, modification time (ns) and inode (:class:`nbflow.core.files.ContentDigests`).  In
memory only, every new kernel would read every big input file again before its first cache
hit.  :class:`FileMemo` keeps the same facts in the store: a digest is taken from it when
the path's size, mtime and inode are exactly those recorded, and recorded after each
hashing (through the journal's writer queue, off the caller's thread).  The store
installs it when a run gets its cache (:mod:`.hooks`); ``core`` knows only the small
protocol it implements.

``seen`` is when a row was last written or used (a use refreshes it at most once every
:data:`TOUCH_EVERY` seconds, so a hit costs no write in the common case).  ``nbflow gc``
prunes the table with :func:`prune`: rows whose file is gone or no longer has the recorded
size, mtime and inode (their digest can never be used again), and rows not used for
``--file-digest-age`` (default: ``--max-age`` if given, else 30 days).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

from .journal import Op, write_transaction

PUT_FILE_DIGEST = Op("INSERT OR REPLACE INTO file_digests(path, size, mtime_ns, inode, digest, seen) "
                     "VALUES(?,?,?,?,?,?)")
TOUCH_FILE_DIGEST = Op("UPDATE file_digests SET seen = ? WHERE path = ? AND digest = ?")
# A used row's ``seen`` is refreshed when it is older than this: gc's age rule is about days,
# so an hour of slack keeps hits free of writes.
TOUCH_EVERY = 3600.0


class FileMemo:
    """The ``file_digests`` table of one store (``nbflow.core.files.PersistentDigests``)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._conn: Any = None
        self._lock = threading.Lock()  # (called from worker threads; one connection)

    def get(self, path: str, sig: tuple[int, int, int]) -> str | None:
        with self._lock:
            if self._conn is None:
                self._conn = self.store.journal.reader()
            row = self._conn.execute("SELECT size, mtime_ns, inode, digest, seen FROM file_digests "
                                     "WHERE path = ?", (path,)).fetchone()
        if row is None or tuple(row[:3]) != tuple(sig):
            return None
        now = time.time()
        if row[4] is None or now - row[4] > TOUCH_EVERY:  # used: gc keeps it for another max-age
            self.store.journal.put(TOUCH_FILE_DIGEST, (now, path, row[3]))
        return str(row[3])

    def close(self) -> None:
        """Close the read connection (a run ended; the next lookup opens one again).  An
        open connection would keep the journal's WAL from being checkpointed."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def put(self, path: str, sig: tuple[int, int, int], digest: str) -> None:
        self.store.journal.put(PUT_FILE_DIGEST, (path, sig[0], sig[1], sig[2], digest, time.time()))


def file_memo(store: Any) -> FileMemo:
    """The :class:`FileMemo` of ``store`` (one per store)."""
    memo = getattr(store, "_file_memo", None)
    if memo is None:
        memo = store._file_memo = FileMemo(store)
    return memo


def _stale(path: str, sig: tuple[int, int, int]) -> bool:
    """True when ``path`` is gone or its (size, mtime_ns, inode) differ from ``sig``: the
    recorded digest can never be looked up again."""
    try:
        st = os.stat(path)  # (follows links, as nf.File does when it takes a digest)
    except OSError:
        return True
    return (st.st_size, st.st_mtime_ns, st.st_ino) != tuple(sig)


def prune(conn: sqlite3.Connection, *, unused_for: float | None, now: float, dry_run: bool) -> int:
    """Remove the ``file_digests`` rows of files that are gone or changed, and (with
    ``unused_for`` seconds) rows neither written nor used for that long; the number removed
    (or, with ``dry_run``, that would be)."""
    rows = conn.execute("SELECT path, size, mtime_ns, inode, digest, seen FROM file_digests").fetchall()
    doomed = [r for r in rows
              if _stale(r[0], (r[1], r[2], r[3]))
              or (unused_for is not None and (r[5] is None or now - r[5] > unused_for))]
    if dry_run or not doomed:
        return len(doomed)

    # Only the very row judged: another process may have recorded the file anew since.
    write_transaction(conn, lambda c: c.executemany(
        "DELETE FROM file_digests WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? "
        "AND digest = ? AND seen IS ?", doomed), "gc of file digests")
    return len(doomed)
