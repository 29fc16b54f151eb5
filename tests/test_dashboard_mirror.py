"""The dashboard draws a run from the store exactly as the notebook widget drew it live:
same grouping, same layout, same colours (the SVG is compared byte for byte)."""

from __future__ import annotations

import threading

import nbflow as nf
from nbflow.notebook.graphview import GraphView
from nbflow.notebook.model import RunModel
from nbflow.server.mirror import Mirrors, RunMirror
from nbflow.store.store import store_home


@nf.task
def load(n: int) -> list[int]:
    return list(range(n))


@nf.task
def step(x: int) -> int:
    return x * 2


@nf.task
def summary(xs: list[int]) -> int:
    return sum(xs)


@nf.task
def other(x: int) -> int:
    if x == 13:
        raise ValueError("unlucky")
    return x


def _widget_svg(wf: nf.Workflow, run: nf.Run) -> str:
    model = RunModel(wf, run)
    for e in run.events:
        model(e)
    return GraphView(model).svg()


def test_store_view_equals_the_live_widget_view() -> None:
    with nf.Workflow("mixed") as wf:
        rows = load(80)
        summary(step.map(rows))  # grows at run time
        other.map([1, 2, 3])  # a map over a list
        for i in range(70):
            other(i)  # one fails: its descendants... (none) and the graph shows it red
    run = wf.run(raise_on_error=False)
    view = Mirrors(store_home()).view(run.id)
    assert view is not None and view["status"] == "failed"
    assert view["svg"] == _widget_svg(wf, run)
    assert 'data-level="maps"' in view["svg"] or 'data-level="siblings"' in view["svg"]
    assert view["counts"]["failed"] == 1


def test_mirror_catches_up_incrementally() -> None:
    gate = threading.Event()

    @nf.task
    def wait_gate() -> int:
        gate.wait(30)
        return 1

    with nf.Workflow("gated") as wf:
        first = [step(i) for i in range(5)]
        summary([wait_gate(), *first])
    run = wf.start()
    mirror = RunMirror(store_home(), run.id)
    try:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nf.runs()  # flushes this process's journal writes
            if mirror.refresh() and mirror.model is not None and mirror.model.counts.get("completed", 0) >= 5:
                break
            time.sleep(0.05)
        mid = mirror.seq
        assert mid > 0 and mirror.model.status == "running"
    finally:
        gate.set()
        run.wait()
    nf.runs()
    mirror.refresh()
    assert mirror.seq > mid and mirror.model.status == "completed"
    assert mirror.render()["svg"] == _widget_svg(wf, run)
