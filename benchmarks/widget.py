"""Live-widget benchmark: what watching a run costs, and how chatty the widget is.

What it measures
================

1. **Overhead.**  The same 2 000-task workflow (``--n``) is run with and without the live
   widget, alternating, ``--repeat`` times each (median reported).  "With" is exactly what a
   blocking ``%%workflow`` cell does in JupyterLab: the :class:`RunModel` subscribed to the
   run's events, a :class:`RunWidget` built, and the cell's thread ticking the widget every
   0.1 s until the run ends, then its final refresh.  There is no browser here, so the
   widget's comm is replaced by one that counts the messages it would send.  Two workloads:

   - ``work``: the default, 2 000 thread tasks that each hold the GIL for ~0.5 ms of pure
     Python work (a map over a list, a second stage per item, one sink), ``--workers`` 4;
   - ``noop``: 2 000 no-op coroutines (the worst case: the run itself costs almost nothing,
     so any fixed cost of the view shows).

   Target: with / without <= 1.10 for ``work``.

2. **Front-end messages per second.**  Comm messages sent to the front end during the
   ``work`` runs, per second of run time, and the largest number in any one-second window.
   Target: at most ~10 a second.

3. **Drawing a 10k-task graph.**  Grouping, layout (``dot`` if installed) and SVG of a
   finished 10 000-task run (a map of 5 000, a loop of 2 500 two-step chains, two sinks),
   from scratch, median of 5.  Target: under 1 s.  Also reported: the number of drawn nodes
   (target: at most ~200) and the SVG size.

Output: one JSON document on stdout (``--json OUT`` also writes it to a file), with the
machine it was measured on.  Alternation, machine info and JSON output come from
``_harness.py``.

Command: ``.venv/bin/python benchmarks/widget.py --json benchmarks/widget.json``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import comm
from comm.base_comm import BaseComm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

import nbflow as nf
from nbflow.core import events as ev
from nbflow.notebook.graphview import GraphView
from nbflow.notebook.model import RunModel
from nbflow.notebook.widget import RunWidget


class CountingComm(BaseComm):
    """Stands in for the kernel's comm: records when each message would have been sent."""

    sent: ClassVar[list[float]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                    **keys: Any) -> None:
        if msg_type == "comm_msg":
            CountingComm.sent.append(time.perf_counter())


comm.create_comm = CountingComm  # every widget made from now on counts its messages


