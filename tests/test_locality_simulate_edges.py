"""The placement simulator tells an ordering edge from a data edge.

An edge that ``edge_bytes`` does not list orders two tasks and carries nothing: the consumer
waits for the producer, and the producer's result does not travel to the consumer's worker.
(It used to be recorded there, for nothing, so a later task on that worker taking the result
as data counted no bytes: a collector's ordering edges hid what its consumer fetched.)
"""

from __future__ import annotations

from nbflow.locality.simulate import simulate_placement

MB = 1_000_000


def test_an_ordering_edge_does_not_bring_the_result_for_free():
    # 0 -> items 1..6 (1 MB each) -> 7 (a collector: ordering only, no time) -> 8, which
    # takes the six items' results as data.  Three workers: four items are made elsewhere.
    items = range(1, 7)
    succs = [list(items), *([7, 8] for _ in items), [8], []]
    edges = {(i, 8): MB for i in items}
    durations = [0.5, *(1.0 for _ in items), 0.0, 0.5]
    for policy in ("locality", "round-robin", "earliest-start"):
        got = simulate_placement(succs, durations, edges, 3, policy)
        elsewhere = sum(1 for i in items if got.placement[i] != got.placement[8])
        assert got.bytes_moved == elsewhere * MB, policy
        assert elsewhere > 0, policy
        # the collector waits for every item; the consumer starts once the data is there
        assert got.finish[7] >= max(got.finish[i] for i in items)
        assert got.finish[8] >= got.finish[7] + 0.5


def test_an_ordering_edge_alone_moves_nothing():
    # 0 on some worker, 1 after it (.after(): no data): 1 waits, nothing is counted
    got = simulate_placement([[1], []], [1.0, 1.0], {}, 2, "round-robin")
    assert got.placement[0] != got.placement[1]
    assert got.bytes_moved == 0 and got.finish[1] == 2.0


def test_the_join_term_keeps_the_limits_a_run_keeps(monkeypatch):
    # a reduce over 200 items: a run's JoinGraph skips a consumer with more than MAX_INPUTS
    # data inputs (it gathers from everywhere anyway); the simulator did not, and each item
    # then passed over the other 199 (a 10 000-item map took nf.plan minutes)
    from nbflow.locality import simulate
    from nbflow.locality.joins import MAX_CONSUMERS, MAX_INPUTS

    seen: list[tuple[int, int]] = []
    choose = simulate.Placer.choose

    def spy(self, inputs, *args, joins=(), **kwargs):
        seen.append((len(joins), max((len(others) for _, others in joins), default=0)))
        return choose(self, inputs, *args, joins=joins, **kwargs)

    monkeypatch.setattr(simulate.Placer, "choose", spy)
    n = 200
    succs = [list(range(1, n + 1)), *([n + 1, n + 2] for _ in range(n)), [], []]
    edges = {**{(i, n + 1): MB for i in range(1, n + 1)},  # the reduce
             **{(i, n + 2): MB for i in range(1, 4)}}  # a small join of three items
    got = simulate_placement(succs, [1.0] * (n + 3), edges, 4, "locality")
    assert got.bytes_moved > 0
    assert seen and all(k <= MAX_CONSUMERS and others <= MAX_INPUTS for k, others in seen)
    assert any(others == 2 for _, others in seen)  # the small join still counts
