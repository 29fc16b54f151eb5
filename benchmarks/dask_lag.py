"""How late a Dask run says a task completed, after the task stopped on its worker.

Per task: the moment the run's ``TaskCompleted`` event reached a subscriber (this
process's clock: what the widget, the journal and ``run.tasks`` learn from) minus the
moment the task's call stopped on its worker (its worker's wall clock, read in this
process's by :mod:`nbflow.engine.backends.dask_clock`; on one machine the same clock).

Two modes, alternated on one ``LocalCluster`` (4 single-thread worker processes, as every
Dask benchmark here), on the workloads of ``benchmarks/locality.py``:

- ``live``: the default; a task sent ahead that finished on the cluster is taken in at
  once, without an engine slot (``DaskBackend.live = True``);
- ``session-9``: ``DaskBackend.live = False``: taken in when an engine slot frees, as at
  the end of session 9.

Each sample also records the run's makespan (call to the final value in hand) and the
CPU time of this process (every thread: nbflow's loop, Dask's client loop and, on a
``LocalCluster``, Dask's scheduler), so the same run shows what the change costs.
``--work MS`` makes every task of the ``chains``/``fan`` workloads also spin that many ms
on its worker (so that engine slots are held while other tasks finish).

Usage::

    .venv/bin/python benchmarks/dask_lag.py --workloads chains,fan,trace --repeat 15 --warmup 1 \\
        --json benchmarks/dask-lag-s10.json
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


def spin(ms: float, *parts: Any) -> Any:
    """A task that computes for ``ms`` milliseconds on its worker, then passes its first
    input on (or ``ms``)."""
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass
    return parts[0] if parts else ms


def with_work(spec: list[Any], ms: float) -> list[Any]:
    """``spec`` with a ``spin(ms)`` task in front of every task (between it and its first
    input; beside it for a root)."""
    if ms <= 0:
        return spec
    out: list[Any] = []
    for key, fn, args in spec:
        first = next((k for k, a in enumerate(args) if isinstance(a, tuple) and a[:1] == ("ref",)), None)
        if first is None:  # (a root: the work runs beside it)
            out.append((f"{key}-work", spin, (ms,)))
            out.append((key, fn, args))
            continue
        out.append((f"{key}-work", spin, (ms, args[first])))
        out.append((key, fn, (*args[:first], ("ref", f"{key}-work"), *args[first + 1:])))
    return out


def sample(client: Any, spec: list[Any], live: bool) -> dict[str, Any]:
    import nbflow as nf
    from nbflow import locality
    from nbflow.core import events as ev
    from nbflow.engine.backends.dask import DaskBackend

    wf, end = trace_spec("dask-lag", spec)
    told: dict[int, float] = {}

    def note(e: Any) -> None:
        if type(e) is ev.TaskCompleted:
            told[e.index] = time.time()

    DaskBackend.live = live
    stop = nf.on_run(lambda run: note)
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        with locality.placement("locality"):
            run = wf.run(backend=client, cache=False)
            run[end]
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        stop()
        DaskBackend.live = True
    t = run.tasks
    lags = []
    for i, (executor, stopped) in enumerate(zip(t["executor"], t["end"], strict=True)):
        if executor == "dask" and i in told:
            lags.append(told[i] - stopped.timestamp())
    lags.sort()
    backend = run.backends["dask"]
    watcher = backend._watcher
    return {"makespan": wall, "cpu": cpu, "tasks": len(lags), "taken_early": backend.taken_early,
            "bytes_moved": run.locality_report().bytes_moved,
            "loop_wakeups": watcher.wakeups if watcher is not None else 0,
            "messages": backend.batch.messages if backend.batch is not None else 0,
            "lag_median": statistics.median(lags), "lag_p90": lags[int(0.9 * (len(lags) - 1))],
            "lag_max": lags[-1], "lag_mean": statistics.fmean(lags)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="chains,fan,trace")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--work", type=float, default=0.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask_lag")
    doc: dict[str, Any] = {"benchmark": "dask_lag", "machine": _harness.machine_info(),
                           "work_ms": args.work, "workloads": {}, "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = with_work(WORKLOADS[name](), args.work)
            samplers = {"live": lambda spec=spec: sample(client, spec, True),
                        "session-9": lambda spec=spec: sample(client, spec, False)}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {m: {k: statistics.median(s[k] for s in ss) for k in ss[0]} for m, ss in got.items()}
            doc["workloads"][name] = {
                "medians": med, "samples": got,
                "live_vs_session_9": {k: med["live"][k] / med["session-9"][k]
                                      for k in ("makespan", "cpu")}}
            for m, v in med.items():
                log(f"{name:7s} {m:10s} lag median {v['lag_median'] * 1e3:7.2f} ms, p90 "
                    f"{v['lag_p90'] * 1e3:7.2f}, max {v['lag_max'] * 1e3:7.2f}; makespan "
                    f"{v['makespan'] * 1e3:7.1f} ms, CPU {v['cpu'] * 1e3:7.1f} ms "
                    f"({v['tasks']:.0f} tasks, {v['taken_early']:.0f} taken early)")
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
