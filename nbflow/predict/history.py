"""``nf.history()``: every recorded task attempt across runs, as one DataFrame.

Reads the journal (``task_runs`` joined with the run and the graph node of each attempt),
so it sees every kernel's and every batch's runs that share the store.  Its rows are
*observations* in the sense of :mod:`nbflow.predict.observations`: ``instance`` is the run
and ``start_s``/``end_s`` are seconds since the run started, so
``Predictor().fit(nf.history())`` learns from the store directly (the predictor keeps
completed, uncached attempts only).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nbflow.core.errors import NbflowError
from nbflow.predict.lineage import lineage_key

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["HISTORY_COLUMNS", "HistoryError", "history"]

HISTORY_COLUMNS = [
    "run_id", "workflow", "task", "key", "attempt", "state", "executor", "start", "end",
    "duration_s", "cpu_s", "peak_rss", "input_bytes", "input_items", "input_shape",
    "output_bytes", "cached", "instance", "start_s", "end_s", "code",
]

_SQL = """
SELECT t.run_id, r.name, n.task, t.key, t.attempt, t.state, t.executor, t.start, t.end,
       t.duration_s, t.cpu_s, t.peak_rss, t.input_bytes, t.input_items, t.input_shape,
       t.output_bytes, t.cached, c.parts, r.start
FROM task_runs t JOIN runs r ON r.id = t.run_id
LEFT JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
LEFT JOIN fingerprints f ON f.workflow = r.name AND f.key = t.key
LEFT JOIN code c ON c.digest = f.code
WHERE t.state != 'skipped' {where}
ORDER BY r.start, t.run_id, t.idx, t.attempt
"""


class HistoryError(NbflowError, ValueError):
    """An argument of :func:`history` cannot be used; the message says what to pass."""


def _since_epoch(since: Any) -> float:
    if isinstance(since, dt.timedelta):
        return time.time() - since.total_seconds()
    if isinstance(since, int | float) and not isinstance(since, bool):
        return float(since)
    if isinstance(since, dt.datetime | str):
        import pandas as pd

        try:
            stamp = pd.Timestamp(since)
        except (ValueError, TypeError) as e:
            raise HistoryError(f"since={since!r} is not a date or time ({e}); pass e.g. "
                               "'2026-01-31', a datetime, a timedelta or epoch seconds") from None
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize(dt.datetime.now().astimezone().tzinfo)
        return stamp.timestamp()
    raise HistoryError(f"since must be a datetime, a date string, a timedelta or epoch seconds, "
                       f"not {type(since).__name__}")


def _task_names(task: Any) -> list[str]:
    items: Iterable[Any] = [task] if isinstance(task, str) or not isinstance(task, Iterable) else task
    names = []
    for t in items:
        name = t if isinstance(t, str) else getattr(t, "name", None)
        if not isinstance(name, str):
            raise HistoryError(f"task must be a task name, an @nf.task function or a list of them, "
                               f"not {type(t).__name__}")
        names.append(name)
    return names


def history(
    task: Any = None,
    since: Any = None,
    *,
    home: str | os.PathLike[str] | None = None,
    _attempts: str | None = None,
) -> pd.DataFrame:
    """Every recorded task attempt, one row each, oldest run first.

    ``task``: keep the attempts of this task (a name, an ``@nf.task`` function or a list
    of them); ``since``: keep runs started at or after this time (a datetime, a date
    string, a ``timedelta`` back from now, or epoch seconds); ``home`` reads another store.

    Columns: ``run_id``, ``workflow``, ``task``, ``key``, ``attempt`` (0 = served from the
    cache), ``state``, ``executor``, ``start``, ``end`` (UTC timestamps), ``duration_s``,
    ``cpu_s``, ``peak_rss``, ``input_bytes``, ``input_items``, ``input_shape``,
    ``output_bytes``, ``cached``, and for the predictor ``instance`` (the run id),
    ``start_s`` and ``end_s`` (seconds since the run started), and ``code``: the lineage key
    (:mod:`nbflow.predict.lineage`) of the code the task's key last ran with (None when its
    result was never stored), which lets a renamed task find the history of its code.
    """
    import pandas as pd

    from nbflow.store.history import _require_store

    where, params = "", list[Any]()
    if task is not None:
        names = _task_names(task)
        where += f" AND n.task IN ({','.join('?' * len(names))})"
        params += names
    if since is not None:
        where += " AND r.start >= ?"
        params.append(_since_epoch(since))
    if _attempts is not None:  # (the fit's bounded read: a JSON list of [run id, node index, attempt])
        where += (" AND (t.run_id, t.idx, t.attempt) IN (SELECT json_extract(value, '$[0]'),"
                  " json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(?))")
        params.append(_attempts)
    store = _require_store(home)
    rows = store.journal.query(_SQL.format(where=where), tuple(params))
    df = pd.DataFrame([list(r) for r in rows], columns=[*HISTORY_COLUMNS[:17], "code", "run_start"])
    df["cached"] = df["cached"].astype(bool)
    for c in ("attempt", "peak_rss", "input_bytes", "input_items", "output_bytes"):
        df[c] = df[c].astype("Int64")
    for c in ("duration_s", "cpu_s", "start", "end", "run_start"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    keys: dict[str, str | None] = {}  # (parts JSON -> lineage key; few distinct codes)
    for p in df["code"].dropna().unique():
        keys[p] = lineage_key(json.loads(p))
    df["code"] = df["code"].map(lambda p: keys.get(p) if isinstance(p, str) else None)
    df["instance"] = df["run_id"]
    df["start_s"] = df["start"] - df["run_start"]
    df["end_s"] = df["end"] - df["run_start"]
    for c in ("start", "end"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    return df[HISTORY_COLUMNS]
