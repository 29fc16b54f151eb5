"""Reading a store that cannot be written: its history stays readable.

A store on a read-only disk, in a read-only bind mount, or another user's directory cannot
be opened for runs (runs need to write), but its journal can still be read: ``nf.runs()``,
``nf.load_run(id)`` and ``nbflow runs`` fall back to :func:`open_readonly` when the normal
open fails.  It opens ``journal.sqlite`` with SQLite's read-only mode (and, when even the
WAL index cannot be created next to it, as an immutable file), checks that it is a
journal at all, and raises :class:`StoreError` naming the damage and ``nbflow doctor``
when it is not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .blobs import BlobStore
from .journal import SCHEMA_VERSION, StoreError
from .store import Store, describe_failure


class ReadOnlyJournal:
    """The read side of :class:`~nbflow.store.journal.Journal`, on a read-only file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._uri = None
        last: Exception | None = None
        for mode in ("mode=ro", "immutable=1"):
            uri = f"file:{path}?{mode}"
            try:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
                try:
                    version = conn.execute("PRAGMA user_version").fetchone()[0]
                    conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
                finally:
                    conn.close()
            except sqlite3.Error as e:
                last = e
                if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
                    break  # damage, not access: immutable mode would not help
                continue
            if version > SCHEMA_VERSION:
                raise StoreError(f"the store {path.parent} has schema version {version}, newer than "
                                 f"this nbflow understands ({SCHEMA_VERSION}); upgrade nbflow")
            self._uri = uri
            return
        assert last is not None
        raise StoreError(describe_failure(path.parent, last)) from last

    def flush(self, timeout: float | None = None) -> bool:
        return True  # nothing is ever queued here

    def reader(self) -> sqlite3.Connection:
        return sqlite3.connect(self._uri, uri=True, isolation_level=None,  # type: ignore[arg-type]
                               check_same_thread=False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = self.reader()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


class ReadOnlyStore:
    """Enough of a :class:`Store` for reading history and stored results."""

    load = Store.load  # (verifies checksums and signatures exactly as a writable store does)

    def __init__(self, home: Path) -> None:
        self.home = home
        if not (home / "journal.sqlite").is_file():
            raise StoreError(f"no nbflow store at {home} (no journal.sqlite there)")
        self.journal = ReadOnlyJournal(home / "journal.sqlite")
        self.blobs = BlobStore(home)

    def __repr__(self) -> str:
        return f"<nbflow read-only Store {self.home}>"


def open_readonly(home: Path) -> ReadOnlyStore:
    """The store at ``home`` for reading only (raises StoreError saying what is wrong)."""
    return ReadOnlyStore(home)
