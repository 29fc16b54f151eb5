"""A Dask run's last completion, from the scheduler to the run's loop: sent within its
transition or at the end of the scheduler's turn.

nbflow's scheduler plugin sends the completions of nbflow's tasks to the client as events
on its topic (:mod:`nbflow.engine.backends.dask_plugin`).  A held task's completion goes at
once; before session 13 "at once" was the end of the scheduler's turn, after the
scheduler had reported the key to its client (``key-in-memory``) on the same batched
stream, which writes a batch no sooner than 2 ms after the previous one.  When that report
left alone, the completion waited for the next batch, and the run with it (it needs both).
Since session 13 it is sent from within the transition, before the report, in the same
batch (``LooseRestrictions.held_now``).

On the ``LocalCluster`` of ``locality.py`` (4 single-thread worker processes, the scheduler
in a thread of this process), ``--runs`` *fan* runs (or ``--workload``) alternate run by run
between ``held_now`` on and off; per run, lightly instrumented (two wrapped methods, no
other marks): from the scheduler taking the last completion (``_completed``) to the run's
loop taking it (``Watcher._drain``), and ``wf.run`` + the value in hand (the makespan).
Medians, the share of runs over 2 ms, and the paired differences (on − off, consecutive
runs).

Usage::

    .venv/bin/python benchmarks/last_completion.py --runs 80 --json benchmarks/last-completion.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, trace_spec
else:
    import _harness
    from locality import WORKLOADS, trace_spec


def measure(client: Any, workload: str, runs: int) -> dict[str, Any]:
    from nbflow import locality
    from nbflow.engine.backends import dask_plugin, dask_watch

    took: list[float] = []
    drained: list[float] = []
    plugin_class, watcher_class = dask_plugin.LooseRestrictions, dask_watch.Watcher
    completed, drain, held_now = plugin_class._completed, watcher_class._drain, plugin_class.held_now

    def marked_completed(self: Any, key: str, facts: dict[str, Any]) -> None:
        took.append(time.perf_counter())
        completed(self, key, facts)

    def marked_drain(self: Any) -> None:
        drain(self)
        drained.append(time.perf_counter())

    plugin_class._completed = marked_completed  # type: ignore[method-assign]
    watcher_class._drain = marked_drain  # type: ignore[method-assign]
    out: dict[str, dict[str, list[float]]] = {s: {"path_ms": [], "makespan_ms": []} for s in ("on", "off")}
    try:
        wf, end = trace_spec(f"last-completion-{workload}", WORKLOADS[workload]())
        with locality.placement("locality"):
            for i in range(2 + 2 * runs):  # (the first two: imports, no history)
                system = "on" if i % 2 == 0 else "off"
                plugin_class.held_now = system == "on"
                _harness.settle_client(client)
                took.clear()
                drained.clear()
                t0 = time.perf_counter()
                run = wf.run(backend=client, cache=False)
                run[end]
                makespan = time.perf_counter() - t0
                run.locality.agent.settle()  # (the read: not in the next run's way)
                del run
                if i >= 2:
                    out[system]["path_ms"].append((drained[-1] - took[-1]) * 1e3)
                    out[system]["makespan_ms"].append(makespan * 1e3)
    finally:
        plugin_class._completed = completed  # type: ignore[method-assign]
        watcher_class._drain = drain  # type: ignore[method-assign]
        plugin_class.held_now = held_now
    summary: dict[str, Any] = {}
    for system, got in out.items():
        path = got["path_ms"]
        summary[system] = {"path_median_ms": statistics.median(path),
                           "path_over_2ms": sum(x > 2.0 for x in path), "runs": len(path),
                           "makespan_median_ms": statistics.median(got["makespan_ms"])}
    for k in ("path_ms", "makespan_ms"):
        diffs = [a - b for a, b in zip(out["on"][k], out["off"][k], strict=True)]
        summary[f"paired_on_minus_off_{k}"] = {"median": statistics.median(diffs),
                                               "on_lower_in": sum(d < 0 for d in diffs), "of": len(diffs)}
    summary["samples"] = out
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="fan", choices=sorted(WORKLOADS))
    ap.add_argument("--runs", type=int, default=80, help="runs per system (alternated)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("last_completion")
    doc: dict[str, Any] = {"benchmark": "last_completion", "machine": _harness.machine_info(),
                           "command": vars(args), "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        doc["result"] = measure(client, args.workload, args.runs)
    doc["load_after"] = os.getloadavg()
    r = doc["result"]
    for system in ("on", "off"):
        log(f"{system}: {r[system]['path_median_ms']:.2f} ms scheduler -> run's loop "
            f"({r[system]['path_over_2ms']}/{r[system]['runs']} over 2 ms), makespan "
            f"{r[system]['makespan_median_ms']:.1f} ms")
    log(f"paired on - off: {r['paired_on_minus_off_path_ms']}, "
        f"makespan {r['paired_on_minus_off_makespan_ms']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
