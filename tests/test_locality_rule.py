"""The placement rule and its simulation, without a cluster."""

from __future__ import annotations

import pytest

from nbflow.locality.placement import Placer, RoundRobin
from nbflow.locality.simulate import simulate_placement

MB = 1_000_000


def placer(**threads: int) -> Placer:
    p = Placer(bandwidth=100 * MB, prior_seconds=0.05)
    p.set_workers(threads or {"a": 1, "b": 1})
    return p


def test_a_large_single_input_keeps_the_task_on_its_worker():
    p = placer(a=1, b=1)
    p.backlog["a"] = 2  # even with a queue of two 50 ms tasks there
    assert p.choose([("a", 50 * MB)]) == "a"  # 0.5 s to move vs 0.1 s to wait


def test_a_small_input_goes_where_the_queue_is_shorter():
    p = placer(a=1, b=1)
    p.backlog["a"] = 2
    assert p.choose([("a", 1000)]) == "b"


def test_fan_in_goes_to_the_worker_with_most_input_bytes():
    p = placer(a=1, b=1, c=1)
    assert p.choose([("a", 5 * MB), ("b", 30 * MB), ("c", 1 * MB)]) == "b"


def test_measured_durations_replace_the_prior():
    p = placer(a=1, b=1)
    p.backlog["a"] = 1
    assert p.choose([("a", 20 * MB)]) == "a"  # 0.2 s move > 0.05 s prior wait
    p.finished("a", 2.0)  # tasks actually take seconds: waiting behind one costs more
    p.finished("b", 2.0)
    p.backlog = {"a": 1, "b": 0}
    assert p.choose([("a", 20 * MB)]) == "b"


def test_resources_restrict_the_candidates():
    p = Placer()
    p.set_workers({"a": 1, "b": 1}, {"a": {}, "b": {"GPU": 1}})
    assert p.choose([("a", 50 * MB)], {"GPU": 1}) == "b"


def test_round_robin_ignores_the_data():
    p = RoundRobin()
    p.set_workers({"a": 1, "b": 1})
    assert [p.choose([("a", 50 * MB)]) for _ in range(4)] == ["a", "b", "a", "b"]


def test_bandwidth_must_be_positive():
    with pytest.raises(ValueError, match="bandwidth"):
        Placer(bandwidth=0)


def chain(n: int, size: int) -> tuple[list[list[int]], list[float], dict[tuple[int, int], int]]:
    succs = [[i + 1] for i in range(n - 1)] + [[]]
    return succs, [1.0] * n, {(i, i + 1): size for i in range(n - 1)}


def test_simulated_chain_moves_nothing_under_the_rule():
    succs, dur, edges = chain(6, 50 * MB)
    loc = simulate_placement(succs, dur, edges, 4, "locality")
    rr = simulate_placement(succs, dur, edges, 4, "round-robin")
    assert loc.bytes_moved == 0 and loc.makespan == pytest.approx(6.0)
    assert rr.bytes_moved == 5 * 50 * MB and rr.makespan == pytest.approx(6.0 + 5 * 0.5)


def test_simulated_fan_out_spreads_and_respects_the_lower_bound():
    succs = [list(range(1, 9))] + [[9] for _ in range(8)] + [[]]
    dur = [1.0] * 10
    edges = {(0, k): 1000 for k in range(1, 9)} | {(k, 9): 1000 for k in range(1, 9)}
    for policy in ("locality", "round-robin", "earliest-start"):
        r = simulate_placement(succs, dur, edges, 4, policy)
        assert r.makespan >= 1 + 8 / 4 + 1 - 1e-9  # root, 8 tasks on 4 workers, sink
    loc = simulate_placement(succs, dur, edges, 4, "locality")
    assert loc.makespan < 1 + 8 + 1  # it did not serialise the fan-out on the root's worker


def test_simulation_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="unknown policy"):
        simulate_placement([[]], [1.0], {}, 2, "random")


def test_predicted_durations_weigh_the_queue():
    p = placer(a=1, b=1)
    p.choose([("a", 0)], seconds=3.0)  # one 3 s task queued on a (ties go to a)
    # A 20 MB input on a: 0.2 s to move beats 3 s of predicted work queued there...
    assert p.choose([("a", 20 * MB)], seconds=0.01) == "b"
    q = placer(a=1, b=1)
    q.choose([("a", 0)], seconds=0.001)  # ...while a 1 ms task queued there does not
    assert q.choose([("a", 20 * MB)], seconds=0.01) == "a"


def test_unfinished_ancestors_are_not_counted_as_queue():
    p = placer(a=1, b=1)
    for _ in range(5):  # a chain submitted ahead: five links queued on a
        p.choose([("a", 20 * MB)], seconds=1.0)
    chain = [("a", 1.0)] * 5
    assert p.choose([("a", 20 * MB)], seconds=1.0) == "b"  # 5 s of others' work on a
    assert p.choose([("a", 20 * MB)], seconds=1.0, exclude=chain) == "a"  # its own links


def test_a_memory_demand_avoids_workers_without_room():
    p = Placer()
    p.set_workers({"a": 1, "b": 1}, {}, {"a": 4e9, "b": 4e9})
    p.finished(None, 0.1, nbytes=int(3.5e9), held_on="a")  # a holds 3.5 GB of results
    assert p.choose([("a", 50 * MB)], {"memory": 1e9}) == "b"  # moving beats running out
    assert p.choose([("a", 50 * MB)]) == "a"  # without the demand, data decides
    q = Placer()
    q.set_workers({"a": 1, "b": 1}, {}, {"a": 2e9, "b": 1e9})
    assert q.choose([("b", 50 * MB)], {"memory": 8e9}) == "a"  # none fits: the roomiest


def test_simulated_rule_with_predicted_durations_keeps_short_tasks_off_a_long_ones_worker():
    # One 100 s task and ten 1 s tasks, all ready at once, no data: counting queued tasks
    # times the mean puts half the short ones behind the long one; with each task's own
    # predicted duration the rule sees 100 s queued there and sends them all elsewhere.
    dur = [100.0] + [1.0] * 10
    succs: list[list[int]] = [[] for _ in dur]
    counted = simulate_placement(succs, dur, {}, 2, "locality")
    weighed = simulate_placement(succs, dur, {}, 2, "locality", predicted=dur)
    long_worker = weighed.placement[0]
    assert [w for w in weighed.placement[1:] if w == long_worker] == []
    assert [w for w in counted.placement[1:] if w == counted.placement[0]] != []
    assert weighed.makespan == pytest.approx(100.0)
    assert counted.makespan > 100.0
    # unknown predictions (None) fall back to the mean, like a run without history
    assert simulate_placement(succs, dur, {}, 2, "locality", predicted=[None] * 11) == counted
    with pytest.raises(ValueError, match="11 tasks"):
        simulate_placement(succs, dur, {}, 2, "locality", predicted=[1.0])
