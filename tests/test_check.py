"""Static verification (``nf.check``): cycles, conflicts (the parallel-safety condition on
declared reads/writes, see docs/architecture.md), resources, unused results, and
``serialize_edges``.  The conflict analysis is checked against a brute-force oracle
(networkx ``has_path`` for every pair) on random DAGs whose node order is not a
topological order, so the bitset reachability is exercised in earnest."""

from __future__ import annotations

import dataclasses
import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbflow as nf
from nbflow.check import (
    CHECKS,
    Finding,
    Findings,
    check,
    conflicts,
    format_findings,
    serialize_edges,
)
from nbflow.check import checks as checks_module

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POOL = ("a", "b", "c")


@nf.task
def noop(*inputs):
    return len(inputs)


# -- building workflows from a description ---------------------------------------------------

@st.composite
def access_dags(draw, max_nodes: int = 12):
    """(n, edges, reads, writes, data): a random DAG whose hidden topological order is a
    random permutation of the node indexes, so edges also go from higher to lower index."""
    n = draw(st.integers(1, max_nodes))
    perm = draw(st.permutations(range(n)))
    edges = []
    for i in range(n):
        for j in range(i + 1, n):
            if draw(st.integers(0, 3)) == 0:  # sparse enough to leave concurrent pairs
                edges.append((perm[i], perm[j]))
    subsets = st.lists(st.sampled_from(POOL), unique=True, max_size=2).map(tuple)
    reads = [draw(subsets) for _ in range(n)]
    writes = [draw(subsets) for _ in range(n)]
    data = draw(st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)))
    return n, edges, reads, writes, data


def build(n, edges, reads, writes, data=None, name="g"):
    """Node i is created i-th; edge (u, v) means v waits for u: a data dependency when u was
    created first and ``data`` says so, ``v.after(u)`` otherwise."""
    data = data or [False] * len(edges)
    tasks = [noop.with_options(name=f"n{i}", reads=reads[i], writes=writes[i]) for i in range(n)]
    with nf.Workflow(name) as wf:
        refs = []
        for v in range(n):
            args = [refs[u] for (u, w), d in zip(edges, data, strict=True) if w == v and d and u < v]
            refs.append(tasks[v](*args))
        for (u, v), d in zip(edges, data, strict=True):
            if not (d and u < v):
                refs[v].after(refs[u])
    assert [r.index for r in refs] == list(range(n))
    return wf, refs


def digraph(wf) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(range(len(wf.nodes)))
    g.add_edges_from((d, r.index) for r in wf.nodes for d in r.deps)
    return g


def oracle_conflicts(wf):
    """Brute force: every pair with no path either way, intersected by hand."""
    g = digraph(wf)
    out = set()
    for i in range(len(wf.nodes)):
        for j in range(i + 1, len(wf.nodes)):
            if nx.has_path(g, i, j) or nx.has_path(g, j, i):
                continue
            si, sj = wf.nodes[i].task.spec, wf.nodes[j].task.spec
            ri, wi, rj, wj = set(si.reads), set(si.writes), set(sj.reads), set(sj.writes)
            for r in (wi & (rj | wj)) | (wj & (ri | wi)):
                out.add((i, j, r, "write/write" if r in wi and r in wj else "read/write"))
    return out


def index_of(wf):
    return {r.key: r.index for r in wf.nodes}


def snapshot(wf):
    return [list(r.deps) for r in wf.nodes]


# -- conflicts -----------------------------------------------------------------------------

@SETTINGS
@given(access_dags())
def test_conflicts_are_exactly_the_brute_force_ones(spec):
    wf, _ = build(*spec)
    before = snapshot(wf)
    expected = oracle_conflicts(wf)
    assert {(c.first, c.second, c.resource, c.kind) for c in conflicts(wf.nodes)} == expected
    findings = check(wf).by_code("conflict")
    idx = index_of(wf)
    got = [(idx[f.tasks[0]], idx[f.tasks[1]], f.resource) for f in findings]
    assert len(got) == len(set(got))  # one finding per (pair, resource)
    assert set(got) == {(i, j, r) for i, j, r, _ in expected}
    kinds = {(i, j, r): k for i, j, r, k in expected}
    for f, key in zip(findings, got, strict=True):
        assert key[0] < key[1]  # the two tasks in node-index order
        assert f.severity == "warning" and kinds[key] in f.message and f.resource in f.message
        assert ".after()" in f.message  # names the fix
    assert snapshot(wf) == before  # checking never changes the workflow


