"""Reading runs back from the journal: ``nf.runs()`` and ``nf.load_run(id)``.

Everything here reads SQLite only (plus a stored result when one is asked for), so it
works in a fresh kernel, in another process while runs are going on (WAL readers never
block writers), and on runs of other kernels and papermill batches sharing the store.

A run whose process died without finishing it (killed, kernel restarted) is still
``running`` in the journal; when its process is known to be gone (same host, pid not
alive) it is shown as ``interrupted``.
"""

from __future__ import annotations

import json
import math
import os
import socket
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.counting import TaskCounts, count_tasks
from ..core.errors import (
    StoredError,
    TaskNotFinished,
)
from ..core.explain import Explanation, Explanations
from ..core.frames import graph_nodes, tasks_frame
from ..core.processes import pid_alive
from . import serialize
from .blobs import BlobError
from .eventrows import BATCH, expand
from .store import CacheEntry, Store, get_store

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

TASK_COLUMNS = ["key", "task", "state", "attempts", "start", "end", "duration_s", "cached",
                "output_bytes", "error", "executor", "reason"]
RUN_COLUMNS = ["id", "name", "status", "start", "end", "duration_s", "tasks", "completed", "cached",
               "failed", "skipped", "cancelled", "backend", "host", "pid"]
METRIC_COLUMNS = ["cpu_s", "peak_rss", "input_bytes", "input_items", "input_shape"]  # migration 3
_HOST = socket.gethostname()



def _require_store(home: Any) -> Store:
    store = get_store(home, warn=False)
    if store is None:  # not writable (or damaged): read it read-only, or say what is wrong
        from pathlib import Path

        from .readonly import open_readonly
        from .store import store_home

        return open_readonly(Path(home).expanduser().absolute() if home else store_home())  # type: ignore[return-value]
    return store




def effective_status(status: str, host: str | None, pid: int | None) -> str:
    """``interrupted`` for a run still marked running whose process is known to be gone."""
    if status == "running" and host == _HOST and not pid_alive(pid):
        return "interrupted"
    return status


_RUNS_SQL = """
SELECT r.id, r.name, r.status, r.start, r.end, r.duration_s, r.backend, r.host, r.pid
FROM runs r {where} ORDER BY r.start DESC, r.rowid DESC
"""
# Per run, its nodes (the tasks a map added at run time included) by final state, cache hit
# and kind, counted by count_tasks as every view counts them.  A node without a final row
# has not ended: running if it started, else pending.
_STATES_SQL = """
SELECT n.run_id,
       COALESCE(t.state, CASE WHEN EXISTS(SELECT 1 FROM task_runs a WHERE a.run_id = n.run_id
                AND a.idx = n.idx) THEN 'running' ELSE 'pending' END),
       COALESCE(t.cached, 0), n.kind, COUNT(*)
FROM nodes n {join} LEFT JOIN task_runs t
  ON t.run_id = n.run_id AND t.idx = n.idx AND t.state != 'retried'
GROUP BY 1, 2, 3, 4
"""


