"""Which nodes to draw: small graphs task by task, large ones folded into group nodes.

A drawn graph stays readable up to a couple of hundred boxes, so :func:`group` picks the
finest of these levels that fits in ``max_nodes``:

1. ``tasks``     every task is its own node (only while the graph has at most
                 ``expand_below`` tasks);
2. ``maps``      the items of one ``task.map`` (and its collect node) become one group node;
3. ``siblings``  besides, calls of the same function whose inputs come from the same drawn
                 nodes fold together (``[clean(load(f)) for f in files]`` draws two nodes);
4. ``functions`` every call of the same function becomes one group node;
5. ``layers``    tasks at the same depth of the graph share a node (the last resort).

Grouping is O(tasks + edges) and is recomputed only when the graph's structure changes
(a map over a Ref expanding while the run goes), not when states change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import RunModel

EXPAND_BELOW = 60
MAX_NODES = 200


@dataclass(slots=True)
class Group:
    """One drawn node: a single task, or several folded together."""

    id: str
    label: str
    members: list[int] = field(default_factory=list)
    items: int = 0  # members that are real task calls (collect nodes not counted)

    @property
    def single(self) -> bool:
        return len(self.members) == 1


@dataclass(slots=True)
class Grouping:
    level: str
    groups: list[Group]
    of: list[int]  # node index -> position in groups
    edges: list[tuple[int, int]]

    def signature(self) -> tuple[object, ...]:
        """Equal signatures draw the same boxes and arrows (so one layout serves both)."""
        return (tuple((g.id, g.label) for g in self.groups), tuple(self.edges))


def _func(model: RunModel, i: int) -> str:
    f = model.funcs[i]
    if f is not None:
        return f
    name = model.names[i]
    return name[:-4] if name.endswith(".map") else name


def _families_tasks(model: RunModel) -> list[str]:
    return model.keys[: len(model)]


def _families_maps(model: RunModel) -> list[str]:
    n = len(model)
    fam = model.keys[:n]
    for i in range(n):
        kind = model.kinds[i]
        p = model.parent[i]
        if p is not None:  # an item of a map over a Ref: joins its map node
            fam[i] = model.keys[p]
        elif kind == "collect" and model.names[i].endswith(".map"):
            for d in model.deps[i]:
                if d < n and model.parent[d] is None and model.kinds[d] == "task":
                    fam[d] = model.keys[i]
    return fam


def _families_siblings(model: RunModel) -> list[str]:
    n = len(model)
    maps = _families_maps(model)
    fam = list(maps)
    ids: dict[tuple[str, tuple[str, ...]], str] = {}
    for i in range(n):  # creation order: a node's inputs were (almost always) seen before it
        if maps[i] != model.keys[i] or model.kinds[i] == "collect":
            continue
        func = _func(model, i)
        key = (func, tuple(sorted({fam[d] for d in model.deps[i] if d < n})))
        fid = ids.get(key)
        if fid is None:
            fid = ids[key] = f"{func}#{len(ids)}"
        fam[i] = fid
    return fam


def _families_functions(model: RunModel) -> list[str]:
    return [f"fn:{_func(model, i)}" for i in range(len(model))]


def _families_layers(model: RunModel, max_nodes: int) -> list[str]:
    n = len(model)
    depth = [0] * n
    # Nodes are mostly in topological order; a few passes settle the rest (growth, .after()).
    for _ in range(4):
        changed = False
        for i in range(n):
            d = max((depth[j] + 1 for j in model.deps[i] if j < n), default=0)
            if d != depth[i]:
                depth[i] = d
                changed = True
        if not changed:
            break
    top = max(depth, default=0) + 1
    buckets = min(top, max_nodes)
    return [f"layer:{depth[i] * buckets // top}" for i in range(n)]


def _build(model: RunModel, level: str, fam: list[str]) -> Grouping:
    pos: dict[str, int] = {}
    groups: list[Group] = []
    of = [0] * len(fam)
    for i, f in enumerate(fam):
        g = pos.get(f)
        if g is None:
            g = pos[f] = len(groups)
            groups.append(Group(f, ""))
        grp = groups[g]
        grp.members.append(i)
        if model.kinds[i] != "collect":
            grp.items += 1
        of[i] = g
    for grp in groups:
        grp.label = _label(model, level, grp)
    edges: set[tuple[int, int]] = set()
    for i in range(len(fam)):
        gi = of[i]
        for d in model.deps[i]:
            if d < len(of) and of[d] != gi:
                edges.add((of[d], gi))
    return Grouping(level, groups, of, sorted(edges))


def _label(model: RunModel, level: str, grp: Group) -> str:
    if grp.single:
        return model.keys[grp.members[0]]
    if level == "layers":
        return f"depth {grp.id.partition(':')[2]} ×{len(grp.members)}"
    name = _func(model, grp.members[0])
    return f"{name} ×{grp.items or len(grp.members)}"


def group(model: RunModel, *, expand_below: int = EXPAND_BELOW, max_nodes: int = MAX_NODES) -> Grouping:
    """The finest grouping of ``model``'s nodes with at most ``max_nodes`` drawn nodes."""
    n = len(model)
    if n <= expand_below:
        return _build(model, "tasks", _families_tasks(model))
    for level, make in (("maps", _families_maps), ("siblings", _families_siblings),
                        ("functions", _families_functions)):
        fam = make(model)
        if len(set(fam)) <= max_nodes:  # (one group per family: count before building)
            return _build(model, level, fam)
    return _build(model, "layers", _families_layers(model, max_nodes))