@SETTINGS
@given(access_dags())
def test_serialize_edges_remove_every_conflict_and_keep_the_graph_acyclic(spec):
    wf, refs = build(*spec)
    before = snapshot(wf)
    original = set(digraph(wf).edges)
    pairs = {(c.first, c.second) for c in conflicts(wf.nodes)}
    edges = serialize_edges(wf)
    assert snapshot(wf) == before  # pure: the workflow is not touched
    assert edges == sorted(set(edges)) == serialize_edges(list(wf.nodes))  # deterministic
    assert {(min(u, v), max(u, v)) for u, v in edges} == pairs  # one edge per conflicting pair
    for u, v in edges:
        refs[v].after(refs[u])
    g = digraph(wf)
    assert nx.is_directed_acyclic_graph(g)
    assert original <= set(g.edges)
    assert not check(wf).by_code("conflict")
    assert oracle_conflicts(wf) == set()


def test_ordered_tasks_do_not_conflict_and_unordered_ones_do():
    w = noop.with_options(name="w", writes=("db:sales",))
    r = noop.with_options(name="r", reads=("db:sales",))
    other = noop.with_options(name="o", writes=("file:x",))
    with nf.Workflow("pairs") as wf:
        w0 = w()
        r(w0)  # reads after the write: ordered by a path
        w1 = w()  # unordered writer: write/write with w0, read/write with r
        other()  # disjoint: nothing
    fs = check(wf).by_code("conflict")
    assert [(f.tasks, f.resource) for f in fs] == [
        (("w-0", "w-1"), "db:sales"),
        (("r-0", "w-1"), "db:sales"),
    ]
    assert "write/write" in fs[0].message and "read/write" in fs[1].message
    assert "'w-1' writes 'db:sales' while 'r-0' reads it" in fs[1].message
    assert check(wf, conflict_severity="error").errors.by_code("conflict") == [
        dataclasses.replace(f, severity="error") for f in fs
    ]
    assert w1.index in {e[1] for e in serialize_edges(wf)}


def test_items_of_a_map_over_a_list_conflict_pairwise_and_serialize_into_a_chain():
    save = noop.with_options(name="save", writes=("file:out",))
    with nf.Workflow("m") as wf:
        save.map([1, 2, 3])
    fs = check(wf).by_code("conflict")
    assert [f.tasks for f in fs] == [("save-0", "save-1"), ("save-0", "save-2"), ("save-1", "save-2")]
    edges = serialize_edges(wf)
    assert edges == [(0, 1), (0, 2), (1, 2)]


def test_a_map_over_a_ref_whose_items_write_is_a_map_conflict_with_a_lock_as_fix():
    save = noop.with_options(name="save", writes=("file:out",))
    with nf.Workflow("dyn") as wf:
        save.map(noop())
    (f,) = check(wf).by_code("map-conflict")
    assert f.tasks == ("save.map-0",) and f.resource == "file:out" and f.severity == "warning"
    assert "resources={'lock:file:out': 1}" in f.message
    assert serialize_edges(wf) == []


def test_conflicts_scale_to_thousands_of_tasks_and_match_reachability():
    rng = random.Random(5)
    n = 1500
    pool = [f"r{i}" for i in range(40)]
    reads = [tuple(rng.sample(pool, rng.randint(0, 2))) for _ in range(n)]
    writes = [tuple(rng.sample(pool, 1)) if rng.random() < 0.05 else () for _ in range(n)]
    edges = [(u, v) for v in range(1, n) for u in rng.sample(range(v), min(v, 2))]
    wf, _ = build(n, edges, reads, writes, [True] * len(edges), name="big")
    g = digraph(wf)
    desc = {i: nx.descendants(g, i) for i in range(n) if reads[i] or writes[i]}
    expected = set()
    for r in pool:
        ws = [i for i in range(n) if r in writes[i]]
        touch = [i for i in range(n) if r in writes[i] or r in reads[i]]
        for a in ws:
            for b in touch:
                if a != b and b not in desc[a] and a not in desc[b]:
                    kind = "write/write" if r in writes[b] else "read/write"
                    expected.add((min(a, b), max(a, b), r, kind))
    got = [(c.first, c.second, c.resource, c.kind) for c in conflicts(wf.nodes)]
    assert len(got) == len(set(got)) and set(got) == expected and expected


