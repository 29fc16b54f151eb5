"""How a run meets the store: the two entry points the engine uses.

* :func:`run_cache` is called by ``Run._execute`` as the run starts: the run's
  :class:`~nbflow.store.cache.RunCache`, or None when caching is off for the run
  (``cache=False``) or no store is usable.  The scheduler keeps it in one attribute and
  calls it only when it is not None, so a run without a cache pays one attribute check
  per task.
* :func:`journal_subscriber` is registered with ``nf.on_run`` when this module is
  imported: it attaches a :class:`~nbflow.store.recorder.RunRecorder` to every run while a
  store is usable (whether or not the run caches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.events import Subscriber, on_run
from . import settings
from .cache import RunCache
from .guard import GuardedRunCache
from .recorder import RunRecorder
from .store import get_store

if TYPE_CHECKING:
    from ..engine.run import Run


def run_cache(run: Run) -> RunCache | None:
    """The cache of ``run`` (None: caching off, or no usable store)."""
    settings.check_all()  # (a bad NBFLOW_* setting is refused before the run, not in a thread)
    if not run.cache:
        return None
    store = get_store()
    if store is None:
        return None
    cache = GuardedRunCache(store, run)  # (store failures during the run degrade it)
    cache.attach(run._sched)  # validates rerun= (in the caller's thread)
    return cache


def journal_subscriber(run: Run) -> Subscriber | None:
    """The journal's subscriber for ``run`` (None when no store is usable)."""
    store = get_store()
    return RunRecorder(store, run) if store is not None else None


_unregister = on_run(journal_subscriber)
