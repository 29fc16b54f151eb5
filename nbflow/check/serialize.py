"""Ordering edges that remove every conflict: the "serialise" answer to the parallel-safety rule.

When two tasks with no path between them touch the same resource unsafely, the simplest
fix that keeps the program's meaning is to make one wait for the other.  Which one waits
must not create a cycle and must not depend on luck, so both tasks are placed in one fixed
topological order (Kahn's algorithm, smallest index first) and the edge always goes from
the earlier to the later.  Every added edge then points forward in that order, so the
graph with all of them added is still acyclic, and each conflicting pair is joined by a
path, so no conflict is left.

This is a pure function over the node list: a run can apply the edges to its private copy
of the graph without touching the user's workflow.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import CycleError
from .analysis import conflicts, find_cycles, nodes_of, successors, topological_order


def serialize_edges(wf_or_nodes: Any) -> list[tuple[int, int]]:
    """``(before, after)`` node-index pairs that order every conflicting pair.

    Accepts an ``nf.Workflow`` or a list of nodes (objects with ``.index``, ``.deps``,
    ``.key``, ``.kind``, ``.task``).  Adding ``before`` to the ``deps`` of ``after`` for
    every pair keeps the graph acyclic and leaves no ``conflict`` finding.  Pairs already
    ordered, or with no conflict, get no edge; a pair conflicting on several resources
    gets one.  The list is sorted.  Raises :class:`nbflow.CycleError` when the graph
    already has a cycle (nothing can be ordered in it).

    Items of one dynamic ``map`` over a Ref do not exist before the run, so conflicts among
    them (the ``map-conflict`` finding) get no edge here.
    """
    nodes = nodes_of(wf_or_nodes)
    succs = successors(nodes)
    order = topological_order(nodes, succs)
    if order is None:
        cycle, _ = find_cycles(nodes, succs)[0]
        raise CycleError([nodes[i].key for i in cycle])
    rank = [0] * len(nodes)
    for r, i in enumerate(order):
        rank[i] = r
    edges = set()
    for c in conflicts(nodes, succs, order):
        a, b = c.first, c.second
        edges.add((a, b) if rank[a] < rank[b] else (b, a))
    return sorted(edges)