def test_no_declared_access_means_no_conflicts():
    wf, _ = build(50, [], [()] * 50, [()] * 50)
    assert conflicts(wf.nodes) == [] and serialize_edges(wf) == []


# -- branches: the two sides never both run ------------------------------------------------

def test_tasks_on_opposite_sides_of_a_branch_do_not_conflict():
    save = noop.with_options(name="save", writes=("file:out",))
    read = noop.with_options(name="read", reads=("file:out",))
    with nf.Workflow("br") as wf:
        cond = noop()
        out = nf.branch(cond, lambda: save(1), lambda: read(save(2)))
        other = save(3)  # outside the branch: may run alongside either side
        noop(out)
    pairs = [(f.tasks, f.resource) for f in check(wf).by_code("conflict")]
    assert pairs == [(("save-0", "save-2"), "file:out"), (("save-1", "save-2"), "file:out"),
                     (("read-0", "save-2"), "file:out")]
    assert other.key == "save-2"
    for u, v in serialize_edges(wf):
        wf.nodes[v].after(wf.nodes[u])
    assert not check(wf).by_code("conflict")
    assert wf.run()[out] == 1


def test_after_a_tolerant_join_a_task_is_no_longer_guarded_by_the_branch():
    save = noop.with_options(name="save", writes=("file:out",))

    def traced(join):
        inner = {}

        def then():
            inner["x"] = noop()
            return inner["x"]

        with nf.Workflow("join") as wf:
            nf.branch(noop(), then, lambda: save(1))
            save(join(inner["x"]))  # uses a value made on the *then* side
        return wf

    # Directly: it needs the then side's value, so it runs only on that side.
    assert not check(traced(lambda x: x)).by_code("conflict")
    # Through gather (tolerant): it runs whichever side was taken.
    fs = check(traced(nf.gather)).by_code("conflict")
    assert [f.tasks for f in fs] == [("save-0", "save-1")]


def oracle_with_branches(wf):
    """Brute force with exclusivity: a node is guarded by a gate when a path of
    non-tolerant nodes leads to it; then/otherwise guarded nodes on one condition never
    both run."""
    from nbflow.core.kinds import GATE, TOLERANT

    g = digraph(wf)
    keep = g.subgraph([r.index for r in wf.nodes if r.kind not in TOLERANT])
    sides = {}
    for r in wf.nodes:
        if r.kind == GATE:
            cond, expect = r.args
            ident = cond.index if isinstance(cond, nf.Ref) else ("obj", id(cond))
            sides.setdefault(ident, ({}, {}))
            sides[ident][bool(expect)][r.index] = nx.descendants(keep, r.index)
    exclusive = set()
    for other_side, then_side in sides.values():
        for a in set().union(*then_side.values()):
            for b in set().union(*other_side.values()):
                exclusive |= {(a, b), (b, a)}
    out = set()
    specs = {r.index: r.task.spec for r in wf.nodes if r.kind == "task"}
    for i in specs:
        for j in specs:
            if i >= j or (i, j) in exclusive or nx.has_path(g, i, j) or nx.has_path(g, j, i):
                continue
            si, sj = specs[i], specs[j]
            ri, wi, rj, wj = set(si.reads), set(si.writes), set(sj.reads), set(sj.writes)
            for r in (wi & (rj | wj)) | (wj & (ri | wi)):
                out.add((i, j, r))
    return out


@SETTINGS
@given(st.data())
def test_conflicts_with_random_branches_match_the_brute_force_oracle(data):
    subsets = st.lists(st.sampled_from(POOL), unique=True, max_size=2).map(tuple)
    count = [0]

    def call(refs):
        count[0] += 1
        t = noop.with_options(name=f"n{count[0]}", reads=data.draw(subsets), writes=data.draw(subsets))
        deps = data.draw(st.lists(st.sampled_from(refs), max_size=2)) if refs else []
        return t(*deps)

    def build_block(refs, depth):
        made = []
        for _ in range(data.draw(st.integers(0 if depth else 1, 3))):
            choice = data.draw(st.integers(0, 5 if depth < 2 else 3))
            if choice <= 2 or not (refs or made):
                made.append(call(refs + made))
            elif choice == 3:
                ins = data.draw(st.lists(st.sampled_from(refs + made), min_size=1, max_size=2))
                made.append(nf.gather(*ins))
            else:
                cond = data.draw(st.sampled_from(refs + made + [True]))
                outer = refs + made
                made.append(nf.branch(cond, lambda o=outer: _last(build_block(o, depth + 1), o),
                                      lambda o=outer: _last(build_block(o, depth + 1), o)))
        return made

    with nf.Workflow("rb") as wf:
        build_block([], 0)
    got = {(c.first, c.second, c.resource) for c in conflicts(wf.nodes)}
    assert got == oracle_with_branches(wf)


