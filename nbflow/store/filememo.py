"""File digests that outlive the process: the ``file_digests`` table of the journal.

``nf.File`` hashes a file's bytes once per content and keeps the digest with the file's
size, modification time (ns) and inode (:class:`nbflow.core.files.ContentDigests`).  In
memory only, every new kernel would read every big input file again before its first cache
hit.  :class:`FileMemo` keeps the same facts in the store: a digest is taken from it when
the path's size, mtime and inode are exactly those recorded, and recorded after each
hashing (through the journal's writer queue, off the caller's thread).  The store
installs it when a run gets its cache (:mod:`.hooks`); ``core`` knows only the small
protocol it implements.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .journal import Op

PUT_FILE_DIGEST = Op("INSERT OR REPLACE INTO file_digests(path, size, mtime_ns, inode, digest, seen) "
                     "VALUES(?,?,?,?,?,?)")


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
            row = self._conn.execute("SELECT size, mtime_ns, inode, digest FROM file_digests WHERE path = ?",
                                     (path,)).fetchone()
        if row is None or tuple(row[:3]) != tuple(sig):
            return None
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
