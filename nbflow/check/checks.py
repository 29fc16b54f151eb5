"""The checks ``nf.check(wf)`` runs, one small function each, and ``check`` itself.

Why a flat tuple of checker functions: each check is a separate idea (termination,
concurrency safety, resource feasibility), and constructs added later (loops, branches)
bring checks of their own.  A checker
is ``def check_x(ctx: CheckContext) -> Iterable[Finding]``; adding one is writing that
function and listing it in :data:`CHECKS`.  The :class:`CheckContext` computes shared facts
(successors, a topological order, cycles, conflicts) once, lazily, so checkers stay short
and a check that is not needed costs nothing.

Checks that depend only on a node's task (its spec: resources, reads/writes, code) look at
each *run* of consecutive nodes calling one task (:attr:`CheckContext.runs`: a map's items
are one run) once, so a 100 000-item map costs one look, not 100 000; what differs per
item (its arguments, its dependencies) is still looked at per node, and findings still
name the node they concern.

Checks are static: they look at the traced graph and the declared options only, run no
task, and never change the workflow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

from ..core.codeinfo import mutated_globals, nondeterministic_calls
from ..core.graphs import in_creation_order, runs_of
from ..core.kinds import COLLECT, CONST, GATE, LOOP, MAP, TASK
from ..core.memlimit import memory_capacity
from ..core.units import parse_resources
from .analysis import Conflict, NodeLike, conflicts, find_cycles, nodes_of, successors, topological_order
from .findings import Finding, Findings, Severity, sort_findings


def default_capacity() -> dict[str, float]:
    """What a run has when ``resources=`` names nothing: physical RAM (or the cgroup's memory
    limit when lower) and the CPU count."""
    return {"memory": memory_capacity(), "cpu": float(os.cpu_count() or 1)}


class CheckContext:
    """The graph under check plus facts about it that several checkers need."""

    def __init__(
        self,
        nodes: Sequence[NodeLike],
        capacity: Mapping[str, float],
        conflict_severity: Severity = "warning",
    ) -> None:
        self.nodes = nodes
        self.capacity = dict(capacity)
        self.conflict_severity: Severity = conflict_severity
        self.succs = successors(nodes)
        #: A topological order (smallest index first), or None when the graph has a cycle.
        #: (Nodes in creation order, as traced without ``.after()`` against it, need no sort.)
        self.order = list(range(len(nodes))) if in_creation_order(nodes) else \
            topological_order(nodes, self.succs)

    @property
    def acyclic(self) -> bool:
        return self.order is not None

    @cached_property
    def cycles(self) -> list[tuple[list[int], list[int]]]:
        return [] if self.acyclic else find_cycles(self.nodes, self.succs)

    @cached_property
    def conflicts(self) -> list[Conflict]:
        return conflicts(self.nodes, self.succs, self.order, self.runs) if self.acyclic else []

    @cached_property
    def runs(self) -> list[tuple[int, int]]:
        """``[start, end)`` ranges of consecutive nodes of one kind calling one task (see the
        module doc): whatever depends only on the task is looked at once per run."""
        return runs_of(self.nodes)

    def key(self, i: int) -> str:
        return self.nodes[i].key

    def spec(self, i: int) -> Any:
        """The task spec of node ``i``, or None (collect nodes have no function)."""
        node = self.nodes[i]
        if node.kind == COLLECT or node.task is None:
            return None
        return getattr(node.task, "spec", None)


Checker = Callable[[CheckContext], Iterable[Finding]]


# -- termination ----------------------------------------------------------------------------

def check_cycles(ctx: CheckContext) -> Iterable[Finding]:
    """``cycle``: tasks that (indirectly) wait for themselves can never start."""
    for cycle, component in ctx.cycles:
        keys = tuple(ctx.key(i) for i in cycle)
        path = " -> ".join([*keys, keys[0]])
        msg = (
            f"tasks wait for each other in a loop: {path}. None of them can ever start. "
            "Fix: remove one of these dependencies (check the .after() calls and which Refs "
            "are passed to which task)."
        )
        on_cycle = set(cycle)
        others = [ctx.key(i) for i in component if i not in on_cycle]
        if others:
            shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
            msg += f" The same tangle also involves {shown}; breaking this loop may leave another."
        yield Finding("cycle", "error", keys, msg)


# -- concurrency safety ----------------------------------------------------------------------

def check_conflicts(ctx: CheckContext) -> Iterable[Finding]:
    """``conflict``: two tasks that may run at once touch the same resource unsafely."""
    for c in ctx.conflicts:
        a, b = ctx.key(c.first), ctx.key(c.second)
        if c.kind == "write/write":
            what = f"both write {c.resource!r}, so the outcome depends on which finishes last"
        else:
            w, o = (a, b) if c.writer == c.first else (b, a)
            what = (f"{w!r} writes {c.resource!r} while {o!r} reads it, so the reader may see "
                    "the old or the new data")
        yield Finding(
            "conflict", ctx.conflict_severity, (a, b),
            f"{a!r} and {b!r} may run at the same time (no path joins them) and {what} "
            f"({c.kind} conflict). Fix: make one wait for the other: call .after() on the Ref of "
            f"{b!r} with the Ref of {a!r}; or, if they touch different data, declare narrower "
            "names in reads=/writes=.",
            resource=c.resource,
        )


def check_map_conflicts(ctx: CheckContext) -> Iterable[Finding]:
    """``map-conflict``: the items of a map over a Ref run concurrently and all write the same
    resource.  (Items of a map over a plain list are ordinary tasks: ``conflict`` covers them.)"""
    for start, end in ctx.runs:
        if ctx.nodes[start].kind != MAP:
            continue
        spec = ctx.spec(start)
        writes = sorted(set(getattr(spec, "writes", ())))
        for node in ctx.nodes[start:end] if writes else ():
            yield from _map_conflicts(ctx, node, writes)


def _map_conflicts(ctx: CheckContext, node: NodeLike, writes: list[str]) -> Iterable[Finding]:
    for r in writes:
        lock = f"lock:{r}"
        yield Finding(
            "map-conflict", ctx.conflict_severity, (node.key,),
            f"the items of {node.key!r} may run at the same time and each writes {r!r} "
            "(write/write conflict among the items, which exist only at run time so no "
            f"edge can order them). Fix: give the task a unit of a lock resource, "
            f"@nf.task(..., resources={{{lock!r}: 1}}), and run with "
            f"wf.run(resources={{{lock!r}: 1}}) so that one item runs at a time.",
            resource=r,
        )


# -- resource feasibility -----------------------------------------------------------------

_BYTES = ("memory", "mem", "disk", "ram")


def _amount(resource: str, x: float) -> str:
    if math.isinf(x):
        return "unlimited"
    if resource.lower().startswith(_BYTES):
        for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if x >= size:
                return f"{x / size:.3g} {unit}"
        return f"{x:g} B"
    return f"{x:g}"


def check_resources(ctx: CheckContext) -> Iterable[Finding]:
    """``resource``: a task demands more of a resource than the run has, or a resource the
    run has no capacity for at all; either way it could never be admitted."""
    for start, end in ctx.runs:
        demand = getattr(ctx.spec(start), "resources", None)
        if not demand:
            continue
        for node in ctx.nodes[start:end]:
            yield from _resource_findings(ctx, node, demand)


def _resource_findings(ctx: CheckContext, node: NodeLike, demand: Mapping[str, Any]) -> Iterable[Finding]:
    each = {MAP: " (each of its items)", LOOP: " (each iteration)"}.get(node.kind, "")
    for r in sorted(demand):
        amount = float(demand[r])
        cap = ctx.capacity.get(r)
        if cap is None:
            if r.startswith("executor:"):  # engine-managed: known only once the run opens backends
                continue
            yield Finding(
                "resource", "error", (node.key,),
                f"task {node.key!r}{each} needs {_amount(r, amount)} of {r!r} but the run has no "
                f"capacity for {r!r}, so it could never start. Fix: declare it, "
                f"wf.run(resources={{{r!r}: ...}}), or drop it from the task's resources=.",
                resource=r,
            )
        elif amount > cap:
            yield Finding(
                "resource", "error", (node.key,),
                f"task {node.key!r}{each} needs {_amount(r, amount)} of {r!r} but the run's "
                f"capacity is {_amount(r, cap)}, so it could never start. Fix: lower its demand "
                f"(@nf.task(resources=...)) or raise the capacity with "
                f"wf.run(resources={{{r!r}: ...}}).",
                resource=r,
            )


# -- results nobody uses ---------------------------------------------------------------------

def _returns_none(fn: Any) -> bool:
    """True when the function is annotated ``-> None`` (also as a string annotation)."""
    ann = getattr(fn, "__annotations__", None) or {}
    if "return" not in ann:
        return False
    ret = ann["return"]
    return ret is None or ret is type(None) or ret == "None"


def check_unused_results(ctx: CheckContext) -> Iterable[Finding]:
    """``unused-result``: a task whose value no other task uses and which declares no writes.

    Rule: only when the workflow has more than one sink (a single sink is the obvious final
    result); only plain task nodes (not map or collect nodes); skipped for tasks that
    declare ``writes=`` (they run for their effect) or are annotated ``-> None``.
    """
    sinks = [i for i, s in enumerate(ctx.succs) if not s]
    if len(sinks) < 2:
        return
    for i in sinks:
        node = ctx.nodes[i]
        spec = ctx.spec(i)
        if node.kind != TASK or spec is None or spec.writes or _returns_none(spec.fn):
            continue
        yield Finding(
            "unused-result", "info", (node.key,),
            f"no task uses the result of {node.key!r} and it declares no writes=. If you need "
            "its value, read it after the run (run[ref] or ref.result()); if it runs for a "
            "side effect, say so with writes=(...) (or annotate it -> None); otherwise the "
            "call can go.",
        )


def check_unbounded_loops(ctx: CheckContext) -> Iterable[Finding]:
    """``unbounded-loop`` (error): a loop without ``max_iter`` might never end."""
    loops = [node for start, end in ctx.runs if ctx.nodes[start].kind == LOOP
             for node in ctx.nodes[start:end]]
    for node in loops:
        if (getattr(node, "kwargs", None) or {}).get("max_iter") is None:
            yield Finding(
                "unbounded-loop", "error", (node.key,),
                f"loop {node.key!r} has no bound: a loop must stop after max_iter iterations even "
                "if until() never holds; pass nf.loop(..., max_iter=N)",
            )


def check_empty_branches(ctx: CheckContext) -> Iterable[Finding]:
    """``empty-branch`` (info): a side of ``nf.branch`` that runs no task."""
    if not any(ctx.nodes[start].kind == GATE for start, _ in ctx.runs):
        return  # (no branch in the graph)
    gated: set[int] = set()
    for node in ctx.nodes:
        if node.kind != CONST:  # a side returning a plain value runs no task
            gated.update(d for d in node.deps if ctx.nodes[d].kind == GATE)
    for node in ctx.nodes:
        if node.kind == GATE and node.index not in gated:
            side = "then" if getattr(node, "args", (None, True))[1] else "otherwise"
            yield Finding(
                "empty-branch", "info", (node.key,),
                f"the {side} side of a branch ({node.key!r}) runs no task; fine for an optional "
                "step, but check that the side function calls tasks (and returns their Ref)",
            )


# -- what the cache assumes about task code ---------------------------------------------------


def _distinct_tasks(ctx: CheckContext) -> Iterable[tuple[Any, list[str]]]:
    """Each task spec once, with the keys of the nodes that call it (first five)."""
    seen: dict[int, tuple[Any, list[str]]] = {}
    for start, end in ctx.runs:
        spec = ctx.spec(start)
        if spec is None or ctx.nodes[start].kind not in (TASK, MAP):
            continue
        entry = seen.setdefault(id(spec), (spec, []))
        for i in range(start, min(end, start + 5 - len(entry[1]))):
            entry[1].append(ctx.key(i))
    return seen.values()


def check_nondeterministic(ctx: CheckContext) -> Iterable[Finding]:
    """``nondeterministic`` (info): a task calls unseeded randomness or the clock.

    Such a task is not cached unless it says ``cache=True`` (then it is, knowingly).
    """
    for spec, keys in _distinct_tasks(ctx):
        calls = nondeterministic_calls(spec.fn)
        if not calls:
            continue
        cached = " It is cached because it says cache=True." if spec.cache and spec.cache_explicit \
            else " So it is not cached."
        yield Finding(
            "nondeterministic", "info", tuple(keys),
            f"task {spec.name!r} calls {', '.join(calls[:3])}, which give a new value on every run "
            f"(no seed).{cached} To make it repeatable, take a seed argument or use "
            "np.random.default_rng(seed); to cache it anyway, pass @nf.task(cache=True).",
        )


def check_mutated_globals(ctx: CheckContext) -> Iterable[Finding]:
    """``mutates-global`` (warning): a task changes a global value in place.

    A run reads the globals its tasks use once, when it starts (they are part of the cache
    key); a task that changes one makes every later run see a different value, and other
    tasks of the same run see it change under them.
    """
    for spec, keys in _distinct_tasks(ctx):
        names = mutated_globals(spec.fn)
        if not names:
            continue
        yield Finding(
            "mutates-global", "warning", tuple(keys),
            f"task {spec.name!r} changes the global {', '.join(names[:3])} in place. Tasks should "
            "return new values instead: the next run will see a different global (and miss the "
            "cache), and tasks running at the same time see it change. Return the new value and "
            "pass it on.",
        )


def check_untracked_files(ctx: CheckContext) -> Iterable[Finding]:
    """``untracked-file`` (info): a string argument names an existing file.

    The cache sees the string, not the file: rewriting the file at the same path would not
    re-run the task.  ``nf.File(path)`` makes the content part of the key.
    """
    nodes = ctx.nodes
    for start, end in ctx.runs:
        if nodes[start].kind != TASK:
            continue
        for i in range(start, end):
            node = nodes[i]
            args = getattr(node, "args", ())
            kwargs = getattr(node, "kwargs", None)
            values = (*args, *kwargs.values()) if kwargs else args
            for v in values:  # (the first path only: one finding per node)
                if type(v) is str and 0 < len(v) < 4096 and "\n" not in v and _is_file(v):
                    yield _untracked(node, v)
                    break


def _untracked(node: NodeLike, path: str) -> Finding:
    return Finding(
        "untracked-file", "info", (node.key,),
        f"{node.key!r} gets the path {path!r} as a string: the cache sees the string, not "
        f"the file, so a rewritten file would not re-run it. Pass nf.File({path!r}) to "
        "make the file's content part of the cache key.",
    )


def _is_file(text: str) -> bool:
    try:
        return os.path.isfile(text)
    except (OSError, ValueError):
        return False


#: The checkers ``check`` runs, in report order within a severity.  Add new ones here.
CHECKS: tuple[Checker, ...] = (
    check_cycles,
    check_conflicts,
    check_map_conflicts,
    check_resources,
    check_unused_results,
    check_unbounded_loops,
    check_empty_branches,
    check_nondeterministic,
    check_mutated_globals,
    check_untracked_files,
)


def check(
    wf: Any,
    resources: Mapping[str, float | int | str] | None = None,
    *,
    conflict_severity: Severity = "warning",
) -> Findings:
    """Statically check a traced workflow; return its findings, errors first.

    ``wf`` is an ``nf.Workflow`` (or a list of its nodes).  ``resources`` is the capacity
    the run will have, as for ``wf.run(resources=...)``: numbers or sizes such as
    ``"4GiB"``, on top of the defaults (``memory`` = physical RAM, ``cpu`` = CPU count).
    ``conflict_severity`` is the severity of ``conflict``/``map-conflict`` findings
    (``"warning"``; pass ``"error"`` to treat unsafe concurrency as fatal).

    Nothing runs and the workflow is not changed.  See the README for every code.
    """
    if conflict_severity not in ("error", "warning", "info"):
        raise ValueError(f"conflict_severity must be 'error', 'warning' or 'info', got {conflict_severity!r}")
    given = parse_resources(resources, what="check")
    # (a run passes its whole capacity, memory and cpu included: reading the machine's
    # memory and cgroup limit again, ~0.6 ms, would only be overwritten)
    capacity = {} if {"memory", "cpu"} <= given.keys() else default_capacity()
    capacity.update(given)
    ctx = CheckContext(nodes_of(wf), capacity, conflict_severity)
    return sort_findings(f for checker in CHECKS for f in checker(ctx))
