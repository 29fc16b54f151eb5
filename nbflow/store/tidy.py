"""Removing what crashed writers left behind, when a store is opened.

A result file is written as ``blobs/xab/.tmp-<pid>-<random>`` and renamed when complete
(:mod:`.blobs`).  A process killed mid-write leaves its temporary file behind, possibly
tens of megabytes.  When a process opens the store, temporary files whose writer process
is gone are deleted at once: the pid in the name says who owns the file.  Files of an
older naming without a pid cannot be attributed, so they are removed only once they are
older than an hour (no write takes that long to finish).  Symbolic links are never
followed: a fan-out directory that is a link is skipped.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"
UNOWNED_AGE = 3600.0


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return pid > 0


def tmp_prefix() -> str:
    """The prefix of this process's temporary blob files (it names the owner)."""
    return f"{TMP_PREFIX}{os.getpid()}-"


def _owner(name: str) -> int | None:
    pid, sep, _ = name[len(TMP_PREFIX):].partition("-")
    return int(pid) if sep and pid.isdigit() else None


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
                if _pid_alive(pid):
                    continue
            elif now - st.st_mtime < UNOWNED_AGE:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)  # (unlink never follows a link: it removes the link itself)
                files += 1
                freed += st.st_size
    return files, freed
