"""The scheduler plugin of :mod:`nbflow.engine.backends.dask_recovery`, on its own.

It subclasses distributed's ``SchedulerPlugin``, so importing it imports distributed; it is
imported when a Dask run registers it, not when nbflow is imported.  (It keeps its own
module, importable by name, because the scheduler unpickles it by that name.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .dask_recovery import NAME, UNWANTED_TOPIC

_UNRUN = frozenset({"waiting", "queued", "no-worker", "processing"})  # states before a result


class LooseRestrictions(SchedulerPlugin):
    """On the scheduler: a worker that leaves is struck from the hints of the tasks that
    only hinted at it, so they wait for (and run on) any worker (see the module)."""

    name = NAME

    def __init__(self) -> None:
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A task no client wants failed on its own account (not because an input did),
        or was dropped before it made a result: say so on nbflow's topic.  nbflow sends
        some intermediates without holding their futures (``DaskBackend._unheld``) and
        learns of their end from the workers' announcements; a failure, a worker dying
        under the task too often, or a drop leaves no announcement, and without this
        note the run would wait for one."""
        if finish == "erred" and self.scheduler is not None:
            ts = self.scheduler.tasks.get(key)
            if ts is not None and not ts.who_wants and ts.exception_blame is ts:
                self.scheduler.log_event(UNWANTED_TOPIC, {"key": key, "erred": True})
        elif finish == "released" and start in _UNRUN and self.scheduler is not None:
            # released before it made a result: when the scheduler does not take it up
            # again in the same round of transitions (as after a worker died under it),
            # it was dropped because every task taking it failed for another input's sake
            ts = self.scheduler.tasks.get(key)
            if ts is not None and not ts.who_wants and isinstance(key, str):
                try:
                    asyncio.get_running_loop().call_soon(self._dropped, key)
                except RuntimeError:  # (no loop running here: judge it now)
                    self._dropped(key)

    def _dropped(self, key: str) -> None:
        ts = self.scheduler.tasks.get(key)
        if ts is None or (ts.state in ("released", "forgotten") and not ts.who_wants):
            self.scheduler.log_event(UNWANTED_TOPIC, {"key": key, "dropped": True})

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
