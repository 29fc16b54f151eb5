"""Keep a run going when the Dask workers its tasks were placed on die.

nbflow places a Dask task with ``workers=[w], allow_other_workers=True``: a hint, which
Dask may ignore while other workers run.  When a worker dies, Dask retries the tasks it
was running (and recomputes results lost with it) under the same restrictions.  If at
that moment no worker is running at all (a one-worker cluster, or a task that killed
each worker in turn before the nanny brought one back), those tasks wait in Dask's
``no-worker`` state; and when a worker joins again, Dask's scheduler only wakes the
waiting tasks whose restrictions name that worker.  A restarted worker has a new address,
so a task hinted to the dead one would wait forever, and the run with it, although the
hint allowed any worker.

:class:`LooseRestrictions` is a small scheduler plugin that, when a worker leaves, strikes
it from the hints of the tasks whose restrictions are loose (``allow_other_workers=True``):
a task left with no hint is scheduled like any other, on the next worker that runs.  It also
tells the client when a task that no client holds fails on its own account or is dropped
unrun (the Dask backend sends some intermediates that way and otherwise learns of their
end from the workers' announcements only: see ``DaskBackend._unheld``).  It is registered
once per client (:func:`ensure`); a scheduler that cannot import nbflow (a remote cluster
without it) simply goes without, as before, and then the backend holds every result.

The plugin also sends the completions of nbflow's tasks to the clients, those of one turn
of the scheduler's loop in one event (:mod:`.dask_plugin`), so the workers need not
announce each result themselves.  :func:`reports` says whether the registered plugin does
(asked once per client, with the registration): without it (no plugin, or one of an
nbflow that does not) the workers announce, as before.
"""

from __future__ import annotations

import math
import os
import weakref
from typing import Any

from ...core.errors import InvalidOptionError

NAME = "nbflow-loose-restrictions"
# where the plugin says that a task no client holds failed or was dropped (the Dask
# backend's topic for the workers' announcements: see DaskBackend._unheld)
UNWANTED_TOPIC = "nbflow-located"
METRICS = "nbflow"  # the key of a task's CPU seconds and peak RSS in Dask's metadata of it
_registered: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_reports: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def __getattr__(name: str) -> Any:
    # The plugin class subclasses distributed's SchedulerPlugin, so it lives in its own module,
    # imported only when a Dask run registers it: ``import nbflow`` does not import distributed
    # (about 0.8 s of CPU), which a run on threads or processes never needs.
    if name == "LooseRestrictions":
        from .dask_plugin import LooseRestrictions

        return LooseRestrictions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


WINDOW = 0.1  # default of NBFLOW_DASK_COMPLETIONS_WINDOW (seconds; see dask_plugin)


def completions_window() -> float:
    """Seconds the scheduler plugin may hold the completions of tasks no client holds a
    future for, to send them in one event (``NBFLOW_DASK_COMPLETIONS_WINDOW``; 0: every
    turn of the scheduler's loop sends its own; see :mod:`.dask_plugin`)."""
    raw = os.environ.get("NBFLOW_DASK_COMPLETIONS_WINDOW", "").strip()
    if not raw:
        return WINDOW
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 <= value < math.inf):
        raise InvalidOptionError(
            f"NBFLOW_DASK_COMPLETIONS_WINDOW={raw!r} is not a number of seconds (0 or more); "
            f"set it to e.g. 0.1, or 0 to send each turn's completions at once "
            f"(default {WINDOW:g})")
    return value


def known(client: Any) -> bool:
    """Has :func:`ensure` been called for ``client`` (no round trip needed)?"""
    return client in _registered


def active(client: Any) -> bool:
    """Is the plugin registered on ``client``'s scheduler (known without a round trip)?"""
    return bool(_registered.get(client))


def reports(client: Any) -> bool:
    """Does the plugin on ``client``'s scheduler send the completions of nbflow's tasks
    (see the module; known without a round trip once :func:`ensure` ran)?"""
    return bool(_reports.get(client))


def carries(client: Any) -> bool:
    """Is the nbflow of ``client``'s scheduler (and so, as a rule, of its workers) one whose
    workers can send a small result with its completion (``DaskBackend._carry_limit``)?"""
    return _reports.get(client, 0) >= 2


def ensure(client: Any) -> bool:
    """Register :class:`LooseRestrictions` on ``client``'s scheduler (once per client).
    False when the scheduler refused it."""
    got = _registered.get(client)
    if got is None:
        told = 0
        window = completions_window()  # (a bad setting refuses the run, before any I/O)
        try:
            from .dask_plugin import LooseRestrictions, reports_completions

            client.register_plugin(LooseRestrictions(window), name=NAME)
            got = True
            try:  # (what the scheduler's own nbflow made of it: see REPORTS_COMPLETIONS)
                told = int(client.run_on_scheduler(reports_completions))
            except Exception:  # (an older nbflow there: the workers announce)
                told = 0
        except Exception:  # (a scheduler without nbflow: Dask's own behaviour stays)
            got = False
        _registered[client] = got
        _reports[client] = told
    return got
