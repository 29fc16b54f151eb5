"""Graph shapes shared by the nbflow benchmarks.

Every generator returns ``parents``: a ``list[list[int]]`` where ``parents[i]`` lists the
nodes that node ``i`` depends on.  Nodes are ``0..n-1`` in a topological order (every
parent index is smaller than its child's), which is the order in which a traced workflow
creates them, so a harness can build the graph with one forward loop.

Shapes:

- ``chain``: ``i`` depends on ``i - 1``: no parallelism, the longest possible critical
  path; measures the per-task latency of the dependency machinery.
- ``fan``: one root, ``n - 2`` middle tasks that each depend on the root, one sink that
  depends on every middle task: the widest ready set and one huge in-degree.
- ``layered``: a seeded random layered DAG.  The nodes are split into ``layers``
  consecutive layers of equal width (``ceil(n / layers)``, the last may be shorter); each
  node outside the first layer depends on 1-3 distinct random nodes of the layer before.
  Same ``seed`` and ``n`` give the same graph.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

Parents = list[list[int]]

__all__ = ["SHAPES", "Parents", "chain", "fan", "layered", "make", "sinks"]


def chain(n: int) -> Parents:
    """A linear chain ``0 -> 1 -> ... -> n-1``."""
    if n < 1:
        raise ValueError("chain needs n >= 1")
    return [[]] + [[i - 1] for i in range(1, n)]


def fan(n: int) -> Parents:
    """Fan-out/fan-in: root ``0``, middles ``1..n-2`` depend on it, sink ``n-1`` on all middles."""
    if n < 3:
        raise ValueError("fan needs n >= 3")
    parents: Parents = [[]]
    parents.extend([0] for _ in range(1, n - 1))
    parents.append(list(range(1, n - 1)))
    return parents


def layered(n: int, seed: int = 0, layers: int = 100) -> Parents:
    """A seeded random layered DAG of ``n`` nodes in ``layers`` layers (see module doc)."""
    if n < 1:
        raise ValueError("layered needs n >= 1")
    layers = max(1, min(layers, n))
    width = math.ceil(n / layers)
    rng = random.Random(seed)
    parents: Parents = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            parents.append([])
            continue
        start = (layer - 1) * width
        prev = range(start, start + width)  # the previous layer is always full
        k = rng.randint(1, 3)
        parents.append(sorted(rng.sample(prev, min(k, width))))
    return parents


def sinks(parents: Parents) -> list[int]:
    """Nodes that no other node depends on, ascending."""
    has_child = [False] * len(parents)
    for ps in parents:
        for p in ps:
            has_child[p] = True
    return [i for i, c in enumerate(has_child) if not c]


SHAPES: dict[str, Callable[[int, int, int], Parents]] = {
    "chain": lambda n, seed, layers: chain(n),
    "fan": lambda n, seed, layers: fan(n),
    "layered": layered,
}


def make(shape: str, n: int, seed: int = 0, layers: int = 100) -> Parents:
    """Build the named shape (one of ``SHAPES``)."""
    try:
        gen = SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; choose from {sorted(SHAPES)}") from None
    return gen(n, seed, layers)
