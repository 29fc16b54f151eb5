"""The small protocols the engine calls, implemented by other rooms.

The engine never imports the store or the checks.  The composition point
(:mod:`nbflow.workflow`) asks the store for a :class:`ResultCache` and hands it to the run;
everything else listens to the event stream as a :data:`~nbflow.core.events.Subscriber`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .events import Subscriber

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

    from .counting import TaskCounts

__all__ = ["DataPlacement", "ResultCache", "RunRecord", "RunView", "Subscriber"]


class RunView(Protocol):
    """What a result cache may read of a running graph (the scheduler's plain state)."""

    @property
    def nodes(self) -> Sequence[Any]: ...  # nbflow.core.ref.Ref, grows while running

    @property
    def succs(self) -> Sequence[Sequence[int]]: ...

    @property
    def results(self) -> Sequence[Any]: ...

    @property
    def output_bytes(self) -> Sequence[int | None]: ...

    @property
    def state(self) -> Sequence[str]: ...


class ResultCache(Protocol):
    """A run's result cache: asked before a task runs, told after it succeeded.

    ``lookup`` returns ``(value, output_bytes)`` for a hit, or None when the task must run;
    it raises :class:`~nbflow.core.errors.StoreIntegrityError` when a stored result is
    damaged and the run is strict (the engine then ends the run with that error).  Any other
    exception from the cache makes the engine go on without it, with one warning.
    ``info(i)`` is what the events of node ``i`` carry: ``(reason, cache_key, blob)``.
    A cache may also answer ``will_run(i)``: True when node ``i``'s lookup is sure to miss
    whatever its inputs (a backend may then start it before its inputs are done); a cache
    without it has every task wait for its lookup.  A cache may also answer
    ``worker_prepare(i)``: a picklable ``(fn, args)`` that a backend running node ``i``
    on a remote worker calls there as ``fn(value, *args)`` on the task's value, sending
    the small result back with it (``Remote.prepared``), or None.
    """

    def bind(self, view: RunView) -> None: ...

    async def lookup(self, i: int) -> tuple[Any, int | None] | None: ...

    async def commit(self, i: int, value: Any, size: int | None) -> int | None: ...

    def info(self, i: int) -> tuple[str | None, str | None, str | None]: ...

    def cached(self, i: int) -> bool: ...

    def explain(self, i: int) -> Any: ...

    def close(self) -> None: ...


class DataPlacement(Protocol):
    """Where a backend that moves data (Dask) should run each task, and what it moved.

    Implemented by the locality room and handed to the Dask backend by the composition
    point; the engine only calls it.  ``connected`` gets the ``distributed.Client`` once the
    cluster is known; ``choose`` returns the workers to prefer for a task (or None: let the
    cluster decide) from its inputs ``(task key, worker, nbytes)`` and declared resources;
    ``finished`` reports where a task's result lives; ``closing`` is the last moment the
    client is usable (the cluster's transfer logs are read there; ``stays_open=True``: the
    client outlives the run, so the reading may finish after the run has returned).  ``keep_remote=False``
    makes the backend bring every result to this process, as nbflow once did.  For a task
    submitted before its inputs finished, ``after`` lists the Dask keys it waits for and an
    input's ``nbytes`` is a prediction (None: unknown).
    """

    keep_remote: bool

    def connected(self, client: Any) -> None: ...

    def choose(self, key: str, dask_key: str, inputs: Sequence[tuple[str, str | None, int | None]],
               resources: dict[str, float], after: Sequence[str] = ()) -> list[str] | None: ...

    def finished(self, key: str, dask_key: str, worker: str | None, nbytes: int | None,
                 seconds: float) -> None: ...

    def closing(self, client: Any, stays_open: bool = False) -> None: ...


@runtime_checkable
class RunRecord(Protocol):
    """What every view reads of a run, whether it is live (``nf.Run``) or read back from
    the store (``nf.load_run(id)``, a :class:`~nbflow.store.history.StoredRun`).

    The notebook views, ``nbflow show`` and ``nbflow runs`` read runs only through this,
    so a stored run is shown exactly as the live one was.  ``tasks`` has the same columns
    for both; ``task_counts`` is :func:`nbflow.core.counting.count_tasks` of the run;
    ``errors()`` has the failed tasks only; ``logs(key)`` is what a task printed;
    ``explain(key)`` says why a task ran or hit the cache; ``run[key]`` is a task's value.
    """

    id: str
    name: str
    status: str

    @property
    def tasks(self) -> pd.DataFrame: ...

    @property
    def graph(self) -> nx.DiGraph: ...

    @property
    def counts(self) -> dict[str, int]: ...

    @property
    def task_counts(self) -> TaskCounts: ...

    def errors(self) -> dict[str, BaseException]: ...

    def logs(self, key: Any) -> str | None: ...

    def explain(self, what: Any) -> Any: ...

    def __getitem__(self, key: Any) -> Any: ...
