"""Setting what the store's history says a task call took, for tests of what history decides.

A test that learns from *measured* durations (a 10 ms sleep against a 300 ms one) depends on
the machine: on a busy CI machine a 10 ms sleep can take 150 ms.  These tests run their
workflows for real, then set the recorded durations to the values the test reasons with,
so what is learned from them is the same on every machine.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping

from nbflow.store import get_store


def set_durations(seconds: float | Mapping[str, float]) -> None:
    """Every recorded task call took ``seconds``; or, given ``{key: seconds}``, the calls of
    those keys (``"quick-0"``) in every run so far did."""
    store = get_store()
    assert store is not None, "no store to edit (NBFLOW_STORE=off?)"
    store.journal.flush()
    with sqlite3.connect(store.journal.path) as db:
        if isinstance(seconds, Mapping):
            for key, s in seconds.items():
                db.execute("UPDATE task_runs SET duration_s = ?, end = start + ? WHERE key = ?", (s, s, key))
        else:
            db.execute("UPDATE task_runs SET duration_s = ?, end = start + ?", (seconds, seconds))


def replay(run_id: str, seconds: Mapping[str, float], workers: int) -> None:
    """Rewrite the recorded timeline of ``run_id`` as if each call of task ``name`` took
    ``seconds[name]``, or the call ``key`` ``seconds[key]`` (other nodes: no time), on
    ``workers`` workers: list scheduling from
    the run's recorded start, ready nodes taken in node order, as the engine takes them.
    What history learns from the run (durations, and when each task ended) is then the same
    on every machine."""
    store = get_store()
    assert store is not None, "no store to edit (NBFLOW_STORE=off?)"
    store.journal.flush()
    with sqlite3.connect(store.journal.path) as db:
        (start,) = db.execute("SELECT start FROM runs WHERE id = ?", (run_id,)).fetchone()
        nodes = db.execute("SELECT idx, key, task, deps FROM nodes WHERE run_id = ? ORDER BY idx",
                           (run_id,)).fetchall()
        took = {idx: float(seconds.get(key, seconds.get(task, 0.0))) for idx, key, task, _ in nodes}
        deps = {idx: json.loads(d or "[]") for idx, _, _, d in nodes}
        begin, end = _list_schedule(took, deps, workers, float(start))
        for idx in took:
            db.execute("UPDATE task_runs SET start = ?, end = ?, duration_s = ? WHERE run_id = ? AND idx = ?",
                       (begin[idx], end[idx], took[idx], run_id, idx))
        db.execute("UPDATE runs SET end = ?, duration_s = ? WHERE id = ?",
                   (max(end.values()), max(end.values()) - float(start), run_id))


def _list_schedule(took: dict[int, float], deps: dict[int, list[int]], workers: int,
                   t0: float) -> tuple[dict[int, float], dict[int, float]]:
    """Start and end of each node: a node starts when its dependencies have ended and one of
    ``workers`` is free, the lowest-numbered ready node first."""
    free = [t0] * workers
    begin: dict[int, float] = {}
    end: dict[int, float] = {}
    left = sorted(took)
    while left:
        ready = [i for i in left if all(d in end for d in deps[i])]
        assert ready, "the run's graph has a cycle"
        # the ready node that can start first (its inputs done, a worker free), lowest index
        w = min(range(workers), key=free.__getitem__)
        i = min(ready, key=lambda k: (max([free[w], *(end[d] for d in deps[k])]), k))
        begin[i] = max([free[w], *(end[d] for d in deps[i])])
        end[i] = begin[i] + took[i]
        free[w] = end[i]
        left.remove(i)
    return begin, end
