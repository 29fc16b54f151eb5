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


def _inputs_of(ref: Ref) -> list[int]:
    """:func:`data_inputs`, without walking arguments that hold no Ref (most of them)."""
    if not ref.deps:
        return []
    if ref.nested == 1:  # Refs at the top level only: no need to walk into containers
        values = (*ref.args, *(ref.kwargs or {}).values())
        return sorted({v.index for v in values if type(v) is Ref})
    return data_inputs(ref)


class JoinGraph:
    """Data inputs and consumers of a run's tasks, by task key (see the module).  Built
    on first use: a run that never places a task with a known size never walks it."""

    def __init__(self, nodes: Iterable[Ref]) -> None:
        self._nodes: list[Ref] | None = list(nodes)
        self._inputs: dict[str, list[str]] = {}
        self._consumers: dict[str, list[str]] = {}

    def _build(self) -> None:
        nodes, self._nodes = self._nodes or [], None
        by_index = {r.index: r.key for r in nodes}
        for r in nodes:
            ins = [by_index[i] for i in _inputs_of(r) if i in by_index]
            self._inputs[r.key] = ins
            for k in ins:
                self._consumers.setdefault(k, []).append(r.key)

    @property
    def inputs(self) -> dict[str, list[str]]:
        """Task key -> the keys of the tasks whose results it takes."""
        if self._nodes is not None:
            self._build()
        return self._inputs

    @property
    def consumers(self) -> dict[str, list[str]]:
        """Task key -> the keys of the tasks that take its result."""
        if self._nodes is not None:
            self._build()
        return self._consumers

    def joins(self, key: str, where: Callable[[str], Where],
              size: Callable[[str], int | None]) -> list[Join]:
        """The placement rule's ``joins`` for ``key``: per consumer, ``key``'s size and the
        consumer's other inputs as ``(where, bytes)`` (``where`` None: not placed yet)."""
        own = size(key)
        if not own:
            return []
        out: list[Join] = []
        inputs = self.inputs
        for c in self.consumers.get(key, ())[:MAX_CONSUMERS]:
            ins = inputs.get(c, ())
            if len(ins) < 2 or len(ins) > MAX_INPUTS:  # (alone: nothing to join)
                continue
            out.append((own, [(where(k), size(k)) for k in ins if k != key]))
        return out
