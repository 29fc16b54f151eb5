"""Per-task means of a measured column over a workflow's recent runs.

Several rooms guess a task's next run from its last ones: the prediction room (durations for
learned priorities), the locality room (output sizes for placing tasks whose producers have
not finished).  This is the one query they share: completed, uncached attempts of the
workflow's ``runs`` newest runs (leaving one run out; fewer when those runs hold more than
:data:`RECENT_NODES` nodes), averaged by task key and by task name.

What it reads is what the run being prepared needs, not what the store holds:

* **by task name** from the per-task sums each run leaves when it ends (``task_means``,
  :mod:`.summary`): a row per task and run, however many attempts the run made.  A run
  without them (journaled by an older nbflow, or whose process died) is summed from its
  attempts, in SQLite.
* **by key** only for the keys of the graph being prepared (``keys=``, in node order).  The
  same call of a workflow run again has the same key at the same node index, so the
  attempts of the graph's keys are read by primary key: the nodes ``0..len(keys)-1`` of
  each recent run, a row each.  A key found at another index (the graph changed) is looked
  up by name in that run.  A key names one node of a run (``name-N``, N counted per task
  name), which is what makes "found at its own index" the whole answer for that run.
  Without ``keys`` every key of the recent runs is averaged (``nf.plan``, reports).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from itertools import compress
from typing import Any

from .journal import one_reader
from .summary import summary_columns

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

# Every key's means (no keys given): a row per attempt of the runs, grouped.
_SQL = """
SELECT n.task, t.key, AVG(t.{column}), COUNT(*)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({runs})
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
GROUP BY n.task, t.key
"""

# The per-task sums of summarised runs; the row with task '' marks a run summarised.
_SUMMARY_SQL = """
SELECT run_id, task, {count}, {total} FROM task_means WHERE run_id IN ({runs})
"""

# Per-task sums of runs without a summary, from their attempts (in SQLite: a row per task).
_TASK_SQL = """
SELECT n.task, SUM(t.{column}), COUNT(*)
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({runs})
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
GROUP BY n.task
"""

# The graph's keys at their own node indexes: by primary key, a row per completed attempt.
_AT_INDEX_SQL = """
SELECT t.run_id, t.idx, t.key, t.{column} FROM task_runs t
WHERE t.run_id IN ({runs}) AND t.idx < ?
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
"""

# Which of these node indexes of a run hold which keys (by primary key).
_NODES_AT_SQL = """
SELECT idx, key FROM nodes WHERE run_id = ? AND idx IN (SELECT value FROM json_each(?))
"""

# A run's attempts of some keys, wherever their nodes are (the graph changed since).
_BY_NAME_SQL = """
SELECT t.key, t.{column} FROM task_runs t
WHERE t.run_id = ? AND t.key IN (SELECT value FROM json_each(?))
  AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
"""

# Every attempt of a (small) run.
_RUN_SQL = """
SELECT t.key, t.{column} FROM task_runs t
WHERE t.run_id = ? AND t.state = 'completed' AND t.cached = 0 AND t.{column} IS NOT NULL
"""

# Is there one completed attempt that ran, in the recent runs?  Stops at the first.
_ANY_SQL = """
SELECT 1 FROM task_runs t
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND t.duration_s IS NOT NULL
LIMIT 1
"""


_memo = threading.local()  # .answers: {(column, workflow, exclude_run, runs, store, keys): answer}


@contextlib.contextmanager
def one_answer_per_query() -> Iterator[None]:
    """Within the block (in this thread), :func:`recent_means` asks the journal once per
    distinct question: a run being prepared asks for the same means from two rooms (the
    durations weigh both priorities and placement; pass them the same ``keys`` list).
    Outside, every call reads afresh.  The block's queries (these and any other, e.g.
    predicted memory) share one connection per journal (:func:`.journal.one_reader`)."""
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
    return list(_recent_sizes(store, workflow, exclude_run, runs))


def _recent_sizes(store: Any, workflow: str, exclude_run: str, runs: int) -> dict[str, int]:
    """:func:`_recent_runs` with each run's number of nodes, newest first."""
    out: dict[str, int] = {}
    total = 0
    for run_id, last in store.journal.query(_RUNS_SQL, (workflow, exclude_run, runs)):
        size = (last or 0) + 1
        if out and total + size > RECENT_NODES:
            break
        out[run_id] = size
        total += size
    return out


def _marks(ids: list[str]) -> str:
    return ",".join("?" * len(ids))


