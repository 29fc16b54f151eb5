"""Details of the run views: a waiting collector, throughput, printed output, edge widths.

Runs here are real nbflow runs; views are rendered in-process (the browser test in
``test_browser_task_output.py`` looks at the same tasks tab in JupyterLab).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.notebook import model_of_run, render
from nbflow.notebook.graphview import GraphView
from nbflow.notebook.magics import launch
from nbflow.notebook.model import RunModel
from nbflow.notebook.stored import model_of

gate = threading.Event()


@nf.task
def items(n: int) -> list[int]:
    return list(range(n))


@nf.task
def held(x: int) -> int:
    gate.wait(60)
    return x


@nf.task
def total(xs: list[int]) -> int:
    return sum(xs)


def node_attrs(svg: str, key: str) -> str:
    m = re.search(r'<g class="nbflow-node" data-key="' + re.escape(key) + r'"[^>]*><title>[^<]*</title>', svg)
    assert m, key
    return m.group(0)


def wait_until(cond: Any, what: str) -> None:
    done = threading.Event()
    for _ in range(600):
        if cond():
            return
        done.wait(0.05)
    raise AssertionError(f"never happened: {what}")


def test_a_map_collector_waiting_for_its_items_is_pending_not_running() -> None:
    gate.clear()
    with nf.Workflow("waiting") as wf:
        total(held.map(items(3)))
    model = RunModel(wf)
    run = launch(wf, {"cache": False, "workers": 4}, [model])
    model.run = run
    try:
        wait_until(lambda: model.task_counts().get("running") == 3, "three items running")
        # for the scheduler the expanded map is running ...
        states = dict(zip(run.tasks["key"], run.tasks["state"], strict=True))
        assert states["held.map-0"] == "running"
        # ... but every view shows it waiting: counted pending, drawn pending
        counts = model.task_counts()
        assert counts.by_state == {"running": 3, "completed": 1, "pending": 2}  # collector + total
        assert run.task_counts == counts
        assert "3 running" in render.progress_text(model)
        svg = GraphView(model).svg()
        tip = node_attrs(svg, "held.map-0")
        assert 'data-state="pending"' in tip and "waiting for its items" in tip
        assert 'data-state="running"' in node_attrs(svg, "held.map-0[0]")
    finally:
        gate.set()
        run.wait(raise_on_error=False)
    assert run.status == "completed"


def test_throughput_counts_recent_finishes() -> None:
    with nf.Workflow("rate") as wf:
        items(1)
    model = RunModel(wf)
    model(ev.RunStarted(1000.0, "r", "rate", 1, "local", 1))
    assert model.throughput(now=1001.0) is None  # nothing finished yet
    model.ended_at = [1001.0 + k * 0.5 for k in range(40)]  # 2 tasks/s from 1001 to 1020.5
    assert model.throughput(window=10, now=1020.5) == pytest.approx(21 / 10)
    assert model.throughput(window=30, now=1020.5) == pytest.approx(40 / 20.5)  # since start
    assert model.throughput(window=10, now=1100.0) == 0.0  # nothing in the last 10 s
    html = render.throughput_html(model)  # (now = the wall clock: long after, 0 tasks/s)
    assert "tasks/s" in html


def test_live_widget_header_shows_throughput_while_running(monkeypatch: pytest.MonkeyPatch) -> None:
    import comm
    from comm.base_comm import BaseComm

    class Quiet(BaseComm):
        def publish_msg(self, *a: Any, **k: Any) -> None:
            pass

    monkeypatch.setattr(comm, "create_comm", Quiet)
    from nbflow.notebook.widget import RunWidget

    gate.clear()
    with nf.Workflow("header") as wf:
        total([held(1), items(2), items(3)])
    model = RunModel(wf)
    run = launch(wf, {"cache": False, "workers": 4}, [model])
    model.run = run
    widget = RunWidget(model, run)
    try:
        wait_until(lambda: model.task_counts().get("completed") == 2, "two tasks done")
        head = widget._progress_html()
        m = re.search(r'class="nbflow-throughput" data-rate="([0-9.]+)"', head)
        assert m and float(m.group(1)) > 0 and "tasks/s" in head
    finally:
        gate.set()
        run.wait(raise_on_error=False)
    widget.final()
    assert "nbflow-throughput" not in widget.progress.value  # a finished run has no rate to show


@nf.task
def chatty(n: int) -> int:
    print(f"line one of {n}")
    print("x" * n)
    return n


def test_tasks_tab_shows_what_each_task_printed_live_and_stored() -> None:
    with nf.Workflow("printing") as wf:
        chatty(10)
        chatty(9000)
        items(1)
    run = wf.run()
    live = model_of_run(run)
    stored = model_of(nf.load_run(run.id))
    for model in (live, stored):
        table = render.tasks_html(model)
        short = re.search(r'<details class="nbflow-printed" data-key="chatty-0">.*?</details>', table, re.S)
        assert short and "line one of 10" in short.group(0) and "truncated" not in short.group(0)
        long = re.search(r'<details class="nbflow-printed" data-key="chatty-1">.*?</details>', table, re.S)
        assert long and "line one of 9000" in long.group(0)
        cut = re.search(r"truncated: (\d+) more characters", long.group(0))
        assert cut and int(cut.group(1)) == len(run.logs("chatty-1")) - render.OUTPUT_SHOWN
        assert '<details class="nbflow-printed" data-key="items-0"' not in table  # printed nothing


@nf.task
def big() -> bytes:
    return b"x" * 4_000_000


@nf.task
def small() -> int:
    return 1


@nf.task
def join(a: Any, b: Any) -> int:
    return len(a) + b


def widths(svg: str) -> dict[int, float]:
    found = re.findall(r'<path d="[^"]*" stroke-width="([0-9.]+)" data-bytes="(\d+)"', svg)
    return {int(b): float(w) for w, b in found}


def test_heavy_edges_are_drawn_thicker_live_stored_and_static() -> None:
    with nf.Workflow("heavy") as wf:
        join(big(), small())
    run = wf.run()
    for model in (model_of_run(run), model_of(nf.load_run(run.id))):
        svg = GraphView(model).svg()
        got = widths(svg)
        heavy = [w for b, w in got.items() if b > 1_000_000]
        light = [w for b, w in got.items() if b < 1000]
        assert heavy and light and heavy[0] > light[0] >= render.EDGE_MIN_W
        assert heavy[0] <= render.EDGE_MAX_W
        static = render.static_html(model, svg)
        assert widths(static) == got
    # the log scale, capped
    assert render.edge_width(100) == render.EDGE_MIN_W
    assert render.edge_width(8 * 1024) < render.edge_width(1024 * 1024) <= render.EDGE_MAX_W
    assert render.edge_width(10**12) == render.EDGE_MAX_W


def test_bytes_moved_between_workers_win_over_output_sizes() -> None:
    with nf.Workflow("moved") as wf:
        join(big(), small())
    run = wf.run()
    model = model_of_run(run)
    model.edge_bytes = {("small-0", "join-0"): 50_000_000}  # as run.transfers would say
    got = widths(GraphView(model).svg())
    assert got == {50_000_000: render.edge_width(50_000_000), 0: render.EDGE_MIN_W}


@nf.task
def breaks(x: int) -> int:
    raise ValueError(f"bad {x}")


@nf.task
def after(x: int) -> int:
    return x


def test_the_header_of_a_run_that_did_not_complete_counts_the_completed_tasks() -> None:
    """A failed or cancelled run's tasks have all ended, but it is not "3/3 tasks done": the
    header counts what completed; a run whose ended tasks all completed says "done"."""
    with nf.Workflow("header-failed") as wf:
        items(1)
        after(breaks(2))
    model = RunModel(wf)
    run = launch(wf, {"cache": False}, [model])
    model.run = run
    run.wait(raise_on_error=False)
    head = render.progress_html(model)
    assert "1/3 tasks completed" in head and "tasks done" not in head, head
    assert 'data-done="3" data-total="3"' in head  # the progress itself: every task ended

    with nf.Workflow("header-ok") as ok:
        items(1)
    good = RunModel(ok)
    launch(ok, {"cache": False}, [good]).wait()
    assert "1/1 tasks done" in render.progress_html(good)
