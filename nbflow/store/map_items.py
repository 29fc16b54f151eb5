"""The items a map over a Ref is expected to have, before it runs, from the store's history.

``task.map(ref)`` expands only when ``ref``'s value is known, so a traced graph holds the map
node alone.  Whatever predicts a run before it starts (``nf.forecast``'s makespans,
``nf.plan``'s placement and bytes) needs the items, or it predicts nothing for them.  The
best evidence is the workflow's newest run in which that map expanded: it had so many items
(keys ``<map key>[0]``, ``[1]``, ...).  That count is an estimate — the next run may list
more or fewer — and whoever shows it must say so and say where it comes from.

:func:`expand_maps` is the one way both predictions stand in for the items: it appends one
stand-in node per expected item to a copy of the graph's node and dependency lists.  An item
waits for the map's inputs (it is made from the listed value).  Its argument is an item of
that value, which this process (which expands the map) sends along, except for a map over
the results of another map or of a list of Refs: then item ``k`` is the ``k``-th of those
results, which stays on the worker that made it (``MapItem.takes``).  The map node then
waits for its items, and gives their values, as the collector it becomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.kinds import COLLECT, GATHER, MAP, TASK
from .recent import RECENT_RUNS

__all__ = ["ExpandedGraph", "MapCount", "MapItem", "expand_maps", "map_count"]

# Per run of the workflow, newest first: how many nodes are items of the map (key prefix).
_COUNT_SQL = """
SELECT r.id, (SELECT COUNT(*) FROM nodes n
              WHERE n.run_id = r.id AND substr(n.key, 1, ?) = ?)
FROM runs r WHERE r.name = ? ORDER BY r.start DESC LIMIT ?
"""


@dataclass(frozen=True)
class MapCount:
    """How many items map ``key`` is expected to have: ``items`` as in run ``run_id``, the
    newest of the workflow's recent runs in which it expanded (None, None: none did)."""

    key: str
    items: int | None
    run_id: str | None

    def describe(self) -> str:
        """One line a user can act on: the estimate and its source, or why there is none."""
        if self.items is None:
            return (f"{self.key} is a map over a Ref whose items are known only when it runs, and "
                    f"no recent run of this workflow expanded it: its items are left out (run the "
                    f"workflow once and ask again).")
        return (f"{self.key} is a map over a Ref: counted as {self.items} item(s), as many as in "
                f"run {self.run_id}, its newest run (an estimate: the count is known only when "
                f"it runs).")


@dataclass(frozen=True)
class MapItem:
    """A stand-in for an item of a map over a Ref: what the predictions read of a node."""

    index: int
    key: str
    name: str
    deps: list[int]
    task: Any
    map_index: int
    takes: int | None = None  # the node whose value is this item (None: a value from here)
    kind: str = TASK
    args: tuple[Any, ...] = ()
    kwargs: Any = None
    nested: int = 0


@dataclass
class ExpandedGraph:
    """The traced nodes followed by the expected items' stand-ins, with every node's
    dependencies (``deps[i]``; the traced Refs are left untouched) and, per map over a Ref,
    its count."""

    nodes: list[Any]
    deps: list[list[int]]
    counts: dict[str, MapCount] = field(default_factory=dict)
    items_of: dict[int, list[int]] = field(default_factory=dict)  # map node -> its stand-ins

    @property
    def uncounted(self) -> list[str]:
        """Keys of the maps over a Ref whose items no run shows (left out)."""
        return [k for k, c in self.counts.items() if c.items is None]


def map_count(workflow: str, map_key: str, store: Any = None) -> MapCount:
    """:class:`MapCount` of map ``map_key`` of ``workflow`` from the journal (the newest of
    its :data:`~.recent.RECENT_RUNS` runs that holds items of it); no count without a store."""
    if store is None:
        from .store import get_store

        store = get_store(warn=False)
    if store is None:
        return MapCount(map_key, None, None)
    prefix = f"{map_key}["
    try:
        rows = store.journal.query(_COUNT_SQL, (len(prefix), prefix, workflow, RECENT_RUNS))
    except Exception:  # an unreadable journal: a prediction goes on without the count
        return MapCount(map_key, None, None)
    for run_id, n in rows:
        if n:
            return MapCount(map_key, int(n), str(run_id))
    return MapCount(map_key, None, None)


def _item_name(ref: Any) -> str:
    spec = getattr(getattr(ref, "task", None), "spec", None)
    return str(getattr(spec, "name", "") or str(ref.name).removesuffix(".map"))


def _listed(graph: ExpandedGraph, ref: Any) -> list[int]:
    """The nodes whose values a map's items will be, when its input is a collector (a map's
    result, or a list of Refs): item ``k`` is the ``k``-th input's value, which stays where
    it was made.  Empty when the input is any other task's value (a list that comes to
    this process, which expands the map from it)."""
    source = ref.args[0] if ref.args else None
    if source is None or not hasattr(source, "index") or not hasattr(source, "kind"):
        return []
    if source.kind == MAP:
        return list(graph.items_of.get(source.index, ()))
    if source.kind in (COLLECT, GATHER):
        return [a.index for a in source.args if hasattr(a, "index")]
    return []


def expand_maps(workflow: str, nodes: list[Any], deps: list[list[int]] | None = None,
                store: Any = None) -> ExpandedGraph:
    """``nodes`` (a traced graph, ``node.index == position``) with each map over a Ref
    expanded into its expected items (see the module).  ``deps`` defaults to the nodes'
    own; the lists given are copied, not changed."""
    out = ExpandedGraph(list(nodes), [list(d) for d in (deps or [r.deps for r in nodes])])
    for i, ref in enumerate(nodes):
        if ref.kind != MAP:
            continue
        count = out.counts[ref.key] = map_count(workflow, ref.key, store)
        inputs = list(out.deps[i])
        name, task = _item_name(ref), getattr(ref, "task", None)
        mine = out.items_of[i] = []
        listed = _listed(out, ref)
        for k in range(count.items or 0):
            j = len(out.nodes)
            takes = listed[k] if k < len(listed) else None
            out.nodes.append(MapItem(j, f"{ref.key}[{k}]", name, inputs, task, i, takes))
            out.deps.append(list(inputs))
            out.deps[i].append(j)
            mine.append(j)
    return out
