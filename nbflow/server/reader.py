"""Read-only queries on the run store for the dashboard.

Every function opens its own read-only SQLite connection (``mode=ro``): in WAL mode a
reader sees the last committed state and never blocks the processes that are writing runs,
nor they it.  A store that does not exist yet simply has no runs; nothing here creates,
migrates or changes a store.  Run ids are checked by the handlers before they get here and
are only ever used as SQL parameters.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.counting import count_tasks
from ..store.eventrows import expand
from ..store.history import StoredRun, effective_status
from ..store.journal import connect, retrying

JOURNAL = "journal.sqlite"
_EPOCH = pd.Timestamp(0, tz="UTC")
LIVE = "running"
MAX_PAGE = 500
_RUN_COLS = "id, name, status, start, end, duration_s, backend, workers, host, pid, error"


@contextmanager
def reading(home: Path) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to ``home``'s journal, or None when there is no journal yet."""
    path = home / JOURNAL
    if not path.is_file():
        yield None
        return
    conn = connect(path, readonly=True)
    try:
        yield conn
    finally:
        conn.close()


def _q(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return retrying(lambda: conn.execute(sql, params).fetchall(), "dashboard read")


def _num(x: Any) -> Any:
    """JSON has no NaN: missing numbers are null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    rid, name, status, start, end, dur, backend, workers, host, pid, error = row
    status = effective_status(status, host, pid)
    return {"id": rid, "name": name, "status": status, "live": status == LIVE, "start": start, "end": end,
            "duration_s": dur, "backend": backend, "workers": workers, "host": host, "pid": pid,
            "error": error}


# Per run: its attempt rows that ended a node (not retried), by state and cache hit; and its
# number of nodes.  When a run has as many such rows as nodes (a run that ended, the usual
# case) these two grouped queries are the whole count: an ended node is never shown as
# anything but its state, whatever its kind.
_FINAL_SQL = """
SELECT run_id, state, cached, COUNT(*) FROM task_runs
WHERE run_id IN ({marks}) AND state != 'retried' GROUP BY 1, 2, 3
"""
_NODES_SQL = "SELECT run_id, COUNT(*) FROM nodes WHERE run_id IN ({marks}) GROUP BY 1"
# Otherwise (a live or interrupted run), per node of that run: its kind and its final attempt
# row (the last attempt that was not retried, else a retried one), as StoredRun reads a run.
_NODE_STATES_SQL = """
WITH f AS (SELECT idx, state, cached,
                  MAX(attempt + CASE WHEN state != 'retried' THEN 1000000000 ELSE 0 END)
           FROM task_runs WHERE run_id = ? GROUP BY idx)
SELECT f.state, COALESCE(f.cached, 0), n.kind, COUNT(*)
FROM nodes n LEFT JOIN f ON f.idx = n.idx WHERE n.run_id = ? GROUP BY 1, 2, 3
"""
# Per kind, the nodes of a run that have no attempt row yet but did start (their
# TaskStarted event is journaled): running (or interrupted), not pending.
_STARTED_SQL = """
SELECT n.kind, COUNT(*) FROM nodes n
WHERE n.run_id = ? AND NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.run_id = n.run_id AND t.idx = n.idx)
  AND n.idx IN (SELECT idx FROM events WHERE run_id = ? AND type = 'TaskStarted'
                UNION ALL  -- (the items of a batched chunk: one row per chunk, store.eventrows)
                SELECT j.value FROM events e, json_each(e.data, '$.indexes') j
                WHERE e.run_id = ? AND e.type = 'TaskBatch'
                  AND json_extract(e.data, '$.kind') = 'TaskStarted')
