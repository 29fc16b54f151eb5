"""The placement rule's join term: a result is made where its consumer's other inputs are.

Unit tests of :func:`nbflow.locality.placement.join_bytes` and of ``Placer.choose`` with
``joins``; the run's data graph (:class:`nbflow.locality.joins.JoinGraph`); the
simulation, where ten producers of one merge were dealt out one per worker before; a real
two-worker cluster, where a second run (with history of the sizes) makes the producers of
one merge on one worker; and the queue term of a task submitted before its inputs exist.
"""

from __future__ import annotations

import numpy as np
import pytest

import nbflow as nf
from nbflow.locality import agent as agent_module
from nbflow.locality.joins import MAX_INPUTS, JoinGraph
from nbflow.locality.placement import Placer, join_bytes
from nbflow.locality.simulate import simulate_placement

MB = 1_000_000


def placer(**threads: int) -> Placer:
    p = Placer(bandwidth=100 * MB, prior_seconds=0.05)
    p.set_workers(threads or {"a": 1, "b": 1})
    return p


# -- the term -----------------------------------------------------------------------------


def test_join_bytes_counts_what_the_consumer_would_still_fetch():
    # The consumer's other input (1 MB) is on b: made on b, nothing moves; made on a,
    # one of the two 1 MB inputs must move.
    joins = [(MB, [("b", MB)])]
    assert join_bytes("b", joins) == 0
    assert join_bytes("a", joins) == MB
    # ...the cheaper one: a 20 MB partner on b pulls only this task's 1 MB
    assert join_bytes("a", [(MB, [("b", 20 * MB)])]) == MB
    assert join_bytes("a", [(20 * MB, [("b", MB)])]) == MB  # (the partner moves to a)


def test_join_bytes_needs_evidence():
    assert join_bytes("a", [(MB, [(None, MB)])]) == 0  # partner not placed yet
    assert join_bytes("a", [(None, [("b", MB)])]) == 0  # own size unknown
    assert join_bytes("a", [(MB, [("b", None)])]) == 0  # partner's size unknown
    assert join_bytes("a", []) == 0


def test_join_bytes_takes_the_worst_consumer_not_the_sum():
    joins = [(MB, [("b", 5 * MB)]), (MB, [("b", 5 * MB)]), (MB, [("c", 2 * MB)])]
    assert join_bytes("a", joins) == MB  # moved once to b, once to c: at least 1 MB
    assert join_bytes("b", joins) == MB  # still has to reach c's consumer


def test_join_bytes_counts_copies_as_local():
    assert join_bytes("a", [(MB, [(frozenset({"a", "b"}), MB)])]) == 0


def test_a_producer_goes_where_its_partners_are():
    # Without the term the two idle workers tie and the first (a) wins: the old rule put
    # the producer on a, away from its partner on b.
    assert placer().choose([]) == "a"
    assert placer().choose([], joins=[(MB, [("b", MB)])]) == "b"


def test_a_long_queue_still_outweighs_a_small_join():
    p = placer()
    p.backlog["b"] = 3  # 3 x 50 ms queued on b against 10 ms to move 1 MB
    assert p.choose([], joins=[(MB, [("b", MB)])]) == "a"
    q = placer()
    q.backlog["b"] = 3
    assert q.choose([], joins=[(50 * MB, [("b", 50 * MB)])]) == "b"  # 0.5 s to move


def test_inputs_still_come_first():
    # A 20 MB input on a against a 1 MB partner on b: the task stays with its input.
    assert placer().choose([("a", 20 * MB)], joins=[(MB, [("b", MB)])]) == "a"


# -- the run's graph ------------------------------------------------------------------------


@nf.task
def piece(k: int) -> int:
    return k


@nf.task
def merge(*parts: int) -> int:
    return sum(parts)


def test_join_graph_links_data_inputs_only():
    with nf.Workflow("joins-graph") as wf:
        a, b, c = piece(1), piece(2), piece(3)
        m = merge(a, [b])  # (a Ref in a list is an input too)
        n = merge(c).after(m)  # .after() orders, carries no data
    g = JoinGraph(wf.nodes)
    assert g.inputs[m.key] == [a.key, b.key]
    assert g.inputs[n.key] == [c.key]
    assert g.consumers[a.key] == [m.key] and m.key not in g.consumers
    sizes = {a.key: MB, b.key: 2 * MB, c.key: MB}
    where = {b.key: "w1"}
    got = g.joins(a.key, where.get, sizes.get)
    assert got == [(MB, [("w1", 2 * MB)])]
    assert g.joins(m.key, where.get, sizes.get) == []  # its size is unknown


