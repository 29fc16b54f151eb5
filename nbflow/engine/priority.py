"""Dispatch priority: the longest remaining path from a task to the end of the graph.

Dispatching the task that heads the longest remaining chain first is the classic
critical-path list-scheduling rule (HLFET): it keeps the critical path moving while
filling idle workers with shorter work.  With unit weights this is the number of tasks on
the longest path from a node to a sink, the node included; once the prediction room
supplies durations the same function takes them as ``weights``.

Nodes are integers ``0..n-1``.  Usually they are numbered in a topological order of
creation (a task can only take refs that already exist), and one reverse sweep computes the
levels; ``ref.after()`` can add an edge against creation order, so a topological ``order``
may be passed instead.
"""

from __future__ import annotations

from collections.abc import Sequence


def longest_remaining_path(
    succs: Sequence[Sequence[int]],
    weights: Sequence[float] | None = None,
    order: Sequence[int] | None = None,
) -> list[float]:
    """Return, per node, the weight of the heaviest path from it to any sink, itself included.

    ``succs[i]`` lists the successors of node ``i``.  ``order`` is a topological order of the
    nodes (default ``0..n-1``, which requires every successor index to exceed its node's).
    ``weights`` defaults to 1 per node.
    """
    n = len(succs)
    level = [0.0] * n
    for i in reversed(order) if order is not None else range(n - 1, -1, -1):
        best = 0.0
        for j in succs[i]:
            lj = level[j]
            if lj > best:
                best = lj
        level[i] = best + (1.0 if weights is None else weights[i])
    return level


def ready_key(level: float, priority: int, seq: int) -> tuple[float, int, int]:
    """Heap key of a ready task: longest remaining path first, then user priority, then FIFO."""
    return (-level, -priority, seq)
