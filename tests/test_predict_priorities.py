"""Learned dispatch priorities: with history, the task heading the most work starts first."""

from __future__ import annotations

import time

import pytest
from history_edits import set_durations

import nbflow as nf
from nbflow.engine.priority import longest_remaining_path
from nbflow.predict import simulate
from nbflow.predict.priorities import learned_weights


@nf.task
def quick(*deps: object) -> int:
    time.sleep(0.01)
    return 1


@nf.task
def slow(*deps: object) -> int:
    time.sleep(0.3)
    return 2


def _build():
    with nf.Workflow("prio") as wf:
        a1 = quick()
        a2 = quick(a1)
        quick(a2)
        slow()
    return wf


def _start_order(run) -> list[str]:
    t = run.tasks.sort_values("start")
    return t["key"].tolist()


def test_history_changes_the_dispatch_order_as_the_simulator_says() -> None:
    first = _build().run(workers=1, cache=False)
    assert not first.learned_priorities
    # Unit weights: the 3-task chain outranks the single slow task.
    assert _start_order(first)[0] == "quick-0"
    # what history says they took (measured, a busy machine can stretch 10 ms to 150 ms)
    set_durations({"quick-0": 0.01, "quick-1": 0.01, "quick-2": 0.01, "slow-0": 0.3})

    wf = _build()
    second = wf.run(workers=1, cache=False)
    assert second.learned_priorities
    order = _start_order(second)
    assert order[0] == "slow-0"

    # The same policy simulated with the learned weights gives the same order.
    succs = [[] for _ in wf.nodes]
    for r in wf.nodes:
        for d in r.deps:
            succs[d].append(r.index)
    means = {"quick": 0.01, "slow": 0.3}
    w = learned_weights([r.name for r in wf.nodes], [r.kind for r in wf.nodes], means)
    sim = simulate(succs, [0.01, 0.01, 0.01, 0.3], 1, levels=longest_remaining_path(succs, w))
    assert [wf.nodes[i].key for i in sim.order] == order


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    _build().run(workers=1, cache=False)
    monkeypatch.setenv("NBFLOW_LEARNED_PRIORITY", "0")
    run = _build().run(workers=1, cache=False)
    assert not run.learned_priorities
    assert _start_order(run)[0] == "quick-0"


def test_weights_fall_back_for_tasks_without_history() -> None:
    w = learned_weights(["a", "b", "c.map"], ["task", "task", "collect"], {"a": 2.0})
    assert w is not None
    assert w[0] == pytest.approx(2.0) and w[1] == pytest.approx(2.0) and w[2] == pytest.approx(0.0, abs=1e-6)
    assert learned_weights(["x"], ["task"], {"a": 1.0}) is None
    # A call's own history wins over the mean of its function's calls.
    w = learned_weights(["a", "a"], ["task", "task"], {"a": 2.0}, ["a-0", "a-1"], {"a-1": 9.0})
    assert w == [pytest.approx(2.0), pytest.approx(9.0)]


@nf.task
def sample(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@nf.task
def merge(*xs: float) -> float:
    return sum(xs)


def test_one_big_item_of_a_map_like_fan_goes_first_on_the_second_run() -> None:
    def build():
        with nf.Workflow("samples") as wf:
            small = [sample(0.02) for _ in range(3)]
            big = sample(0.3)
            merge(*small, big)
        return wf

    first = build().run(workers=1, cache=False)
    assert _start_order(first)[0] == "sample-0"  # unit weights: creation order
    set_durations({"sample-0": 0.02, "sample-1": 0.02, "sample-2": 0.02, "sample-3": 0.3})
    second = build().run(workers=1, cache=False)
    assert _start_order(second)[0] == "sample-3"  # the big one, known by its key