def runs(name: str | None = None, *, home: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every run in the store, newest first (as ``nbflow runs``, ``%nbflow runs`` and the
    dashboard list them, and as ``mlflow.search_runs`` does): id, name, status, start, end,
    duration_s, tasks, and counts by state (completed, cached, failed, skipped, cancelled), counted as
    every view counts them (:func:`nbflow.core.counting.count_tasks`: the tasks a map added
    at run time included).

    ``name`` keeps only the runs of that workflow; ``home`` reads another store.
    """
    import pandas as pd

    store = _require_store(home)
    where, params = ("WHERE r.name = ?", (name,)) if name is not None else ("", ())
    rows = store.journal.query(_RUNS_SQL.format(where=where), params)
    join = "JOIN runs r ON r.id = n.run_id AND r.name = ?" if name is not None else ""
    by_run: dict[str, list[tuple[str, bool, str | None, int]]] = {}
    for rid, state, cached, kind, n in store.journal.query(_STATES_SQL.format(join=join), params):
        by_run.setdefault(rid, []).append((state, bool(cached), kind, n))
    table = []
    for rid, rname, status, start, end, dur, backend, host, pid in rows:
        got = count_tasks(by_run.get(rid, ())).as_row()
        table.append([rid, rname, status, start, end, dur, got["tasks"], got["completed"], got["cached"],
                      got["failed"], got["skipped"], got["cancelled"], backend, host, pid])
    df = pd.DataFrame(table, columns=RUN_COLUMNS)
    df["status"] = [effective_status(s, h, p)
                    for s, h, p in zip(df["status"], df["host"], df["pid"], strict=True)]
    for c in ("start", "end"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    for c in ("tasks", "completed", "cached", "failed", "skipped", "cancelled"):
        df[c] = df[c].astype("Int64")
    return df


def load_run(run_id: str, *, home: str | os.PathLike[str] | None = None) -> StoredRun:
    """A run read back from the store: ``tasks``, ``graph``, ``events`` and stored values.

    ``run_id`` may be a unique prefix of the id.
    """
    store = _require_store(home)
    rows = store.journal.query(
        "SELECT id, name, status, start, end, duration_s, backend, workers, host, pid, error "
        "FROM runs WHERE id LIKE ? || '%' ORDER BY start", (run_id,)
    )
    exact = [r for r in rows if r[0] == run_id]
    if exact:
        rows = exact
    if not rows:
        raise KeyError(f"no run {run_id!r} in the store {store.home}")
    if len(rows) > 1:
        ids = [r[0] for r in rows[:5]]
        raise KeyError(f"{run_id!r} matches {len(rows)} runs: {ids}; give more of the id")
    return StoredRun(store, rows[0])


class StoredRun:
    """A finished (or interrupted) run as the journal recorded it; reads lazily.

    It reads as :class:`nbflow.Run` does (both are a
    :class:`~nbflow.core.protocols.RunRecord`): ``id``, ``name``, ``status``, ``tasks``,
    ``graph``, ``events``, ``counts``, ``task_counts``, ``errors()`` (failed tasks only),
    ``logs(key)``, ``explain(what)`` and ``run[key]`` (the stored value of a task, when its
    result was cached).
    """

    def __init__(self, store: Store, row: tuple[Any, ...]) -> None:
        (self.id, self.name, status, start, end, dur, self.backend, self.workers, host, pid, err) = row
        self.store = store
        self.status = effective_status(status, host, pid)
        self.started_at = start if start is not None else math.nan
        self.finished_at = end if end is not None else math.nan
        self.duration_s = dur if dur is not None else math.nan
        self.error = err
        self.host, self.pid = host, pid
        self._rows: dict[str, list[Any]] | None = None
        self._deps: dict[int, list[int]] | None = None
        self._errors: dict[str, str] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"<nf.StoredRun {self.id} {self.name!r} {self.status}: {counts}>"

    def _load(self) -> dict[str, list[Any]]:
        if self._rows is not None:
            return self._rows
        q = self.store.journal.query
        nodes = q("SELECT idx, key, task, kind, deps FROM nodes WHERE run_id = ? ORDER BY idx", (self.id,))
        final: dict[int, tuple[Any, ...]] = {}
        attempts: dict[int, int] = {}
        for r in q("SELECT idx, attempt, state, executor, start, end, duration_s, cached, output_bytes, "
                   "error, reason, blob, cpu_s, peak_rss, input_bytes, input_items, input_shape "
                   "FROM task_runs WHERE run_id = ? ORDER BY idx, attempt", (self.id,)):
            idx, attempt, state = r[0], r[1], r[2]
            attempts[idx] = max(attempts.get(idx, 0), attempt)
            if state != "retried" or idx not in final:
                final[idx] = r
        # Attempts started, from the events: a node that started but whose final row says
        # otherwise (an expanded map later skipped) counts its attempt as the live run does.
        started: dict[int, int] = {}
        started_at: dict[int, float] = {}
        for idx, a, t in q("SELECT idx, MAX(json_extract(data, '$.attempt')), MAX(time) FROM events "
                           "WHERE run_id = ? AND type = 'TaskStarted' GROUP BY idx", (self.id,)):
            started[idx], started_at[idx] = a or 0, t
        # (and the items of batched chunks, journaled one row per chunk: eventrows)
        for _s, t, _typ, idx, _k, data in expand(q(
                "SELECT seq, time, type, idx, key, data, items FROM events WHERE run_id = ? AND type = ? "
                "AND json_extract(data, '$.kind') = 'TaskStarted'", (self.id, BATCH))):
            started[idx] = max(started.get(idx, 0), json.loads(data).get("attempt") or 0)
            started_at[idx] = max(t, started_at.get(idx, t))
        unfinished = "interrupted" if self.status == "interrupted" else "running"
        # A task that never started has no row saying where it ran: the live run shows the
        # executor of its backend, as here (a task with its own executor= shows the backend's).
        default_executor = {"local": "thread", "process": "process", "dask": "dask"}.get(self.backend or "")
        cols: dict[str, list[Any]] = {c: [] for c in [*TASK_COLUMNS, "blob", "kind", *METRIC_COLUMNS]}
        self._deps = {}
        for idx, key, task, kind, deps in nodes:
            self._deps[idx] = json.loads(deps or "[]")
            r = final.get(idx)  # type: ignore[assignment]
            if r is None:
                state = unfinished if idx in started else "pending"
                r = (idx, 0, state, None, None, None, None, 0, None, None, None, None, *[None] * 5)
            elif r[2] == "retried":
                r = (idx, r[1], unfinished if self.status in ("running", "interrupted") else "failed", *r[3:])
            cols["key"].append(key)
            cols["task"].append(task)
            cols["kind"].append(kind)
            cols["state"].append(r[2])
            cols["attempts"].append(max(attempts.get(idx, 0), started.get(idx, 0)))
            cols["start"].append(r[4] if r[4] is not None else started_at.get(idx, math.nan))
            # (a skipped task never ran: no end, as in the live run's table)
            cols["end"].append(r[5] if r[5] is not None and r[2] != "skipped" else math.nan)
            cols["duration_s"].append(r[6] if r[6] is not None else math.nan)
            cols["cached"].append(bool(r[7]))
            cols["output_bytes"].append(r[8])
            cols["error"].append(r[9].strip().splitlines()[-1] if r[9] else None)
            executor = r[3] if r[3] != "cache" else default_executor  # (cached: see `cached`)
            cols["executor"].append(executor or ("inline" if kind != "task" else default_executor))
            cols["reason"].append(r[10])
            cols["blob"].append(r[11])
            for c, v in zip(METRIC_COLUMNS, r[12:17], strict=True):
                cols[c].append(v)
            if r[9] and r[2] == "failed":  # (a skipped task's row keeps why as its error)
                self._errors[key] = r[9]
        self._rows = cols
        return cols

    @property
    def tasks(self) -> pd.DataFrame:
        """One row per task, the columns of ``Run.tasks``."""
        return tasks_frame(self._load())

    @property
    def graph(self) -> nx.DiGraph:
        """The run's graph with the task columns as node attributes."""
        rows = self._load()
        g = graph_nodes(rows, run_id=self.id, name=self.name, status=self.status)
        keys = rows["key"]
        by_idx = dict(enumerate(keys))
        for idx, deps in (self._deps or {}).items():
            for d in deps:
                if d in by_idx and idx in by_idx:
                    g.add_edge(by_idx[d], by_idx[idx])
        return g

    @property
    def events(self) -> list[ev.Event]:
        """The journaled events (all but ``TaskReady``), as event objects; errors are
        :class:`StoredError` carrying the recorded text."""
        out: list[ev.Event] = []
        for _seq, t, typ, idx, key, data in expand(self.store.journal.query(
            "SELECT seq, time, type, idx, key, data, items FROM events WHERE run_id = ? ORDER BY seq",
            (self.id,))):
            cls = getattr(ev, typ, None)
            kw = json.loads(data) if data else {}
            for k in ("error",):
                if k in kw and kw[k] is not None:
                    kw[k] = StoredError(kw[k])
            if cls is None:
                continue
            try:
                if issubclass(cls, ev.TaskEvent):
                    out.append(cls(time=t, index=idx, key=key, **kw))
                else:
                    out.append(cls(time=t, **kw))
            except TypeError:  # an event recorded by a different nbflow version
                continue
        return out

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._load()["state"]:
            out[s] = out.get(s, 0) + 1
        return out

    def count(self, state: str) -> int:
        return self.counts.get(state, 0)

    @property
    def task_counts(self) -> TaskCounts:
        """Counts as every view shows them (:func:`nbflow.core.counting.count_tasks`)."""
        rows = self._load()
        return count_tasks(zip(rows["state"], rows["cached"], rows["kind"], strict=True))

    def explain(self, what: Any) -> Explanation | Explanations:
        """Why a task ran or was served from the cache, as the run recorded it (the same
        reason the live run gave).  ``what``: a Ref, a task key, a task name or a Task (a
        name matching several tasks gives :class:`Explanations`, one per task)."""
        from .recall import explain_node, targets

        rows = self._load()
        out = [explain_node(self, rows["key"][j], rows["task"][j], rows["kind"][j])
               for j in targets(self, what)]
        return out[0] if len(out) == 1 else Explanations(out)

    def errors(self) -> dict[str, StoredError]:
        """The recorded error (with traceback text) of each failed task, by key."""
        self._load()
        return {k: StoredError(v) for k, v in self._errors.items()}

    def logs(self, key: str) -> str | None:
        """What task ``key``'s latest recorded attempt printed (None: nothing, or not captured)."""
        rows = self.store.journal.query(
            "SELECT output FROM task_runs WHERE run_id = ? AND key = ? ORDER BY attempt DESC LIMIT 1",
            (self.id, key))
        return rows[0][0] if rows else None

    def __getitem__(self, key: str) -> Any:
        """The stored value of task ``key`` (only results that were cached are stored)."""
        rows = self._load()
        try:
            j = rows["key"].index(key)
        except ValueError:
            raise KeyError(f"no task {key!r} in run {self.id}") from None
        if rows["state"][j] != "completed":
            raise TaskNotFinished(key, rows["state"][j])
        blob = rows["blob"][j]
        if blob is None:
            raise TaskNotFinished(key, "completed", "its result was not stored (cache off for it)")
        got = self.store.journal.query("SELECT size, inline FROM blobs WHERE key = ?", (blob,))
        if not got:
            raise TaskNotFinished(key, "completed", "its stored result was removed (nbflow gc)")
        try:
            return serialize.loads(self.store.load(CacheEntry(blob, None, got[0][0], got[0][1])))
        except (BlobError, ValueError) as e:  # (ValueError: unsigned or not a stored result)
            raise TaskNotFinished(key, "completed", str(e)) from e
