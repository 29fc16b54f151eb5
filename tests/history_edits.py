"""Setting what the store's history says a task call took, for tests of what history decides.

A test that learns from *measured* durations (a 10 ms sleep against a 300 ms one) depends on
the machine: on a busy CI machine a 10 ms sleep can take 150 ms.  These tests run their
workflows for real, then set the recorded durations to the values the test reasons with,
so what is learned from them is the same on every machine.
"""

from __future__ import annotations

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
