"""The dashboard's run list counts a run's tasks as every other view does.

``nbflow.server.reader.list_runs`` (what ``/nbflow/api/runs`` serves) must give, for the
same run, the numbers of ``nf.load_run(id).task_counts``, of ``nf.runs()`` and of the live
``run.task_counts``: while a map's items run, its collector waits and is counted
``pending``, not running; after the run, failed, skipped and cached tasks agree too.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.core.counting import TaskCounts
from nbflow.server.reader import get_run, list_runs

pytestmark = pytest.mark.timeout(120)

GATE = threading.Event()


@nf.task
def items(n):
    return list(range(n))


@nf.task
def slow(x):
    GATE.wait(60)
    if x == 1:
        raise ValueError("no 1")
    return x


@nf.task
def total(xs):
    return sum(xs)


def _home() -> Path:
    return Path(os.environ["NBFLOW_HOME"])


def _listed(run_id: str) -> dict[str, Any]:
    return next(r for r in list_runs(_home())["runs"] if r["id"] == run_id)


def _want(counts: TaskCounts) -> dict[str, int]:
    return {**counts.as_row(), "pending": counts.get("pending"), "running": counts.get("running"),
            "done": counts.done}


def _pick(row: dict[str, Any]) -> dict[str, int]:
    return {k: row[k] for k in ("tasks", "completed", "cached", "failed", "skipped", "cancelled",
                                "pending", "running", "done")}


def _wait_journaled(run: nf.Run) -> None:
    """Until the journal holds what the live run shows (the writer commits in batches)."""
    deadline = time.monotonic() + 60
    while nf.load_run(run.id).task_counts != run.task_counts:
        assert time.monotonic() < deadline, (nf.load_run(run.id).task_counts, run.task_counts)
        time.sleep(0.05)


def test_list_counts_a_waiting_collector_as_pending_like_every_view() -> None:
    GATE.clear()
    with nf.Workflow("waiting") as wf:
        total(slow.map(items(3)))
    run = wf.start(raise_on_error=False)
    try:
        deadline = time.monotonic() + 60
        while run.task_counts.get("running") < 3:  # the three items run, held by the gate
            assert time.monotonic() < deadline, run.task_counts
            time.sleep(0.02)
        _wait_journaled(run)
        live = _listed(run.id)
        assert live["status"] == "running"
        assert _pick(live) == _want(nf.load_run(run.id).task_counts) == _want(run.task_counts)
        # items + 3 slow + the collector + total: the collector waits, so it is pending
        assert _pick(live) == {"tasks": 6, "completed": 1, "cached": 0, "failed": 0, "skipped": 0,
                               "cancelled": 0, "pending": 2, "running": 3, "done": 1}
        assert _pick(get_run(_home(), run.id) or {}) == _pick(live)  # the run's own page
    finally:
        GATE.set()
        run.wait(raise_on_error=False)

    ended = _listed(run.id)
    assert _pick(ended) == _want(nf.load_run(run.id).task_counts) == _want(run.task_counts)
    assert (ended["failed"], ended["skipped"], ended["done"]) == (1, 2, 6)
    listed = nf.runs()
    row = listed[listed["id"] == run.id].iloc[0]
    assert {k: int(row[k]) for k in ("tasks", "completed", "cached", "failed", "skipped", "cancelled")} \
        == {k: ended[k] for k in ("tasks", "completed", "cached", "failed", "skipped", "cancelled")}

    again = wf.run(raise_on_error=False)  # served from the cache where it can be
    row2 = _listed(again.id)
    assert row2["cached"] == again.task_counts.cached > 0
    assert _pick(row2) == _want(nf.load_run(again.id).task_counts)
