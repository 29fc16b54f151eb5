"""How much memory a run may plan with: physical RAM, or less when a cgroup limits us.

In a container (Docker, Kubernetes, a systemd slice, a batch scheduler's job) the kernel
kills the process group once it passes its cgroup's memory limit, however much RAM the
machine has.  Admitting tasks against physical RAM there over-admits: the run is killed
instead of waiting.  So the default ``memory`` capacity of a run is
``min(physical RAM, cgroup limit)`` when a limit is set.

The limit is read from the files the kernel exposes (no dependency):

- cgroup v2 (one unified hierarchy): ``memory.max`` of this process's cgroup and of each
  of its ancestors up to the mount point (a parent's limit binds its children); ``max``
  means no limit;
- cgroup v1: ``memory/memory.limit_in_bytes`` of this process's memory cgroup and of its
  ancestors, the same way; v1 writes "no limit" as a huge number (about 2**63), which is
  above any RAM and so changes nothing.

The process's cgroup path comes from ``/proc/self/cgroup``; with a cgroup namespace (the
usual container set-up) it is ``/`` and the mount point itself is read.  An unreadable
or missing file means "no limit found".  ``NBFLOW_CGROUP_ROOT`` points the reader at
another directory laid out like ``/sys/fs/cgroup`` (the tests use it); an explicit
``resources={"memory": ...}`` on a run still overrides the default.

Every run asks for its default capacity, and the answer is the same run after run: the
files (four to six opens and parses, ~0.3 ms) are read once per process and the answer is
kept for :data:`RECHECK_S` seconds, or until ``NBFLOW_CGROUP_ROOT`` or the process (a
fork) changes.  A limit changed while the process runs (``docker update --memory``) is seen
by the runs that start after that.  The kernel does not stamp a cgroup file with the time
of a write, so a timestamp check could not replace the clock.  A call with an explicit
``root`` or ``proc_cgroup`` always reads.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

DEFAULT_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
RECHECK_S = 30.0  # how long the default capacity is kept before the files are read again

_clock = time.monotonic
_lock = threading.Lock()
# The default capacity last read: ((pid, NBFLOW_CGROUP_ROOT), when it was read, bytes).
_kept: tuple[tuple[int, str | None], float, float] | None = None


def physical_memory() -> float:
    """Bytes of physical memory (``math.inf`` where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return math.inf


def _read_limit(path: Path) -> float | None:
    """The number in a limit file; None for ``max``, a missing or unreadable file."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = float(int(text))
    except ValueError:
        return None
    return value if value > 0 else None


def _own_paths(proc_cgroup: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """This process's cgroup path in the v2 hierarchy and in v1's memory hierarchy."""
    v2 = v1 = None
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _chain(base: Path, path: str | None) -> list[Path]:
    """``base/path`` and its ancestors up to ``base`` (only those that exist), innermost first."""
    dirs = []
    if path:
        d = base / path.strip("/")
        while True:
            if d.is_dir():
                dirs.append(d)
            if d == base or base not in d.parents:
                break
            d = d.parent
    if base not in dirs:
        dirs.append(base)
    return dirs


def cgroup_memory_limit(root: str | os.PathLike[str] | None = None,
                        proc_cgroup: str | os.PathLike[str] = PROC_CGROUP) -> float | None:
    """Bytes the cgroup lets this process use, or None when no limit is set (see module)."""
    base = Path(root if root is not None else os.environ.get("NBFLOW_CGROUP_ROOT") or DEFAULT_ROOT)
    v2_path, v1_path = _own_paths(proc_cgroup)
    if (base / "cgroup.controllers").exists() or (base / "memory.max").exists():  # v2
        dirs, name = _chain(base, v2_path), "memory.max"
    else:  # v1: the memory controller has a hierarchy of its own
        dirs, name = _chain(base / "memory", v1_path), "memory.limit_in_bytes"
    limits = [got for d in dirs if (got := _read_limit(d / name)) is not None]
    return min(limits) if limits else None


def memory_capacity(root: str | os.PathLike[str] | None = None,
                    proc_cgroup: str | os.PathLike[str] = PROC_CGROUP) -> float:
    """The default ``memory`` capacity of a run: ``min(physical RAM, cgroup limit)`` (this
    process's, without arguments, kept for :data:`RECHECK_S` seconds: see the module)."""
    if root is None and proc_cgroup == PROC_CGROUP:
        return _default_capacity()
    return _read_capacity(root, proc_cgroup)


def _read_capacity(root: str | os.PathLike[str] | None, proc_cgroup: str | os.PathLike[str]) -> float:
    limit = cgroup_memory_limit(root, proc_cgroup)
    physical = physical_memory()
    return physical if limit is None else min(physical, limit)


def _default_capacity() -> float:
    global _kept
    key = (os.getpid(), os.environ.get("NBFLOW_CGROUP_ROOT"))
    now = _clock()
    with _lock:
        kept = _kept
        if kept is not None and kept[0] == key and now - kept[1] < RECHECK_S:
            return kept[2]
    value = _read_capacity(None, PROC_CGROUP)
    with _lock:
        _kept = (key, now, value)
    return value


def forget() -> None:
    """Read the files again at the next run (after changing a limit from this process)."""
    global _kept
    with _lock:
        _kept = None
