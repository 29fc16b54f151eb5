"""Per-task sums of a run's measured columns, written once as the run ends.

Preparing a run asks what the workflow's recent runs measured: mean durations and output
sizes per task (priorities, placement), whether a task's attempts recorded a peak memory.
Reading those from ``task_runs`` costs a row per attempt: a 100 000-item map leaves 100 000
rows that the next run would average before it starts.  So a run's attempts are also
summed per task as they complete, and the sums are written as the run ends, a
``task_means`` row per task (journal schema version 10): for each measured column of
:data:`.recent.COLUMNS`, the number of completed, uncached attempts that measured it and
their sum, and the number of completed attempts (cached or not) that recorded a peak RSS.
A row with task ``''`` sums the whole run and marks it summarised; a run without it
(journaled by an older nbflow, or whose process died before its end) is read from its
attempts instead.

The sums are taken from the same events, and the same values, that the journal's
subscriber (:mod:`.recorder`) turns into ``task_runs`` rows: a value it writes as NULL
(None, or a NaN, which SQLite stores as NULL) is not counted.  A chunk of a batched map is
summed column-wise, so an item costs a few list operations here, where summing the stored
rows afterwards cost SQLite a join per row (~2 µs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
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


_SQL = (f"INSERT OR REPLACE INTO task_means(run_id, task, "
        f"{', '.join(c for name, _ in _PAIRS for c in summary_columns(name))}, peaks) "
        f"VALUES({','.join('?' * (3 + 2 * len(_PAIRS)))})")
SUMMARISE = Op(_SQL)

_METRIC_AT = {"cpu_s": 0, "peak_rss": 1, "input_bytes": 2}  # (positions in an event's metrics)
# (SummaryWriter._completed reads a completion's values in this order)
assert [c for c, _ in _PAIRS] == ["duration_s", "output_bytes", "input_bytes", "cpu_s", "peak_rss"]


def _transposed(metrics: list[Any]) -> list[list[Any]] | None:
    """The cpu_s, peak_rss and input_bytes of a chunk's items by column, or None when some
    item has no metrics."""
    try:
        return [list(map(itemgetter(at), metrics)) for at in (0, 1, 2)]
    except (TypeError, IndexError):  # (an item without metrics)
        return None


def _count_sum(values: Sequence[Any]) -> tuple[int, Any]:
    """How many of ``values`` the journal stores as numbers, and their sum."""
    try:
        total = sum(values)
    except TypeError:  # (a None among them: stored as NULL)
        values = [v for v in values if v is not None]
        total = sum(values)
    if total != total:  # (a NaN among them: stored as NULL)
        values = [v for v in values if v == v]
        total = sum(values)
    return len(values), total


def _measured(values: Iterable[Any]) -> list[Any]:
    """The values the journal stores as numbers (not None, not NaN)."""
    return [v for v in values if v is not None and v == v]


class SummaryWriter:
    """A run's subscriber summing its completed attempts per task, and queueing the
    ``task_means`` rows when the run ends."""

    accepts_batches = True  # (a chunk's completions are summed column-wise)

    def __init__(self, journal: Any, run: Any) -> None:
        self.journal = journal
        self.run = run
        self.run_id = run.id
        self.refs: list[Any] = []
        self.added: dict[int, Any] = {}
        # task name -> [count, sum] per column, then the count of peaks
        self.sums: dict[str, list[Any]] = {}

    def _name(self, i: int) -> str:
        ref = self.refs[i] if i < len(self.refs) else self.added[i]
        return str(ref.name)

    def _acc(self, name: str) -> list[Any]:
        acc = self.sums.get(name)
        if acc is None:
            acc = self.sums[name] = [0, 0] * len(_PAIRS) + [0]
        return acc

    def _add(self, name: str, cached: bool, values: dict[str, list[Any]], peaks: int) -> None:
        acc = self._acc(name)
        if not cached:
            for k, (column, _) in enumerate(_PAIRS):
                got = values.get(column)
                if got:
                    acc[2 * k] += len(got)
                    acc[2 * k + 1] += sum(got)
        acc[-1] += peaks

    def __call__(self, e: ev.Event) -> None:
        t = type(e)
        if t is ev.TaskCompleted:
            self._completed(e)  # type: ignore[arg-type]
        elif t is ev.TaskBatch:
            if e.kind is ev.TaskCompleted and e.indexes:  # type: ignore[attr-defined]
                self._batch(e)  # type: ignore[arg-type]
        elif t is ev.RunStarted:
            self.refs = list(self.run.nodes)  # (the graph as the journal records it)
        elif t is ev.TasksAdded:
            self.added.update(zip(e.indexes, e.refs, strict=False))  # type: ignore[attr-defined]
        elif t is ev.RunFinished:
            self.journal.put_many(SUMMARISE, self.rows())

    def _completed(self, e: ev.TaskCompleted) -> None:
        # (every task's completion comes here, on the run's loop: no dict or list per event)
        m = e.metrics or ()
        n = len(m)
        peak = m[1] if n > 1 else None
        measured_peak = peak is not None and peak == peak
        acc = self._acc(self._name(e.index))
        if not e.cached:  # in the order of _PAIRS
            for k, v in enumerate((e.duration_s, e.output_bytes, m[2] if n > 2 else None,
                                   m[0] if n else None, peak)):
                if v is not None and v == v:  # (None and NaN are stored as NULL: not counted)
                    acc[2 * k] += 1
                    acc[2 * k + 1] += v
        if measured_peak:
            acc[-1] += 1

    def _batch(self, e: ev.TaskBatch) -> None:
        n = len(e.indexes)
        cached = e.column("cached")
        metrics = e.column("metrics")
        first, last = self._name(e.indexes[0]), self._name(e.indexes[-1])
        # A chunk holds items of one map, so of one task (the first and last say so cheaply);
        # column-wise sums then, with no per-item Python beyond C-level list operations.
        columns_of = _transposed(metrics) if first == last and not any(cached) else None
        if columns_of is not None:
            cpu, peak, size = columns_of[:3]
            acc = self._acc(first)
            peaks = 0
            for k, col in enumerate((e.column("duration_s"), e.column("output_bytes"), size, cpu, peak)):
                count, total = _count_sum(col)
                if count:
                    acc[2 * k] += count
                    acc[2 * k + 1] += total
                if k == 4:
                    peaks = count
            acc[-1] += peaks
            return
        columns = {"duration_s": e.column("duration_s"), "output_bytes": e.column("output_bytes")}
        for column, at in _METRIC_AT.items():
            columns[column] = [m[at] if m is not None and len(m) > at else None for m in metrics]
        for k in range(n):
            one = {c: _measured([v[k]]) for c, v in columns.items()}
            self._add(self._name(e.indexes[k]), bool(cached[k]), one, len(one["peak_rss"]))

    def rows(self) -> list[tuple[Any, ...]]:
        """The ``task_means`` rows: one per task that completed, and the run's (task '')."""
        width = 2 * len(_PAIRS) + 1
        whole = [0] * width
        out = []
        for name, acc in self.sums.items():
            out.append((self.run_id, name, *_sums(acc)))
            whole = [a + b for a, b in zip(whole, acc, strict=True)]
        out.append((self.run_id, "", *_sums(whole)))
        return out


def _sums(acc: list[Any]) -> list[Any]:
    """As SQLite's COUNT and SUM would give them: a sum over no value is NULL."""
    out = list(acc)
    for k in range(len(_PAIRS)):
        if not out[2 * k]:
            out[2 * k + 1] = None
    return out
