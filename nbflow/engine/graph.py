"""Tracing: ``with nf.Workflow(name) as wf:`` turns task calls into a graph of Refs.

While the block runs, calling a task records a node and returns an :class:`Ref` instead of
calling the function.  Refs found among the arguments (also inside lists, tuples, sets and
dicts) become the node's dependencies and are replaced by their values when the task runs.
Nodes are numbered in creation order, which is a topological order unless ``ref.after()``
adds an edge against it; the scheduler sorts properly before it runs anything.

Tracing is on the hot path of a workflow cell (the budget is 10 µs per task call), so a
node is one slotted object and argument scanning does no work for plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import RefUsageError, WorkflowDefinitionError
from .hidden_refs import refuse_hidden_refs
from .validation import validate_run_options

if TYPE_CHECKING:
    import networkx as nx

    from .run import Run
    from .spec import Task

# Kinds of node.  A "collect" node has no function: its value is the list of its inputs'
# values (the fan-in behind ``task.map``).  A "map" node expands at run time into one task
# per item of its input's value, then collects them.  The control-flow constructs
# (nbflow.engine.constructs) add: "gate" (one side of a branch: completes or is skipped on
# its condition), "const" (a plain value inside a branch side), "first" and "gather"
# (tolerant joins: they wait for every input to end, whatever the outcome), "loop" (grows
# one iteration at a time), "undo" (a compensation, also tolerant) and "approval".
TASK, COLLECT, MAP = "task", "collect", "map"
GATE, CONST, FIRST, GATHER, LOOP, UNDO, APPROVAL = (
    "gate", "const", "first", "gather", "loop", "undo", "approval")
TOLERANT = frozenset({FIRST, GATHER, UNDO})
INLINE = frozenset({COLLECT, GATE, CONST, FIRST, GATHER, LOOP})  # resolved by the scheduler itself

_CONTAINERS = (list, tuple, dict, set, frozenset)
_current: ContextVar[Workflow | None] = ContextVar("nbflow_workflow", default=None)


def current_workflow() -> Workflow | None:
    """The workflow being traced in this context, if any."""
    return _current.get()


class Ref:
    """A lazy handle on the value a task call will produce.

    Pass it to other tasks (directly or nested in lists, tuples and dicts).  After a run,
    ``ref.result()`` or ``run[ref]`` gives the value.
    """

    __slots__ = ("args", "deps", "index", "key", "kind", "kwargs", "nested", "task", "wf")

    def __init__(
        self,
        wf: Workflow,
        index: int,
        task: Task | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        deps: list[int],
        key: str,
        nested: int,
        kind: str = TASK,
    ) -> None:
        self.wf = wf
        self.index = index
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.deps = deps  # indexes of the nodes this one waits for (data and ordering)
        self.key = key
        self.nested = nested  # 0: no refs in args, 1: refs at top level, 2: refs nested
        self.kind = kind

    @property
    def name(self) -> str:
        """The task name (``"clean.map"`` for the node that collects a map's results)."""
        if self.kind == TASK or self.kind == UNDO:
            return self.task.spec.name  # type: ignore[union-attr]
        return self.key.rpartition("-")[0]  # "clean.map-0" -> "clean.map", "branch-0" -> "branch"

    def after(self, *refs: Ref) -> Ref:
        """Also wait for ``refs`` (ordering only: their values are not passed).  Returns self."""
        for r in refs:
            if type(r) is not Ref:
                raise RefUsageError(f"{self.key}.after() takes Refs, got {type(r).__name__}")
            if r.wf is not self.wf:
                raise RefUsageError(_foreign(r, self.wf))
            if r is self:
                raise WorkflowDefinitionError(f"{self.key}.after({self.key}): a task cannot wait for itself")
            if r.index not in self.deps:
                self.deps.append(r.index)
        return self

    def result(self) -> Any:
        """The value from the latest run of this ref's workflow."""
        run = self.wf.last_run
        if run is None:
            raise RefUsageError(
                f"{self.key} has no value yet: the workflow {self.wf.name!r} has not run. "
                "Call wf.run() first (a %%workflow cell does this for you)."
            )
        return run[self]

    def _misuse(self, what: str) -> RefUsageError:
        return RefUsageError(
            f"{self.key} is a Ref, a stand-in for a value that exists only once the workflow "
            f"runs, so it cannot be used {what} while tracing. Pass it to another task instead "
            "(tasks receive real values), or use ref.result() after the run."
        )

    def __bool__(self) -> bool:
        raise self._misuse("as a condition")

    def __iter__(self) -> Any:
        raise self._misuse("in a loop or unpacking (use task.map to fan out over it)")

    def __len__(self) -> int:
        raise self._misuse("with len()")

    def __index__(self) -> int:
        raise self._misuse("as a number")

    __float__ = __int__ = __index__

    def __repr__(self) -> str:
        return f"<Ref {self.key}>"


def _foreign(r: Ref, wf: Workflow) -> str:
    return (
        f"{r.key} belongs to workflow {r.wf.name!r}, not to {wf.name!r}; a Ref cannot cross "
        "workflows. Call the task again inside this workflow, or pass the value (ref.result())."
    )


class Workflow:
    """A traced task graph.  Use as ``with nf.Workflow("etl") as wf: ...`` then ``wf.run()``."""

    def __init__(self, name: str = "workflow") -> None:
        if not isinstance(name, str) or not name:
            raise WorkflowDefinitionError(f"a workflow name must be a non-empty string, got {name!r}")
        self.name = name
        self.nodes: list[Ref] = []
        self.last_run: Run | None = None
        self._counters: dict[str, int] = {}
        self._token: Any = None
        self._gates: list[int] = []  # innermost open branch side last (see constructs.branch)
        self._sagas: list[Any] = []  # open `with nf.saga()` blocks
        self.sagas: list[Any] = []  # every saga traced in this workflow

    # -- tracing -------------------------------------------------------------------------

    def __enter__(self) -> Workflow:
        outer = _current.get()
        if outer is not None:
            raise WorkflowDefinitionError(
                f"workflow {self.name!r} opened inside workflow {outer.name!r}; nesting is not "
                "supported: close the outer `with` block first"
            )
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        self._token = None

    def _new_key(self, name: str) -> str:
        n = self._counters.get(name, 0)
        self._counters[name] = n + 1
        return f"{name}-{n}"

    def _add_call(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ref:
        refuse_hidden_refs(task.spec.name, args, kwargs)  # (a namedtuple of Refs, a dataclass...)
        deps: list[int] = []
        nested = 0
        for a in args:
            if type(a) is Ref:
                if a.wf is not self:
                    raise RefUsageError(_foreign(a, self))
                deps.append(a.index)
                nested = nested or 1
            elif type(a) in _CONTAINERS and self._scan(a, deps):
                nested = 2
        if kwargs:
            for a in kwargs.values():
                if type(a) is Ref:
                    if a.wf is not self:
                        raise RefUsageError(_foreign(a, self))
                    deps.append(a.index)
                    nested = nested or 1
                elif type(a) in _CONTAINERS and self._scan(a, deps):
                    nested = 2
        if len(deps) > 1:
            deps = list(dict.fromkeys(deps))
        key = self._new_key(task.spec.name)
        ref = Ref(self, len(self.nodes), task, args, kwargs or None, deps, key, nested)
        self.nodes.append(ref)
        if self._gates or self._sagas:
            self._enclose(ref)
        return ref

    def _enclose(self, ref: Ref) -> None:
        """A node made inside a branch side waits for that side's gate; inside a saga block
        it becomes a member of the saga."""
        if self._gates and self._gates[-1] not in ref.deps and ref.index != self._gates[-1]:
            ref.deps.append(self._gates[-1])
        for saga in self._sagas:
            saga.members.append(ref.index)

    def _add_node(
        self, kind: str, name: str, args: tuple[Any, ...] = (), deps: list[int] | None = None,
        task: Task | None = None, kwargs: dict[str, Any] | None = None, nested: int = 0,
    ) -> Ref:
        """Add a node of a construct kind (see the kinds above)."""
        ref = Ref(self, len(self.nodes), task, args, kwargs, list(dict.fromkeys(deps or [])),
                  self._new_key(name), nested, kind)
        self.nodes.append(ref)
        if self._gates or self._sagas:
            self._enclose(ref)
        return ref

    def _scan(self, obj: Any, deps: list[int]) -> bool:
        """Append the indexes of Refs nested in ``obj``; True if there were any."""
        found = False
        items: Iterable[Any] = obj.values() if type(obj) is dict else obj
        for a in items:
            if type(a) is Ref:
                if a.wf is not self:
                    raise RefUsageError(_foreign(a, self))
                deps.append(a.index)
                found = True
            elif type(a) in _CONTAINERS and self._scan(a, deps):
                found = True
        if type(obj) is dict:
            for k in obj:
                if type(k) is Ref:
                    raise RefUsageError(f"{k.key} is used as a dict key; Refs may only be dict values")
        return found

    def _add_map(self, task: Task, items: Any, kwargs: dict[str, Any]) -> Ref:
        if type(items) is Ref:
            if items.wf is not self:
                raise RefUsageError(_foreign(items, self))
            deps = [items.index]
            for a in kwargs.values():
                if type(a) is Ref:
                    if a.wf is not self:
                        raise RefUsageError(_foreign(a, self))
                    deps.append(a.index)
                elif type(a) in _CONTAINERS:
                    self._scan(a, deps)
            refuse_hidden_refs(f"{task.spec.name}.map", (), kwargs)
            return self._add_node(MAP, f"{task.spec.name}.map", (items,), deps, task, kwargs or None)
        try:
            seq = list(items)
        except TypeError:
            raise WorkflowDefinitionError(
                f"{task.spec.name}.map() needs a list (or other iterable) or a Ref to one, got "
                f"{type(items).__name__}"
            ) from None
        parts = [self._add_call(task, (item,), kwargs) for item in seq]
        return self._add_collect(parts, f"{task.spec.name}.map")

    def _add_collect(self, parts: list[Ref], name: str) -> Ref:
        return self._add_node(COLLECT, name, tuple(parts), [p.index for p in parts], nested=1)

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        workers: int | None = None,
        backend: Any = "local",
        cache: bool = True,
        raise_on_error: bool = True,
        *,
        continue_on_error: bool = True,
        resources: dict[str, float | int | str] | None = None,
        rerun: Any = None,
        strict: bool = False,
        on_conflict: str = "warn",
    ) -> Run:
        """Run the workflow and block until it ends; see :class:`nbflow.Run`.

        Works in plain scripts and inside a running Jupyter kernel (the run gets its own
        event loop in a helper thread).  Ctrl-C cancels the run, waits for it to wind
        down, and re-raises ``KeyboardInterrupt``.  A failed run raises
        :class:`nbflow.WorkflowFailed` unless ``raise_on_error=False``.

        ``cache=False`` neither reads nor stores results; ``rerun=[task, ...]`` (tasks, task
        names, keys or Refs) forces those tasks and their descendants to run; ``strict=True``
        fails the run when a stored result fails its checksum instead of recomputing it.

        Before anything runs, ``nf.check`` verifies the graph: an error (a cycle, a resource
        demand that can never fit, an unbounded loop) refuses the run with an exception that
        names it.  Tasks that may overlap while their declared ``reads``/``writes`` conflict
        give a ``ConflictWarning`` (``on_conflict="warn"``), are ordered so they never overlap
        (``"serialize"``), or refuse the run (``"error"``).
        """
        validate_run_options(raise_on_error=raise_on_error)  # (the Run never sees this one)
        run = self.start(workers=workers, backend=backend, cache=cache,
                         continue_on_error=continue_on_error, resources=resources, rerun=rerun, strict=strict,
                  on_conflict=on_conflict)
        run.wait(raise_on_error=raise_on_error)
        return run

    def start(
        self,
        workers: int | None = None,
        backend: Any = "local",
        cache: bool = True,
        *,
        continue_on_error: bool = True,
        resources: dict[str, float | int | str] | None = None,
        rerun: Any = None,
        strict: bool = False,
        on_conflict: str = "warn",
    ) -> Run:
        """Start the run in the background and return its :class:`nbflow.Run` at once."""
        from .run import Run

        run = Run(self, workers=workers, backend=backend, cache=cache,
                  continue_on_error=continue_on_error, resources=resources, rerun=rerun, strict=strict,
                  on_conflict=on_conflict)
        run._start_in_thread()
        return run

    async def arun(
        self,
        workers: int | None = None,
        backend: Any = "local",
        cache: bool = True,
        raise_on_error: bool = True,
        *,
        continue_on_error: bool = True,
        resources: dict[str, float | int | str] | None = None,
        rerun: Any = None,
        strict: bool = False,
        on_conflict: str = "warn",
    ) -> Run:
        """The async twin of :meth:`run`: runs on the caller's event loop."""
        from .run import Run

        validate_run_options(raise_on_error=raise_on_error)

        run = Run(self, workers=workers, backend=backend, cache=cache,
                  continue_on_error=continue_on_error, resources=resources, rerun=rerun, strict=strict,
                  on_conflict=on_conflict)
        await run._execute()
        if raise_on_error:
            run._raise_for_status()
        return run

    # -- inspection ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def graph(self) -> nx.DiGraph:
        """The traced graph (before any run) as a networkx DiGraph keyed by task key."""
        import networkx as nx

        g = nx.DiGraph()
        for r in self.nodes:
            g.add_node(r.key, task=r.name, kind=r.kind)
        for r in self.nodes:
            for d in r.deps:
                g.add_edge(self.nodes[d].key, r.key)
        return g

    def __repr__(self) -> str:
        return f"<nf.Workflow {self.name!r}: {len(self.nodes)} tasks>"
