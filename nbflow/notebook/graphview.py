"""The drawn graph of a run: grouping and layout computed once, colours on every render."""

from __future__ import annotations

from .grouping import EXPAND_BELOW, MAX_NODES, Grouping, group
from .layout import Layout, layout
from .model import RunModel
from .render import graph_svg, node_size


class GraphView:
    """Renders ``model`` as SVG.  Grouping is redone only when the graph grows, and the
    layout only when the grouping draws different boxes or arrows."""

    def __init__(self, model: RunModel, *, expand_below: int = EXPAND_BELOW,
                 max_nodes: int = MAX_NODES) -> None:
        self.model = model
        self.expand_below = expand_below
        self.max_nodes = max_nodes
        self.grouping: Grouping | None = None
        self.layout: Layout | None = None
        self._structure = -1
        self._signature: tuple[object, ...] | None = None
        self.layouts_computed = 0

    def _refresh(self) -> None:
        if self._structure == self.model.structure and self.grouping is not None:
            return
        self._structure = self.model.structure
        grouping = group(self.model, expand_below=self.expand_below, max_nodes=self.max_nodes)
        self.grouping = grouping
        sig = grouping.signature()
        if sig != self._signature or self.layout is None:
            self._signature = sig
            sizes = [node_size(g) for g in grouping.groups]
            self.layout = layout(sizes, grouping.edges)
            self.layouts_computed += 1

    @property
    def note(self) -> str | None:
        self._refresh()
        return self.layout.note if self.layout is not None else None

    def svg(self) -> str:
        self._refresh()
        assert self.grouping is not None and self.layout is not None
        return graph_svg(self.model, self.grouping, self.layout)
