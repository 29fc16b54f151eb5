"""Who else writes to a store's journal: what ``nbflow doctor --repair`` must not race.

A repair moves the damaged journal aside and starts a new one.  A process that has the old
file open keeps it (SQLite holds the open file, not its name): whatever it commits after
the move lands in the journal moved aside, and is lost to the store.  So the repair first
looks for such processes, three ways, each seeing what the others cannot:

* the processes of this machine that have the journal's file open for writing, read from
  ``/proc`` (Linux; another user's processes cannot be read there).  A read-only
  connection (the dashboard's readers) is not counted: it loses nothing (it opens the
  ``-wal`` and ``-shm`` files for writing too, the database file read-only);
* the store's ``lease_processes`` rows (:mod:`.lease`): processes, on any host, running
  cached runs; live while the row has not expired and, on this host, the process exists;
* SQLite's write lock, taken and released at once: held, a commit of somebody's is in
  progress right now (any host, any user).

This process is never counted: its own journal finds a replaced file by itself (the
parked connection and the kept readers compare the file's identity before reuse).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import StoreError
from .lease import HOST, alive

PROC = Path("/proc")
LOCK_WAIT_S = 2.0  # a commit holds the write lock for milliseconds: longer is somebody's long transaction


class StoreInUse(StoreError):
    """``nbflow doctor --repair`` refused: other processes are writing to the store."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report  # what the check found (the doctor's report), for the command


@dataclass(frozen=True)
class Writer:
    """A process that may write to the journal."""

    pid: int
    host: str
    what: str  # its command line, or why it counts

    def describe(self) -> str:
        where = "" if self.host == HOST else f" on {self.host}"
        return f"process {self.pid}{where} ({self.what})"


def _open_for_writing(pid: int, fd: str) -> bool:
    """Is descriptor ``fd`` of ``pid`` open for writing (``/proc/PID/fdinfo``'s flags)?"""
    try:
        for line in (PROC / str(pid) / "fdinfo" / fd).read_text().splitlines():
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except (OSError, ValueError, IndexError):
        pass
    return True  # (unknown: counted, a refused repair can be run again; a lost row cannot)


def _cmdline(pid: int) -> str:
    try:
        words = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "its command line cannot be read"
    text = " ".join(" ".join(w.decode(errors="replace").split()) for w in words if w)  # (one line)
    return text if len(text) <= 100 else text[:97] + "..."


def _writes_to(pid: int, targets: set[str]) -> bool:
    """Has ``pid`` one of ``targets`` open for writing (False: not, gone, or not readable)?"""
    try:
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:  # gone meanwhile, or another user's
        return False
    for fd in fds:
        try:
            target = os.readlink(PROC / str(pid) / "fd" / fd)
        except OSError:
            continue
        if target in targets and _open_for_writing(pid, fd):
            return True
    return False


def local_writers(files: list[Path]) -> list[Writer]:
    """The other processes of this machine that have one of ``files`` open for writing
    (none where there is no ``/proc``)."""
    targets = {os.path.realpath(f) for f in files}
    try:
        pids = [int(e.name) for e in os.scandir(PROC) if e.name.isdigit()]
    except OSError:
        return []
    return [Writer(pid, HOST, _cmdline(pid)) for pid in pids
            if pid != os.getpid() and _writes_to(pid, targets)]


def leased_writers(journal: Path) -> list[Writer]:
    """The live processes of the journal's ``lease_processes`` rows, other than this one
    (none when the journal cannot be read)."""
    now = time.time()
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=LOCK_WAIT_S)
        try:
            rows = conn.execute("SELECT host, pid, heartbeat, expires FROM lease_processes").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [Writer(pid, host, f"running cached runs, heartbeat {max(0.0, now - beat):.0f} s ago")
            for host, pid, beat, expires in rows
            if (host, pid) != (HOST, os.getpid()) and alive(host, pid, expires, now)]


def write_lock_held(journal: Path) -> bool:
    """Is the journal's write lock held by another connection (waited for up to
    :data:`LOCK_WAIT_S`)?  Taken and released at once; a journal too damaged to be locked
    (not a database at all) cannot be written by anyone either: False."""
    conn = sqlite3.connect(journal, timeout=LOCK_WAIT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        return "locked" in str(e) or "busy" in str(e)
    except sqlite3.DatabaseError:
        return False
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    return False


def refuse_if_written(journal: Path, report: object = None) -> None:
    """Raise :class:`StoreInUse` if another process may be writing to ``journal`` (see the
    module); the message names them and says what to do."""
    if not journal.exists():
        return  # (nobody writes to a missing journal)
    writers = {(w.host, w.pid): w for w in leased_writers(journal)}
    writers.update({(w.host, w.pid): w for w in local_writers([journal])})  # (the command line wins)
    if writers:
        who = ", ".join(w.describe() for w in writers.values())
    elif write_lock_held(journal):
        who = ("a process this check cannot see, holding its write lock (another user's, or "
               "on another host)")
    else:
        return
    raise StoreInUse(
        f"nbflow doctor --repair: nothing was changed: the journal {journal} is open for writing "
        f"by {who}. Moving it aside now would lose the rows they write. Stop them (shut down or "
        "restart those kernels, let their batch runs and scripts end), then run `nbflow doctor "
        "--repair` again.", report)
