"""Zero-overhead discrete-event simulation of nbflow's dispatch policy.

:func:`simulate` replays a DAG with known task durations on ``workers`` slots exactly the
way the engine's scheduler dispatches, but with no cost for dispatching, so it gives the
makespan that policy achieves in theory.  The benchmarks compare measured makespans with
it (the engine's overhead is the difference) and the prediction room reuses it for ETAs.

The graph is the engine's shape: nodes are ``0..n-1`` in topological creation order
(every edge goes from a lower index to a higher one) and ``succs[i]`` lists the
successors of ``i`` in their creation order.  The policy replicated:

- in-degree counters; a node becomes ready when its last predecessor finishes;
- ready nodes wait in a heap keyed by :func:`nbflow.engine.priority.ready_key`
  ``(level, priority, seq)``: ``level`` defaults to the unit-weight
  :func:`~nbflow.engine.priority.longest_remaining_path` (pass ``levels`` to simulate a
  duration-weighted policy), ``priority`` to 0, and ``seq`` counts pushes into the heap;
- the initially ready nodes are pushed in index order; when a node finishes, those of
  its successors that become ready are pushed in ``succs[node]`` order;
- whenever a worker is free and the heap is not empty, the best node is popped and
  started; at most ``workers`` nodes run at once;
- finishes are processed one at a time in order of ``(finish time, start order)``, each
  followed by dispatch.

It runs in ``O((V + E) log V)`` time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from nbflow.engine.priority import longest_remaining_path, ready_key

__all__ = ["Schedule", "simulate"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """The outcome of :func:`simulate`.

    ``ready[i]``, ``start[i]`` and ``finish[i]`` are the simulated times at which node ``i``
    became ready, started and finished; ``order`` lists the nodes in the order they started.
    """

    makespan: float
    start: list[float]
    finish: list[float]
    order: list[int]
    ready: list[float]


def simulate(
    succs: Sequence[Sequence[int]],
    durations: Sequence[float],
    workers: int,
    priorities: Sequence[int] | None = None,
    levels: Sequence[float] | None = None,
) -> Schedule:
    """Simulate the engine's list scheduling of a DAG with zero dispatch overhead.

    ``succs[i]`` are the successors of node ``i`` (each greater than ``i``), ``durations[i]``
    its run time (>= 0), ``workers`` the number of nodes that may run at once.
    ``priorities`` are the user priorities (default 0) and ``levels`` the critical-path
    levels (default: unit-weight longest remaining path), as the engine computes them.
    """
    n = len(succs)
    if len(durations) != n:
        raise ValueError(f"{len(durations)} durations for {n} nodes")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if priorities is not None and len(priorities) != n:
        raise ValueError(f"{len(priorities)} priorities for {n} nodes")
    if levels is not None and len(levels) != n:
        raise ValueError(f"{len(levels)} levels for {n} nodes")

    indegree = [0] * n
    for i, out in enumerate(succs):
        for j in out:
            if not i < j < n:
                raise ValueError(f"edge {i} -> {j} does not go to a later node in 0..{n - 1}")
            indegree[j] += 1
    for i, d in enumerate(durations):
        if not (d >= 0 and math.isfinite(d)):
            raise ValueError(f"duration of node {i} must be finite and >= 0, got {d!r}")

    level = longest_remaining_path(succs) if levels is None else levels
    prio = priorities

    ready_heap: list[tuple[tuple[float, int, int], int]] = []
    seq = 0
    ready = [0.0] * n
    start = [0.0] * n
    finish = [0.0] * n
    order: list[int] = []
    # Running nodes keyed by (finish time, start order, node).
    running: list[tuple[float, int, int]] = []
    now = 0.0

    def push(node: int) -> None:
        nonlocal seq
        key = ready_key(level[node], 0 if prio is None else prio[node], seq)
        seq += 1
        ready[node] = now
        heapq.heappush(ready_heap, (key, node))

    def dispatch() -> None:
        while ready_heap and len(running) < workers:
            _, node = heapq.heappop(ready_heap)
            start[node] = now
            end = now + durations[node]
            finish[node] = end
            heapq.heappush(running, (end, len(order), node))
            order.append(node)

    for i in range(n):
        if indegree[i] == 0:
            push(i)
    dispatch()
    while running:
        now, _, node = heapq.heappop(running)
        for j in succs[node]:
            indegree[j] -= 1
            if indegree[j] == 0:
                push(j)
        dispatch()

    if len(order) != n:  # pragma: no cover - impossible when every edge goes forward
        raise ValueError("not every node became ready: the graph is not a DAG")
    return Schedule(makespan=max(finish, default=0.0), start=start, finish=finish, order=order, ready=ready)
