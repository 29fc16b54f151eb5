"""Per-task means of a measured column over a workflow's recent runs.

Several rooms guess a task's next run from its last ones: the prediction room (durations for
learned priorities), the locality room (output sizes for placing tasks whose producers have
not finished).  This is the one query they share: completed, uncached attempts of the
workflow's ``runs`` newest runs (leaving one run out; fewer when those runs hold more than
:data:`RECENT_NODES` nodes), averaged by task key and by task name.

What it reads is what the run being prepared needs, not what the store holds:

* **by task name** from the per-task sums each run leaves when it ends (``task_means``,
  :mod:`.summary`): a row per task and run, however many attempts the run made, summed
  over the runs in SQLite when every run has them (a row per task reaches Python).  A run
  without them (journaled by an older nbflow, or whose process died) is summed from its
  attempts, in SQLite.
* **by key** only for the keys of the graph being prepared (``keys=``, in node order).  The
  same call of a workflow run again has the same key at the same node index, so the
  attempts of the graph's keys are read by primary key: the nodes ``0..len(keys)-1`` of
  each recent run, a row each.  A key found at another index (the graph changed) is looked
  up by name in that run (one statement for every run that has such keys).  A key names
  one node of a run (``name-N``, N counted per task name), which is what makes "found at
  its own index" the whole answer for that run.
  Without ``keys`` every key of the recent runs is averaged (``nf.plan``, reports).  When
  every recent run holds every key of the graph at its own index (the same graph run
  again: the usual case), SQLite sums the rows per node and Python gets a row per node.
* **several columns in one pass**: a Dask run's preparation wants durations and output
  sizes of the same rows; inside ``one_answer_per_query(together=...)`` the first question
  reads both (the same statements, a column more each).
* **told, not asked**: inside that block, answers known before the questions
  (:func:`tell`, :func:`tell_means`: what :mod:`nbflow.predict.ahead` read ahead, while
  the journal is unchanged since) are taken instead of reading.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from itertools import compress
from typing import Any

from .journal import one_reader
from .summary import summary_columns

__all__ = ["COLUMNS", "RECENT_NODES", "RECENT_RUNS", "UNTOLD", "has_history", "one_answer_per_query",
           "read_means", "recent_means", "tell", "tell_means", "told"]

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

# The SQL below reads one or several columns at once: ``{values}`` is ``t.a, t.b`` and
# ``{nonnull}`` ``(t.a IS NOT NULL OR t.b IS NOT NULL)``; a row's NULL columns are skipped in
# Python, column by column (a run's preparation asks for durations and output sizes over
# the same rows: one pass reads both).

# Every key's means (no keys given): a row per attempt of the runs, grouped.
_SQL = """
SELECT n.task, t.key, {averages}
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({runs})
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
GROUP BY n.task, t.key
"""

# The per-task sums of summarised runs; the row with task '' marks a run summarised.
_SUMMARY_SQL = """
SELECT run_id, task, {pairs} FROM task_means WHERE run_id IN ({runs})
"""

# The same summed over the runs in SQLite, a row per task (the group of task '' counts the
# runs summarised: when it counts every run, this is the whole answer).
_SUMMARY_TOTALS_SQL = """
SELECT task, COUNT(*), {totals} FROM task_means WHERE run_id IN ({runs}) GROUP BY task
"""

# Per-task sums of runs without a summary, from their attempts (in SQLite: a row per task).
_TASK_SQL = """
SELECT n.task, {sums}
FROM task_runs t JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.run_id IN ({runs})
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
GROUP BY n.task
"""

# The graph's keys at their own node indexes: by primary key, a row per completed attempt.
_AT_INDEX_SQL = """
SELECT t.run_id, t.idx, t.key, {values} FROM task_runs t
WHERE t.run_id IN ({runs}) AND t.idx < ?
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
"""

# The same summed per node in SQLite, with the number of runs holding the node's key there:
# when every run holds every key of the graph at its own index (the same graph run again),
# this is the whole answer, a row per node instead of one per node and run.  (An attempt
# whose columns are NULL still shows that its run holds the key there: COUNT skips NULLs.)
_AT_INDEX_SUMS_SQL = """
SELECT t.idx, t.key, COUNT(*), {totals} FROM task_runs t
WHERE t.run_id IN ({runs}) AND t.idx < ? AND t.state = 'completed' AND t.cached = 0
GROUP BY t.idx, t.key
"""

# The same for one run (a long map's history is its newest run alone: no run id per row).
_AT_INDEX_ONE_SQL = """
SELECT t.idx, t.key, {values} FROM task_runs t
WHERE t.run_id = ? AND t.idx < ?
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
"""

# The same without the keys, once the run's nodes are known to hold the graph's keys.
_VALUES_ONE_SQL = """
SELECT t.idx, {values} FROM task_runs t
WHERE t.run_id = ? AND t.idx < ?
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
"""

# A run's keys at the first node indexes, joined: one string to compare with the graph's.
_KEYS_SQL = "SELECT COUNT(*), group_concat(key, char(31)) FROM nodes WHERE run_id = ? AND idx < ?"
_SEP = "\x1f"

# Which of these node indexes of some runs hold which keys (by primary key).
_NODES_AT_SQL = """
SELECT run_id, idx, key FROM nodes
WHERE run_id IN ({runs}) AND idx IN (SELECT value FROM json_each(?))
"""

# Some runs' attempts of some keys, wherever their nodes are (the graph changed since).
_BY_NAME_SQL = """
SELECT t.run_id, t.key, {values} FROM task_runs t
WHERE t.run_id IN ({runs}) AND t.key IN (SELECT value FROM json_each(?))
  AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
