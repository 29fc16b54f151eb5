"""The journal's subscriber: turns a run's event stream into rows.

It is attached to every run (through ``nf.on_run``) while a store is usable.  On the
event loop it does almost nothing: it numbers the event and queues it with a reference to
the event object; the writer thread makes the row (JSON, error text, traceback) later.
``TaskReady`` events are not journaled (they are many and say little that the start and
end of each task do not).

Rows written: ``runs`` at start and at the end; ``nodes`` for the graph (and for items a
``map`` adds while running); ``task_runs``, one per attempt as it ends (attempt 0 is a
cache hit; a failed attempt that is retried is recorded with state ``retried``);
``events``, one per event, except that the items of a batched map's chunk that start or
complete together get one row per chunk (:mod:`.eventrows`, expanded again when read);
an attempt's metrics (CPU time, peak RSS, input features) go in its ``task_runs`` row.
"""

from __future__ import annotations

import json
import math
import os
import socket
import traceback
from dataclasses import fields
from itertools import repeat
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from ..core.kinds import COLLECT, TASK, UNDO
from .eventrows import FIELDS as BATCHED_KINDS
from .eventrows import batch_row
from .journal import Op, dumps

if TYPE_CHECKING:
    from ..core.ref import Ref
    from .store import Store

_HOST = socket.gethostname()
_SKIP_FIELDS = {"time", "index", "key", "refs", "output"}  # (refs: the new nodes, journaled as nodes)
_FIELDS: dict[type, tuple[str, ...]] = {}


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _event_row(run_id: str, seq: int, e: ev.Event) -> tuple[Any, ...]:
    t = type(e)
    if t is ev.TaskStarted:  # the two events of every task: JSON without the json module
        return (run_id, seq, e.time, "TaskStarted", e.index, e.key,  # type: ignore[attr-defined]
                f'{{"attempt":{e.attempt},"executor":{_json_str(e.executor)}}}')  # type: ignore[attr-defined]
    if t is ev.TaskCompleted:
        ob = "null" if e.output_bytes is None else int(e.output_bytes)  # type: ignore[attr-defined]
        dur = float(e.duration_s)  # type: ignore[attr-defined]
        dur_text = repr(dur) if math.isfinite(dur) else "null"
        return (run_id, seq, e.time, "TaskCompleted", e.index, e.key,  # type: ignore[attr-defined]
                f'{{"attempt":{e.attempt},"duration_s":{dur_text},'  # type: ignore[attr-defined]
                f'"output_bytes":{ob},"cached":{"true" if e.cached else "false"}}}')  # type: ignore[attr-defined]
    names = _FIELDS.get(t)
    if names is None:
        names = _FIELDS[t] = tuple(f.name for f in fields(t) if f.name not in _SKIP_FIELDS)
    data = {}
    for n in names:
        v = getattr(e, n)
        if type(v) is float and v != v:  # NaN (unknown) is not JSON: null
            v = None
        data[n] = _error_text(v) if isinstance(v, BaseException) else v
    return (run_id, seq, e.time, t.__name__, getattr(e, "index", None), getattr(e, "key", None),
            dumps(data) if data else None)


def _json_str(v: str | None) -> str:
    if v is None:
        return "null"
    return f'"{v}"' if v.isidentifier() else json.dumps(v)


def _node_rows(run_id: str, refs: list[Ref]) -> tuple[Op, list[tuple[Any, ...]]]:
    """The ``nodes`` rows of many nodes (a graph, or a map's items): one queue entry and one
    call on the writer thread, the task name looked up once per task."""
    names: dict[int, str] = {}  # id(task) -> name, for plain task nodes
    rows = []
    for ref in refs:
        if ref.kind == TASK:
            t = ref.task
            name = names.get(id(t))
            if name is None:
                name = names[id(t)] = ref.name
        else:
            name = ref.name
        deps = ref.deps
        text = "[]" if not deps else f"[{deps[0]}]" if len(deps) == 1 else json.dumps(deps)
        rows.append((run_id, ref.index, ref.key, name, ref.kind, text))
    return NODE, rows


def _task_row(run_id: str, idx: int, attempt: int, key: str, state: str, executor: str | None,
              start: float | None, end: float, duration: float | None, cached: bool,
              output_bytes: int | None, error: BaseException | str | None, reason: str | None,
              cache_key: str | None, blob: str | None, output: str | None = None,
              metrics: tuple[Any, ...] | None = None) -> tuple[Any, ...]:
    if isinstance(error, BaseException):
        error = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
    return (run_id, idx, attempt, key, state, executor, start, end, duration, int(cached), output_bytes,
            error, reason, cache_key, blob, output, *(metrics or _NO_METRICS))


_NO_METRICS = (None,) * 5  # (cpu_s, peak_rss, input_bytes, input_items, input_shape)