def _task_means(store: Any, column: str, ids: list[str]) -> dict[str, float]:
    """Mean of ``column`` per task name over the runs ``ids``: summarised runs from their
    ``task_means`` rows, the others from their attempts."""
    count, total = summary_columns(column)
    sums: dict[str, list[float]] = {}
    summarised: set[str] = set()
    try:
        rows = store.journal.query(_SUMMARY_SQL.format(count=count, total=total, runs=_marks(ids)), ids)
    except sqlite3.OperationalError:  # (a journal without the table: every run from its attempts)
        rows = []
    for run_id, name, n, s in rows:
        if name == "":
            summarised.add(run_id)
        elif n:
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] += s
            acc[1] += n
    rest = [r for r in ids if r not in summarised]
    if rest:
        for name, s, n in store.journal.query(_TASK_SQL.format(column=column, runs=_marks(rest)), rest):
            if name is None or not n or s is None:
                continue
            acc = sums.setdefault(str(name), [0.0, 0])
            acc[0] += s
            acc[1] += n
    return {name: s / n for name, (s, n) in sums.items()}


def _key_means(store: Any, column: str, sizes: dict[str, int], keys: list[str]) -> dict[str, float]:
    """Mean of ``column`` per key, for the graph's ``keys`` only (``keys[i]`` is node i's),
    over the runs of ``sizes`` (run id -> its number of nodes).

    First the attempts at the graph's own node indexes (a row per node that completed).  A
    graph key without an attempt there may still be that run's key at another index, unless
    the run's node at its index holds it (a key names one node of a run): those few nodes
    are looked up; the keys left are searched for by name in that run."""
    n = len(keys)
    ids = list(sizes)
    query = store.journal.query
    sums: dict[str, list[Any]] = {}
    found = {r: bytearray(n) for r in ids}  # 1: the run holds the graph's key at that index
    for run_id, idx, key, value in query(_AT_INDEX_SQL.format(column=column, runs=_marks(ids)), [*ids, n]):
        if keys[idx] == key:
            found[run_id][idx] = 1
            acc = sums.get(key)
            if acc is None:
                sums[key] = [value, 1]
            else:
                acc[0] += value
                acc[1] += 1
    for run_id, marks in found.items():
        todo = list(compress(range(n), marks.translate(_FLIP))) if marks.count(0) else []
        if not todo:
            continue
        size = sizes[run_id]
        at_home = query(_NODES_AT_SQL, (run_id, json.dumps([i for i in todo if i < size])))
        home = {i for i, key in at_home if keys[i] == key}  # (there, with no attempt to count)
        wanted = {keys[i] for i in todo if i not in home}
        if not wanted:
            continue
        if size <= len(wanted):  # (a smaller run than the keys asked for: read it whole)
            rows = query(_RUN_SQL.format(column=column), (run_id,))
        else:
            rows = query(_BY_NAME_SQL.format(column=column), (run_id, json.dumps(sorted(wanted))))
        for key, value in rows:
            if key in wanted:
                acc = sums.setdefault(key, [0.0, 0])
                acc[0] += value
                acc[1] += 1
    return {key: s / c for key, (s, c) in sums.items()}


_FLIP = bytes([1, 0]) + bytes(254)  # (bytearray.translate: 0 <-> 1)


def _all_means(store: Any, column: str, ids: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Every key's means and the tasks' over the runs ``ids`` (a row per attempt)."""
    rows = store.journal.query(_SQL.format(column=column, runs=_marks(ids)), ids)
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


def recent_means(
    column: str, workflow: str, exclude_run: str = "", store: Any = None, runs: int = RECENT_RUNS,
    keys: list[str] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(by task name, by task key)`` means of ``column`` of ``task_runs`` (one of
    :data:`COLUMNS`) over ``workflow``'s ``runs`` newest runs other than ``exclude_run``;
    two empty dicts without a store.  With ``keys`` (the graph's keys in node order) the
    by-key means hold those keys only, and cost a row per node of the graph per run."""
    if column not in COLUMNS:
        raise ValueError(f"recent_means: column must be one of {sorted(COLUMNS)}, got {column!r}")
    if store is None:
        from .store import get_store

        store = get_store(warn=False)
    if store is None:
        return {}, {}
    answers = getattr(_memo, "answers", None)
    question = (column, workflow, exclude_run, runs, id(store), None if keys is None else id(keys))
    if answers is not None and question in answers:
        known_by_name, known_by_key, _ = answers[question]
        return dict(known_by_name), dict(known_by_key)
    sizes = _recent_sizes(store, workflow, exclude_run, runs)
    ids = list(sizes)
    if not ids:
        by_name: dict[str, float] = {}
        by_key: dict[str, float] = {}
    elif keys is None:
        by_name, by_key = _all_means(store, column, ids)
    else:
        by_name, by_key = _task_means(store, column, ids), _key_means(store, column, sizes, keys)
    if answers is not None:
        answers[question] = (by_name, by_key, keys)  # (keys kept alive: its id stays its own)
        return dict(by_name), dict(by_key)
    return by_name, by_key
