"""Worker processes die with the process that started them (the notebook kernel).

A process-pool worker is forked by multiprocessing's forkserver, so its parent is the
forkserver, not the kernel; and every worker holds the forkserver's "alive" pipe open, so
the forkserver outlives the kernel as long as any worker lives.  A SIGKILLed kernel (or a
crashed one) therefore used to leave its workers, the forkserver and the resource tracker
running, possibly for ever.  :func:`bind_to_owner` runs in each worker as it starts:

* a watchdog thread waits on a ``pidfd`` of the owner (Linux >= 5.3): the descriptor
  becomes readable the moment the owner exits, with no polling and no risk of a reused
  pid; where pidfds are missing it checks the owner's pid once a second instead;
* ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux, through ctypes) kills the worker if its
  direct parent, the forkserver, dies.

When the owner is gone the worker kills itself (SIGKILL: a task running in its main thread
cannot delay it).  Once the workers are gone, the forkserver sees its alive pipe close and
exits, and the resource tracker sees its pipe close and exits: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from ...core.processes import pid_alive

PR_SET_PDEATHSIG = 1
POLL_S = 1.0  # only without pidfd support


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False




def _watch_pidfd(fd: int) -> None:
    with contextlib.suppress(OSError):
        select.select([fd], [], [])  # readable once the owner has exited
    _die()


def _watch_poll(pid: int) -> None:
    while pid_alive(pid):
        time.sleep(POLL_S)
    _die()


def bind_to_owner(owner: int) -> None:
    """Worker initialiser: exit as soon as process ``owner`` is gone (see module)."""
    _set_parent_death_signal()
    if not pid_alive(owner):
        _die()
    fd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(owner)
    if fd is not None:
        target: Callable[[int], None] = _watch_pidfd
        arg = fd
    else:
        target, arg = _watch_poll, owner
    threading.Thread(target=target, args=(arg,), name="nbflow-lifeline", daemon=True).start()
