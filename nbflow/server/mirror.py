"""The inline widget's view of a run, rebuilt in the server from the journal alone.

The dashboard draws a run's graph exactly as the notebook widget does (same grouping of
large graphs, same state colours) by feeding the journaled events of the run into the
widget's own :class:`~nbflow.notebook.model.RunModel` and rendering it with its
:class:`~nbflow.notebook.graphview.GraphView`.  A mirror is kept per open run and only the
events after its cursor are read and applied on each refresh, so a 10 000-task run costs
the new rows, not the whole history, and the layout is recomputed only when the graph's
shape changes.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..core import events as ev
from ..core.kinds import MAP, TASK
from ..notebook.graphview import GraphView
from ..notebook.model import RunModel
from ..notebook.render import progress_html
from ..store.eventrows import expand
from ..store.history import StoredError
from .reader import _q, reading

KEEP = 8  # mirrors kept (runs open in the dashboard)


_ERROR_TYPES: dict[str, type[StoredError]] = {}


def _stored_error(text: str) -> StoredError:
    """The recorded ``"ValueError: message"`` as an exception whose type is *named*
    ``ValueError``, so the tooltips read exactly as in the live widget."""
    name, sep, message = text.partition(": ")
    if not sep or not name.replace(".", "").replace("_", "").isalnum():
        return StoredError(text)
    cls = _ERROR_TYPES.get(name)
    if cls is None:
        cls = _ERROR_TYPES[name] = type(name, (StoredError,), {})
    return cls(message)


def _decode(t: float, typ: str, idx: int | None, key: str | None, data: str | None) -> ev.Event | None:
    cls = getattr(ev, typ, None)
    if not isinstance(cls, type) or not issubclass(cls, ev.Event):
        return None
    kw: dict[str, Any] = json.loads(data) if data else {}
    if kw.get("error") is not None:
        kw["error"] = _stored_error(kw["error"])
    try:
        if issubclass(cls, ev.TaskEvent):
            return cls(time=t, index=idx, key=key, **kw)  # type: ignore[arg-type]
        return cls(time=t, **kw)
    except TypeError:  # recorded by another nbflow version
        return None


def _traced(name: str, rows: list[tuple[Any, ...]]) -> SimpleNamespace:
    """The little of a traced workflow that RunModel reads, from the ``nodes`` table: the
    nodes the run started with, as they were traced.  A map node that expanded while
    running is put back as a map over its traced inputs (``inputs``); replaying the run's
    ``TasksAdded`` events then grows the model exactly as it grew in the live widget."""
    n0 = len(rows)
    nodes = []
    for _idx, key, task, kind, deps, inputs in rows:
        if inputs is not None:
            kind, deps = MAP, inputs
        traced = [d for d in json.loads(deps or "[]") if d < n0]  # (older stores: no inputs)
        func = task[:-4] if kind == MAP and task and task.endswith(".map") else task
        spec = SimpleNamespace(spec=SimpleNamespace(name=func)) if kind in (TASK, MAP) else None
        nodes.append(SimpleNamespace(key=key, name=task or key, kind=kind, deps=traced, task=spec))
    return SimpleNamespace(name=name, nodes=nodes)


class RunMirror:
    """One run's RunModel, caught up with the journal on each :meth:`refresh`."""

    def __init__(self, home: Path, run_id: str) -> None:
        self.home = home
        self.run_id = run_id
        self.seq = 0
        self.model: RunModel | None = None
        self.view: GraphView | None = None
        self.lock = threading.Lock()

    def refresh(self, status: str | None = None) -> bool:
        """Apply the events committed since the last refresh; False if the run is unknown."""
        with reading(self.home) as conn:
            if conn is None:
                return False
            conn.execute("BEGIN")  # nodes and events from one snapshot
            try:
                if self.model is None:
                    head = _q(conn, "SELECT name, n_tasks FROM runs WHERE id = ?", (self.run_id,))
                    if not head:
                        return False
                    nodes = _q(conn, "SELECT idx, key, task, kind, deps, inputs FROM nodes "
                                     "WHERE run_id = ? AND idx < ? ORDER BY idx",
                               (self.run_id, head[0][1] or 0))
                    self.model = RunModel(_traced(head[0][0], nodes))  # type: ignore[arg-type]
                    self.model.run_id = self.run_id
                    self.view = GraphView(self.model)
                # (a batched chunk's row: expanded to its items' events)
                rows = list(expand(_q(conn, "SELECT seq, time, type, idx, key, data, items FROM events "
                                            "WHERE run_id = ? AND seq > ? ORDER BY seq",
                                      (self.run_id, self.seq)), after=self.seq))
            finally:
                conn.execute("COMMIT")
        model = self.model
        for seq, t, typ, idx, key, data in rows:
            e = _decode(t, typ, idx, key, data)
            if e is not None:
                model(e)
            self.seq = seq
        if status is not None and status not in ("running", model.status):
            model.status = status  # e.g. interrupted: its process died without a RunFinished
        return True

    def render(self) -> dict[str, Any]:
        assert self.model is not None and self.view is not None
        m = self.model
        return {"seq": self.seq, "status": m.status, "svg": self.view.svg(), "note": self.view.note,
                "progress": progress_html(m), "counts": m.count_items(), "tasks": len(m), "done": m.done}


class Mirrors:
    """The mirrors of the runs open in the dashboard (least recently used are dropped)."""

    def __init__(self, home: Path, keep: int = KEEP) -> None:
        self.home = home
        self.keep = keep
        self._mirrors: OrderedDict[str, RunMirror] = OrderedDict()
        self._lock = threading.Lock()

    def view(self, run_id: str, status: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            m = self._mirrors.pop(run_id, None) or RunMirror(self.home, run_id)
            self._mirrors[run_id] = m
            while len(self._mirrors) > self.keep:
                self._mirrors.popitem(last=False)
        with m.lock:
            if not m.refresh(status):
                with self._lock:
                    self._mirrors.pop(run_id, None)
                return None
            return m.render()