def _last(made, outer):
    return made[-1] if made else None


# -- cycles --------------------------------------------------------------------------------

@SETTINGS
@given(st.data())
def test_a_planted_cycle_is_named_exactly_in_cycle_order(data):
    k = data.draw(st.integers(0, 8), label="dag nodes")
    length = data.draw(st.integers(2, 5), label="cycle length")
    creation = data.draw(st.permutations(range(length)), label="creation order")
    parents = [data.draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else []
               for i in range(k)]
    with nf.Workflow("cyc") as wf:
        dag = []
        for ps in parents:
            dag.append(noop(*[dag[p] for p in ps]))
        # Cycle member m is created at position creation[m]; each waits for the one before.
        made = {}
        for m in sorted(range(length), key=lambda m: creation[m]):
            feeds = [dag[data.draw(st.integers(0, k - 1))]] if k and data.draw(st.booleans()) else []
            made[m] = noop(*feeds)
        for m in range(length):
            made[m].after(made[(m - 1) % length])
        for m in range(length):  # tasks downstream of the cycle are not on it
            if data.draw(st.booleans()):
                noop(made[m])
    (f,) = check(wf).by_code("cycle")
    cycle = [made[m].key for m in range(length)]
    first = min(range(length), key=lambda m: made[m].index)
    assert list(f.tasks) == cycle[first:] + cycle[:first]
    assert f.severity == "error"
    assert " -> ".join([*f.tasks, f.tasks[0]]) in f.message and "remove one" in f.message
    with pytest.raises(nf.CycleError):
        serialize_edges(wf)


def test_each_knot_is_reported_once_and_conflicts_are_skipped_on_a_cyclic_graph():
    w = noop.with_options(name="w", writes=("x",))
    with nf.Workflow("two") as wf:
        a, b = w(), w()
        a.after(b)
        b.after(a)
        c, d, e = noop(), noop(), noop()
        d.after(c)
        e.after(d)
        c.after(e)
        w(), w()  # two unordered writers: a conflict, but the cycle comes first
    fs = check(wf)
    assert [f.tasks for f in fs.by_code("cycle")] == [("w-0", "w-1"), ("noop-0", "noop-1", "noop-2")]
    assert not fs.by_code("conflict")
    assert not fs.ok


def test_a_tangle_larger_than_its_shortest_cycle_names_the_rest():
    with nf.Workflow("tangle") as wf:
        a, b, c = noop(), noop(), noop()
        b.after(a)
        a.after(b)
        c.after(b)
        a.after(c)
    (f,) = check(wf).by_code("cycle")
    assert f.tasks == ("noop-0", "noop-1")
    assert "also involves noop-2" in f.message


def test_a_node_that_waits_for_itself_is_a_cycle():
    with nf.Workflow("self") as wf:
        a = noop()
        noop(a)
    a.deps.append(a.index)  # .after() refuses this; the check must not rely on that
    (f,) = check(wf).by_code("cycle")
    assert f.tasks == ("noop-0",) and "noop-0 -> noop-0" in f.message


def test_acyclic_graphs_have_no_cycle_findings():
    wf, _ = build(6, [(0, 1), (1, 2), (0, 3), (3, 2)], [()] * 6, [()] * 6)
    assert not check(wf).by_code("cycle")


# -- resources -----------------------------------------------------------------------------

def test_demand_over_capacity_and_unknown_resources_are_errors():
    big = noop.with_options(name="big", resources={"memory": "8GiB", "gpu": 2})
    small = noop.with_options(name="small", resources={"memory": "512MiB"})
    with nf.Workflow("res") as wf:
        small()
        big()
    fs = check(wf, resources={"memory": "4GiB", "gpu": 1}).by_code("resource")
    assert [(f.code, f.tasks, f.resource) for f in fs] == [
        ("resource", ("big-0",), "gpu"),
        ("resource", ("big-0",), "memory"),
    ]
    assert all(f.severity == "error" for f in fs)
    assert "8 GiB of 'memory'" in fs[1].message and "4 GiB" in fs[1].message
    assert "wf.run(resources={'memory': ...})" in fs[1].message
    assert check(wf, resources={"memory": 8 * 2**30, "gpu": 2}).errors == []


