"""Tests of the zero-overhead dispatch simulator (nbflow.predict.simulate)."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbflow.engine.priority import longest_remaining_path
from nbflow.predict.simulate import Schedule, simulate
from nbflow.predict.wfformat import load_trace

# WfFormat traces kept in the repository (tests/data/wfcommons/README.md); NBFLOW_TRACES
# names another directory of traces to test against instead.
TRACES_DIR = Path(os.environ.get("NBFLOW_TRACES", Path(__file__).resolve().parent / "data" / "wfcommons"))
TRACE_FILES = sorted(TRACES_DIR.glob("*.json")) if TRACES_DIR.is_dir() else []


def _bounds(succs: list[list[int]], durations: list[float]) -> tuple[float, float]:
    """(critical path, total work) of a forward-indexed DAG."""
    cp = longest_remaining_path(succs, durations)
    return max(cp, default=0.0), math.fsum(durations)


def _check_schedule(succs: list[list[int]], durations: list[float], workers: int, s: Schedule) -> None:
    n = len(succs)
    eps = 1e-9
    assert sorted(s.order) == list(range(n))
    for i in range(n):
        assert s.finish[i] == pytest.approx(s.start[i] + durations[i])
        assert s.start[i] >= s.ready[i] - eps
        for j in succs[i]:
            assert s.start[j] >= s.finish[i] - eps
            assert s.ready[j] >= s.finish[i] - eps
    # Never more than `workers` nodes running at once (intervals are half-open).
    events = sorted(
        [(s.start[i], 1) for i in range(n) if durations[i] > 0]
        + [(s.finish[i], -1) for i in range(n) if durations[i] > 0],
        key=lambda e: (e[0], e[1]),
    )
    running = 0
    for _, delta in events:
        running += delta
        assert running <= workers
    # Work conserving: a node waits only while every worker is busy.
    times = sorted({*s.start, *s.finish})
    for v in range(n):
        if s.start[v] > s.ready[v] + eps:
            for t in times:
                if s.ready[v] <= t < s.start[v]:
                    busy = sum(1 for u in range(n) if s.start[u] <= t < s.finish[u])
                    assert busy == workers, (v, t, busy)
    # Start order is consistent with start times.
    starts = [s.start[i] for i in s.order]
    assert starts == sorted(starts)
    assert s.makespan == pytest.approx(max(s.finish, default=0.0))


# ---------------------------------------------------------------------------- shapes


def test_empty_graph() -> None:
    s = simulate([], [], 3)
    assert s.makespan == 0.0 and s.order == []


def test_chain_makespan_is_sum() -> None:
    durations = [1.0, 2.5, 0.5, 3.0]
    succs = [[1], [2], [3], []]
    for w in (1, 2, 8):
        s = simulate(succs, durations, w)
        assert s.makespan == pytest.approx(7.0)
        assert s.order == [0, 1, 2, 3]
        assert s.start == pytest.approx([0.0, 1.0, 3.5, 4.0])


def _fork_join(width: int) -> tuple[list[list[int]], list[float]]:
    # 0 -> 1..width -> width+1
    succs: list[list[int]] = [list(range(1, width + 1))]
    succs += [[width + 1] for _ in range(width)]
    succs.append([])
    durations = [1.0] + [float(k) for k in range(1, width + 1)] + [2.0]
    return succs, durations


def test_fork_join_with_enough_workers_is_critical_path() -> None:
    succs, durations = _fork_join(6)
    cp, _ = _bounds(succs, durations)
    assert cp == 1.0 + 6.0 + 2.0
    for w in (6, 7, 100):
        assert simulate(succs, durations, w).makespan == pytest.approx(cp)


def test_one_worker_is_total_work() -> None:
    succs, durations = _fork_join(6)
    _, work = _bounds(succs, durations)
    s = simulate(succs, durations, 1)
    assert s.makespan == pytest.approx(work)
    # Equal levels inside the fork: FIFO in push order (successor list order).
    assert s.order == list(range(8))


def test_priority_rule_long_chain_beside_short_tasks() -> None:
    # Nodes 0..2: three short independent tasks (1s each), created first.
    # Nodes 3..6: a chain of four 1s tasks, created last.
    succs: list[list[int]] = [[], [], [], [4], [5], [6], []]
    durations = [1.0] * 7
    # Unit-weight levels: chain head 3 has level 4, shorts level 1 -> chain goes first.
    s1 = simulate(succs, durations, 1)
    # One worker: 3 first; 4 (level 3) and 5 (level 2) beat the shorts when ready; the
    # chain tail 6 has level 1 like the shorts but was pushed after them (FIFO).
    assert s1.order == [3, 4, 5, 0, 1, 2, 6]
    assert s1.makespan == 7.0
    s2 = simulate(succs, durations, 2)
    # Worker A runs the chain back to back; worker B takes the shorts in FIFO order.
    assert s2.order == [3, 0, 4, 1, 5, 2, 6]
    assert s2.start == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]
    assert s2.makespan == 4.0  # = critical path: optimal
    # FIFO (all levels equal) would start the shorts first and lose a step with 2 workers.
    fifo = simulate(succs, durations, 2, levels=[1.0] * 7)
    assert fifo.order[:2] == [0, 1]
    assert fifo.makespan == 5.0


def test_user_priority_breaks_level_ties_and_levels_override() -> None:
    succs: list[list[int]] = [[], [], []]
    durations = [1.0, 1.0, 1.0]
    s = simulate(succs, durations, 1, priorities=[0, 5, 1])
    assert s.order == [1, 2, 0]
    # Level beats priority.
    s = simulate(succs, durations, 1, priorities=[0, 5, 1], levels=[1.0, 1.0, 2.0])
    assert s.order == [2, 1, 0]


def test_duration_weighted_levels() -> None:
    # A two-task chain of 1s each (0 -> 1) beside a long single task (node 2, 10s).
    succs: list[list[int]] = [[1], [], []]
    durations = [1.0, 1.0, 10.0]
    # Unit levels [2, 1, 1]: the chain head goes first; then 2 (pushed first) beats 1.
    assert simulate(succs, durations, 1).order == [0, 2, 1]
    assert simulate(succs, durations, 2).order == [0, 2, 1]
    # Duration-weighted levels [2, 1, 10]: the long task goes first.
    weighted = longest_remaining_path(succs, durations)
    s1 = simulate(succs, durations, 1, levels=weighted)
    assert s1.order == [2, 0, 1] and s1.makespan == 12.0
    s2 = simulate(succs, durations, 2, levels=weighted)
    assert s2.order == [2, 0, 1] and s2.makespan == 10.0


def test_simultaneous_finishes_processed_in_start_order() -> None:
    # 0 and 1 run together and both finish at t=1; their successors 2 (child of 1) and
    # 3 (child of 0) have equal levels, so FIFO decides: 0 started first, so its child 3 is
    # pushed first; with one free slot after 0's finish it starts at once.
    succs: list[list[int]] = [[3], [2], [], []]
    durations = [1.0, 1.0, 1.0, 1.0]
    s = simulate(succs, durations, 2)
    assert s.order == [0, 1, 3, 2]
    assert s.ready == [0.0, 0.0, 1.0, 1.0]


def test_zero_durations() -> None:
    succs: list[list[int]] = [[1, 2], [3], [3], []]
    s = simulate(succs, [0.0, 0.0, 2.0, 0.0], 1)
    assert s.makespan == 2.0
    _check_schedule(succs, [0.0, 0.0, 2.0, 0.0], 1, s)


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="later node"):
        simulate([[0]], [1.0], 1)
    with pytest.raises(ValueError, match="later node"):
        simulate([[], [0]], [1.0, 1.0], 1)
    with pytest.raises(ValueError, match="later node"):
        simulate([[5]], [1.0], 1)
    with pytest.raises(ValueError, match="durations"):
        simulate([[]], [], 1)
    with pytest.raises(ValueError, match="workers"):
        simulate([[]], [1.0], 0)
    with pytest.raises(ValueError, match="duration of node 0"):
        simulate([[]], [-1.0], 1)
    with pytest.raises(ValueError, match="priorities"):
        simulate([[]], [1.0], 1, priorities=[])
    with pytest.raises(ValueError, match="levels"):
        simulate([[]], [1.0], 1, levels=[])


# ----------------------------------------------------------------------- real traces


@pytest.mark.skipif(not TRACE_FILES, reason=f"no traces in {TRACES_DIR}")
@pytest.mark.parametrize("path", TRACE_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("workers", [1, 3, 8, 64])
def test_trace_makespan_at_least_lower_bound(path: Path, workers: int) -> None:
    trace = load_trace(path)
    ig = trace.indexed()
    succs = [list(s) for s in ig.succs]
    durations = list(ig.durations)
    s = simulate(succs, durations, workers)
    lb = trace.lower_bound(workers)
    assert s.makespan >= lb * (1 - 1e-12)
    assert s.makespan <= trace.total_work_s() * (1 + 1e-12)
    # Graham's bound for any list schedule.
    assert s.makespan <= trace.total_work_s() / workers + trace.critical_path_s() + 1e-9
    _check_schedule(succs, durations, workers, s)
    if workers >= len(trace):
        assert s.makespan == pytest.approx(trace.critical_path_s())


# ------------------------------------------------------------------------- properties


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], list[float], int]:
    n = draw(st.integers(min_value=0, max_value=30))
    succs: list[list[int]] = [[] for _ in range(n)]
    for j in range(1, n):
        parents = draw(st.sets(st.integers(min_value=0, max_value=j - 1), max_size=4))
        for i in parents:
            succs[i].append(j)
    for s in succs:
        s.sort()
    durations = draw(
        st.lists(
            st.one_of(st.just(0.0), st.integers(1, 5).map(float), st.floats(0.001, 10.0, allow_nan=False)),
            min_size=n,
            max_size=n,
        )
    )
    workers = draw(st.integers(min_value=1, max_value=6))
    return succs, durations, workers


@settings(max_examples=300, deadline=None)
@given(dags())
def test_random_dags(case: tuple[list[list[int]], list[float], int]) -> None:
    succs, durations, workers = case
    s = simulate(succs, durations, workers)
    cp, work = _bounds(succs, durations)
    tol = 1e-9 * (1 + work)
    assert s.makespan >= max(cp, work / workers) - tol
    assert s.makespan <= work + tol
    assert s.makespan <= work / workers + cp + tol
    _check_schedule(succs, durations, workers, s)


@settings(max_examples=100, deadline=None)
@given(dags(), st.lists(st.integers(-3, 3), min_size=30, max_size=30))
def test_random_dags_dispatch_follows_ready_key(
    case: tuple[list[list[int]], list[float], int], prios: list[int]
) -> None:
    """Whenever a node starts, no node that was already ready has a strictly better key."""
    succs, durations, workers = case
    n = len(succs)
    priorities = prios[:n]
    s = simulate(succs, durations, workers, priorities=priorities)
    level = longest_remaining_path(succs)
    for k, v in enumerate(s.order):
        waiting = [u for u in s.order[k + 1 :] if s.ready[u] < s.start[v]]
        for u in waiting:
            assert (-level[v], -priorities[v]) <= (-level[u], -priorities[u])


# ------------------------------------------------------------ against the real engine


def test_engine_dispatches_in_simulated_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one worker the start order is the policy alone: the engine must match simulate()."""
    # The same workflow name runs 15 times here: keep the unit-weight policy (no learning
    # from the earlier runs' durations), which is what simulate() replays by default.
    monkeypatch.setenv("NBFLOW_LEARNED_PRIORITY", "0")
    nf = pytest.importorskip("nbflow")
    if not hasattr(nf, "Workflow"):
        pytest.skip("the engine is not available")
    executed: list[int] = []

    def make(priority: int) -> object:
        @nf.task(name=f"simulate_order_p{priority}", priority=priority, cache=False)
        async def node(i: int, *deps: object) -> None:
            executed.append(i)

        return node

    tasks = {p: make(p) for p in range(3)}
    rng = random.Random(20240601)
    for _ in range(15):
        n = rng.randint(1, 40)
        parents = [rng.sample(range(j), k=min(j, rng.randint(0, 3))) for j in range(n)]
        prios = [rng.randrange(3) for _ in range(n)]
        succs: list[list[int]] = [[] for _ in range(n)]
        for j, ps in enumerate(parents):
            for i in ps:
                succs[i].append(j)
        for s in succs:
            s.sort()
        executed.clear()
        with nf.Workflow("simulate-order") as wf:
            refs: list[object] = []
            for j in range(n):
                refs.append(tasks[prios[j]](j, *[refs[i] for i in parents[j]]))
        wf.run(workers=1, cache=False)
        assert executed == simulate(succs, [1.0] * n, 1, priorities=prios).order
