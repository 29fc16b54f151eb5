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

import weakref
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ..core.errors import RefUsageError, TaskCallError, WorkflowDefinitionError
from ..core.kinds import COLLECT, GATHER, MAP
from ..core.ref import Ref, foreign_ref_message
from ..core.usertb import trim_to_user
from .batching import check_option as check_batch
from .gcpolicy import paused as gc_paused
from .hidden_refs import refuse_hidden_refs

if TYPE_CHECKING:
    import networkx as nx

    from .run import Run
    from .spec import Task

_CONTAINERS = (list, tuple, dict, set, frozenset)
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})  # never hold a Ref
_current: ContextVar[WorkflowGraph | None] = ContextVar("nbflow_workflow", default=None)


def current_workflow() -> WorkflowGraph | None:
    """The workflow being traced in this context, if any."""
    return _current.get()


_foreign = foreign_ref_message


class WorkflowGraph:
    """A traced task graph: ``with wf:`` traces task calls into it.

    ``nf.Workflow`` (:mod:`nbflow.workflow`) is this plus running; the engine only traces.
    """

    def __init__(self, name: str = "workflow") -> None:
        if not isinstance(name, str) or not name:
            raise WorkflowDefinitionError(f"a workflow name must be a non-empty string, got {name!r}")
        self.name = name
        self.nodes: list[Ref] = []
        self._last_run: weakref.ref[Run] | None = None
        self._counters: dict[str, int] = {}
        self._token: Any = None
        self._gates: list[int] = []  # innermost open branch side last (see constructs.branch)
        self._sagas: list[Any] = []  # open `with nf.saga()` blocks
        self.sagas: list[Any] = []  # every saga traced in this workflow
        self._derived: dict[str, Ref] = {}  # ref[key] nodes, by key
        # Maps over lists: (first item index, item count, task spec, batch=) for chunking
        # (nbflow.engine.batching); maps over a Ref: their node index -> (batch=, min_success
        # or None when a failed item fails the map).
        self.map_batches: list[tuple[int, int, Any, Any]] = []
        self.ref_maps: dict[int, tuple[Any, int | None]] = {}

    @property
    def last_run(self) -> Run | None:
        """The latest run of this workflow, while anything holds it (the caller's ``run``,
        ``nf.last_run()``, a view).  Held weakly: the run holds this workflow's Refs, so a
        strong reference back would make workflow, Refs and run one cycle that keeps every
        result of the run until a full garbage collection, after the user dropped them all."""
        ref = self._last_run
        return ref() if ref is not None else None

    @last_run.setter
    def last_run(self, run: Run | None) -> None:
        self._last_run = weakref.ref(run) if run is not None else None

    # -- tracing -------------------------------------------------------------------------

    def __enter__(self) -> WorkflowGraph:
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
        if isinstance(exc[1], (RefUsageError, TaskCallError)):  # the user's line on top
            trim_to_user(exc[1])

    @property
    def tracing(self) -> bool:
        """Is this workflow's ``with`` block running (in this context)?"""
        return _current.get() is self

    def _new_key(self, name: str) -> str:
        n = self._counters.get(name, 0)
        self._counters[name] = n + 1
        return f"{name}-{n}"

    def _refs_in(self, values: Iterable[Any], deps: list[int]) -> int:
        """Append the indexes of the Refs among a call's argument ``values`` to ``deps``;
        returns 0 (no Ref), 1 (Refs as arguments) or 2 (Refs inside containers)."""
        nested = 0
        for a in values:
            if type(a) is Ref:
                if a.wf is not self:
                    raise RefUsageError(_foreign(a, self))
                deps.append(a.index)
                nested = nested or 1
            elif type(a) in _CONTAINERS and self._scan(a, deps):
                nested = 2
        return nested

    def _add_call(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Ref:
        task.check_call(args, kwargs)  # a call the function cannot take fails here, not at run time
        refuse_hidden_refs(task.spec.name, args, kwargs)  # (a namedtuple of Refs, a dataclass...)
        deps: list[int] = []
        nested = self._refs_in(args, deps)
        if kwargs:
            nested = max(nested, self._refs_in(kwargs.values(), deps))
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

    def _add_map(self, task: Task, items: Any, kwargs: dict[str, Any], on_error: str = "fail",
                 batch: Any = None) -> Ref:
        if on_error not in ("fail", "skip"):
            raise WorkflowDefinitionError(
                f"{task.spec.name}.map(on_error=...) must be 'fail' (a failed item fails the map) or "
                f"'skip' (the map gives the results of the items that completed), got {on_error!r}")
        check_batch(task.spec.name, task.spec, batch)
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
            node: Ref = self._add_node(MAP, f"{task.spec.name}.map", (items,), deps, task, kwargs or None)
            # (expanded at run time: resolvers.expand_map reads these when the items are known)
            self.ref_maps[node.index] = (batch, 0 if on_error == "skip" else None)
            return node
        _refuse_column_iteration(task.spec.name, items)
        try:
            seq = list(items)
        except TypeError:
            raise WorkflowDefinitionError(
                f"{task.spec.name}.map() needs a list (or other iterable) or a Ref to one, got "
                f"{type(items).__name__}"
            ) from None
        first = len(self.nodes)
        with gc_paused():  # (one node per item: nothing to collect while they are made)
            parts = self._add_items(task, seq, kwargs)
        if batch is not False and parts:
            self.map_batches.append((first, len(parts), task.spec, batch))
        if on_error == "skip":  # a tolerant join: the values of the items that completed
            return self._add_node(GATHER, f"{task.spec.name}.map", tuple(parts), [p.index for p in parts],
                                  kwargs={"min_success": 0}, nested=1)
        return self._add_collect(parts, f"{task.spec.name}.map")

    def _add_items(self, task: Task, seq: list[Any], kwargs: dict[str, Any]) -> list[Ref]:
        """One node per item, as ``_add_call(task, (item,), kwargs)`` would add them.

        A long map is traced in one go: the call's shape (one positional argument and the
        shared keywords) is checked once, the shared keywords are scanned for Refs once, and
        only items that are not plain values are looked into.
        """
        if not seq:
            return []
        task.check_call((seq[0],), kwargs)
        refuse_hidden_refs(task.spec.name, (), kwargs)
        kw_deps: list[int] = []
        kw_nested = self._refs_in(kwargs.values(), kw_deps)
        name = task.spec.name
        n = self._counters.get(name, 0)
        nodes = self.nodes
        kw = kwargs or None
        enclose = bool(self._gates or self._sagas)
        parts = []
        if not kw_deps and not enclose:  # the common case: items that are plain values
            first = k = len(nodes)
            append = nodes.append
            atoms = _ATOMS
            for item in seq:
                if type(item) not in atoms:
                    break  # (the rest goes the general way below)
                append(Ref(self, k, task, (item,), kw, [], f"{name}-{n}", kw_nested))
                k += 1
                n += 1
            parts = nodes[first:k]
            seq = seq[k - first:] if k - first < len(seq) else []
        for item in seq:
            t = type(item)
            deps = list(kw_deps)
            nested = kw_nested
            if t is Ref:
                if item.wf is not self:
                    raise RefUsageError(_foreign(item, self))
                deps.insert(0, item.index)
                nested = nested or 1
            elif t not in _ATOMS:
                refuse_hidden_refs(name, (item,), None)
                if t in _CONTAINERS:
                    found: list[int] = []
                    if self._scan(item, found):
                        deps[:0] = found
                        nested = 2
            if len(deps) > 1:
                deps = list(dict.fromkeys(deps))
            ref = Ref(self, len(nodes), task, (item,), kw, deps, f"{name}-{n}", nested)
            n += 1
            nodes.append(ref)
            if enclose:
                self._enclose(ref)
            parts.append(ref)
        self._counters[name] = n
        return parts

    def _add_getitem(self, ref: Ref, key: Any) -> Ref:
        """``ref[key]``: a derived node whose value is ``value[key]``, keyed ``<ref key>[key]``
        (one node per distinct key; it runs on the event loop and is never stored)."""
        from .spec import GETITEM

        derived = f"{ref.key}[{key!r}]"
        known = self._derived.get(derived)
        if known is not None:
            return known
        node = Ref(self, len(self.nodes), GETITEM, (ref, key), None, [ref.index], derived, 1)
        self.nodes.append(node)
        if self._gates or self._sagas:
            self._enclose(node)
        self._derived[derived] = node
        return node

    def _add_collect(self, parts: list[Ref], name: str) -> Ref:
        return self._add_node(COLLECT, name, tuple(parts), [p.index for p in parts], nested=1)

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
        return f"<nf.{type(self).__name__} {self.name!r}: {len(self.nodes)} tasks>"


def _refuse_column_iteration(name: str, items: Any) -> None:
    """``.map(df)`` or ``.map(d)`` iterates column names / keys, which is never what is meant."""
    t = type(items)
    if t.__module__.startswith("pandas") and hasattr(items, "columns"):
        raise WorkflowDefinitionError(
            f"{name}.map() got a DataFrame: iterating one gives its column names, not its rows. Map "
            "over rows with df.to_dict('records') or list(df.itertuples()), or over chunks with "
            "[df.iloc[i:i + n] for i in range(0, len(df), n)]")
    if isinstance(items, dict):
        raise WorkflowDefinitionError(
            f"{name}.map() got a dict: iterating one gives its keys only. Map over d.items() "
            "(pairs), d.values() or list(d) to say which you mean")