GROUP BY 1
"""

CountRow = tuple[str, bool, str | None, int]


def _open_run_rows(conn: sqlite3.Connection, run: dict[str, Any]) -> list[CountRow]:
    """The count rows of a run with nodes that have not ended, as ``nf.load_run`` reads it:
    a task that started and has not ended is running (interrupted, if its process died),
    one that failed and is being retried too; one that never started is pending."""
    rid = run["id"]
    unfinished = "interrupted" if run["status"] == "interrupted" else "running"
    live = run["status"] in ("running", "interrupted")
    rows: list[CountRow] = []
    not_ended: dict[str | None, int] = {}  # kind -> nodes without a row
    for state, cached, kind, n in _q(conn, _NODE_STATES_SQL, (rid, rid)):
        if state is None:
            not_ended[kind] = n
        elif state == "retried":  # failed and retried: still going unless the run has ended
            rows.append((unfinished if live else "failed", False, kind, n))
        else:
            rows.append((state, bool(cached), kind, n))
    if not_ended:
        started = dict(_q(conn, _STARTED_SQL, (rid, rid, rid)))
        for kind, n in not_ended.items():
            going = min(n, int(started.get(kind, 0)))
            rows += [("pending", False, kind, n - going), (unfinished, False, kind, going)]
    return rows


def _add_counts(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> None:
    """Task counts as every view counts them (:func:`nbflow.core.counting.count_tasks`):
    every node of the run (graphs grow while running), a collector that waits for its items
    ``pending``; unfinished nodes get the state ``nf.load_run`` gives them."""
    if not runs:
        return
    ids = [r["id"] for r in runs]
    marks = ",".join("?" * len(ids))
    final: dict[str, list[CountRow]] = {i: [] for i in ids}
    for rid, state, cached, n in _q(conn, _FINAL_SQL.format(marks=marks), ids):
        final[rid].append((state, bool(cached), None, n))
    nodes = dict(_q(conn, _NODES_SQL.format(marks=marks), ids))
    for r in runs:
        ended = sum(n for *_, n in final[r["id"]]) == nodes.get(r["id"], 0)
        rows = final[r["id"]] if ended else _open_run_rows(conn, r)
        got = count_tasks(rows)
        r.update(got.as_row())
        r["pending"], r["running"] = got.get("pending"), got.get("running")
        r["done"] = got.done


def list_runs(home: Path, *, status: str | None = None, name: str | None = None, since: float | None = None,
              limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """One page of runs, newest first, with their task counts; ``total`` counts every match.

    ``status`` is the status the dashboard shows: ``interrupted`` (a run whose process
    died) and ``running`` are told apart here, as ``nf.runs()`` does.
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    offset = max(0, int(offset))
    with reading(home) as conn:
        if conn is None:
            return {"runs": [], "total": 0, "limit": limit, "offset": offset}
        where: list[str] = []
        params: list[Any] = []
        if name:
            where.append("name = ?")
            params.append(name)
        if since is not None:
            where.append("start >= ?")
            params.append(float(since))
        if status in ("running", "interrupted"):
            # which of the runs marked running are really alive is known only per row
            where.append("status = 'running'")
        elif status:
            where.append("status = ?")
            params.append(status)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        if status in ("running", "interrupted"):
            rows = [_run_dict(r) for r in _q(conn, f"SELECT {_RUN_COLS} FROM runs {cond} "
                                                   "ORDER BY start DESC, rowid DESC", params)]
            rows = [r for r in rows if r["status"] == status]
            total, page = len(rows), rows[offset:offset + limit]
        else:
            total = _q(conn, f"SELECT COUNT(*) FROM runs {cond}", params)[0][0]
            page = [_run_dict(r) for r in _q(conn, f"SELECT {_RUN_COLS} FROM runs {cond} "
                                                   "ORDER BY start DESC, rowid DESC LIMIT ? OFFSET ?",
                                             [*params, limit, offset])]
        _add_counts(conn, page)
        return {"runs": page, "total": int(total), "limit": limit, "offset": offset}