def test_without_capacities_memory_and_cpu_default_to_the_machine_and_others_are_unknown():
    greedy = noop.with_options(name="greedy", resources={"memory": 1e30, "cpu": 1, "gpu": 1})
    with nf.Workflow("defaults") as wf:
        greedy()
    fs = check(wf)
    assert [(f.resource, "no capacity" in f.message) for f in fs] == [("gpu", True), ("memory", False)]
    assert "wf.run(resources={'gpu': ...})" in fs[0].message


def test_resources_of_a_map_apply_to_each_item():
    heavy = noop.with_options(name="heavy", resources={"gpu": 2})
    with nf.Workflow("maps") as wf:
        heavy.map(noop())
    (f,) = check(wf, resources={"gpu": 1})
    assert f.tasks == ("heavy.map-0",) and "each of its items" in f.message


def test_a_capacity_that_cannot_be_read_is_refused():
    with nf.Workflow("bad") as wf:
        noop()
    with pytest.raises(nf.WorkflowDefinitionError, match="4 gallons"):
        check(wf, resources={"memory": "4 gallons"})


# -- unused results ------------------------------------------------------------------------

def test_unused_result_rule():
    @nf.task
    def report(x) -> None:
        print(x)

    saver = noop.with_options(name="saver", writes=("file:out.csv",))
    with nf.Workflow("single") as single:
        noop(noop())
    assert check(single) == []  # one sink: it is the obvious final result

    with nf.Workflow("many") as wf:
        src = noop()
        noop(src)  # forgotten result: flagged
        saver(src)  # runs for its writes: not flagged
        report(src)  # annotated -> None: not flagged
        noop.map([1, 2])  # a collect node is not a task: not flagged
    fs = check(wf)
    assert [(f.code, f.severity, f.tasks) for f in fs] == [("unused-result", "info", ("noop-1",))]
    assert "writes=" in fs[0].message and "ref.result()" in fs[0].message


# -- the result type and the registry ------------------------------------------------------