def _spin(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    k = 0
    while time.perf_counter() < end:
        k += 1
    return k


@nf.task
def work(i: int) -> int:
    _spin(0.5)
    return i


@nf.task
def stage(x: int) -> int:
    _spin(0.5)
    return x + 1


@nf.task
def sink(xs: list[int]) -> int:
    return len(xs)


@nf.task
async def noop(i: int) -> int:
    return i


@nf.task
async def noop_sink(xs: list[int]) -> int:
    return len(xs)


def build(kind: str, n: int) -> nf.Workflow:
    with nf.Workflow(f"bench-{kind}") as wf:
        if kind == "work":
            firsts = work.map(list(range(n // 2)))
            sink([stage(i) for i in range(n // 2 - 2)] + [firsts])
        else:
            noop_sink(noop.map(list(range(n - 2))))
    return wf


def run_plain(wf: nf.Workflow, workers: int | None) -> float:
    t0 = time.perf_counter()
    run = wf.start(workers=workers, cache=False)
    run.wait()
    return time.perf_counter() - t0


def run_watched(wf: nf.Workflow, workers: int | None) -> tuple[float, dict[str, Any]]:
    """What a blocking %%workflow cell does with a front end (minus the IPython display call)."""
    t0 = time.perf_counter()
    model = RunModel(wf)

    def factory(run: Any) -> ev.Subscriber | None:
        return model if run.workflow is wf else None

    unregister = nf.on_run(factory)
    run = wf.start(workers=workers, cache=False)
    model.run = run
    widget = RunWidget(model, run)
    first = len(CountingComm.sent)
    start = time.perf_counter()
    while True:  # exactly LiveView.follow
        widget.tick()
        if model.finished.wait(widget.interval) or run.done:
            break
    run.wait()
    widget.final()
    elapsed = time.perf_counter() - t0
    unregister()
    stamps = CountingComm.sent[first:]
    run_s = time.perf_counter() - start
    window = max((sum(1 for s in stamps if t <= s < t + 1.0) for t in stamps), default=0)
    return elapsed, {"messages": len(stamps), "seconds": run_s, "max_in_1s": window,
                     "layouts": widget.graph.layouts_computed}


def overhead(kind: str, n: int, workers: int | None, repeat: int) -> dict[str, Any]:
    run_plain(build(kind, 200), workers)
    run_watched(build(kind, 200), workers)

    def fresh() -> nf.Workflow:  # built, then its garbage collected, before the clock starts
        wf = build(kind, n)
        gc.collect()
        return wf

    samples = _harness.alternate({
        "plain": lambda: (run_plain(fresh(), workers), None),
        "watched": lambda: run_watched(fresh(), workers),
    }, repeat, log=_harness.progress(f"widget {kind}"))
    plain = [t for t, _ in samples["plain"]]
    watched = [t for t, _ in samples["watched"]]
    msgs = [info for _, info in samples["watched"]]
    p, w = statistics.median(plain), statistics.median(watched)
    rate = [m["messages"] / max(m["seconds"], 1.0) for m in msgs]  # a sub-second run: its first second
    return {
        "tasks": len(build(kind, n).nodes),
        "workers": workers,
        "plain_s": round(p, 4),
        "watched_s": round(w, 4),
        "ratio": round(w / p, 3),
        "messages_per_run": statistics.median(m["messages"] for m in msgs),
        "messages_per_s": round(statistics.median(rate), 2) if rate else 0.0,
        "max_messages_in_1s": max(m["max_in_1s"] for m in msgs),
        "samples": {"plain_s": [round(x, 4) for x in plain], "watched_s": [round(x, 4) for x in watched]},
    }


def draw_10k(repeat: int = 5) -> dict[str, Any]:
    with nf.Workflow("bench-draw") as wf:
        xs = noop.map(list(range(5000)))
        ys = [noop(noop(i)) for i in range(2500)]
        noop_sink(xs)
        noop_sink(ys)
    model = RunModel(wf)
    unregister = nf.on_run(lambda run: model if run.workflow is wf else None)
    wf.run(cache=False)
    unregister()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        view = GraphView(model)
        svg = view.svg()
        times.append(time.perf_counter() - t0)
    assert view.grouping is not None and view.layout is not None
    return {"tasks": len(model), "drawn_nodes": len(view.grouping.groups), "level": view.grouping.level,
            "layout": view.layout.engine, "seconds": round(statistics.median(times), 4),
            "svg_bytes": len(svg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work_res = overhead("work", args.n, args.workers, args.repeat)
    noop_res = overhead("noop", args.n, None, args.repeat)
    draw = draw_10k()
    out = {
        "benchmark": "widget",
        "machine": _harness.machine_info(nf.__version__),
        "work": work_res,
        "noop": noop_res,
        "draw_10k": draw,
        "targets": {
            "work_ratio_max": 1.10, "messages_per_s_max": 10, "draw_10k_s_max": 1.0, "drawn_nodes_max": 200},
        "pass": {
            "overhead": work_res["ratio"] <= 1.10,
            "messages": work_res["max_messages_in_1s"] <= 10 and noop_res["max_messages_in_1s"] <= 10,
            "draw_10k": draw["seconds"] < 1.0 and draw["drawn_nodes"] <= 200,
        },
    }
    _harness.emit_json(out, args.json)


if __name__ == "__main__":
    main()
