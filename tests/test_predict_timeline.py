"""The Timeline tab's bars: a task's call, not the time it waited on a cluster before it.

A Dask task is sent ahead of its inputs; the span the run sees runs from then to when it
learned of the end, while the call's own seconds come from its worker.  The bar is the
call (ending when the run learned of its end); the wait before it is a thin line.
"""

from __future__ import annotations

import re

import pandas as pd

from nbflow.predict import timeline


class StoredRun:
    """What the Timeline reads of a finished run: its table, status and start."""

    status = "completed"
    id = name = "timeline-fake"

    def __init__(self, rows: list[tuple[str, float, float, float]]) -> None:
        t0 = pd.Timestamp("2026-12-01 10:00:00", tz="UTC")
        self.started_at = t0.timestamp()
        self.tasks = pd.DataFrame({
            "key": [r[0] for r in rows], "task": [r[0].split("-")[0] for r in rows],
            "state": "completed", "executor": "dask",
            "start": [t0 + pd.Timedelta(seconds=r[1]) for r in rows],
            "end": [t0 + pd.Timedelta(seconds=r[2]) for r in rows],
            "duration_s": [r[3] for r in rows]})


def _rects(svg: str, key: str) -> dict[str, tuple[float, float]]:
    bar = re.search(rf'<g class="nbflow-bar" data-key="{key}".*?</g>', svg, re.S)
    assert bar is not None, svg
    return {m[1]: (float(m[2]), float(m[3]))
            for m in re.finditer(r'<rect class="(\w+)" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', bar[0])}


def test_a_task_that_waited_on_the_cluster_is_drawn_as_its_call(monkeypatch) -> None:
    monkeypatch.setattr(timeline, "_predicted", lambda run, t: {})
    # make-0 was sent at 0 s and its end learned at 2.5 s; it computed for 0.3 s of that.
    # thread-0 ran from 0 to 1 s, its own clock saying 1 s less a few microseconds.
    # step-0, sent ahead, was learned of as started at 2.4 s, after its 0.5 s call had run.
    svg = timeline.timeline_html(StoredRun([("make-0", 0.0, 2.5, 0.3), ("thread-0", 0.0, 1.0, 0.99999),
                                            ("step-0", 2.4, 2.5, 0.5)]))
    scale = (760 - 150 - 10) / 2.5  # the chart's width over its horizon (2.5 s)
    made = _rects(svg, "make-0")
    assert made["actual"][1] == round(0.3 * scale, 1)
    assert made["actual"][0] == round(150 + 2.2 * scale, 1)  # ends at 2.5 s
    assert made["waiting"] == (150.0, round(2.2 * scale, 1))
    assert "make-0: completed, 0.3 s (waited 2.2 s before)" in svg
    ahead = _rects(svg, "step-0")
    assert "waiting" not in ahead and ahead["actual"] == (round(150 + 2.0 * scale, 1), round(0.5 * scale, 1))
    assert "step-0: completed, 0.5 s" in svg
    threaded = _rects(svg, "thread-0")
    assert "waiting" not in threaded and threaded["actual"] == (150.0, round(1.0 * scale, 1))
