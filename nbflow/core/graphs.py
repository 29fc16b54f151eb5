"""Graph algorithms over plain node lists: the one topological sort, and cycle finding.

Nodes are integers ``0..n-1``; ``succs[i]`` lists the successors of node ``i``.  Traced
nodes (anything with ``.index`` and ``.deps``, such as :class:`~nbflow.core.ref.Ref`) give
their successor lists through :func:`successors`.  The scheduler, the static checks and the
cache all order nodes with :func:`topological_order`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any


def successors(nodes: Sequence[Any]) -> list[list[int]]:
    """Successor lists from ``.deps``; each list is in ascending node order."""
    succs: list[list[int]] = [[] for _ in nodes]
    for node in nodes:
        for d in node.deps:
            succs[d].append(node.index)
    return succs


def in_creation_order(nodes: Sequence[Any]) -> bool:
    """True when every node depends only on nodes with smaller indexes.

    Tracing numbers nodes in creation order and a call can only take Refs that exist, so
    this holds unless ``ref.after()`` added an edge against that order.  Then ``0..n-1`` is
    a topological order (the one :func:`topological_order` gives with ``lowest_first``) and
    the graph has no cycle, which one pass over the edges shows without sorting.
    """
    for node in nodes:
        i = node.index
        for d in node.deps:
            if d >= i:
                return False
    return True


def runs_of(nodes: Sequence[Any]) -> list[tuple[int, int]]:
    """Ranges ``[start, end)`` of consecutive nodes of the same kind calling the same task.

    The items of a map are traced one after another with one task, so a 100 000-item map
    is one run: what depends only on the task (its spec, its executor, its declared
    resources and access) is then looked at once per run instead of once per node.
    """
    out: list[tuple[int, int]] = []
    start = 0
    task: Any = None
    kind: Any = None
    for k, node in enumerate(nodes):
        if node.task is not task or node.kind != kind:
            if k:
                out.append((start, k))
            start, task, kind = k, node.task, node.kind
    if nodes:
        out.append((start, len(nodes)))
    return out


def topological_order(
    nodes: Sequence[Any] | None = None,
    succs: Sequence[Sequence[int]] | None = None,
    *,
    indegree: Sequence[int] | None = None,
    lowest_first: bool = True,
) -> list[int] | None:
    """Kahn's algorithm; ``None`` if there is a cycle.

    Give traced ``nodes`` (successors and in-degrees come from their ``.deps``), or ``succs``
    with ``indegree``.  ``lowest_first`` takes the smallest ready index first, which makes
    the order a pure function of the graph (what lets ``serialize_edges`` be deterministic);
    without it ready nodes are taken first-in first-out, which is linear time (the
    scheduler's choice on 100k-node graphs).
    """
    if succs is None:
        succs = successors(nodes or ())
    if indegree is None:
        if nodes is None:
            raise TypeError("topological_order needs nodes, or succs with indegree")
        indegree = [len(node.deps) for node in nodes]
    indeg = list(indegree)
    ready = [i for i, d in enumerate(indeg) if d == 0]  # ascending: already a heap
    order: list[int] = []
    if lowest_first:
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for s in succs[i]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    heapq.heappush(ready, s)
    else:
        order = ready
        k = 0
        while k < len(order):
            for s in succs[order[k]]:
                indeg[s] -= 1
                if indeg[s] == 0:
                    order.append(s)
            k += 1
    return order if len(order) == len(indeg) else None


def find_cycles(
    nodes: Sequence[Any], succs: list[list[int]] | None = None
) -> list[tuple[list[int], list[int]]]:
    """One cycle per knot of the graph, as ``(cycle, component)`` pairs.

    A knot is a strongly connected component with more than one node, or a node that waits
    for itself.  ``cycle`` is the shortest cycle through the component's smallest node,
    starting there, in dependency order (each node waits for the one before it, the first
    for the last); ``component`` is every node of the knot, ascending.  Breaking the
    reported cycle may leave another in the same component; the component tells the
    reader how far the tangle goes.  Knots are listed by their smallest node.
    """
    import networkx as nx

    if succs is None:
        succs = successors(nodes)
    # Nodes Kahn's algorithm cannot order are on a cycle or downstream of one.
    indeg = [len(node.deps) for node in nodes]
    stack = [i for i, d in enumerate(indeg) if d == 0]
    while stack:
        i = stack.pop()
        for s in succs[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                stack.append(s)
    left = [i for i, d in enumerate(indeg) if d > 0]
    if not left:
        return []
    g = nx.DiGraph()
    g.add_nodes_from(left)
    g.add_edges_from((i, s) for i in left for s in succs[i] if indeg[s] > 0)
    out = []
    for comp in nx.strongly_connected_components(g):
        start = min(comp)
        if len(comp) == 1 and start not in succs[start]:
            continue
        out.append((_shortest_cycle(start, comp, succs), sorted(comp)))
    out.sort(key=lambda c: c[1][0])
    return out


def _shortest_cycle(start: int, comp: set[int], succs: list[list[int]]) -> list[int]:
    """Breadth-first from ``start`` inside ``comp`` until an edge leads back to it."""
    if start in succs[start]:
        return [start]
    parent = {start: start}
    frontier = [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in succs[u]:
                if v == start:
                    path = [u]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if v in comp and v not in parent:
                    parent[v] = u
                    nxt.append(v)
        frontier = nxt
    raise AssertionError("a strongly connected component always has a cycle")  # pragma: no cover