def get_run(home: Path, run_id: str) -> dict[str, Any] | None:
    """The run's row and task counts, or None when the store has no such run."""
    with reading(home) as conn:
        if conn is None:
            return None
        rows = _q(conn, f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return None
        run = _run_dict(rows[0])
        _add_counts(conn, [run])
        run["last_seq"] = int(_q(conn, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?",
                                 (run_id,))[0][0])
        return run


class _ReadOnlyJournal:
    """What :class:`StoredRun` needs of a journal (``query``), over read-only connections."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = connect(self.path, readonly=True)
        try:
            return _q(conn, sql, params)
        finally:
            conn.close()


class _ReadOnlyStore:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.journal = _ReadOnlyJournal(home / JOURNAL)


def stored_run(home: Path, run_id: str) -> StoredRun | None:
    """The run as :func:`nf.load_run` reads it, without opening the store for writing."""
    if not (home / JOURNAL).is_file():
        return None
    store = _ReadOnlyStore(home)
    rows = store.journal.query(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,))
    return StoredRun(store, rows[0]) if rows else None  # type: ignore[arg-type]


def run_detail(home: Path, run_id: str) -> dict[str, Any] | None:
    """The run, every task (the ``run.tasks`` columns), the graph's nodes and edges, and the
    recorded traceback of each failed task."""
    run = get_run(home, run_id)
    sr = stored_run(home, run_id) if run is not None else None
    if run is None or sr is None:
        return None
    df = sr.tasks
    columns: dict[str, list[Any]] = {}
    for c in df.columns:
        col = df[c]
        if c in ("start", "end"):  # UTC timestamps -> epoch seconds
            col = (col - _EPOCH).dt.total_seconds()
        columns[c] = col.astype(object).where(col.notna(), None).tolist()
    names = list(columns)
    tasks = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    # graph edges, [upstream, downstream] as positions in ``tasks`` (the journal's node
    # order); a live run's graph may have grown since the tasks were read: those wait
    with reading(home) as conn:
        sql = "SELECT idx, deps FROM nodes WHERE run_id = ? ORDER BY idx"
        nodes = _q(conn, sql, (run_id,)) if conn is not None else []
    nodes = nodes[: len(tasks)]
    pos = {idx: j for j, (idx, _) in enumerate(nodes)}
    edges = [[pos[d], j] for j, (_, text) in enumerate(nodes) for d in json.loads(text or "[]") if d in pos]
    errors = {k: trim_traceback(str(e)) for k, e in sr.errors().items()}
    return {"run": run, "tasks": tasks, "edges": edges, "errors": errors}


_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+')


def trim_traceback(text: str) -> str:
    """A recorded traceback without the engine's frames in front of the task's own, as the
    notebook shows it (the journal keeps the whole text)."""
    from ..notebook.tracebacks import _internal

    lines = text.splitlines()
    try:
        head = lines.index("Traceback (most recent call last):")
    except ValueError:
        return text
    i = head + 1
    while i < len(lines):
        m = _FRAME.match(lines[i])
        if m is None or not _internal(m.group("file")):
            break
        i += 1
        while i < len(lines) and lines[i].startswith("    "):  # the frame's source lines
            i += 1
    if i >= len(lines) or _FRAME.match(lines[i]) is None:
        return text  # nothing of the user's code left to show: keep it all
    return "\n".join([*lines[: head + 1], *lines[i:]])


def events_after(home: Path, run_id: str, after: int, limit: int = 5000) -> list[dict[str, Any]]:
    """The journaled events of a run with ``seq > after``, oldest first, at most ``limit``."""
    with reading(home) as conn:
        if conn is None:
            return []
        rows = _q(conn, "SELECT seq, time, type, idx, key, data, items FROM events "
                        "WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?", (run_id, int(after), int(limit)))
    # (a batched chunk's row stands for several events: expanded, and cut at `limit` events)
    return [{"seq": s, "time": t, "type": typ, "index": i, "key": k, "data": json.loads(d) if d else {}}
            for s, t, typ, i, k, d in islice(expand(rows, after=int(after)), int(limit))]


def run_status(home: Path, run_id: str) -> str | None:
    """The status the dashboard shows for one run (``interrupted`` included), or None."""
    with reading(home) as conn:
        if conn is None:
            return None
        rows = _q(conn, "SELECT status, host, pid FROM runs WHERE id = ?", (run_id,))
    return effective_status(*rows[0]) if rows else None