def _completed_rows(run_id: str, e: ev.TaskBatch, starts: list[tuple[float | None, str | None]]
                    ) -> tuple[Op, list[tuple[Any, ...]]]:
    """The ``task_runs`` rows of a batch of completed items (one per item, the same as
    ``_completed`` makes one at a time), built column-wise on the writer thread.

    Columns that are NULL (or, for ``cached``, 0) for every item of the batch are left out
    of the statement, which gives them that same value: SQLite's cost of a row grows with
    its bound values (~0.5 µs each here), and a batched item has about half of them empty.
    """
    col = e.column
    values: dict[str, list[Any]] = {
        "idx": e.indexes, "attempt": col("attempt"), "key": e.keys,
        "executor": [st[1] for st in starts], "start": [st[0] for st in starts],
        "duration_s": col("duration_s"), "cached": [int(bool(c)) for c in col("cached")],
        "output_bytes": [None if b is None else int(b) for b in col("output_bytes")],
        "reason": col("reason"), "cache_key": col("cache_key"), "blob": col("blob"), "output": col("output")}
    metrics = col("metrics")
    if metrics.count(None) < len(metrics):
        for name, c in zip(METRIC_NAMES, zip(*[m or _NO_METRICS for m in metrics], strict=True), strict=True):
            values[name] = list(c)
    kept = tuple(k for k, v in values.items()
                 if k in _ALWAYS or (any(v) if k == "cached" else v.count(None) < len(v)))
    op = _BATCH_OPS.get(kept)
    if op is None:
        names = ", ".join(kept)
        marks = ",".join("?" * len(kept))
        op = _BATCH_OPS[kept] = Op(f"INSERT OR REPLACE INTO task_runs(run_id, state, end, {names}) "
                                   f"VALUES(?,?,?,{marks})")
    rows = list(zip(repeat(run_id), repeat("completed"), repeat(e.time), *[values[k] for k in kept]))
    return op, rows


METRIC_NAMES = ("cpu_s", "peak_rss", "input_bytes", "input_items", "input_shape")
_ALWAYS = frozenset({"idx", "attempt", "key"})
_BATCH_OPS: dict[tuple[str, ...], Op] = {}  # (a statement per set of columns written)


EVENT = Op("INSERT OR REPLACE INTO events(run_id, seq, time, type, idx, key, data) VALUES(?,?,?,?,?,?,?)",
           _event_row)
NODE = Op("INSERT OR REPLACE INTO nodes(run_id, idx, key, task, kind, deps) VALUES(?,?,?,?,?,?)")
NODES = Op(NODE.sql, _node_rows, many=True)
# (inputs keeps a map node's traced inputs once its deps become its items)
NODE_DEPS = Op("UPDATE nodes SET inputs = COALESCE(inputs, deps), deps = ?, kind = ? "
               "WHERE run_id = ? AND idx = ?")
