"""The result cache's work on a Dask result, done by the task itself on its worker.

With the cache on, every result must be content-hashed (the keys of the tasks that take it
are built from that hash) and, when the task is cached, stored.  A result that stays on
its worker is hashed and written there, so it does not travel to this process; asked for
after the task finished (:meth:`~nbflow.core.remote.Remote.on_worker`), that is one more
Dask task and one more client <-> worker round trip per task, waited for before the task
counts as completed and before the lookups of the tasks that take it can start: on a chain
of tasks, one round trip per dependency level.

So when the run has a cache that says what to do with a node's value on a worker
(``worker_prepare(i)``: a picklable function and its arguments, or None), the task is
submitted wrapped (:func:`apply_prepared`): the worker runs the task, announces where the
result is (as every task does), runs the cache's function on the value (hash; serialise
and write the blob when the store's disk is reachable from the worker), and announces the
small facts that come back on the same event topic, just before the task completes.  The
backend hands them to the :class:`~nbflow.core.remote.Remote` it makes for the result
(``prepared``), and the cache's commit uses them instead of asking the worker.  A facts
message that is late, lost, or missing (the cache's function failed) only means the cache
asks the worker as before: nothing is decided on the facts' absence.

Items of a batched map run in one Dask task (``dask_chunks``); the small task that reads
the chunk's outline next to its list does the same for each large item
(:meth:`InTask.for_items`), so a chunk costs no round trip per item either.

``NBFLOW_DASK_IN_TASK=0`` switches this off (the cache then asks after each task), which
``benchmarks/dask_cache.py`` uses to compare the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

Prepare = tuple[Callable[..., Any], tuple[Any, ...]]  # fn(value, *args) -> small facts


def apply_prepared(apply: Callable[..., Any], topic: str, fn: Callable[..., Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any] | None, prepare: Prepare) -> Any:
    """On the worker: ``apply(topic, fn, args, kwargs)`` (the task, which announces where its
    result is), then the cache's ``prepare`` on the value; its facts are announced on
    ``topic`` too (``{"key", "prepared"}``), before the task's completion is."""
    value = apply(topic, fn, args, kwargs)
    try:
        from distributed import get_worker

        w = get_worker()
        pfn, pargs = prepare
        facts = pfn(value, *pargs)
        w.log_event(topic, {"key": w.get_current_task(), "prepared": facts})
    except Exception:  # (the cache asks the worker after the task instead)
        pass
    return value


def prepare_here(value: Any, prepare: Prepare) -> tuple[Any, ...] | None:
    """On a worker: the cache's ``prepare`` on ``value`` (None if it failed: the cache then
    asks the worker after the task)."""
    try:
        pfn, pargs = prepare
        facts = pfn(value, *pargs)
        return tuple(facts) if isinstance(facts, (tuple, list)) else None
    except Exception:
        return None


class InTask:
    """The Dask backend's side: which submissions carry the cache's work, and the facts
    their workers announced, until the backend takes them for the task's result."""

    def __init__(self, sched: Any, apply: Callable[..., Any], topic: str) -> None:
        self.sched = sched
        self.apply = apply  # the backend's own task wrapper (announces where results are)
        self.topic = topic  # the event topic its workers announce on
        self.facts: dict[str, tuple[Any, ...]] = {}  # dask key -> facts (written by _on_located)
        self._index: dict[str, int] = {}
        self.wrapped = 0  # submissions that carried the cache's work

    @classmethod
    def of(cls, sched: Any, apply: Callable[..., Any], topic: str) -> InTask | None:
        if os.environ.get("NBFLOW_DASK_IN_TASK", "1") == "0":
            return None
        return cls(sched, apply, topic)

    def _node(self, task_key: str) -> int | None:
        nodes = self.sched.nodes
        if len(self._index) != len(nodes):
            self._index = {r.key: r.index for r in nodes}
        return self._index.get(task_key)

    def task(self, unique: str, fn: Callable[..., Any], args: Any,
             kwargs: Any) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """``(function, arguments)`` to submit under ``unique`` (``<task key>-<tag>-<n>``)
        with the cache's work added, or None: submit it as usual."""
        prepare = getattr(self.sched.cache, "worker_prepare", None)
        if prepare is None:
            return None
        i = self._node(unique.rsplit("-", 2)[0])
        work = prepare(i) if i is not None else None
        if work is None:
            return None
        self.wrapped += 1
        return apply_prepared, (self.apply, self.topic, fn, args, kwargs, work)

    def for_items(self, keys: list[str]) -> list[Prepare | None] | None:
        """The cache's work for each item of a chunk (``keys``: their task keys), done where
        the chunk's list is when its outline is taken (``dask_chunks``); None: nothing."""
        prepare = getattr(self.sched.cache, "worker_prepare", None)
        if prepare is None:
            return None
        out = [prepare(i) if (i := self._node(k)) is not None else None for k in keys]
        return out if any(p is not None for p in out) else None

    def told(self, key: str, facts: Any) -> None:
        """A worker announced the facts of ``key`` (runs in the client's thread; the event
        may have turned the tuple into a list on its way)."""
        if isinstance(facts, (tuple, list)):
            self.facts[key] = tuple(facts)

    def take(self, key: str) -> tuple[Any, ...] | None:
        return self.facts.pop(key, None)
