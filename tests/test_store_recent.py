"""recent_means: the per-task means the prediction and locality rooms both read."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.store.recent import recent_means
from nbflow.store.store import get_store


@nf.task
def make(n: int) -> bytes:
    return b"x" * n


def test_means_by_key_and_by_task_leaving_one_run_out() -> None:
    with nf.Workflow("recent") as wf:
        make(1000)
        make(3000)
    first = wf.run(cache=False)
    second = wf.run(cache=False)
    by_name, by_key = recent_means("output_bytes", "recent")
    assert set(by_key) == {"make-0", "make-1"}
    assert by_key["make-1"] > by_key["make-0"] > 0
    assert by_key["make-0"] < by_name["make"] < by_key["make-1"]  # the task's mean over both calls
    assert recent_means("output_bytes", "recent", exclude_run=second.id, runs=1)[1]  # first run's rows
    assert recent_means("output_bytes", "other") == ({}, {})
    assert first.id != second.id


def test_only_measured_columns_can_be_asked_for() -> None:
    with pytest.raises(ValueError, match="column must be one of"):
        recent_means("key; DROP TABLE runs", "recent")


@nf.task
def tick(x: int) -> int:
    return x


def test_has_history_asks_for_one_row_and_large_runs_are_averaged_newest_first(monkeypatch) -> None:
    from nbflow.store import recent

    assert not recent.has_history("sized")
    with nf.Workflow("sized") as wf:
        tick.map(list(range(30)))
    old = wf.run(cache=False)
    assert recent.has_history("sized")
    assert not recent.has_history("sized", exclude_run=old.id)
    with nf.Workflow("sized") as wf:
        tick.map(list(range(40, 70)))
    new = wf.run(cache=False)
    both = recent.recent_means("duration_s", "sized")[1]
    assert {f"tick-{i}" for i in range(30)} <= set(both) and recent.RECENT_NODES >= 62  # (2 runs each)
    # A budget smaller than two runs' nodes: only the newest run is averaged.
    monkeypatch.setattr(recent, "RECENT_NODES", 40)
    assert recent._recent_runs(get_store(), "sized", "", 20) == [new.id]
    assert set(recent.recent_means("duration_s", "sized")[1]) == set(both)  # (the newest run's)
    monkeypatch.setattr(recent, "RECENT_NODES", 100)
    assert recent._recent_runs(get_store(), "sized", "", 20) == [new.id, old.id]
