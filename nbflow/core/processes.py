"""Is a process alive?  One answer for every room that asks (leases, store tidying, the
shared-memory sweep, a worker's lifeline, a stored run's status)."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int | None) -> bool:
    """Does process ``pid`` exist on this host?  (Signal 0 checks without signalling.)"""
    if not pid or pid < 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    except OSError:
        return False
    return True
