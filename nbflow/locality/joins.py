"""Which results meet in one consumer: the graph the placement rule's join term reads.

The rule of :mod:`.placement` looks one step ahead when it places a task: the consumers
of its result, and where their *other* inputs were already placed (a result made away
from them will have to move).  This module keeps, for one run, each task's data inputs
and consumers (by task key; ``.after()`` ordering edges carry no data and are left out),
and turns them into the rule's ``joins`` argument given the run's current view of where
each result is or will be, and how big it is.

To keep placement cheap per task on wide graphs, only the first :data:`MAX_CONSUMERS`
consumers of a task are looked at, and a consumer with more than :data:`MAX_INPUTS` data
inputs is skipped (a wide reduce gathers from everywhere whatever its producers do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..core.ref import Ref
from .placement import Join, Where

MAX_CONSUMERS = 8
MAX_INPUTS = 32


def data_inputs(ref: Ref) -> list[int]:
    """The indexes of the nodes whose values ``ref`` takes as arguments (not ``.after()``
    edges), found in its arguments and in lists, tuples, sets and dicts within them."""
    found: list[int] = []

    def walk(obj: Any) -> None:
        t = type(obj)
        if t is Ref:
            found.append(obj.index)
        elif t in (list, tuple, set, frozenset):
            for x in obj:
                walk(x)
        elif t is dict:
            for x in obj.values():
                walk(x)

    walk(ref.args)
    if ref.kwargs:
        walk(ref.kwargs)
    return sorted(set(found))


class JoinGraph:
    """Data inputs and consumers of a run's tasks, by task key (see the module)."""

    def __init__(self, nodes: Iterable[Ref]) -> None:
        nodes = list(nodes)
        by_index = {r.index: r.key for r in nodes}
        self.inputs: dict[str, list[str]] = {}
        self.consumers: dict[str, list[str]] = {}
        for r in nodes:
            ins = [by_index[i] for i in data_inputs(r) if i in by_index]
            self.inputs[r.key] = ins
            for k in ins:
                self.consumers.setdefault(k, []).append(r.key)

    def joins(self, key: str, where: Callable[[str], Where],
              size: Callable[[str], int | None]) -> list[Join]:
        """The placement rule's ``joins`` for ``key``: per consumer, ``key``'s size and the
        consumer's other inputs as ``(where, bytes)`` (``where`` None: not placed yet)."""
        own = size(key)
        if not own:
            return []
        out: list[Join] = []
        for c in self.consumers.get(key, ())[:MAX_CONSUMERS]:
            ins = self.inputs.get(c, ())
            if len(ins) < 2 or len(ins) > MAX_INPUTS:  # (alone: nothing to join)
                continue
            out.append((own, [(where(k), size(k)) for k in ins if k != key]))
        return out