def test_join_graph_skips_wide_consumers():
    with nf.Workflow("joins-wide") as wf:
        parts = [piece(k) for k in range(MAX_INPUTS + 1)]
        merge(*parts)
    g = JoinGraph(wf.nodes)
    sizes = dict.fromkeys((p.key for p in parts), MB)
    assert g.joins(parts[0].key, lambda k: "w0", sizes.get) == []


# -- the simulation ---------------------------------------------------------------------------


def merges(groups: int, width: int, size: int) -> tuple[list[list[int]], dict[tuple[int, int], int]]:
    """``groups`` merges, each of ``width`` producers of ``size`` bytes (producers first)."""
    n = groups * width
    succs: list[list[int]] = [[n + g] for g in range(groups) for _ in range(width)]
    succs += [[] for _ in range(groups)]
    edges = {(g * width + k, n + g): size for g in range(groups) for k in range(width)}
    return succs, edges


def test_simulated_producers_of_one_merge_are_made_together():
    succs, edges = merges(2, 10, MB)
    dur = [0.001] * len(succs)
    rule = simulate_placement(succs, dur, edges, 4, "locality", predicted=dur)
    rr = simulate_placement(succs, dur, edges, 4, "round-robin")
    # Dealt out over 4 workers, a merge finds at most 3 of its 10 inputs at home (the rule
    # without the join term did exactly that); made together, at most a couple move.
    assert rr.bytes_moved >= 14 * MB
    assert rule.bytes_moved <= 4 * MB
    # and the two merges' producers did not pile onto one worker either
    assert len(set(rule.placement[:10]) | set(rule.placement[10:20])) >= 2


def test_simulated_long_producers_are_still_spread():
    succs, edges = merges(1, 8, MB)
    dur = [1.0] * len(succs)  # 1 s each against 10 ms to move 1 MB: parallelism wins
    rule = simulate_placement(succs, dur, edges, 4, "locality", predicted=dur)
    assert len(set(rule.placement[:8])) == 4
    assert rule.makespan == pytest.approx(2 + 1 + 0.01 * 1, abs=0.02)


# -- a real cluster -----------------------------------------------------------------------------


distributed = pytest.importorskip("distributed")