def test_findings_are_frozen_slotted_sorted_and_print_as_a_table():
    f = Finding("cycle", "error", ("a", "b"), "loop", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.code = "x"
    assert not hasattr(f, "__dict__")
    with pytest.raises(ValueError):
        Finding("x", "fatal", (), "")

    w = noop.with_options(name="w", writes=("x",), resources={"gpu": 1})
    with nf.Workflow("mix") as wf:
        w(), w(), noop()
    fs = check(wf)
    assert isinstance(fs, Findings) and isinstance(fs, list)
    assert [f.severity for f in fs] == ["error", "error", "warning", "info"]
    assert fs.errors == fs[:2] and fs.warnings == fs[2:3] and len(fs.infos) == 1 and not fs.ok
    assert check(wf) == fs  # deterministic
    text = format_findings(fs)
    lines = text.splitlines()
    assert lines[0] == "nbflow check: 2 errors, 1 warning, 1 info"
    assert lines[1].split() == ["severity", "code", "tasks", "resource", "message"]
    assert lines[3].startswith("error") and "w-0" in lines[3] and "gpu" in lines[3]
    assert len(lines) == 3 + len(fs)
    assert format_findings([]) == "nbflow check: no findings"


def test_adding_a_checker_is_one_function(monkeypatch):
    def check_empty_branch(ctx):
        for node in ctx.nodes:
            if not node.deps and not ctx.succs[node.index]:
                yield Finding("empty-branch", "warning", (node.key,), "isolated")

    monkeypatch.setattr(checks_module, "CHECKS", (*CHECKS, check_empty_branch))
    with nf.Workflow("hook") as wf:
        noop()
    assert [f.code for f in check(wf)] == ["empty-branch"]


def test_check_accepts_a_node_list_and_a_workflow_runs_after_checking():
    with nf.Workflow("plain") as wf:
        out = noop(noop(), noop())
    assert check(wf.nodes) == check(wf) == []
    assert wf.run()[out] == 2


# -- a map's items are checked as one group, findings still per item -------------------------

@nf.task
def echo(x):
    return x


def test_a_file_path_among_a_maps_items_is_reported_for_that_item_only(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("x\n")
    items = [f"name-{i}" for i in range(500)]
    items[57] = str(path)
    with nf.Workflow("paths") as wf:
        echo.map(items)
    found = check(wf).by_code("untracked-file")
    assert [f.tasks for f in found] == [("echo-57",)]


def test_a_demand_that_cannot_fit_is_reported_for_every_item_of_a_list_map():
    heavy = noop.with_options(name="heavy", resources={"gpu": 2})
    with nf.Workflow("items") as wf:
        noop()
        heavy.map(range(300))
        noop()
    found = check(wf, resources={"gpu": 1}).by_code("resource")
    assert [f.tasks for f in found] == [(f"heavy-{i}",) for i in range(300)]


def test_a_cycle_through_one_item_of_a_long_map_is_found():
    with nf.Workflow("item-cycle") as wf:
        parts = echo.map(range(1000))
        later = noop(parts)
    wf.nodes[640].after(later)  # echo-640 waits for a task that waits for it
    (f,) = check(wf).by_code("cycle")
    assert "echo-640" in f.tasks and "noop-0" in f.tasks


def test_items_that_write_conflict_pairwise_when_checked_as_a_group():
    writer = echo.with_options(name="writer", writes=("out.csv",))
    with nf.Workflow("writers") as wf:
        writer.map(range(4))
    pairs = sorted(f.tasks for f in check(wf).by_code("conflict"))
    assert pairs == [(f"writer-{a}", f"writer-{b}") for a in range(4) for b in range(a + 1, 4)]


def test_runs_of_consecutive_calls_and_creation_order():
    from nbflow.core.graphs import in_creation_order, runs_of

    with nf.Workflow("runs") as wf:
        a = noop()
        xs = echo.map(range(5))  # nodes 1..5, then the collect node 6
        noop(xs, a)
    assert runs_of(wf.nodes) == [(0, 1), (1, 6), (6, 7), (7, 8)]
    assert in_creation_order(wf.nodes)
    wf.nodes[0].after(wf.nodes[7])
    assert not in_creation_order(wf.nodes)
    assert runs_of([]) == []


_SEEN: list[int] = []


def _appends_and_draws(x: int) -> int:
    _SEEN.append(x)
    return x + random.randint(0, 9)


def test_a_task_s_code_is_walked_once_and_its_globals_are_read_on_every_check(monkeypatch):
    """Every run checks its tasks' code; the syntax tree is walked at the first check only,
    while what the names mean is looked up in the function's globals each time."""
    import ast

    from nbflow.core import codeinfo

    t = nf.task(_appends_and_draws)
    with nf.Workflow("walked-once") as wf:
        t(1)
    first = {f.code for f in check(wf)}
    assert {"nondeterministic", "mutates-global"} <= first
    walks = []
    real_walk = ast.walk
    monkeypatch.setattr(codeinfo.ast, "walk", lambda node: walks.append(node) or real_walk(node))
    assert {f.code for f in check(wf)} == first
    assert walks == []  # (the second check did not parse or walk anything)
    # the same code with a global that is now a module: not a value changed in place any more
    monkeypatch.setitem(_appends_and_draws.__globals__, "_SEEN", dataclasses)
    assert "mutates-global" not in {f.code for f in check(wf)}
    assert codeinfo.mutated_globals(_appends_and_draws) == []
    assert codeinfo.nondeterministic_calls(_appends_and_draws) == ["random.randint"]


def test_a_run_reads_the_machines_memory_once_and_nf_check_alone_still_does(monkeypatch):
    """The run's options already hold the default capacity; its check does not read the
    memory and cgroup limit again (a plain nf.check without resources does)."""
    from nbflow.check import checks as checks_mod
    from nbflow.core import memlimit, options

    reads: list[str] = []
    real = memlimit.memory_capacity

    def counted(*a, **k):
        reads.append("read")
        return real(*a, **k)

    monkeypatch.setattr(options, "memory_capacity", counted)
    monkeypatch.setattr(checks_mod, "memory_capacity", counted)
    with nf.Workflow("reads-once") as wf:
        noop()
    wf.run()
    assert reads == ["read"]
    fs = check(wf)
    assert reads == ["read", "read"] and fs.ok
