"""Memory admission: declared or predicted (from recorded peak RSS) memory against the
run's memory capacity, so memory-heavy tasks do not start together beyond what fits."""

from __future__ import annotations

import time

import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.predict.memory import memory_demands

GiB = 2**30


def _max_overlap(run: nf.Run, names: set[str]) -> int:
    """Most tasks of ``names`` running at once, read from the run's event order."""
    name_of = {r.index: r.name for r in run.nodes}
    now = best = 0
    for e in run.events:
        if isinstance(e, ev.TaskStarted) and name_of[e.index] in names:
            now += 1
            best = max(best, now)
        elif isinstance(e, ev.TaskCompleted | ev.TaskFailed) and name_of[e.index] in names:
            now -= 1
    return best


def _hold(x: int) -> int:
    time.sleep(0.02)  # long enough that four ready tasks would overlap if admitted
    return x


def test_declared_memory_limits_how_many_start_together() -> None:
    heavy = nf.task(name="heavy", resources={"memory": "2GiB"})(_hold)
    light = nf.task(name="light")(_hold)
    with nf.Workflow("mem-declared") as wf:
        for i in range(4):
            heavy(i)
            light(i)
    run = wf.run(workers=8, resources={"memory": "3GiB"}, cache=False)
    assert _max_overlap(run, {"heavy"}) == 1  # 2 GiB each in 3 GiB: one at a time
    assert run.predicted_memory == {}  # declared, not predicted


def test_memory_demands_only_for_undeclared_tasks_with_a_big_enough_peak() -> None:
    peaks = {"big": 3.0 * GiB, "small": 1e6, "declared": 5.0 * GiB}
    got = memory_demands(["big", "small", "declared", "new", "big"],
                         ["task", "task", "task", "task", "collect"],
                         [False, False, True, False, False], peaks, min_bytes=1e8)
    assert got == {0: {"memory": 3.0 * GiB}}


def test_predicted_memory_from_history_limits_admission(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every recorded peak counts here (the worker processes of a test are small).
    monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY_MIN", "1")
    hog = nf.task(name="hog")(_hold)

    def build() -> nf.Workflow:
        with nf.Workflow("mem-predicted") as wf:
            for i in range(4):
                hog(i)
        return wf

    first = build().run(backend="process", workers=2, cache=False)
    peaks = first.tasks["peak_rss"].dropna()
    assert len(peaks) == 4 and (peaks > 0).all()
    assert first.predicted_memory == {}  # no history yet

    # The next run (threads, so the order of events is cheap to read) demands the
    # predicted peak of each hog; a capacity of 1.5 peaks admits one at a time.
    predicted = float(peaks.quantile(0.9))
    run = build().run(workers=4, cache=False, resources={"memory": 1.5 * predicted})
    assert run.predicted_memory["hog"] == pytest.approx(predicted, rel=0.01)
    assert _max_overlap(run, {"hog"}) == 1

    # A capacity for three never has four; switched off, nothing is demanded.
    run = build().run(workers=4, cache=False, resources={"memory": 3.5 * predicted})
    assert _max_overlap(run, {"hog"}) <= 3
    monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY", "0")
    run = build().run(workers=4, cache=False, resources={"memory": 1.5 * predicted})
    assert run.predicted_memory == {}
