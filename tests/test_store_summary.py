"""The per-task sums a run leaves (``task_means``), from single completions.

What the journal stores as NULL (None, NaN) is not counted; a cache hit adds no measured
value but its recorded peak still counts as a peak.  (Whole runs against their stored
attempts: ``test_history_reads.py``.)
"""

from __future__ import annotations

import math
from typing import Any

from nbflow.core import events as ev
from nbflow.store.summary import SummaryWriter


class _Journal:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def put_many(self, op: Any, rows: Any) -> None:
        self.rows.extend(rows)


class _Ref:
    def __init__(self, name: str) -> None:
        self.name = name


def test_single_completions_sum_what_the_journal_stores_as_numbers() -> None:
    journal = _Journal()
    run = type("R", (), {"id": "r1", "nodes": [_Ref("a"), _Ref("a"), _Ref("a"), _Ref("b")]})()
    w = SummaryWriter(journal, run)
    w(ev.RunStarted(0.0, "r1", "wf", 4, "local", 1))
    # metrics: (cpu_s, peak_rss, input_bytes, input_items, input_shape)
    w(ev.TaskCompleted(1.0, 0, "a-0", 1, 2.0, 100, metrics=(0.5, 1000, 10, None, None)))
    w(ev.TaskCompleted(1.0, 1, "a-1", 1, math.nan, None, metrics=(math.nan, None, 30, None, None)))
    w(ev.TaskCompleted(1.0, 2, "a-2", 0, 9.0, 900, cached=True, metrics=(None, 700, None, None, None)))
    w(ev.TaskCompleted(1.0, 3, "b-0", 1, 4.0, 8))  # (no metrics at all)
    w(ev.RunFinished(2.0, "r1", "completed", 1.0, None))
    rows = {r[1]: r[2:] for r in journal.rows}
    # (count, sum) of duration, output, input, cpu, rss; then the peaks counted
    assert rows["a"] == (1, 2.0, 1, 100, 2, 40, 1, 0.5, 1, 1000, 2)
    assert rows["b"] == (1, 4.0, 1, 8, 0, None, 0, None, 0, None, 0)
    assert rows[""] == (2, 6.0, 2, 108, 2, 40, 1, 0.5, 1, 1000, 2)
