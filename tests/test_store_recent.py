"""recent_means: the per-task means the prediction and locality rooms both read."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.store.recent import recent_means


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
