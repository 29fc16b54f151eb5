"""Which results the user can still ask for: the default ``keep="reachable"`` of a Dask run.

A Dask run leaves its results on the workers.  Holding every one of them until the run
object goes (``keep="all"``) lets ``run[ref]`` read any task, but it is what plain Dask
avoids: ``dask.delayed`` frees an intermediate as soon as its consumers have run, and
holding them all costs the workers memory and, with large arrays, time.

What a user can still ask for is what they can still *name*: a ``Ref`` object that a
variable, a list or any other object of theirs refers to (a ``%%workflow`` binding is a
name of the notebook's namespace; ``with nf.Workflow() as wf:`` leaves the names the block
bound), and the results nothing consumes (the workflow's sinks, never released).  In a
``x = step(x)`` loop only the last ``x`` is named; the Refs in between are reachable only
through the workflow's own records.

So at the start of a run this module tells, per node, whether anything *outside the
traced graph* refers to its ``Ref``: the graph's own references are counted exactly (each
node list that holds it, each argument tuple, keyword dict or nested container of another
node that holds it) and compared with the object's reference count.  A surplus means
someone else holds it: the node is kept.  A container of the graph that someone else
holds too (``parts = [...]; combine(parts)``: the list is both the user's and the
argument) keeps every Ref inside it.  The count errs one way only: a reference the graph
makes that is not counted here (a structure this module does not know) looks like the
user's and keeps the result, never the other way round.

The check is run once, when the run is prepared (nothing can bind a new name while a
blocking run runs; a background run's later bindings go through the same namespace, whose
Refs were already counted).  Reading a released result anyway — ``run[key]``, a Ref taken
from ``wf.nodes`` or ``run.tasks`` after the run — raises :class:`nbflow.ResultReleased`
naming the option that keeps it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..core.ref import Ref

_CONTAINERS = (list, tuple, dict, set, frozenset)
# References this module's own loops hold on an object while it asks for its count: the
# call's argument and the loop variable (see held_outside).
_OWN = 2


def held_outside(nodes: Sequence[Ref], owners: Iterable[Sequence[Ref]] = (),
                 extra: Iterable[Ref] = ()) -> set[int]:
    """Indexes of the ``nodes`` whose Ref something outside the graph refers to.

    ``owners``: the node lists of the graph (each holds every node once: the workflow's,
    the run's); ``extra``: other Refs the graph keeps (e.g. derived ``ref[key]`` nodes by
    key).  Everything reachable through the nodes' arguments is counted here."""
    counted: dict[int, int] = {}  # id -> references the graph itself makes
    containers: dict[int, Any] = {}  # id -> a container of the graph (walked once)

    def note(x: Any) -> None:
        t = type(x)
        if t is Ref:
            counted[id(x)] = counted.get(id(x), 0) + 1
        elif t in _CONTAINERS:
            counted[id(x)] = counted.get(id(x), 0) + 1
            if id(x) not in containers:
                containers[id(x)] = x
                for y in (x.values() if t is dict else x):
                    note(y)

    for owner in owners:
        for r in owner:
            counted[id(r)] = counted.get(id(r), 0) + 1
    for r in extra:
        counted[id(r)] = counted.get(id(r), 0) + 1
    for r in nodes:
        note(r.args)  # (the Ref's slot holds its argument tuple and keyword dict)
        if r.kwargs is not None:
            note(r.kwargs)
    held: set[int] = set()
    # A container of the graph someone else holds too: every Ref inside it is theirs.
    # (+1: the ``containers`` dict holds each one as well.)
    shared = [c for c in containers.values()
              if sys.getrefcount(c) - _OWN - 1 > counted.get(id(c), 0)]
    for c in shared:
        _mark(c, held)
    for r in nodes:
        if sys.getrefcount(r) - _OWN > counted.get(id(r), 0):
            held.add(r.index)
    return held


def _mark(obj: Any, held: set[int]) -> None:
    t = type(obj)
    if t is Ref:
        held.add(obj.index)
    elif t in _CONTAINERS:
        for y in (obj.values() if t is dict else obj):
            _mark(y, held)


def run_held(run: Any) -> set[str]:
    """The task keys of ``run`` whose Refs the user holds (see the module)."""
    wf = run.workflow
    nodes = run.nodes
    owners = [lst for lst in (getattr(wf, "nodes", None), nodes) if lst is not None]
    if len(owners) == 2 and owners[0] is owners[1]:
        owners = owners[:1]
    derived = getattr(wf, "_derived", None)  # (a view: no reference of its own)
    held = held_outside(nodes, owners, derived.values() if derived else ())
    return {nodes[i].key for i in held}
