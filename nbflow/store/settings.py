"""Store tunables read from the environment at the moment they are needed.

Each is read when used (not at import), so a notebook or a test can change it at any time:

* ``NBFLOW_COMMIT_WINDOW`` (seconds, default 0.05): how long the journal writer lets
  finished work accumulate before one transaction commits it.  A crash loses at most about
  this much finished work (plus the commit itself), which then simply runs again.  ``0``
  commits as soon as the writer wakes up (more transactions, slower big runs).
* ``NBFLOW_LOCK_TIMEOUT`` (seconds, default 30): the longest nbflow waits for another
  process's write lock on the journal (opening a store that needs a migration, or committing
  a run's rows).  After it, the store is used without caching/journaling for that run, with
  a warning that names the lock; nothing waits forever.
* ``NBFLOW_LOCK_NOTICE`` (seconds, default 3): when a wait for the lock has lasted this
  long, a log message says so (and who to suspect), so a stall is never silent.
* ``NBFLOW_LEASE_TTL`` (seconds, default 30): how long a lease on a cache key being
  computed stays valid without a heartbeat (:mod:`.lease`).  A holder killed on another
  machine is given up after this long; on the same machine at once.  ``NBFLOW_LEASE=off``
  switches leases off (``on``/``off``, ``1``/``0``, ``true``/``false``, ``yes``/``no``).
  Both are defaults: a run's ``lease=`` / ``lease_ttl=`` options win over them.
"""

from __future__ import annotations

import math
import os

from ..core.errors import WorkflowDefinitionError


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise WorkflowDefinitionError(
            f"${name}={text!r} is not a number of seconds >= 0; unset it or give e.g. {default:g}")
    return value


def commit_window() -> float:
    """Seconds the writer waits for more rows before committing (``NBFLOW_COMMIT_WINDOW``)."""
    return _seconds("NBFLOW_COMMIT_WINDOW", 0.05)


def lock_timeout() -> float:
    """Longest wait for another process's write lock (``NBFLOW_LOCK_TIMEOUT``)."""
    return _seconds("NBFLOW_LOCK_TIMEOUT", 30.0)


def lock_notice() -> float:
    """After this many seconds of waiting for a lock, say so (``NBFLOW_LOCK_NOTICE``)."""
    return _seconds("NBFLOW_LOCK_NOTICE", 3.0)


def lease_ttl(option: float | None = None) -> float:
    """Seconds a lease stays valid without a heartbeat: the run's ``lease_ttl`` option, else
    ``NBFLOW_LEASE_TTL`` (default 30); at least 0.1."""
    return max(float(option) if option is not None else _seconds("NBFLOW_LEASE_TTL", 30.0), 0.1)


_ON = ("", "1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")


def leases_on(option: bool | None = None) -> bool:
    """Are cache leases on: the run's ``lease`` option, else ``NBFLOW_LEASE`` (default on)."""
    if option is not None:
        return option
    text = os.environ.get("NBFLOW_LEASE", "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise WorkflowDefinitionError(
        f"$NBFLOW_LEASE={os.environ['NBFLOW_LEASE']!r} is neither on nor off; set it to 'off' (or 0, "
        "false, no) to switch cache leases off, 'on' (or 1, true, yes) or unset it to keep them")


def check_all() -> None:
    """Raise (naming the variable) if any of these settings is set to something unusable."""
    commit_window()
    lock_timeout()
    lock_notice()
    lease_ttl()
    leases_on()
