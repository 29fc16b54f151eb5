"""Where the boxes and arrows of a graph go.

:func:`layout` asks Graphviz's ``dot`` program (``dot -Tjson0``, left to right) for node
positions and spline edges.  When ``dot`` is not installed (or fails) it falls back to a
layered layout computed with networkx: each node in the column of its longest path from a
source, columns ordered by the mean position of their predecessors, edges drawn as simple
curves.  The result says which engine drew it and, for the fallback, carries the one-line
note telling how to get the better layout.

Sizes are in CSS pixels; (0, 0) is the top-left corner.  The layout is computed once per
graph structure: states changing colour do not move anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import networkx as nx

NO_DOT_NOTE = (
    "Graph drawn with a simple layered layout because the Graphviz `dot` program was not found; "
    "install Graphviz (apt install graphviz, brew install graphviz or conda install graphviz) "
    "for a better one."
)
DOT_FAILED_NOTE = "Graphviz `dot` failed ({}); the graph is drawn with a simple layered layout."
PAD = 8.0
_PT_PER_INCH = 72.0


@dataclass(slots=True)
class Layout:
    width: float
    height: float
    nodes: list[tuple[float, float, float, float]]  # centre x, centre y, width, height
    edges: list[tuple[int, int, str, tuple[float, float, float, float]]] = field(default_factory=list)
    # (tail, head, SVG path, arrow (x0, y0, x1, y1): the direction of the arrowhead)
    engine: str = "dot"
    note: str | None = None


def find_dot() -> str | None:
    """Path of the ``dot`` program; ``$NBFLOW_DOT`` overrides (an empty value disables it)."""
    override = os.environ.get("NBFLOW_DOT")
    if override is not None:
        return override or None
    return shutil.which("dot")


def layout(sizes: list[tuple[float, float]], edges: list[tuple[int, int]], *,
           timeout: float = 20.0) -> Layout:
    """Lay out nodes of the given (width, height) with the given directed edges."""
    dot = find_dot()
    if dot is None:
        out = layered(sizes, edges)
        out.note = NO_DOT_NOTE
        return out
    try:
        return dot_layout(dot, sizes, edges, timeout=timeout)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        out = layered(sizes, edges)
        out.note = DOT_FAILED_NOTE.format(str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
        return out


def _dot_source(sizes: list[tuple[float, float]], edges: list[tuple[int, int]]) -> str:
    lines = [
        "digraph G {",
        " graph [rankdir=LR, nodesep=0.22, ranksep=0.42, margin=0, splines=spline,"
        ' outputorder="edgesfirst"];',
        ' node [shape=box, fixedsize=true, label=""];',
    ]
    lines += [f" n{i} [width={w / _PT_PER_INCH:.3f}, height={h / _PT_PER_INCH:.3f}];"
              for i, (w, h) in enumerate(sizes)]
    lines += [f" n{a} -> n{b};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines)


def _pair(s: str) -> tuple[float, float]:
    x, y = s.split(",")[:2]
    return float(x), float(y)


def dot_layout(dot: str, sizes: list[tuple[float, float]], edges: list[tuple[int, int]], *,
               timeout: float = 20.0) -> Layout:
    """Run ``dot -Tjson0`` and read back node centres and edge splines."""
    proc = subprocess.run([dot, "-Tjson0"], input=_dot_source(sizes, edges), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.strip() or f"exit status {proc.returncode}")
    data = json.loads(proc.stdout)
    _, _, bw, bh = (float(v) for v in data["bb"].split(","))
    height = bh + 2 * PAD

    def flip(p: tuple[float, float]) -> tuple[float, float]:
        return p[0] + PAD, height - (p[1] + PAD)

    nodes: list[tuple[float, float, float, float]] = [(0.0, 0.0, w, h) for w, h in sizes]
    gvid: dict[int, int] = {}
    for obj in data.get("objects", []):
        i = int(obj["name"][1:])
        gvid[int(obj["_gvid"])] = i
        x, y = flip(_pair(obj["pos"]))
        nodes[i] = (x, y, sizes[i][0], sizes[i][1])
    out_edges = []
    for e in data.get("edges", []):
        tail, head = gvid[int(e["tail"])], gvid[int(e["head"])]
        end = None
        pts: list[tuple[float, float]] = []
        for tok in e["pos"].split():
            if tok.startswith("e,"):
                end = flip(_pair(tok[2:]))
            elif tok.startswith("s,"):
                continue
            else:
                pts.append(flip(_pair(tok)))
        if not pts:
            continue
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for k in range(1, len(pts) - 2, 3):
            (x1, y1), (x2, y2), (x3, y3) = pts[k], pts[k + 1], pts[k + 2]
            d += f" C{x1:.1f},{y1:.1f} {x2:.1f},{y2:.1f} {x3:.1f},{y3:.1f}"
        last = pts[-1]
        if end is None:
            prev = pts[-2] if len(pts) > 1 else last
            arrow = (prev[0], prev[1], last[0], last[1])
        else:
            arrow = (last[0], last[1], end[0], end[1])
        out_edges.append((tail, head, d, arrow))
    return Layout(bw + 2 * PAD, height, nodes, out_edges, engine="dot")


def layered(sizes: list[tuple[float, float]], edges: list[tuple[int, int]], *,
            col_gap: float = 36.0, row_gap: float = 14.0) -> Layout:
    """A left-to-right layered layout from networkx (the fallback without ``dot``)."""
    n = len(sizes)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(edges)
    cond = nx.condensation(g)  # cycles (possible between folded groups) share a column
    member = cond.graph["mapping"]
    rank_of_comp: dict[int, int] = {}
    for r, gen in enumerate(nx.topological_generations(cond)):
        for c in gen:
            rank_of_comp[c] = r
    rank = [rank_of_comp[member[i]] for i in range(n)]
    cols: list[list[int]] = [[] for _ in range(max(rank, default=-1) + 1)]
    for i in range(n):
        cols[rank[i]].append(i)
    # One sweep of barycentre ordering: a node sits near the mean row of its predecessors.
    row: dict[int, float] = {}
    for col in cols:
        def bary(i: int) -> float:
            ps = [row[p] for p in g.predecessors(i) if p in row]
            return sum(ps) / len(ps) if ps else float(i)

        if row:
            col.sort(key=bary)
        for k, i in enumerate(col):
            row[i] = float(k)
    col_h = [sum(sizes[i][1] for i in col) + row_gap * max(len(col) - 1, 0) for col in cols]
    total_h = max(col_h, default=0.0)
    nodes: list[tuple[float, float, float, float]] = [(0.0, 0.0, w, h) for w, h in sizes]
    x = PAD
    for col, h in zip(cols, col_h, strict=False):
        cw = max(sizes[i][0] for i in col)
        y = PAD + (total_h - h) / 2
        for i in col:
            w, hh = sizes[i]
            nodes[i] = (x + cw / 2, y + hh / 2, w, hh)
            y += hh + row_gap
        x += cw + col_gap
    out_edges = []
    for a, b in edges:
        ax, ay, aw, _ = nodes[a]
        bx, by, bw, _ = nodes[b]
        x0, x1 = ax + aw / 2, bx - bw / 2 - 1
        if x1 <= x0:  # same column (a folded cycle) or backwards: a plain line
            d = f"M{ax:.1f},{ay:.1f} L{bx:.1f},{by:.1f}"
            out_edges.append((a, b, d, (ax, ay, bx, by)))
            continue
        dx = (x1 - x0) / 2
        d = f"M{x0:.1f},{ay:.1f} C{x0 + dx:.1f},{ay:.1f} {x1 - dx:.1f},{by:.1f} {x1 - 6:.1f},{by:.1f}"
        out_edges.append((a, b, d, (x1 - 6, by, x1, by)))
    return Layout(max(x - col_gap + PAD, 2 * PAD), total_h + 2 * PAD, nodes, out_edges, engine="layered")
