"""Per-task sums of a run's measured columns, written once as the run ends.

Preparing a run asks what the workflow's recent runs measured: mean durations and output
sizes per task (priorities, placement), whether a task's attempts recorded a peak memory.
Reading those from ``task_runs`` costs a row per attempt: a 100 000-item map leaves 100 000
rows that the next run would average before it starts.  So when a run ends its attempts
are summed here, one ``task_means`` row per task (journal schema version 10): for each
measured column of :data:`.recent.COLUMNS`, the number of completed, uncached attempts
that measured it and their sum, and the number of completed attempts (cached or not) that
recorded a peak RSS.  A row with task ``''`` sums the whole run (every node, task or not)
and marks the run summarised; a run without it (journaled before version 10, or whose
process died before its end) is read from its attempts as before.

The sums are made by SQLite from the rows the run just wrote (one ``INSERT ... SELECT``
queued after them, a barrier, so it sees them all), on the journal's writer thread and
off the run's path: the figures are those a reader would compute from ``task_runs``, by
construction.
"""

from __future__ import annotations

from typing import Any

from ..core import events as ev
from .journal import Op

__all__ = ["SUMMARISE", "SummaryWriter", "summary_columns"]

# (recent.COLUMNS name, task_means suffix): the columns summed per task.
_PAIRS = (("duration_s", "duration"), ("output_bytes", "output"), ("input_bytes", "input"),
          ("cpu_s", "cpu"), ("peak_rss", "rss"))


def summary_columns(column: str) -> tuple[str, str]:
    """``(count column, sum column)`` of ``task_means`` for a ``task_runs`` column."""
    for name, suffix in _PAIRS:
        if name == column:
            return f"n_{suffix}", f"sum_{suffix}"
    raise KeyError(column)


def _aggregates() -> str:
    parts = []
    for name, _ in _PAIRS:
        value = f"CASE WHEN t.cached = 0 THEN t.{name} END"
        parts.append(f"COUNT({value}), SUM({value})")
    return ", ".join(parts) + ", COUNT(t.peak_rss)"


_TARGET = ", ".join(c for name, _ in _PAIRS for c in summary_columns(name))
SUMMARISE = Op(
    f"INSERT OR REPLACE INTO task_means(run_id, task, {_TARGET}, peaks) "
    f"SELECT ?1, n.task, {_aggregates()} "
    "FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx "
    "WHERE t.run_id = ?1 AND t.state = 'completed' AND n.task IS NOT NULL GROUP BY n.task "
    f"UNION ALL SELECT ?1, '', {_aggregates()} "
    "FROM task_runs t WHERE t.run_id = ?1 AND t.state = 'completed'",
    barrier=True)  # (after every row the run queued before it)


class SummaryWriter:
    """A run's subscriber that queues its summary when the run ends (it reads nothing else)."""

    accepts_batches = True  # (a chunk's TaskBatch changes nothing here)

    def __init__(self, journal: Any, run_id: str) -> None:
        self.journal = journal
        self.run_id = run_id

    def __call__(self, e: ev.Event) -> None:
        if type(e) is ev.RunFinished:
            self.journal.put(SUMMARISE, (self.run_id,))
