"""Predicted memory for admission: a task that needed a lot of memory before, asks for it.

A run has a ``memory`` capacity (``wf.run(resources={"memory": "8GiB"})``, by default the
machine's physical memory), and a task that declares ``resources={"memory": "2GiB"}``
starts only when that much of it is free.  Most tasks declare nothing, though, and a
workflow whose map starts eight copies of a 3 GiB task on a 16 GiB machine swaps or gets
killed.  So, once the store has seen a task run on the process or Dask backend (where
each attempt records its worker's peak resident set size, ``peak_rss``), the task's
*predicted peak* is used as its memory demand in the next runs:

- the prediction is a high quantile (:data:`QUANTILE`) of the peaks of the task's
  completed attempts in the workflow's last :data:`RECENT_RUNS` runs: memory is a limit,
  not an average, and an underestimate is the costly mistake;
- a worker's peak RSS is the peak of that worker process so far (interpreter included),
  so it over-estimates a small task; small predictions (under :data:`MIN_BYTES`) are
  ignored so that tiny tasks are not serialised by the interpreter's own footprint;
- a declared ``memory`` always wins; a prediction above the run's capacity is capped to
  it (the task then runs alone, it is not refused);
- tasks without history, and items a ``map`` adds while running, demand nothing extra;
- ``NBFLOW_PREDICTED_MEMORY=0`` switches this off.

:func:`apply_predicted_memory` is called by the composition point (``nbflow.workflow``)
as a run is made, next to the learned priorities; the engine only receives the demands
(``run.add_demands``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nbflow.store import recent

__all__ = ["MIN_BYTES", "QUANTILE", "RECENT_RUNS", "apply_predicted_memory", "by_task", "largest_peak",
           "memory_demands", "min_bytes", "peaks_at_least", "predicted_peaks"]

RECENT_RUNS = 20
QUANTILE = 0.9
MIN_BYTES = 256 * 2**20

# The peaks of the recent runs' completed attempts.  A run whose summary (written as it
# ended: nbflow.store.summary) counts no peak at all, e.g. every run on the thread backend,
# is left out before its attempts are read: that costs a row per run, not one per attempt.
_RUNS = """
    SELECT r.id FROM (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?) r
    WHERE NOT EXISTS (SELECT 1 FROM task_means m WHERE m.run_id = r.id AND m.task = '' AND m.peaks = 0)"""
_ROWS = f"""
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({_RUNS})
  AND t.state = 'completed' AND t.peak_rss IS NOT NULL
