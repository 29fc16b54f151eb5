"""The runs of this kernel session, for ``%nbflow runs``.

Every run started in the process (from a ``%%workflow`` cell or from ``wf.run()``) is
recorded as it starts; a tiny subscriber fills in its outcome when it finishes.  Only a
weak reference to the Run is kept, so listing runs never keeps results alive.  When the
run store is available (``nbflow.store``), ``%nbflow runs`` lists the store's runs
instead: every run of every kernel and batch that shares the store (``$NBFLOW_HOME`` or
``./.nbflow``).
"""

from __future__ import annotations

import threading
import weakref
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import events as ev

if TYPE_CHECKING:
    from ..engine.run import Run

COLUMNS = ["run_id", "name", "status", "started", "duration_s", "tasks", "completed", "failed",
           "skipped", "cancelled"]
LIMIT = 200

_rows: list[dict[str, Any]] = []
_refs: dict[str, weakref.ref[Run]] = {}
_lock = threading.Lock()
_unregister: Any = None


def _factory(run: Run) -> ev.Subscriber:
    row: dict[str, Any] = {"run_id": run.id, "name": run.name, "status": "running", "started": None,
                           "duration_s": None, "tasks": len(run.nodes)}
    with _lock:
        _rows.append(row)
        _refs[run.id] = weakref.ref(run)
        del _rows[:-LIMIT]

    def on_event(e: ev.Event) -> None:
        t = type(e)
        if t is ev.RunStarted:
            row["started"] = datetime.fromtimestamp(e.time, timezone.utc)
        elif t is ev.RunFinished:
            row["status"] = e.status  # type: ignore[attr-defined]
            row["duration_s"] = round(e.duration_s, 3)  # type: ignore[attr-defined]
            counts = run.task_counts.as_row()  # counted as every view counts them
            for s in ("tasks", "completed", "failed", "skipped", "cancelled"):
                row[s] = counts[s]

    on_event.accepts_batches = True  # type: ignore[attr-defined]  # (a TaskBatch changes nothing here)
    return on_event


def install() -> None:
    """Start recording runs (idempotent)."""
    global _unregister
    if _unregister is None:
        from ..core.events import on_run

        _unregister = on_run(_factory)


def get_run(run_id: str) -> Run | None:
    ref = _refs.get(run_id)
    return ref() if ref is not None else None


def runs_frame(limit: int = 50) -> pd.DataFrame:
    """Recent runs, newest first: the store's when a store is in use, else this session's."""
    from .plan import _store

    fn = getattr(_store(), "runs", None)
    if callable(fn):
        try:
            return pd.DataFrame(fn()).head(limit).reset_index(drop=True)  # (newest first)
        except Exception:  # a store that cannot answer (e.g. not writable): this session's runs
            pass
    with _lock:
        rows = [dict(r) for r in _rows]
    df = pd.DataFrame(rows[::-1][:limit], columns=COLUMNS)
    for c in ("completed", "failed", "skipped", "cancelled"):
        df[c] = df[c].astype("Int64")
    return df
