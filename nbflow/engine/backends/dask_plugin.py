"""The scheduler plugin of :mod:`nbflow.engine.backends.dask_recovery`, on its own.

It subclasses distributed's ``SchedulerPlugin``, so importing it imports distributed; it is
imported when a Dask run registers it, not when nbflow is imported.  (It keeps its own
module, importable by name, because the scheduler unpickles it by that name.)
"""

from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .dask_recovery import NAME


class LooseRestrictions(SchedulerPlugin):
    """On the scheduler: a worker that leaves is struck from the hints of the tasks that
    only hinted at it, so they wait for (and run on) any worker (see the module)."""

    name = NAME

    def remove_worker(self, scheduler: Any = None, worker: str = "", **kwargs: Any) -> None:
        woken = []
        for ts in scheduler.tasks.values():
            hint = ts.worker_restrictions
            if hint and worker in hint and ts.loose_restrictions:
                hint.discard(worker)
                if not hint:  # no restriction left: any running worker will do
                    ts.worker_restrictions = None
                    ts.loose_restrictions = False
                    if ts in scheduler.unrunnable:
                        woken.append(ts.key)
        if woken and scheduler.running:  # (none running: the next one to run takes them)
            scheduler.transitions({k: "processing" for k in woken},
                                  stimulus_id=f"nbflow-loose-restrictions-{time.time()}")