@nf.task
def block(n: int, k: int):
    return np.full(n // 8, float(k))


@nf.task
def combine(*blocks) -> float:
    return float(sum(float(b[:10].sum()) for b in blocks))


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def fan_in(name: str) -> tuple[nf.Workflow, nf.Ref]:
    with nf.Workflow(name) as wf:
        end = combine(*[block(4 * MB, k) for k in range(8)])
    return wf, end


def test_a_cluster_run_makes_the_producers_of_a_merge_together(client, monkeypatch):
    wf, end = fan_in("joins-cluster")
    wf.run(backend=client, cache=False)  # history: sizes and durations
    # The rule weighs the durations it learned: a few ms each on a quiet machine, but a
    # loaded one measures far more, and a queue of those outweighs moving 4 MB (the rule
    # then rightly spreads them: 4 and 4, as a run under CPU stress did).  So the compute
    # seconds Dask measured for the blocks (which placement takes first) are set here.
    monkeypatch.setattr(agent_module, "_compute", agent_module._compute.copy())
    for k in range(8):
        agent_module._compute[("joins-cluster", f"block-{k}")] = 0.002
    run = wf.run(backend=client, cache=False)
    assert run[end] == pytest.approx(sum(range(8)) * 10.0)
    agent = run.locality.agent
    hinted = [agent.hinted[f"block-{k}"] for k in range(8)]
    # Eight few-ms producers of 4 MB (40 ms to move each) on two workers: the rule keeps
    # most of them together (until the queue costs more than moving 4 MB), where the rule
    # without the join term deals them out by queue length (4 and 4 when placed at once;
    # the unit tests above pin that difference down).
    most = max(set(hinted), key=hinted.count)
    assert hinted.count(most) >= 5
    assert agent.hinted["combine-0"] == most  # the merge goes where most of them are
    t = run.transfers
    moved = int(t["bytes"].sum()) if len(t) else 0
    assert moved < 4 * 4 * MB  # fewer than the even split's four blocks moved


# -- the queue counts from when the task could start --------------------------------------


def queued_ahead() -> Placer:
    """a: a big short producer P, then an unrelated 0.3 s task; b: a slow producer Q."""
    p = placer()
    assert p.choose([], seconds=0.05) == "a"  # P (10 MB)
    assert p.choose([], seconds=0.6) == "b"  # Q (1 MB), 0.6 s
    assert p.choose([], seconds=0.3) == "a"  # unrelated
    return p


def test_a_queue_that_ends_before_the_inputs_are_made_does_not_count():
    # The consumer of P and Q cannot start before Q ends (0.6 s): the 0.3 s of unrelated
    # work on a is done by then, so it stays with P's 10 MB instead of fetching them.
    inputs = [("a", 10 * MB), ("b", MB)]
    ancestors = [("a", 0.05), ("b", 0.6)]
    assert queued_ahead().choose(inputs, seconds=0.001, exclude=ancestors, ready=0.6) == "a"
    # (without knowing when its inputs are ready, the old rule moved the 10 MB)
    assert queued_ahead().choose(inputs, seconds=0.001, exclude=ancestors) == "b"


def test_a_queue_longer_than_the_wait_for_the_inputs_still_counts():
    p = placer()
    p.choose([], seconds=2.0)  # 2 s of work on a
    # ready in 0.1 s, 1.9 s of a's queue still there: moving 10 MB (0.1 s) is cheaper
    assert p.choose([("a", 10 * MB)], seconds=0.001, ready=0.1) == "b"
    assert p.wait("a", ready=0.1) == pytest.approx(1.9)
    assert p.wait("a", ready=5.0) == 0.0


def test_ready_in_is_the_latest_input():
    import time

    now = time.monotonic()
    assert Placer.ready_in([now + 0.5, now + 2.0, None]) == pytest.approx(2.0, abs=0.05)
    assert Placer.ready_in([now - 1.0, None]) == 0.0
    assert Placer.ready_in([]) == 0.0


def test_the_agent_hands_the_rule_when_inputs_will_be_ready():
    agent = agent_module.LocalityAgent("locality")
    agent.placer = placer()
    agent.workflow = "joins-ready-agent"
    agent.predict({"P": 10 * MB, "Q": MB, "U": 0, "C": 1000},
                  {"P": 0.05, "Q": 0.6, "U": 0.3, "C": 0.001})
    assert agent.choose("P", "P-1", [], {}) == ["a"]
    assert agent.choose("Q", "Q-1", [], {}) == ["b"]
    assert agent.choose("U", "U-1", [], {}) == ["a"]
    assert agent.eta["Q"] - agent.eta["P"] == pytest.approx(0.55, abs=0.05)
    # C submitted ahead of P and Q: placed by the bytes, a's unrelated work being done
    # before Q is; with the predicted ends switched off it fetched P's 10 MB.
    assert agent.choose("C", "C-1", [("P", "a", 10 * MB), ("Q", "b", MB)], {},
                        after=["P-1", "Q-1"]) == ["a"]
    agent.eta.clear()
    assert agent.choose("C", "C-2", [("P", "a", 10 * MB), ("Q", "b", MB)], {},
                        after=["P-1", "Q-1"]) == ["b"]


def test_join_graph_is_built_on_first_use_and_reads_top_level_refs():
    with nf.Workflow("joins-lazy") as wf:
        a, b = piece(1), piece(2)
        m = merge(a, b, 3)  # Refs at the top level only
        n = merge({"x": [a]}, m)  # one nested in containers
    g = JoinGraph(wf.nodes)
    assert g._nodes is not None  # nothing walked yet
    assert g.inputs[m.key] == [a.key, b.key] and g._nodes is None
    assert g.inputs[n.key] == [a.key, m.key]
    assert g.consumers[a.key] == [m.key, n.key]


def test_an_input_now_outweighs_a_join_of_the_same_bytes():
    # The last link of a chain on b (2 MB input there) whose consumer also takes a 2 MB
    # result on a: moving the input now or the result later is 2 MB either way; the task
    # stays with its input (a join is a forecast), even with a slightly longer queue.
    p = placer()
    p.choose([], seconds=0.001)  # 1 ms queued on a,
    p.choose([], seconds=0.002)  # 2 ms on b
    assert p.choose([("b", 2 * MB)], seconds=0.001, joins=[(2 * MB, [("a", 2 * MB)])]) == "b"