"""

# Every attempt of some (small) runs.
_RUN_SQL = """
SELECT t.run_id, t.key, {values} FROM task_runs t
WHERE t.run_id IN ({runs}) AND t.state = 'completed' AND t.cached = 0 AND {nonnull}
"""

# Is there one completed attempt that ran, in the recent runs?  Stops at the first.
_ANY_SQL = """
SELECT 1 FROM task_runs t
WHERE t.run_id IN (SELECT id FROM runs WHERE name = ? AND id != ? ORDER BY start DESC LIMIT ?)
  AND t.state = 'completed' AND t.cached = 0 AND t.duration_s IS NOT NULL
LIMIT 1
"""


_memo = threading.local()  # .answers: {(column, workflow, exclude_run, runs, store, keys): answer}
# .together: columns read in one pass when one of them is asked for (see one_answer_per_query)
# .told: {question: answer} other questions' answers known before they are asked (see tell)

Sums = dict[str, list[Any]]  # key or task name -> [sum, count]


@contextlib.contextmanager
def one_answer_per_query(together: Iterable[str] = ()) -> Iterator[None]:
    """Within the block (in this thread), :func:`recent_means` asks the journal once per
    distinct question: a run being prepared asks for the same means from two rooms (the
    durations weigh both priorities and placement; pass them the same ``keys`` list).
    The columns named in ``together`` are read in one pass when the first of them is asked
    for (with the same workflow and ``keys``): the rows a column's means cost are the other
    columns' rows too.  Outside, every call reads afresh.  The block's queries (these and
    any other, e.g. predicted memory) share one connection per journal
    (:func:`.journal.one_reader`)."""
    together = tuple(sorted(set(together)))
    bad = sorted(set(together) - COLUMNS)
    if bad:
        raise ValueError(f"one_answer_per_query: together must name columns of {sorted(COLUMNS)}, got {bad}")
    outer = getattr(_memo, "answers", None)
    outer_together = getattr(_memo, "together", ())
    outer_told = getattr(_memo, "told", None)
    _memo.answers = {} if outer is None else outer
    _memo.together = together if outer is None else outer_together
    _memo.told = {} if outer is None else outer_told
    try:
        with one_reader(keep=True):  # (the next run's preparation reads through it too)
            yield
    finally:
        _memo.answers = outer
        _memo.together = outer_together
        _memo.told = outer_told


UNTOLD = object()  # (told: no answer given for that question)


def tell(question: tuple[Any, ...], answer: Any) -> None:
    """Within a :func:`one_answer_per_query` block (this thread), ``question`` has
    ``answer``: whoever asks it there takes it (:func:`told`) instead of reading the
    journal.  Outside a block this does nothing.  (A run's preparation is told what was
    read ahead for it: :mod:`nbflow.predict.ahead`.)"""
    told_ = getattr(_memo, "told", None)
    if told_ is not None:
        told_[question] = answer


def told(question: tuple[Any, ...]) -> Any:
    """The answer :func:`tell` gave ``question`` in this block, else :data:`UNTOLD`."""
    return (getattr(_memo, "told", None) or {}).get(question, UNTOLD)


def tell_means(store: Any, workflow: str, exclude_run: str, runs: int, keys: list[str],
               answers: dict[str, tuple[dict[str, float], dict[str, float]]]) -> None:
    """Within the block, :func:`recent_means` of each column of ``answers`` for these
    arguments (the same ``keys`` list) takes its answer from there."""
    memo = getattr(_memo, "answers", None)
    if memo is None:
        return
    for column, (by_name, by_key) in answers.items():
        memo[(column, workflow, exclude_run, runs, id(store), id(keys))] = (by_name, by_key, keys)


def read_means(store: Any, cols: tuple[str, ...], workflow: str, exclude_run: str, runs: int,
               keys: list[str] | None) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """:func:`recent_means` of each of ``cols`` read now, in one pass (no block's answers)."""
    return _read(store, cols, workflow, exclude_run, runs, keys)


def has_history(workflow: str, exclude_run: str = "", store: Any = None) -> bool:
    """Did any recent run of ``workflow`` (other than ``exclude_run``) complete a task that
    ran?  Without such a task there is nothing to predict from, so a workflow's first run
    skips the other queries over its history.  The question stops at the first such row
    (the means, asked only when there is history, read every row of the recent runs).
    Inside a preparation told the answer (:func:`tell`), that answer."""
    if store is None:
        from .store import get_store

        store = get_store(warn=False)
    if store is None:
        return False
    answer = told(("has_history", workflow, exclude_run, id(store)))
    if answer is not UNTOLD:
        return bool(answer)
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


def _sql(template: str, cols: tuple[str, ...], **more: str) -> str:
    """``template`` reading the columns ``cols`` (see the SQL's comment)."""
    return template.format(values=", ".join(f"t.{c}" for c in cols),
                           nonnull="(" + " OR ".join(f"t.{c} IS NOT NULL" for c in cols) + ")", **more)


def _add(sums: Sums, key: str, value: Any, count: Any = 1) -> None:
    acc = sums.get(key)
    if acc is None:
        sums[key] = [value, count]
    else:
        acc[0] += value
        acc[1] += count


def _task_means(store: Any, cols: tuple[str, ...], ids: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each column per task name over the runs ``ids``: summarised runs from their
    ``task_means`` rows, the others from their attempts."""
    got = _summarised_task_means(store, cols, ids)
    if got is not None:
        return got
    pairs = ", ".join(f"{n}, {t}" for n, t in map(summary_columns, cols))
    sums: dict[str, Sums] = {c: {} for c in cols}
    summarised: set[str] = set()
    try:
        rows = store.journal.query(_SUMMARY_SQL.format(pairs=pairs, runs=_marks(ids)), ids)
    except sqlite3.OperationalError:  # (a journal without the table: every run from its attempts)
        rows = []
    for run_id, name, *got in rows:
        if name == "":
            summarised.add(run_id)
            continue
        for j, c in enumerate(cols):
            n = got[2 * j]
            if n:
                _add(sums[c], name, 0.0 + got[2 * j + 1], n)
    rest = [r for r in ids if r not in summarised]
    if rest:
        totals = ", ".join(f"SUM(t.{c}), COUNT(t.{c})" for c in cols)
        for name, *got in store.journal.query(_sql(_TASK_SQL, cols, sums=totals, runs=_marks(rest)), rest):
            if name is None:
                continue
            for j, c in enumerate(cols):
                s, n = got[2 * j], got[2 * j + 1]
                if n and s is not None:
                    _add(sums[c], str(name), 0.0 + s, n)
    return {c: _finish(sums[c]) for c in cols}


def _summarised_task_means(store: Any, cols: tuple[str, ...],
                           ids: list[str]) -> dict[str, dict[str, float]] | None:
    """:func:`_task_means` summed in SQLite, a row per task, when every run of ``ids`` is
    summarised (the usual case: runs of this nbflow); else None (each run's rows are read)."""
    totals = ", ".join(f"SUM({n}), SUM({t})" for n, t in map(summary_columns, cols))
    try:
        rows = store.journal.query(_SUMMARY_TOTALS_SQL.format(totals=totals, runs=_marks(ids)), ids)
    except sqlite3.OperationalError:  # (a journal without the table)
        return None
    out: dict[str, dict[str, float]] = {c: {} for c in cols}
    summarised = 0
    for name, runs, *got in rows:
        if name == "":
            summarised = runs
            continue
        for j, c in enumerate(cols):
            n = got[2 * j]
            if n:
                out[c][name] = (0.0 + got[2 * j + 1]) / n
    return out if summarised == len(ids) else None


def _finish(sums: Sums) -> dict[str, float]:
    return {key: s / c for key, (s, c) in sums.items()}


def _key_means(store: Any, cols: tuple[str, ...], sizes: dict[str, int],
               keys: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each column per key, for the graph's ``keys`` only (``keys[i]`` is node i's),
    over the runs of ``sizes`` (run id -> its number of nodes).

    First the attempts at the graph's own node indexes (a row per node that completed).  A
    graph key without an attempt there may still be that run's key at another index, unless
    the run's node at its index holds it (a key names one node of a run): those few nodes
    are looked up; the keys left are searched for by name in that run."""
    n = len(keys)
    ids = list(sizes)
    query = store.journal.query
    if len(ids) == 1:
        return _one_run_key_means(store, cols, ids[0], sizes[ids[0]], keys)
    if all(size >= n for size in sizes.values()):  # (else some run cannot hold every key)
        got = _key_means_if_same(store, cols, ids, keys)
        if got is not None:
            return got
    sums: dict[str, Sums] = {c: {} for c in cols}
    found = {r: bytearray(n) for r in ids}  # 1: the run holds the graph's key at that index
    for run_id, idx, key, *values in query(_sql(_AT_INDEX_SQL, cols, runs=_marks(ids)), [*ids, n]):
        if keys[idx] == key:
            found[run_id][idx] = 1
            for c, value in zip(cols, values, strict=True):
                if value is not None:  # (_add, inline: a row per node and run)
                    acc = sums[c].get(key)
                    if acc is None:
                        sums[c][key] = [value, 1]
                    else:
                        acc[0] += value
                        acc[1] += 1
    todo = {run_id: list(compress(range(n), marks.translate(_FLIP)))
            for run_id, marks in found.items() if marks.count(0)}
    _elsewhere(store, cols, todo, sizes, keys, sums)
    return {c: _finish(sums[c]) for c in cols}


def _key_means_if_same(store: Any, cols: tuple[str, ...], ids: list[str],
                       keys: list[str]) -> dict[str, dict[str, float]] | None:
    """:func:`_key_means` summed in SQLite, when every run of ``ids`` completed every key of
    the graph at its own node index (else None: the rows are read one by one)."""
    n = len(keys)
    totals = ", ".join(f"SUM(t.{c}), COUNT(t.{c})" for c in cols)
    rows = store.journal.query(_sql(_AT_INDEX_SUMS_SQL, cols, totals=totals, runs=_marks(ids)), [*ids, n])
    held = 0
    out: dict[str, dict[str, float]] = {c: {} for c in cols}
    for idx, key, runs, *got in rows:
        if keys[idx] != key:
            continue
        held += runs
        for j, c in enumerate(cols):
            count = got[2 * j + 1]
            if count:
                out[c][key] = got[2 * j] / count
    return out if held == n * len(ids) else None


def _one_run_key_means(store: Any, cols: tuple[str, ...], run_id: str, size: int,
                       keys: list[str]) -> dict[str, dict[str, float]]:
    """:func:`_key_means` over one run, column-wise: a long map's newest run is often the
    whole history read (:data:`RECENT_NODES`), a row per item."""
    if _same_keys(store, run_id, size, keys):
        return _same_keys_means(store, cols, run_id, keys)
    rows = store.journal.query(_sql(_AT_INDEX_ONE_SQL, cols), (run_id, len(keys)))
    rows = [r for r in rows if keys[r[0]] == r[1]]
    home = {r[0] for r in rows}
    todo = sorted(set(range(len(keys))) - home) if len(home) < len(keys) else []
    if len(home) == len(rows) and not todo:  # (one attempt per key: its value is its mean)
        return {c: {r[1]: float(r[2 + j]) for r in rows if r[2 + j] is not None}
                for j, c in enumerate(cols)}
    sums: dict[str, Sums] = {c: {} for c in cols}
    for _, key, *values in rows:
        for c, value in zip(cols, values, strict=True):
            if value is not None:
                _add(sums[c], key, value)
    _elsewhere(store, cols, {run_id: todo}, {run_id: size}, keys, sums)
    return {c: _finish(sums[c]) for c in cols}


def _same_keys(store: Any, run_id: str, size: int, keys: list[str]) -> bool:
    """Does every node of the run below ``len(keys)`` hold the graph's key at its index, and
    the run no node past them that the graph has not?  (A run of the same graph, or a
    shorter or longer map of it.)  Then a key of the graph is either at its own index in
    that run or not in it at all.  One joined string compared: no key per row in Python."""
    n = len(keys)
    (count, joined), = store.journal.query(_KEYS_SQL, (run_id, n))
    first = keys[:count]
    text = _SEP.join(first)
    return (count == min(n, size) and (joined or "") == text
            and text.count(_SEP) == max(count - 1, 0))  # (no key holds the separator)


def _same_keys_means(store: Any, cols: tuple[str, ...], run_id: str,
                     keys: list[str]) -> dict[str, dict[str, float]]:
    """Per-key means of one run whose nodes hold the graph's keys (:func:`_same_keys`)."""
    rows = store.journal.query(_sql(_VALUES_ONE_SQL, cols), (run_id, len(keys)))
    if not rows:
        return {c: {} for c in cols}
    if len({r[0] for r in rows}) == len(rows):  # (one attempt per key: its value is its mean)
        at = keys.__getitem__
        return {c: {at(r[0]): float(r[1 + j]) for r in rows if r[1 + j] is not None}
                for j, c in enumerate(cols)}
    sums: dict[str, Sums] = {c: {} for c in cols}
    for idx, *values in rows:
        for c, value in zip(cols, values, strict=True):
            if value is not None:
                _add(sums[c], keys[idx], 0.0 + value)
    return {c: _finish(sums[c]) for c in cols}


def _elsewhere(store: Any, cols: tuple[str, ...], todo: dict[str, list[int]], sizes: dict[str, int],
               keys: list[str], sums: dict[str, Sums]) -> None:
    """Add to ``sums`` (per column) the attempts of some runs for the graph's keys at the
    indexes ``todo[run]`` (none of that run's attempts at those indexes was theirs): the
    run's own node at such an index may hold the key (then it has no attempt to count), else
    the run is searched for the key by name.  A statement for every run at once (not one
    per run: a graph that changed leaves every recent run with keys to look for), then
    Python keeps each run's own rows."""
    todo = {r: t for r, t in todo.items() if t}
    if not todo:
        return
    query = store.journal.query
    runs = list(todo)
    places = sorted({i for r in runs for i in todo[r] if i < sizes[r]})
    home: dict[str, set[int]] = {r: set() for r in runs}
    if places:
        asked = {r: set(todo[r]) for r in runs}
        for run_id, i, key in query(_NODES_AT_SQL.format(runs=_marks(runs)), (*runs, json.dumps(places))):
            if keys[i] == key and i in asked[run_id]:  # (there, with no attempt to count)
                home[run_id].add(i)
    wanted = {r: {keys[i] for i in todo[r] if i not in home[r]} for r in runs}
    # (a run smaller than the keys it is asked for is read whole)
    whole = [r for r in runs if wanted[r] and sizes[r] <= len(wanted[r])]
    by_name = [r for r in runs if wanted[r] and sizes[r] > len(wanted[r])]
    rows: list[Any] = []
    if whole:
        rows += query(_sql(_RUN_SQL, cols, runs=_marks(whole)), whole)
    if by_name:
        names = sorted(set().union(*(wanted[r] for r in by_name)))
        rows += query(_sql(_BY_NAME_SQL, cols, runs=_marks(by_name)), (*by_name, json.dumps(names)))
    for run_id, key, *values in rows:
        if key in wanted[run_id]:
            for c, value in zip(cols, values, strict=True):
                if value is not None:
                    _add(sums[c], key, value)


_FLIP = bytes([1, 0]) + bytes(254)  # (bytearray.translate: 0 <-> 1)


def _all_means(store: Any, cols: tuple[str, ...],
               ids: list[str]) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """Every key's means and the tasks' over the runs ``ids`` (a row per attempt), per column."""
    averages = ", ".join(f"AVG(t.{c}), COUNT(t.{c})" for c in cols)
    rows = store.journal.query(_sql(_SQL, cols, averages=averages, runs=_marks(ids)), ids)
    out = {}
    for j, c in enumerate(cols):
        by_key: dict[str, float] = {}
        total: Sums = {}
        for name, key, *got in rows:
            mean, count = got[2 * j], got[2 * j + 1]
            if name is None or not count or mean is None:
                continue
            by_key[str(key)] = float(mean)
            _add(total, str(name), float(mean) * count, count)
        out[c] = (_finish(total), by_key)
    return out


def _read(store: Any, cols: tuple[str, ...], workflow: str, exclude_run: str, runs: int,
          keys: list[str] | None) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """``recent_means`` of each of ``cols``, in one pass over the same rows."""
    sizes = _recent_sizes(store, workflow, exclude_run, runs)
    ids = list(sizes)
    if not ids:
        return {c: ({}, {}) for c in cols}
    if keys is None:
        return _all_means(store, cols, ids)
    by_name, by_key = _task_means(store, cols, ids), _key_means(store, cols, sizes, keys)
    return {c: (by_name[c], by_key[c]) for c in cols}


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
    if answers is None:
        return _read(store, (column,), workflow, exclude_run, runs, keys)[column]

    def question(c: str) -> tuple[Any, ...]:
        return (c, workflow, exclude_run, runs, id(store), None if keys is None else id(keys))

    if question(column) not in answers:
        together: tuple[str, ...] = getattr(_memo, "together", ())
        cols = together if column in together else (column,)
        cols = tuple(c for c in cols if c == column or question(c) not in answers)
        for c, answer in _read(store, cols, workflow, exclude_run, runs, keys).items():
            answers[question(c)] = (*answer, keys)  # (keys kept alive: its id stays its own)
    known_by_name, known_by_key, _ = answers[question(column)]
    return dict(known_by_name), dict(known_by_key)