"""
_SQL = "SELECT n.task, t.peak_rss" + _ROWS

# The same rows, only of the tasks whose largest peak reaches a bound: a quantile is never
# above the largest value, so the others cannot predict that much (a run's preparation needs
# MIN_BYTES or more; on Dask every attempt records its worker's peak, rarely that big: then
# no row comes to Python at all).
_SQL_AT_LEAST = ("SELECT task, peak FROM (SELECT n.task AS task, t.peak_rss AS peak, "
                 "MAX(t.peak_rss) OVER (PARTITION BY n.task) AS top" + _ROWS + ") WHERE top >= ?")

# Does any such attempt reach the bound at all?  Usually none does (a worker's peak is rarely
# MIN_BYTES), and this asks it of the attempts alone, stopping at the first: no join with the
# nodes, no window (~40 µs against ~185 µs for the query above over 20 runs of 10 tasks).  A
# task's largest peak reaches the bound only if one of its attempts does, so "no" is the
# whole answer; "yes" asks the query above.
_ANY_AT_LEAST = (f"SELECT 1 FROM task_runs t WHERE t.run_id IN ({_RUNS}) "
                 "AND t.state = 'completed' AND t.peak_rss >= ? LIMIT 1")
# The largest of those peaks: whether any reaches a bound, for every bound (read ahead).
_LARGEST = f"SELECT MAX(t.peak_rss) FROM task_runs t WHERE t.run_id IN ({_RUNS}) AND t.state = 'completed'"


def predicted_peaks(workflow: str, exclude_run: str = "", store: Any = None,
                    at_least: float | None = None) -> dict[str, float]:
    """Predicted peak memory in bytes per task name, from the workflow's recent runs
    (with ``at_least``: only the tasks that may predict that much, the others are not read)."""
    if store is None:
        from nbflow.store.store import get_store

        store = get_store(warn=False)
    if store is None:
        return {}
    args: tuple[Any, ...] = (workflow, exclude_run, RECENT_RUNS)
    if at_least is None:
        return {n: q for n, (_, q) in by_task(store.journal.query(_SQL, args)).items()}
    if not any_peak_at_least(store, args, at_least):
        return {}
    table = recent.told(("peaks by task", *args, id(store)))
    if table is recent.UNTOLD or at_least < table[0]:
        table = (at_least, peaks_at_least(store, args, at_least))
    # (told for a lower bound: the tasks whose largest peak reaches this one are among them,
    # with the same attempts; the query for this bound returns exactly those)
    return {n: q for n, (top, q) in table[1].items() if top >= at_least}


def by_task(rows: Any, at_least: float = -np.inf) -> dict[str, tuple[float, float]]:
    """``{task: (its largest peak, its predicted peak)}`` from ``(task, peak)`` rows, for
    the tasks whose largest peak reaches ``at_least`` (an attempt without a task name or
    with no peak predicts nothing)."""
    seen: dict[str, list[float]] = {}
    for name, peak in rows:
        if name is not None and peak:
            seen.setdefault(str(name), []).append(float(peak))
    return {n: (top, float(np.quantile(v, QUANTILE))) for n, v in seen.items() if (top := max(v)) >= at_least}


def peaks_at_least(store: Any, args: tuple[Any, ...], at_least: float,
                   every_row: bool = False) -> dict[str, tuple[float, float]]:
    """:func:`by_task` of the tasks whose largest peak in the recent runs (``args``:
    workflow, run left out, how many runs) reaches ``at_least``, read now.  ``every_row``:
    every attempt's row is read and the tasks are chosen here, not by SQLite's window (its
    sort is most of the statement's cost: ~0.3 against ~0.45 ms over 20 runs of a 10-task
    fan, ``benchmarks/read_ahead_parts.py``), the same rows for the same tasks; the
    read-ahead (:mod:`nbflow.predict.ahead`) asks so, once the largest peak says some task
    reaches the bound."""
    if every_row:
        return by_task(store.journal.query(_SQL, args), at_least)
    return by_task(store.journal.query(_SQL_AT_LEAST, (*args, at_least)))


def any_peak_at_least(store: Any, args: tuple[Any, ...], at_least: float) -> bool:
    """Did any completed attempt of the recent runs (``args``: workflow, run left out, how
    many runs) record a peak of at least ``at_least`` bytes?  (Answered by the largest
    peak when a run's preparation was told it: :mod:`nbflow.predict.ahead`.)"""
    largest = recent.told(("largest peak", *args, id(store)))
    if largest is not recent.UNTOLD:
        return largest is not None and largest >= at_least
    return bool(store.journal.query(_ANY_AT_LEAST, (*args, at_least)))


def largest_peak(store: Any, args: tuple[Any, ...]) -> Any:
    """The largest peak of the attempts :func:`any_peak_at_least` looks at (None: none):
    it answers that question for every bound."""
    return store.journal.query(_LARGEST, args)[0][0]


def memory_demands(
    names: Sequence[str], kinds: Sequence[str], declared: Sequence[bool], peaks: Mapping[str, float],
    min_bytes: float = MIN_BYTES,
) -> dict[int, dict[str, float]]:
    """``{node index: {"memory": bytes}}`` for task nodes that declare no memory and have a
    predicted peak of at least ``min_bytes``."""
    out: dict[int, dict[str, float]] = {}
    for i, (name, kind, dec) in enumerate(zip(names, kinds, declared, strict=True)):
        if kind not in ("task", "undo") or dec:
            continue
        peak = peaks.get(name)
        if peak is not None and peak >= min_bytes:
            out[i] = {"memory": peak}
    return out


def _declares_memory(ref: Any) -> bool:
    spec = getattr(getattr(ref, "task", None), "spec", None)
    return "memory" in (getattr(spec, "resources", None) or {})


def min_bytes() -> float:
    """The smallest predicted peak used as a demand (``NBFLOW_PREDICTED_MEMORY_MIN``, bytes;
    default :data:`MIN_BYTES`)."""
    return float(os.environ.get("NBFLOW_PREDICTED_MEMORY_MIN", MIN_BYTES))


def apply_predicted_memory(run: Any, store: Any = None) -> dict[str, float]:
    """Give ``run``'s tasks their predicted memory as admission demand; returns the
    predictions used, by task name (empty when none applied).  ``store``: the run's store,
    if the caller has it (else it is looked up)."""
    if os.environ.get("NBFLOW_PREDICTED_MEMORY", "1") == "0" or not run.nodes:
        return {}
    if "memory" not in run.capacity:
        return {}
    bound = min_bytes()
    try:
        peaks = predicted_peaks(run.name, exclude_run=run.id, store=store, at_least=bound)
    except Exception:  # an unreadable store must never stop a run: no predicted demands
        return {}
    if not peaks:
        return {}
    nodes = run.nodes
    demands = memory_demands([r.name for r in nodes], [r.kind for r in nodes],
                             [_declares_memory(r) for r in nodes], peaks, min_bytes=bound)
    if not demands:
        return {}
    run.add_demands(demands)
    return {nodes[i].name: d["memory"] for i, d in demands.items()}
