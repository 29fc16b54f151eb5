"""A small Dask run's fixed start, this session's cuts switched on and off, in one run.

``benchmarks/locality.py`` measures the makespan of whole runs against plain Dask; on a
short workflow (``fan``: 10 tasks, ~50 ms) the start decides it.  This script runs the same
samples (:func:`locality.run_nbflow` in mode ``locality``, :func:`locality.run_dask`) on the
same ``LocalCluster`` (4 single-thread worker processes), alternated, with earlier starts
switched back in:

- ``locality``: nbflow as it is;
- ``session-12-a-off``: the same run with session 12's history read ahead switched off
  (``locality.py``'s mode of that name);
- ``session-10``: the same run with session 11's preparation cuts switched off
  (:func:`session_10`): memory admission groups every recorded peak by task before asking
  whether any reaches the smallest demand, and the recent runs' per-task sums come to
  Python a row per task and run (the store found once per preparation stays: with
  ``NBFLOW_HOME`` set, as here, a look-up costs ~5 µs);
- ``session-9``: the same run with session 10's start cuts switched off
  (:func:`session_9`): the run that ``nf.last_run()`` held is let go of as the new run is
  made (its release reaches Dask's client before the new graph, which the client then
  sends no sooner than its batching interval after it), the preparation asks "is there
  history?" on its own before reading the durations, and it reads every recorded peak
  for memory admission (not only those that could be demanded);
- ``dask``: the same graph as ``dask.delayed``.

Each sample drops its run (``del run``), as ``locality.py`` does, so the run the next
sample displaces is held by ``nf.last_run()`` alone: a notebook cell ``wf.run()`` run
again whose previous result nobody kept.  Medians of makespan and of this process's CPU,
and ratios to plain Dask of the same invocation; for nbflow also ``prepare`` (wall, the
process's CPU and the calling thread's)
and how long after ``prepare`` began the run's first graph was handed to Dask's client.

Usage::

    .venv/bin/python benchmarks/dask_start.py --workloads fan,chains --repeat 15 --warmup 1 \
        --json benchmarks/dask-start.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, run_dask, run_nbflow
else:
    import _harness
    from locality import WORKLOADS, run_dask, run_nbflow

SYSTEMS = ("locality", "session-12-a-off", "session-10", "session-9", "dask")
# medians kept per system (the prepare figures: nbflow's only)
FIGURES = ("makespan_s", "cpu_s", "prepare_s", "prepare_cpu_s", "prepare_thread_cpu_s",
           "prepare_to_graph_s")


@contextlib.contextmanager
def session_10() -> Iterator[None]:
    """nbflow's preparation as it was at the end of session 10 (see the module doc)."""
    from nbflow.predict import memory
    from nbflow.store import recent

    any_peak, totals = memory.any_peak_at_least, recent._summarised_task_means
    memory.any_peak_at_least = lambda store, args, at_least: True
    recent._summarised_task_means = lambda store, cols, ids: None
    try:
        yield
    finally:
        memory.any_peak_at_least = any_peak
        recent._summarised_task_means = totals


@contextlib.contextmanager
def session_9() -> Iterator[None]:
    """nbflow's start as it was at the end of session 9: a new run lets go of the run it
    displaced at once, the preparation asks whether there is history first, and reads
    every recorded peak."""
    from nbflow import workflow
    from nbflow.engine import run as run_module
    from nbflow.predict import memory
    from nbflow.store.recent import has_history

    made = run_module.Run.__init__
    asked = workflow._has_history
    peaks = memory.predicted_peaks

    def every_peak(workflow: str, exclude_run: str = "", store: Any = None,
                   at_least: float | None = None) -> dict[str, float]:
        return peaks(workflow, exclude_run, store)

    def let_go_at_once(self: Any, *a: Any, **k: Any) -> None:
        made(self, *a, **k)
        self._let_go_of_displaced()

    def ask_first(run: Any, keys: list[str], store: Any = None) -> bool:
        try:
            return has_history(run.name, exclude_run=run.id, store=store)
        except Exception:
            return False

    run_module.Run.__init__ = let_go_at_once  # type: ignore[method-assign]
    workflow._has_history = ask_first
    memory.predicted_peaks = every_peak
    try:
        yield
    finally:
        run_module.Run.__init__ = made  # type: ignore[method-assign]
        workflow._has_history = asked
        memory.predicted_peaks = peaks


