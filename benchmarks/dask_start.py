"""A small Dask run's fixed start, session 10's cuts against session 9's start, in one run.

``benchmarks/locality.py`` measures the makespan of whole runs against plain Dask; on a
short workflow (``fan``: 10 tasks, ~50 ms) the start decides it.  This script runs the same
samples (:func:`locality.run_nbflow` in mode ``locality``, :func:`locality.run_dask`) on the
same ``LocalCluster`` (4 single-thread worker processes), alternated, with a third variant:

- ``locality``: nbflow as it is;
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
and ratios to plain Dask of the same invocation.

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

SYSTEMS = ("locality", "session-9", "dask")


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


def sample(client: Any, spec: list[Any], system: str) -> dict[str, Any]:
    if system == "dask":
        return run_dask(client, spec)
    with session_9() if system == "session-9" else contextlib.nullcontext():
        return run_nbflow(client, spec, "locality")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan,chains")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask-start")
    doc: dict[str, Any] = {"benchmark": "dask_start", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg(), "workloads": {}}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {s: (lambda s=s, spec=spec: sample(client, spec, s)) for s in SYSTEMS}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {s: {"makespan_s": statistics.median(x["makespan_s"] for x in xs),
                       "cpu_s": statistics.median(x["cpu_s"] for x in xs),
                       "samples_makespan_s": [x["makespan_s"] for x in xs]}
                   for s, xs in got.items()}
            base = med["dask"]["makespan_s"]
            for s in ("locality", "session-9"):
                med[s]["makespan_vs_dask"] = med[s]["makespan_s"] / base
            values = {round(x["value"], 6) for xs in got.values() for x in xs}
            doc["workloads"][name] = {"medians": med, "same_result_everywhere": len(values) == 1}
            log(f"{name}: " + ", ".join(
                f"{s} {m['makespan_s'] * 1000:.1f} ms (cpu {m['cpu_s'] * 1000:.1f} ms)"
                + (f" = {m['makespan_vs_dask']:.2f}x dask" if "makespan_vs_dask" in m else "")
                for s, m in med.items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
