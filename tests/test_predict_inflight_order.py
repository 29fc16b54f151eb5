"""The ETA of a run in flight orders the nodes left to run with the engine's one topological
sort (``nbflow.core.graphs.topological_order``), not a copy of its own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbflow.core import graphs
from nbflow.predict import inflight


@st.composite
def dag_and_left(draw: st.DrawFn) -> tuple[list[list[int]], list[int]]:
    """A random DAG as deps (a node depends on smaller ones, repeats allowed), and the
    nodes not ended yet: closed under successors, as a run's unfinished nodes are."""
    n = draw(st.integers(1, 25))
    deps = [draw(st.lists(st.integers(0, i - 1), max_size=4)) if i else [] for i in range(n)]
    ended = {i for i in range(n) if draw(st.booleans())}
    changed = True
    while changed:  # a node ends only after all it waits for did
        changed = False
        for i in sorted(ended):
            if any(d not in ended for d in deps[i]):
                ended.discard(i)
                changed = True
    return deps, [i for i in range(n) if i not in ended]


@settings(max_examples=200, deadline=None)
@given(dag_and_left())
def test_the_order_is_topological_and_the_successors_match_the_edges(case) -> None:
    deps, left = case
    order, succs = inflight.topo_order(left, deps)
    assert sorted(order) == left
    pos = {i: p for p, i in enumerate(order)}
    want = [sorted(pos[j] for j in left for d in deps[j] if d == i) for i in order]
    assert succs == want  # one entry per edge (a repeated dependency counts twice)
    for j in left:
        for d in deps[j]:
            if d in pos:
                assert pos[d] < pos[j]


def test_first_in_first_out_among_ready_nodes() -> None:
    # 0 and 3 are ready first; 1 (after 0) comes after 3, then 2 and 4
    deps = [[], [0], [1], [], [3]]
    order, succs = inflight.topo_order([0, 1, 2, 3, 4], deps)
    assert order == [0, 3, 1, 4, 2]
    assert succs == [[2], [3], [4], [], []]
    # ended nodes are left out, with their edges
    assert inflight.topo_order([1, 2, 4], deps) == ([1, 4, 2], [[2], [], []])


def test_it_uses_the_engines_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = graphs.topological_order

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw.get("lowest_first"))
        return real(*a, **kw)

    monkeypatch.setattr(inflight, "topological_order", counting)
    inflight.topo_order([0, 1], [[], [0]])
    assert calls == [False]


def test_a_cycle_is_named_not_a_key_error() -> None:
    with pytest.raises(ValueError, match="cycle"):
        inflight.topo_order([0, 1, 2], [[], [2], [1]])
