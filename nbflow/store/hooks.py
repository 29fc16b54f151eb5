"""What the store gives a run: its result cache and its journal subscriber.

Both are asked for by the composition point (:mod:`nbflow.workflow`) when a run is made:

* :func:`run_cache` — the run's :class:`~nbflow.store.cache.RunCache`, or None when no
  store is usable.  The scheduler keeps it in one attribute and calls it only when it is
  not None, so a run without a cache pays one attribute check per task.
* :func:`journal_subscriber` — a :class:`~nbflow.store.recorder.RunRecorder` that writes the
  run's events to the journal, or None when no store is usable (whether or not the run
  caches).
"""

from __future__ import annotations

from typing import Any

from ..core.events import Subscriber
from . import settings
from .cache import RunCache
from .guard import GuardedRunCache
from .recorder import RunRecorder
from .store import get_store


def run_cache(run: Any) -> RunCache | None:
    """The result cache of ``run`` (None: no usable store).  ``run`` is an engine Run.

    Store failures during the run degrade it to "no cache" (:mod:`.guard`)."""
    settings.check_all()  # (a bad NBFLOW_* setting is refused before the run, not in a thread)
    store = get_store()
    if store is None:
        return None
    return GuardedRunCache(store, run_id=run.id, workflow=run.workflow, strict=run.strict,
                           rerun=run.rerun)


def journal_subscriber(run: Any) -> Subscriber | None:
    """The journal's subscriber for ``run`` (None when no store is usable)."""
    settings.check_all()
    store = get_store()
    return RunRecorder(store, run) if store is not None else None
