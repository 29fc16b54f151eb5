"""The journal writer's connection, kept between runs.

The journal's writer thread lives only while a run is active or rows are queued (so no
thread outlives the run that caused it), and it used to open its SQLite connection when it
started and close it when it exited: twice per run on Dask (the run's rows, then the
transfer rows its end-of-run read brings back). Opening costs the file, the WAL index and
the pragmas (~1 ms of CPU); closing the process's last connection *checkpoints* the WAL into
the database, with its fsyncs, on the path of the run's return (the run waits for its rows
to be committed and the writer to exit).

So an exiting writer parks its connection here and the next writer of the same journal
takes it back. A parked connection is idle (autocommit, no transaction open, no lock
held), and only one is kept per process (the latest journal's): a process that used many
stores does not keep many files open.  Checkpoints happen as SQLite's automatic ones
(``wal_autocheckpoint``) and when the journal is closed (interpreter exit).

It is taken back only if the journal's files are the ones it was left with (same device
and inode of the database and of its ``-wal`` file) and the database file itself was not
written since (same size and modification time: only checkpoints write it; other
connections' commits go to the ``-wal`` file, which SQLite keeps every connection right
through).  Any such change (the file replaced by ``nbflow doctor``, deleted, damaged, a
checkpoint by another process) closes it and the writer opens a fresh connection, as it
always did.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
# (owner, connection, the files' stamp when parked); at most one, guarded by _lock
_parked: tuple[Any, sqlite3.Connection, tuple[Any, ...]] | None = None
# Connections inherited by a forked child: never used nor closed there (closing would let
# SQLite believe it holds the last connection and checkpoint under the parent's feet).
_inherited: list[sqlite3.Connection] = []


def _stamp(path: Path) -> tuple[Any, ...]:
    """What must not change for a parked connection to be used again: the database file
    (which only a checkpoint writes; SQLite keeps the connection right through writes to
    the ``-wal`` file by other connections, so those may change it) and which files the
    database and its ``-wal`` are."""
    out: list[Any] = []
    for p, whole in ((path, True), (Path(f"{path}-wal"), False)):
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if whole else (st.st_dev, st.st_ino))
    return tuple(out)


def park(owner: Any, conn: sqlite3.Connection, path: Path) -> None:
    """Keep ``conn`` (idle) for ``owner``'s next writer; any other parked one is closed."""
    global _parked
    stamp = _stamp(path)
    with _lock:
        old, _parked = _parked, (owner, conn, stamp)
    if old is not None and old[1] is not conn:
        with contextlib.suppress(sqlite3.Error):
            old[1].close()


def take(owner: Any, path: Path) -> sqlite3.Connection | None:
    """``owner``'s parked connection if its files are as they were left, else None (and
    a parked connection that may no longer be right is closed)."""
    global _parked
    with _lock:
        got = _parked
        if got is None or got[0] is not owner:
            return None
        _parked = None
    conn = got[1]
    if _stamp(path) == got[2]:
        return conn
    with contextlib.suppress(sqlite3.Error):
        conn.close()
    return None


def close(owner: Any) -> None:
    """Close ``owner``'s parked connection, if any (the journal is being closed)."""
    global _parked
    with _lock:
        got = _parked
        if got is None or got[0] is not owner:
            return
        _parked = None
    with contextlib.suppress(sqlite3.Error):
        got[1].close()


def is_parked(owner: Any) -> bool:
    """Whether ``owner`` has a connection parked here."""
    got = _parked
    return got is not None and got[0] is owner


def _after_fork_in_child() -> None:
    global _parked, _lock
    _lock = threading.Lock()  # (another thread may have held it at the fork)
    if _parked is not None:
        _inherited.append(_parked[1])
    _parked = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