# (an attempt's metrics in the same row: one insert, not an insert and an update, per attempt)
_TASK_RUN_SQL = ("INSERT OR REPLACE INTO task_runs(run_id, idx, attempt, key, state, executor, start, end, "
                 "duration_s, cached, output_bytes, error, reason, cache_key, blob, output, cpu_s, peak_rss, "
                 "input_bytes, input_items, input_shape) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
TASK_RUN = Op(_TASK_RUN_SQL, _task_row, sparse=True)
TASK_RUNS = Op(_TASK_RUN_SQL, _completed_rows, many=True)
EVENT_BATCH = Op("INSERT OR REPLACE INTO events(run_id, seq, time, type, idx, key, data, items) "
                 "VALUES(?,?,?,?,?,?,?,?)", batch_row)
RUN_START = Op("INSERT OR REPLACE INTO runs(id, name, status, start, end, duration_s, backend, workers, "
               "n_tasks, host, pid, cwd, error) VALUES(?,?,?,?,NULL,NULL,?,?,?,?,?,?,NULL)", urgent=True)
RUN_END = Op("UPDATE runs SET status = ?, end = ?, duration_s = ?, error = ? WHERE id = ?")


class RunRecorder:
    """Subscriber writing one run to the journal (see the module docstring).

    It reads only the events and the run's public name and starting graph (``run.name``,
    ``run.nodes``): the events carry the rest (cache key, reason, stored result, attempt).
    """

    __slots__ = ("_index", "journal", "nodes", "run", "run_id", "seq", "started")

    def __init__(self, store: Store, run: Any) -> None:
        self.journal = store.journal
        self.run = run
        self.run_id = run.id
        self.seq = 0
        self.started: dict[int, tuple[float | None, str | None]] = {}
        self._index: dict[str, int] | None = None
        self.journal.run_started()

    accepts_batches = True  # a chunk's TaskBatch: one events row, a task_runs row per item

    def __call__(self, e: ev.Event) -> None:
        t = type(e)
        if t is ev.TaskReady:
            return
        if t is ev.TaskBatch:
            kind = e.kind  # type: ignore[attr-defined]
            if kind in BATCHED_KINDS:
                if e.indexes:  # type: ignore[attr-defined]
                    self._batch(e)  # type: ignore[arg-type]
            elif kind is not ev.TaskReady:
                for item in e.expand():  # type: ignore[attr-defined]
                    self(item)
            return
        if t is ev.RunStarted:
            # The writer thread starts once the run's first work is on its way (on Dask, its
            # first graph: Run.defer_until_started); its rows queue meanwhile.  (Held from
            # its first row, as the run executes, which releases it: a run prepared and
            # never started holds nothing.)
            defer = getattr(self.run, "defer_until_started", None)
            if defer is not None:
                defer(self.journal.hold())
        self.seq += 1
        put = self.journal.put
        put(EVENT, (self.run_id, self.seq, e))
        if t is ev.TaskStarted:
            self.started[e.index] = (e.time, e.executor)  # type: ignore[attr-defined]
        elif t is ev.TaskCompleted:
            self._completed(e)  # type: ignore[arg-type]
        elif t is ev.TaskFailed or t is ev.TaskRetrying:
            start, executor = self.started.pop(e.index, (None, None))  # type: ignore[attr-defined]
            dur = getattr(e, "duration_s", None)
            began = e.started  # type: ignore[attr-defined]
            if began is not None:  # where it ran (a Dask task), or NaN: a timeout before the
                # cluster said it ran (engine.taskstate.timed_out): no start, no duration
                start, dur = (began, dur) if began == began else (None, None)
            state = "failed" if t is ev.TaskFailed else "retried"
            put(TASK_RUN, (self.run_id, e.index, e.attempt, e.key, state, executor, start, e.time,  # type: ignore[attr-defined]
                           dur, False, None, e.error, e.reason, None, None, e.output, e.metrics))  # type: ignore[attr-defined]
        elif t is ev.TaskSkipped:
            put(TASK_RUN, (self.run_id, e.index, 0, e.key, "skipped", None, None, e.time, None, False, None,  # type: ignore[attr-defined]
                           e.reason, None, None, None))  # type: ignore[attr-defined]  # (shown as its error)
        elif t is ev.TaskCancelled:
            start, executor = self.started.pop(e.index, (None, None))  # type: ignore[attr-defined]
            dur = None
            began = e.started  # type: ignore[attr-defined]
            if began is not None:  # where it ran (a Dask task: its stop is e.time), or NaN:
                # not known to have started there (TaskStarted was when it was sent)
                start, dur = (began, e.time - began) if began == began else (None, None)
            put(TASK_RUN, (self.run_id, e.index, e.attempt, e.key, "cancelled", executor, start, e.time,  # type: ignore[attr-defined]
                           dur, False, None, None, None, None, None))
        elif t is ev.RunStarted:
            run = self.run
            put(RUN_START, (self.run_id, run.name, "running", e.time, e.backend, e.workers, e.tasks,  # type: ignore[attr-defined]
                            _HOST, os.getpid(), os.getcwd()))
            self.journal.put(NODES, (self.run_id, list(run.nodes)))
        elif t is ev.TasksAdded:
            self._added(e)  # type: ignore[arg-type]
        elif t is ev.RunFinished:
            put(RUN_END, (e.status, e.time, e.duration_s, e.error, self.run_id))  # type: ignore[attr-defined]
            # The run returns only once its rows are committed: after wf.run() the journal
            # (and the cache) hold it, whatever happens to the process next.
            self.journal.run_finished()

    def _completed(self, e: ev.TaskCompleted) -> None:
        i = e.index
        start, executor = self.started.pop(i, (e.time, "inline"))
        if e.started is not None:  # (where it ran, known only at its end: a Dask task)
            start = e.started
        self.journal.put(TASK_RUN, (self.run_id, i, e.attempt, e.key, "completed", executor, start, e.time,
                                    e.duration_s, e.cached, e.output_bytes, None, e.reason, e.cache_key,
                                    e.blob, e.output, e.metrics))

    def _batch(self, e: ev.TaskBatch) -> None:
        """A chunk's items that started or completed together: one events row for all of
        them (numbered as their per-item events would be), and each completed item's
        ``task_runs`` row, made on the writer thread from the batch's columns."""
        self.seq += len(e.indexes)
        self.journal.put(EVENT_BATCH, (self.run_id, self.seq, e))
        if e.kind is ev.TaskStarted:
            if "executor" in e.columns:
                self.started.update(zip(e.indexes, zip(repeat(e.time), e.columns["executor"]),
                                        strict=False))  # (repeat never ends)
            else:
                self.started.update(zip(e.indexes, repeat((e.time, e.common.get("executor"))), strict=False))
        else:
            pop, t = self.started.pop, e.time
            starts = [pop(i, (t, "inline")) for i in e.indexes]
            if "started" in e.columns or e.common.get("started") is not None:
                # (where they ran, known only at their end: a Dask chunk's worker times)
                starts = [(st if st is not None else was[0], was[1])
                          for st, was in zip(e.column("started"), starts, strict=True)]
            self.journal.put(TASK_RUNS, (self.run_id, e, starts))

    def _added(self, e: ev.TasksAdded) -> None:
        self.journal.put(NODES, (self.run_id, list(e.refs)))
        # A map that expanded (or a loop that grew) now waits for the new nodes; a
        # compensation (an undo) is added after its member and changes nothing upstream.
        if e.parent_index is not None and e.refs and e.refs[0].kind != UNDO:
            self.journal.put(NODE_DEPS, (json.dumps(list(e.indexes)), COLLECT, self.run_id, e.parent_index))
