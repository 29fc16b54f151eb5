"""The journal's view of a run's task metrics (CPU time, peak RSS, input features).

Isolated here because it reads the scheduler's metrics table (``run._sched.metrics``,
filled by :mod:`nbflow.engine.metrics`): the events do not carry metrics, so that the
hot path of a run stays one small event per task.  It is the only place the journal
reaches past the public Run surface for them.
"""

from __future__ import annotations

from typing import Any


def task_metrics_row(run: Any, i: int) -> tuple[Any, ...] | None:
    """``(cpu_s, peak_rss, input_bytes, input_items, input_shape)`` of node ``i``, or None
    when nothing was measured (coroutines without arguments, cached tasks)."""
    sched = getattr(run, "_sched", None)
    m = getattr(sched, "metrics", None)
    if m is None:
        return None
    row = (m.cpu_s.get(i), m.peak_rss.get(i), m.input_bytes.get(i), m.input_items.get(i),
           m.input_shape.get(i))
    return row if any(v is not None for v in row) else None
