"""Predicted output sizes from the store's history, for placing tasks whose producers have
not finished yet.

A task submitted before its inputs exist cannot be placed by measured sizes.  The store
has seen earlier runs of the workflow: the same call (the same key, e.g. ``"clean-3"``)
usually makes a result of about the same size, and calls of one task function are a good
second guess.  :func:`output_sizes` reads the mean output bytes of completed, uncached
attempts over the workflow's recent runs, by key and by task name; :func:`per_key` turns
them into one figure per node of a run (own key first, then the task's mean).  Durations
come from the prediction room (the composition point hands both to the placement agent).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RECENT_RUNS = 20

_SQL = """
SELECT n.task, t.key, AVG({what}), COUNT(*)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND {what} IS NOT NULL
GROUP BY n.task, t.key
"""


def output_sizes(workflow: str, exclude_run: str = "", store: Any = None,
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` mean output bytes over the workflow's recent runs."""
    return _means("t.output_bytes", workflow, exclude_run, store)


def durations(workflow: str, exclude_run: str = "", store: Any = None,
              ) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` mean seconds per attempt (for :func:`nf.plan`,
    which the locality room answers on its own; runs get durations from the prediction
    room through the composition point)."""
    return _means("t.duration_s", workflow, exclude_run, store)


def _means(what: str, workflow: str, exclude_run: str, store: Any,
           ) -> tuple[dict[str, float], dict[str, float]]:
    if store is None:
        from ..store.store import get_store

        store = get_store(warn=False)
    if store is None:
        return {}, {}
    by_key: dict[str, float] = {}
    total: dict[str, list[float]] = {}
    rows = store.journal.query(_SQL.format(what=what), (workflow, exclude_run, RECENT_RUNS))
    for name, key, mean, count in rows:
        if name is None or not count or mean is None:
            continue
        by_key[str(key)] = float(mean)
        acc = total.setdefault(str(name), [0.0, 0.0])
        acc[0] += float(mean) * count
        acc[1] += count
    return {n: s / c for n, (s, c) in total.items()}, by_key


def per_key(nodes: Iterable[tuple[str, str]], by_name: dict[str, float],
            by_key: dict[str, float]) -> dict[str, float]:
    """One prediction per ``(task name, key)`` node: its key's own mean, else its task's."""
    out: dict[str, float] = {}
    for name, key in nodes:
        got = by_key.get(key, by_name.get(name))
        if got is not None:
            out[key] = got
    return out
