"""Links each workflow run to its batch run and its parameters, as the run starts.

Registered with ``nf.on_run`` when :mod:`nbflow` is imported.  For every run, while a store
is usable: when ``NBFLOW_BATCH_ID`` is set (the kernel of an ``nbflow run``) a
``batch_runs`` row links the run to the batch, and the parameters read so far with
``nf.param`` (or ``%%workflow -p``) are recorded in ``run_params``.  It returns no
subscriber: nothing is done per event.
"""

from __future__ import annotations

from typing import Any

from ..core.events import on_run
from ..params import env, params
from ..store.store import get_store
from . import records


def link_run(run: Any) -> None:
    store = get_store(warn=False)
    if store is None:
        return None
    batch = env.batch_id()
    if batch:
        records.link_run(store, batch, run.id)
    declared = params.declared()
    if declared:
        records.record_params(store, run.id, declared)
    return None


_unregister = on_run(link_run)
