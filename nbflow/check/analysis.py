"""Graph algorithms behind the checks, over plain node lists.

Everything here takes the traced nodes (objects with ``.index``, ``.deps``, ``.key``,
``.kind`` and ``.task``, i.e. ``wf.nodes`` or a run's private copy) and never mutates them,
so the same code serves ``nf.check(wf)`` before a run and the scheduler's planning inside
one.  Nodes are integers, as in the scheduler.

Why hand-written and not networkx calls throughout: the conflict check (the parallel-safety
rule)
asks, for every pair of tasks touching a common resource, whether a path joins them.  One
``nx.has_path`` per pair is quadratic in calls and far too slow for thousands of tasks.
Instead reachability is computed once as Python-int bitsets (bit *p* set = the node at
position *p* is reachable), one OR per edge, in reverse topological order, and the
concurrent partners of a writer are then one mask expression per resource.  Only nodes
that touch a contested resource get a bit, so a workflow that declares no ``reads`` /
``writes`` costs O(nodes + edges).  Tasks on the two sides of an ``nf.branch`` never both
run, so they are excluded the same way, with one more bitset per node (``_exclusive``).
networkx is used where it is the right tool and the input is small: strongly connected
components of the part of a graph left over by a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from ..core.graphs import find_cycles, runs_of, successors, topological_order  # noqa: F401  (re-exported)
from ..core.kinds import COLLECT, GATE, TOLERANT
from ..core.ref import Ref


class NodeLike(Protocol):
    """What the analysis reads from a traced node (``nf.Ref`` satisfies it)."""

    index: int
    deps: list[int]
    key: str
    kind: str
    task: Any


def nodes_of(wf_or_nodes: Any) -> Sequence[NodeLike]:
    """``wf.nodes`` for a Workflow (or a Run), the sequence itself otherwise."""
    nodes = getattr(wf_or_nodes, "nodes", wf_or_nodes)
    if not isinstance(nodes, Sequence):
        raise TypeError(
            f"expected an nf.Workflow or a list of its nodes, got {type(wf_or_nodes).__name__}"
        )
    return nodes


def access(node: NodeLike) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The declared ``(reads, writes)`` of a node; a node without a task spec has none."""
    if node.kind == COLLECT or node.task is None:
        return (), ()
    spec = getattr(node.task, "spec", None)
    if spec is None:
        return (), ()
    return tuple(getattr(spec, "reads", ())), tuple(getattr(spec, "writes", ()))


class Conflict(NamedTuple):
    """Two nodes with no path between them whose declared access breaks the parallel-safety rule.

    ``first < second`` (node indexes).  ``kind`` is ``"write/write"`` when both write
    ``resource``, ``"read/write"`` when one writes it and the other only reads it;
    ``writer`` is the index of the writing node in the read/write case (of ``first``
    otherwise).
    """

    first: int
    second: int
    resource: str
    kind: str
    writer: int


