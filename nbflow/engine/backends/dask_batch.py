"""Many Dask submissions in one message, each task with its own worker hint.

``client.submit`` sends one ``update-graph`` message per task: the call is pickled, the
client's loop is woken, the scheduler deserialises and orders a one-task graph.  On short
tasks that per-task cost is most of what separates a run from ``client.compute`` of the
same graph, which sends the whole graph at once.  What stood in the way of sending nbflow's
tasks together is that each one may carry its own placement hint (``workers=[w]`` with
``allow_other_workers=True``), while ``submit``/``compute``/``persist`` apply ``workers=``
to a whole submission.

``distributed`` (checked on 2026.8) takes per-key restrictions from the *annotations of
a graph's layers*: the scheduler reads ``expr.__dask_annotations__()`` (per key) before the
submission-wide ones and applies ``workers``/``allow_other_workers`` to each task
(``Scheduler._apply_annotations``).  So a :class:`Batch` builds one high-level graph with a
layer per hinted worker (plus one without annotations for tasks left to Dask), all
standard ``dask`` classes (nothing of nbflow's needs to be importable on the scheduler),
and hands it to the client's internal ``_graph_to_futures`` — the call ``submit`` itself
makes — once.

The scheduler orders each batch with ``dask.order``, as it orders any graph it is given
(finish what frees memory, follow the critical path), rather than by the order nbflow
submitted the tasks in (``DASK_ORDER``; each single ``submit`` gets priority 0 and is
taken in arrival order).  With the whole graph in one batch that is Dask's own order.

Futures are made when a task is added (``Future(key, client)`` registers the key with the
client, as the futures ``submit`` returns do), so a successor added to the same batch takes
its producer's future as an argument before anything is sent; the batch is sent when the
caller flushes it (the Dask backend does after submitting a task and the successors that
go ahead with it).  If sending fails, each of its futures is given the error, so its task
fails with it instead of waiting forever.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

# Types whose values Dask's ``parse_input`` returns unchanged (neither a future nor a
# container): the event topic, the task's function, an absent ``kwargs``.  Skipping the
# call for them is half of the per-task parsing a batch did.
_PLAIN = frozenset({str, bytes, int, float, bool, type(None), types.FunctionType,
                    types.BuiltinFunctionType})

# The scheduler orders each batch as it orders any graph it is given (``dask.order``:
# finish what frees memory first, follow the critical path) instead of by submission order.
DASK_ORDER = True


# client class -> can it take a batch (see available)
_available: dict[type, bool] = {}


def available(client: Any) -> bool:
    """Can ``client`` take a batch (the internals used here exist in this install)?  Found
    once per client class: the answer depends on the install and the class's method
    only, and reading a signature is most of what a Dask run's backend does as it opens
    (~30 µs a run, on the path from the call to its graph reaching the scheduler).  A
    client whose own instance carries the method is asked each time."""
    if "_graph_to_futures" in getattr(client, "__dict__", ()):
        return _available_in(client)
    cls = type(client)
    got = _available.get(cls)
    if got is None:
        got = _available[cls] = _available_in(client)
    return got


def _available_in(client: Any) -> bool:
    try:
        from dask._expr import HLGExpr  # noqa: F401
        from dask._task_spec import Task, parse_input  # noqa: F401
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer  # noqa: F401
        from distributed.spans import SpanMetadata  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        return False
    send = getattr(client, "_graph_to_futures", None)
    if not callable(send):
        return False
    try:  # (the expression-based call of recent versions: older ones took a graph)
        params = inspect.signature(send).parameters
    except (TypeError, ValueError):
        return False
    return {"expr", "keys", "span_metadata", "internal_priority"} <= set(params)


class Batch:
    """Submissions waiting to be sent together (see the module)."""

    def __init__(self, client: Any) -> None:
        from dask._task_spec import Task, parse_input
        from distributed import Future

        self.client = client
        self._task, self._parse, self._future = Task, parse_input, Future
        self.items: list[tuple[str, Any, str | None, Any]] = []  # (key, task spec, hint, future)
        self.messages = 0  # update-graph messages sent
        self.tasks = 0  # tasks sent in them
        self.unheld = 0  # tasks sent without a future the client holds
        # key -> (task spec, hinted worker) of each task sent unheld, until it is announced
        # (the Dask backend sends one again if Dask drops it unrun: DaskBackend._resend)
        self.sent_unheld: dict[str, tuple[Any, str | None]] = {}

    def add(self, key: str, func: Callable[..., Any], args: tuple[Any, ...],
            hint: list[str] | None) -> Any:
        """Queue ``func(*args)`` under ``key`` (futures among ``args``, nested too, become
        dependencies) and return its future.  The future is bound to the client (the
        client then holds the result) only when the batch is sent, and only if the
        caller still wants it then (see :meth:`flush`): until then it is a name that
        successors queued in the same batch take as an argument."""
        parse = self._parse
        task = self._task(key, func, *[a if type(a) in _PLAIN else parse(a) for a in args])
        fut: Any = self._future(key, None)
        self.items.append((key, task, hint[0] if hint else None, fut))
        return fut

    def again(self, key: str, task: Any, worker: str | None) -> Any:
        """Queue a task already sent unheld once more, to be held (see :meth:`flush`)."""
        fut: Any = self._future(key, None)
        self.items.append((key, task, worker, fut))
        return fut

    def flush(self, unheld: Callable[[str], bool] | None = None) -> None:
        """Send every queued task in one message.  ``unheld(key)`` true: the client does
        not hold that task's result (it is not among the graph's output keys, as an
        intermediate of ``dask.delayed`` is not): Dask runs it for the tasks that take it
        and frees it after the last of them.  Its future stays unbound (``status`` None)."""
        items, self.items = self.items, []
        if not items:
            return
        from dask._expr import HLGExpr
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
        from distributed.spans import SpanMetadata

        groups: dict[str | None, dict[str, Any]] = {}
        keys, left = [], []
        for key, task, worker, fut in items:
            groups.setdefault(worker, {})[key] = task
            if unheld is not None and unheld(key):
                left.append(fut)
                self.sent_unheld[key] = (task, worker)
            else:  # (bound before the graph goes: the client holds it from the start)
                fut.bind_client(self.client)
                keys.append(key)
        if not keys:  # (nothing held would leave nothing for Dask to compute: hold them all)
            for fut in left:
                fut.bind_client(self.client)
                keys.append(fut.key)
                self.sent_unheld.pop(fut.key, None)
            left = []
        for fut in left:
            fut._cleared = True  # (an unbound future must not try to release on collection)
        layers = {}
        for n, (worker, tasks) in enumerate(groups.items()):
            hint = {"workers": [worker], "allow_other_workers": True} if worker else None
            layers[f"nbflow-batch-{n}"] = MaterializedLayer(tasks, annotations=hint)
        graph = HighLevelGraph(layers, {name: set() for name in layers})
        order = [key for key, _, _, _ in items]
        try:
            self.client._graph_to_futures(
                HLGExpr(dsk=graph, low_level_optimizer=None, output_keys=keys), keys,
                span_metadata=SpanMetadata(collections=[{"type": "Future"}]),
                internal_priority=None if DASK_ORDER else {k: n for n, k in enumerate(order)})
        except Exception as e:  # each task fails with the reason instead of waiting forever
            for fut in left:
                fut.bind_client(self.client)
                fut._cleared = False
                self.sent_unheld.pop(fut.key, None)
            for key in order:
                state = self.client.futures.get(key)
                if state is not None:
                    state.set_error(e, sys.exc_info()[2])
            return
        self.messages += 1
        self.tasks += len(order)
        self.unheld += len(left)
