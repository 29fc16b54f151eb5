"""Removing what crashed writers left behind, when a store is opened.

A result file is written as ``blobs/xab/.tmp-<pid>@<host>-<random>`` and renamed when
complete (:mod:`.blobs`).  A process killed mid-write leaves its temporary file behind,
possibly tens of megabytes.  When a process opens the store, temporary files whose writer
process is gone are deleted at once: the pid and host in the name say who owns the file.
Files of another host (a store on a shared file system) cannot be checked from here and
are left to the age rule below.  Files of an
older naming without a pid cannot be attributed, so they are removed only once they are
older than an hour (no write takes that long to finish).  Symbolic links are never
followed: a fan-out directory that is a link is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import stat
import time
from pathlib import Path

from ..core.processes import pid_alive

TMP_PREFIX = ".tmp-"
UNOWNED_AGE = 3600.0
HOST = hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()




def tmp_prefix() -> str:
    """The prefix of this process's temporary blob files (it names the owner)."""
    return f"{TMP_PREFIX}{os.getpid()}@{HOST}-"


def _owner(name: str) -> int | None:
    """The pid of the writer if it ran on this host (None: unknown, or another host)."""
    owner, sep, _ = name[len(TMP_PREFIX):].partition("-")
    pid, at, host = owner.partition("@")
    if not sep or not pid.isdigit() or (at and host != HOST):
        return None
    return int(pid)


def remove_stale_tmp(root: Path, now: float | None = None) -> tuple[int, int]:
    """Delete abandoned ``.tmp-*`` files under ``root`` (the blobs directory).

    Returns ``(files, bytes)`` removed.  Never raises for a file that vanished meanwhile.
    """
    now = time.time() if now is None else now
    files = freed = 0
    try:
        subs = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for sub in subs:
        if not sub.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(sub.path))
        except OSError:
            continue
        for e in entries:
            if not e.name.startswith(TMP_PREFIX):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                continue
            pid = _owner(e.name)
            if pid is not None:
                if pid_alive(pid):
                    continue
            elif now - st.st_mtime < UNOWNED_AGE:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)  # (unlink never follows a link: it removes the link itself)
                files += 1
                freed += st.st_size
    return files, freed
