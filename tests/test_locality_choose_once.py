"""The placement rule works out a task's worker-independent terms once per task.

``Placer.choose`` weighs every candidate worker; what does not depend on the worker (the
typical task's seconds, the excluded ancestors grouped by worker, the join term's placed
inputs and what each consumer would fetch at each of their places) is prepared once per
task, not once per worker.  The choice must be the very one the public ``cost`` gives for
every worker (the same floats), on random states of the queues, durations and joins.
"""

from __future__ import annotations

import importlib
import random

import pytest

from nbflow.locality.placement import Placer, join_bytes

placement = importlib.import_module("nbflow.locality.placement")  # (the module: the package's
# ``placement`` is the context manager)

MB = 1_000_000
WORKERS = ["tcp://a", "tcp://b", "tcp://c", "tcp://d"]


def _where(rng: random.Random) -> placement.Where:
    roll = rng.random()
    if roll < 0.2:
        return None
    if roll < 0.7:
        return rng.choice(WORKERS)
    return frozenset(rng.sample(WORKERS, rng.randint(1, 3)))


def _size(rng: random.Random) -> int | None:
    return None if rng.random() < 0.15 else rng.choice([0, 10, 1000, MB, 3 * MB, 20 * MB])


def _random_state(rng: random.Random) -> tuple[Placer, dict]:
    p = Placer(bandwidth=100 * MB, prior_seconds=0.05)
    p.set_workers({w: rng.choice([1, 1, 2]) for w in WORKERS})
    for _ in range(rng.randint(0, 12)):  # a backlog, some of it with predicted seconds
        p._queue(rng.choice(WORKERS), rng.choice([None, 0.01, 0.2, 1.5]))
    for _ in range(rng.randint(0, 4)):  # some finished tasks: a measured typical duration
        p._done += 1
        p._done_seconds += rng.random()
    inputs = [(_where(rng), _size(rng)) for _ in range(rng.randint(0, 3))]
    exclude = [(rng.choice([*WORKERS, None]), rng.choice([None, 0.05, 0.7]))
               for _ in range(rng.randint(0, 4))]
    joins = [(_size(rng), [(_where(rng), _size(rng)) for _ in range(rng.randint(0, 3))])
             for _ in range(rng.randint(0, 3))]
    ready = rng.choice([0.0, 0.0, 0.05, 0.3])
    return p, {"inputs": inputs, "exclude": exclude, "joins": joins, "ready": ready}


def _reference(p: Placer, args: dict) -> str:
    """The rule as written: the lowest ``cost`` over the candidates (ties: backlog, name)."""
    return min(p.candidates({}), key=lambda w: (p.cost(w, args["inputs"], args["exclude"],
                                                       args["joins"], args["ready"]),
                                                p.backlog.get(w, 0), w))


@pytest.mark.parametrize("seed", range(300))
def test_choose_picks_the_worker_of_least_cost_as_written(seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    p, args = _random_state(rng)
    monkeypatch.setattr(placement.time, "monotonic", lambda: 100.0)
    expected = _reference(p, args)
    eta = 100.0 + args["ready"] + p.wait(expected, args["exclude"], args["ready"]) + p.task_seconds
    # the chosen worker and the very float of the queue term cost() counted there
    assert p._best(WORKERS, args["inputs"], args["exclude"], args["joins"], args["ready"]) == (
        expected, p.wait(expected, args["exclude"], args["ready"]))
    assert p.choose(args["inputs"], None, None, args["exclude"], args["joins"],
                    args["ready"]) == expected
    assert p.last_eta == eta  # (when it should end: the same float as before)


def test_the_join_terms_are_prepared_once_per_task_not_per_worker(monkeypatch) -> None:
    """``choose`` neither calls ``cost`` nor ``join_bytes`` for each of the 4 workers (the
    consumers' placed inputs are summed once per place, for the task), nor works out the
    chosen worker's wait again for the task's predicted end."""
    p = Placer(bandwidth=100 * MB)
    p.set_workers({w: 1 for w in WORKERS})
    joins = [(MB, [("tcp://a", 2 * MB), (frozenset({"tcp://b", "tcp://c"}), MB)])]
    expected = min(WORKERS, key=lambda w: (p.cost(w, [("tcp://d", MB)], (), joins), 0, w))

    def per_worker(*a, **k):
        raise AssertionError("worked out again for every worker")

    monkeypatch.setattr(placement, "join_bytes", per_worker)
    monkeypatch.setattr(Placer, "cost", per_worker)
    monkeypatch.setattr(Placer, "wait", per_worker)  # (nor the chosen worker's wait again)
    assert p.choose([("tcp://d", MB)], joins=joins) == expected


def test_the_queues_are_read_in_one_loop_not_through_a_call_per_worker(monkeypatch) -> None:
    """``choose`` runs for every task a Dask run submits, before its graph is sent: it
    reads each worker's queue inline (the same floats, see above), not through
    ``_queue_seconds`` or a cost function per worker."""
    p = Placer(bandwidth=100 * MB)
    p.set_workers({w: 1 for w in WORKERS})
    p._queue("tcp://a", 0.2)
    p._queue("tcp://b", None)
    args = ([("tcp://a", MB)], [("tcp://a", 0.2)], [(MB, [("tcp://c", MB)])], 0.05)
    expected = _reference(p, dict(zip(("inputs", "exclude", "joins", "ready"), args, strict=True)))

    def per_worker(*a, **k):
        raise AssertionError("a call per worker")

    monkeypatch.setattr(Placer, "_queue_seconds", per_worker)
    assert p.choose(args[0], None, None, *args[1:]) == expected


def test_prepared_joins_equal_join_bytes_for_every_worker() -> None:
    rng = random.Random(7)
    for _ in range(500):
        joins = [(_size(rng), [(_where(rng), _size(rng)) for _ in range(rng.randint(0, 4))])
                 for _ in range(rng.randint(0, 4))]
        prepared = placement._Joins(joins)
        for w in [*WORKERS, "tcp://elsewhere"]:
            assert prepared.bytes_on(w) == join_bytes(w, joins)


def test_a_result_without_copies_is_placed_by_its_worker_alone() -> None:
    """The agent hands the rule a worker, not a set of one, for a result with no copy (no
    set per input per task); the rule reads both alike."""
    from nbflow.locality.agent import LocalityAgent

    agent = LocalityAgent("locality")
    agent.worker_of["p"] = "tcp://a"
    assert agent._where("p") == "tcp://a"
    agent.copies["p"] = {"tcp://b"}
    assert agent._where("p") == frozenset({"tcp://a", "tcp://b"})
    assert agent._where("nowhere") is None
    rng = random.Random(11)
    for _ in range(300):
        p, args = _random_state(rng)
        as_sets = {k: args[k] for k in ("exclude", "ready")}
        as_sets["inputs"] = [(frozenset({w}) if isinstance(w, str) else w, b)
                             for w, b in args["inputs"]]
        as_sets["joins"] = [(own, [(frozenset({w}) if isinstance(w, str) else w, b)
                                   for w, b in others]) for own, others in args["joins"]]
        assert _reference(p, args) == _reference(p, as_sets)
        assert (p._best(WORKERS, args["inputs"], args["exclude"], args["joins"], args["ready"])
                == p._best(WORKERS, as_sets["inputs"], as_sets["exclude"], as_sets["joins"],
                           as_sets["ready"]))