@contextlib.contextmanager
def start_marks(marks: dict[str, float]) -> Iterator[None]:
    """Mark (``time.perf_counter``) when ``workflow.prepare`` starts and ends, the CPU it
    took, and when the run's first graph is handed to Dask's client (``graph queued``)."""
    import time

    from distributed import Client

    from nbflow import workflow

    prepare, queue = workflow.prepare, Client._send_to_scheduler

    def timed(*a: Any, **k: Any) -> Any:
        marks["prepare start"], cpu = time.perf_counter(), time.process_time()
        mine = time.thread_time()
        try:
            return prepare(*a, **k)
        finally:
            marks["prepare end"] = time.perf_counter()
            marks["prepare cpu"] = time.process_time() - cpu
            marks["prepare thread cpu"] = time.thread_time() - mine

    def queued(self: Any, msg: Any) -> Any:
        if msg.get("op") == "update-graph":
            marks.setdefault("graph queued", time.perf_counter())
        return queue(self, msg)

    workflow.prepare = timed
    Client._send_to_scheduler = queued  # type: ignore[method-assign]
    try:
        yield
    finally:
        workflow.prepare = prepare
        Client._send_to_scheduler = queue  # type: ignore[method-assign]


def sample(client: Any, spec: list[Any], system: str) -> dict[str, Any]:
    if system == "dask":
        return run_dask(client, spec)
    switch = {"session-9": session_9, "session-10": session_10}.get(system, contextlib.nullcontext)
    marks: dict[str, float] = {}
    with switch(), start_marks(marks):
        out = run_nbflow(client, spec, "session-12-a-off" if system == "session-12-a-off" else "locality")
    out["prepare_s"] = marks["prepare end"] - marks["prepare start"]
    out["prepare_cpu_s"] = marks["prepare cpu"]
    out["prepare_thread_cpu_s"] = marks["prepare thread cpu"]
    out["prepare_to_graph_s"] = marks["graph queued"] - marks["prepare start"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan,chains")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--systems", default="locality,session-10,dask",
                    help=f"of {', '.join(SYSTEMS)} (dask is always measured: the ratios' base)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    systems = list(dict.fromkeys([*args.systems.split(","), "dask"]))
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown --systems {unknown}")
    log = _harness.progress("dask-start")
    doc: dict[str, Any] = {"benchmark": "dask_start", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg(), "workloads": {}}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {s: (lambda s=s, spec=spec: sample(client, spec, s)) for s in systems}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {s: {**{k: statistics.median(x[k] for x in xs) for k in FIGURES if k in xs[0]},
                       **{f"samples_{k}": [x[k] for x in xs] for k in FIGURES if k in xs[0]}}
                   for s, xs in got.items()}
            base = med["dask"]["makespan_s"]
            for s in systems:
                if s != "dask":
                    med[s]["makespan_vs_dask"] = med[s]["makespan_s"] / base
            values = {round(x["value"], 6) for xs in got.values() for x in xs}
            doc["workloads"][name] = {"medians": med, "same_result_everywhere": len(values) == 1}
            log(f"{name}: " + ", ".join(
                f"{s} {m['makespan_s'] * 1000:.1f} ms (cpu {m['cpu_s'] * 1000:.1f} ms)"
                + (f" = {m['makespan_vs_dask']:.2f}x dask" if "makespan_vs_dask" in m else "")
                + (f"; prepare {m['prepare_s'] * 1000:.2f} ms (cpu {m['prepare_cpu_s'] * 1000:.2f}, "
                   f"its thread {m['prepare_thread_cpu_s'] * 1000:.2f}), "
                   f"graph queued {m['prepare_to_graph_s'] * 1000:.2f} ms after prepare began"
                   if "prepare_s" in m else "")
                for s, m in med.items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
