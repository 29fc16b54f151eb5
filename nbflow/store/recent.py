"""Per-task means of a measured column over a workflow's recent runs.

Several rooms guess a task's next run from its last ones: the prediction room (durations for
learned priorities), the locality room (output sizes for placing tasks whose producers have
not finished).  This is the one query they share: completed, uncached attempts of the
workflow's ``runs`` newest runs (leaving one run out), averaged by task key and by task name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["COLUMNS", "RECENT_RUNS", "recent_means"]

RECENT_RUNS = 20
COLUMNS = frozenset({"duration_s", "output_bytes", "input_bytes", "cpu_s", "peak_rss"})

_SQL = """
SELECT n.task, t.key, AVG(t.{column}), COUNT(*)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
GROUP BY n.task, t.key
"""


def recent_means(
    column: str, workflow: str, exclude_run: str = "", store: Any = None, runs: int = RECENT_RUNS,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` means of ``column`` of ``task_runs`` (one of
    :data:`COLUMNS`) over ``workflow``'s ``runs`` newest runs other than ``exclude_run``;
    two empty dicts without a store."""
    if column not in COLUMNS:
        raise ValueError(f"recent_means: column must be one of {sorted(COLUMNS)}, got {column!r}")
    if store is None:
        from .store import get_store

        store = get_store(warn=False)
    if store is None:
        return {}, {}
    rows = store.journal.query(_SQL.format(column=column), (workflow, exclude_run, runs))
    by_key: dict[str, float] = {}
    total: dict[str, list[float]] = {}
    for name, key, mean, count in rows:
        if name is None or not count or mean is None:
            continue
        by_key[str(key)] = float(mean)
        acc = total.setdefault(str(name), [0.0, 0.0])
        acc[0] += float(mean) * count
        acc[1] += count
    return {n: s / c for n, (s, c) in total.items()}, by_key