def conflicts(nodes: Sequence[NodeLike], succs: list[list[int]] | None = None,
              order: list[int] | None = None,
              runs: Sequence[tuple[int, int]] | None = None) -> list[Conflict]:
    """Every (pair, resource) conflict between nodes that may run concurrently.

    Nodes ``a`` and ``b`` may run at the same time when no path joins them (in either
    direction) and they are not on opposite sides of a branch (see :func:`_exclusive`);
    they may do so safely only if ``Write(a) ∩ (Read(b) ∪ Write(b)) = ∅`` and
    ``Write(b) ∩ (Read(a) ∪ Write(a)) = ∅`` (docs/architecture.md argues it).  The graph must be
    acyclic
    (``order`` is a topological order; it is computed when not given, and a cyclic graph
    raises ``ValueError``).  ``runs`` (:func:`~nbflow.core.graphs.runs_of`, computed when not
    given) lets the declared access of one task be read once per run of its nodes.  Sorted
    by ``(first, second, resource)``.
    """
    if succs is None:
        succs = successors(nodes)
    if order is None:
        order = topological_order(nodes, succs)
        if order is None:
            raise ValueError("conflicts() needs an acyclic graph; report the cycle instead")

    # Index access by resource: who writes it, who only reads it.
    writers: dict[str, list[int]] = {}
    readers: dict[str, list[int]] = {}
    for start, end in runs if runs is not None else runs_of(nodes):
        reads, writes = access(nodes[start])  # (the same task and kind along a run)
        if not reads and not writes:
            continue
        ws = set(writes)
        for node in nodes[start:end]:
            for r in ws:
                writers.setdefault(r, []).append(node.index)
            for r in set(reads) - ws:
                readers.setdefault(r, []).append(node.index)
    contested = [r for r, ws in writers.items() if len(ws) + len(readers.get(r, ())) >= 2]
    if not contested:
        return []

    # Bit positions only for nodes that touch a contested resource, ascending by index so
    # that a higher bit always means a higher node index.
    involved = sorted({i for r in contested for i in (*writers[r], *readers.get(r, ()))})
    pos = {i: p for p, i in enumerate(involved)}
    bit = [0] * len(nodes)
    for i, p in pos.items():
        bit[i] = 1 << p
    # desc[i]: involved nodes reachable from i; anc[i]: involved nodes that reach i.
    desc = [0] * len(nodes)
    for i in reversed(order):
        acc = 0
        for s in succs[i]:
            acc |= bit[s] | desc[s]
        desc[i] = acc
    anc = [0] * len(nodes)
    for i in order:
        acc = 0
        for d in nodes[i].deps:
            acc |= bit[d] | anc[d]
        anc[i] = acc

    excl = _exclusive(nodes, succs, order, bit, involved)

    found: list[Conflict] = []
    for r in contested:
        wmask = 0
        for w in writers[r]:
            wmask |= bit[w]
        rmask = 0
        for q in readers.get(r, ()):
            rmask |= bit[q]
        for w in writers[r]:
            free = ~(desc[w] | anc[w] | bit[w] | excl.get(w, 0))  # may run alongside w
            above = -(bit[w] << 1)  # bits of higher positions: each write pair once
            for p in _bits(wmask & free & above):
                found.append(Conflict(w, involved[p], r, "write/write", w))
            for p in _bits(rmask & free):
                q = involved[p]
                found.append(Conflict(min(w, q), max(w, q), r, "read/write", w))
    found.sort(key=lambda c: (c.first, c.second, c.resource))
    return found


def _exclusive(nodes: Sequence[NodeLike], succs: list[list[int]], order: list[int],
               bit: list[int], involved: list[int]) -> dict[int, int]:
    """For each involved node, the involved nodes that can never run in the same run with it.

    ``nf.branch`` compiles to two gate nodes on one condition, ``expect=True`` for the
    *then* side and ``expect=False`` for the *otherwise* side; every node made inside a side
    waits for its gate.  A gate that does not match the condition is skipped, and a skip
    spreads to every successor except the tolerant joins (``first``, ``gather``), so a node
    is *guarded* by a gate when a path of non-tolerant nodes leads from the gate to it.  A
    node guarded by a *then* gate and one guarded by an *otherwise* gate on the same
    condition (the same Ref, or the same plain object) never both run, whatever the
    condition's value; such pairs are not conflicts even with no path between them.
    """
    gates = [node for node in nodes if node.kind == GATE]
    if not gates:
        return {}
    guarded = [0] * len(nodes)
    for i in reversed(order):
        acc = 0
        for s in succs[i]:
            if nodes[s].kind not in TOLERANT:
                acc |= bit[s] | guarded[s]
        guarded[i] = acc
    sides: dict[tuple[str, int], list[int]] = {}  # condition -> [otherwise mask, then mask]
    for g in gates:
        cond, expect = g.args[0], g.args[1]  # type: ignore[attr-defined]
        ident = ("ref", cond.index) if type(cond) is Ref else ("obj", id(cond))
        sides.setdefault(ident, [0, 0])[bool(expect)] |= guarded[g.index]
    excl: dict[int, int] = {}
    for otherwise, then in sides.values():
        if otherwise and then:
            for mine, theirs in ((then, otherwise), (otherwise, then)):
                for p in _bits(mine):
                    i = involved[p]
                    excl[i] = excl.get(i, 0) | theirs
    return excl


def _bits(mask: int) -> list[int]:
    """Positions of the set bits of a non-negative int, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
