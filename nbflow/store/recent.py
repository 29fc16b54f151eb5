"""Per-task means of a measured column over a workflow's recent runs.

Several rooms guess a task's next run from its last ones: the prediction room (durations for
learned priorities), the locality room (output sizes for placing tasks whose producers have
not finished).  This is the one query they share: completed, uncached attempts of the
workflow's ``runs`` newest runs (leaving one run out; fewer when those runs hold more than
:data:`RECENT_NODES` nodes), averaged by task key and by task name.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from .journal import one_reader

__all__ = ["COLUMNS", "RECENT_NODES", "RECENT_RUNS", "has_history", "one_answer_per_query", "recent_means"]

RECENT_RUNS = 20
# At most about this many nodes' rows are averaged: the newest runs are taken until their
# nodes add up to it (at least one run).  Averaging reads every attempt of those runs, ~14 µs
# per row here: 20 runs of a 100 000-item map would cost the next run ~280 µs per item
# before it starts; the newest such run says about as much about the next one.
RECENT_NODES = 100_000
COLUMNS = frozenset({"duration_s", "output_bytes", "input_bytes", "cpu_s", "peak_rss"})

# The newest runs of a workflow and their sizes (MAX(idx) is one index seek per run).
_RUNS_SQL = """
SELECT r.id, (SELECT MAX(n.idx) FROM nodes n WHERE n.run_id = r.id)
FROM runs r WHERE r.name = ? AND r.id != ? ORDER BY r.start DESC LIMIT ?
"""

_SQL = """
SELECT n.task, t.key, AVG(t.{column}), COUNT(*)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({runs})
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
GROUP BY n.task, t.key
"""

# Is there one completed attempt that ran, in the recent runs?  Stops at the first.
_ANY_SQL = """
SELECT 1 FROM task_runs t
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND t.duration_s IS NOT NULL
LIMIT 1
"""


_memo = threading.local()  # .answers: {(column, workflow, exclude_run, runs, store): answer}


@contextlib.contextmanager
def one_answer_per_query() -> Iterator[None]:
    """Within the block (in this thread), :func:`recent_means` asks the journal once per
    distinct question: a run being prepared asks for the same means from two rooms (the
    durations weigh both priorities and placement).  Outside, every call reads afresh.
    The block's queries (these and any other, e.g. predicted memory) share one connection
    per journal (:func:`.journal.one_reader`)."""
    outer = getattr(_memo, "answers", None)
    _memo.answers = {} if outer is None else outer
    try:
        with one_reader():
            yield
    finally:
        _memo.answers = outer


def has_history(workflow: str, exclude_run: str = "", store: Any = None) -> bool:
    """Did any recent run of ``workflow`` (other than ``exclude_run``) complete a task that
    ran?  Without such a task there is nothing to predict from, so a workflow's first run
    skips the other queries over its history.  The question stops at the first such row
    (the means, asked only when there is history, read every row of the recent runs)."""
    if store is None:
        from .store import get_store

        store = get_store(warn=False)
    if store is None:
        return False
    return bool(store.journal.query(_ANY_SQL, (workflow, exclude_run, RECENT_RUNS)))


def _recent_runs(store: Any, workflow: str, exclude_run: str, runs: int) -> list[str]:
    """The newest ``runs`` runs of ``workflow`` (not ``exclude_run``), cut once their nodes
    pass :data:`RECENT_NODES` (the newest run is always kept)."""
    out: list[str] = []
    total = 0
    for run_id, last in store.journal.query(_RUNS_SQL, (workflow, exclude_run, runs)):
        size = (last or 0) + 1
        if out and total + size > RECENT_NODES:
            break
        out.append(run_id)
        total += size
    return out


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
    answers = getattr(_memo, "answers", None)
    question = (column, workflow, exclude_run, runs, id(store))
    if answers is not None and question in answers:
        known_by_name, known_by_key = answers[question]
        return dict(known_by_name), dict(known_by_key)
    ids = _recent_runs(store, workflow, exclude_run, runs)
    rows = store.journal.query(_SQL.format(column=column, runs=",".join("?" * len(ids))), ids) if ids else []
    by_key: dict[str, float] = {}
    total: dict[str, list[float]] = {}
    for name, key, mean, count in rows:
        if name is None or not count or mean is None:
            continue
        by_key[str(key)] = float(mean)
        acc = total.setdefault(str(name), [0.0, 0.0])
        acc[0] += float(mean) * count
        acc[1] += count
    by_name = {n: s / c for n, (s, c) in total.items()}
    if answers is not None:
        answers[question] = (by_name, by_key)
        return dict(by_name), dict(by_key)
    return by_name, by_key
