"""A stored run as the notebook views see a live one: a RunModel filled from the journal.

The notebook room draws graphs from a :class:`~nbflow.notebook.model.RunModel`, which is
normally fed by a run's events.  For a run read back from the store (another process, a
finished batch, an earlier kernel) this builds the same model from the journal's ``nodes``
and the final task rows of :class:`~nbflow.store.StoredRun`, so ``%nbflow show RUN_ID``
and the batch room's reports draw a stored run exactly as a live one: the same counts,
each task's printed output in the tasks table, and edges as thick as the bytes they carried.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ..store.history import StoredRun
from .model import RunModel


def _nodes(run: StoredRun) -> list[SimpleNamespace]:
    rows = run.store.journal.query(
        "SELECT idx, key, task, kind, deps FROM nodes WHERE run_id = ? ORDER BY idx", (run.id,)
    )
    out = []
    for _idx, key, task, kind, deps in rows:
        spec = SimpleNamespace(spec=SimpleNamespace(name=task)) if kind == "task" else None
        out.append(
            SimpleNamespace(
                key=key,
                name=task or key,
                kind=kind or "task",
                deps=tuple(json.loads(deps or "[]")),
                task=spec,
            )
        )
    return out


def model_of(run: StoredRun) -> RunModel:
    """A finished :class:`RunModel` of the stored ``run``."""
    nodes = _nodes(run)
    model = RunModel(SimpleNamespace(name=run.name, nodes=nodes))  # type: ignore[arg-type]
    tasks = run.tasks
    errors = run.errors()
    by_key = {k: i for i, k in enumerate(model.keys)}
    counts: dict[str, int] = {}
    ends: list[float] = []
    for row in tasks.itertuples(index=False):
        i = by_key.get(row.key)
        if i is None:
            continue
        state = (
            row.state
            if row.state in ("completed", "failed", "skipped", "cancelled", "running")
            else "pending"
        )
        if not pd.isna(row.end) and state in ("completed", "failed"):
            ends.append(row.end.timestamp())
        model.state[i] = state
        counts[state] = counts.get(state, 0) + 1
        model.attempts[i] = 0 if pd.isna(row.attempts) else int(row.attempts)
        model.duration[i] = math.nan if pd.isna(row.duration_s) else float(row.duration_s)
        model.start[i] = math.nan if pd.isna(row.start) else row.start.timestamp()
        model.cached[i] = bool(row.cached)
        model.output_bytes[i] = None if pd.isna(row.output_bytes) else int(row.output_bytes)
        if row.key in errors and state == "failed":
            model.errors[i] = errors[row.key]
        elif state == "skipped" and row.error:
            model.reasons[i] = row.error
    model.counts = counts
    model.ended_at = sorted(ends)
    outputs = _outputs(run)
    model.logs = outputs.get  # what each task printed, read once
    model.edge_bytes = _moved(run)
    model.status = run.status
    model.run_id = run.id
    model.started_at = run.started_at
    model.finished_at = run.finished_at if not math.isnan(run.finished_at) else run.started_at
    model.finished.set()
    return model


def _outputs(run: StoredRun) -> dict[str, str]:
    """What each task's latest recorded attempt printed, by key (one query)."""
    out: dict[str, str] = {}
    for key, text in run.store.journal.query(
            "SELECT key, output FROM task_runs WHERE run_id = ? ORDER BY idx, attempt", (run.id,)):
        if text:
            out[key] = text
        else:
            out.pop(key, None)
    return out


def _moved(run: StoredRun) -> dict[tuple[str, str], int]:
    """Bytes Dask moved from producer to consumer in the stored run (its transfers rows)."""
    out: dict[tuple[str, str], int] = {}
    for producer, consumer, nbytes in run.store.journal.query(
            "SELECT producer, consumer, SUM(bytes) FROM transfers WHERE run_id = ? "
            "AND producer IS NOT NULL AND consumer IS NOT NULL GROUP BY 1, 2", (run.id,)):
        out[(producer, consumer)] = int(nbytes or 0)
    return out


def error_text(err: Any) -> str:
    """A stored traceback without the engine's frames in front of the user's code."""
    text = str(err)
    from .tracebacks import _internal

    out: list[str] = []
    lines = text.splitlines()
    skip = False
    for ln in lines:
        s = ln.strip()
        if ln.startswith('  File "') and s.startswith('File "'):
            path = s.split('"')[1]
            skip = _internal(path)
            if skip:
                continue
        elif skip and ln.startswith("    "):
            continue
        else:
            skip = False
        out.append(ln)
    return "\n".join(out)
