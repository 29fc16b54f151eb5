"""A Dask run's chain links: how long the next task waits once its input is made.

On a ``LocalCluster`` Dask's scheduler runs on the client's IO loop, in this process, and
shares its GIL with nbflow's run thread.  This script reads, from the workers' task stream,
when each task computed, and reports per run: the first compute's start and the last one's
end (from the call), the median gap between two tasks that ran one after the other on a
worker (a chain's link: input made -> next task starts), the makespan (value in hand) and
this process's CPU.  Variants, alternated on one cluster:

- ``dask``: the graph as ``dask.delayed``, computed by Dask;
- ``nbflow``: nbflow's defaults (placement ``locality``);
- ``nbflow-s8``: with session 9's changes switched off (:func:`locality.session_8`);
- ``nbflow-held-back``: a bounding experiment: the scheduler plugin holds every completion
  nobody holds a future for until a task the run holds starts or ends (a window of an
  hour), so the client does (almost) nothing while the cluster computes.  If its links are Dask's, the
  delay is the client's work per completion in the scheduler's process.

Usage::

    .venv/bin/python benchmarks/locality_links.py --workloads chains,fan --repeat 15 \
        --json benchmarks/locality-links.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, delayed_graph, session_8, trace_spec
else:
    import _harness
    from locality import WORKLOADS, delayed_graph, session_8, trace_spec

VARIANTS = ["dask", "nbflow", "nbflow-s8", "nbflow-held-back"]


def links(stream: list[dict[str, Any]], t0: float) -> dict[str, float]:
    """First start, last end (from ``t0``) and the median gap between consecutive tasks
    of a worker, from Dask's task stream."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for rec in stream:
        if str(rec.get("key", "")).startswith("nbflow-aux"):
            continue
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute":
                by_worker.setdefault(rec["worker"], []).append((ss["start"], ss["stop"]))
    gaps, spans = [], []
    for recs in by_worker.values():
        recs.sort()
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(recs)]
        spans += recs
    return {"first compute start": min(s for s, _ in spans) - t0,
            "last compute end": max(e for _, e in spans) - t0,
            "median link gap": statistics.median(gaps) if gaps else float("nan")}


@contextlib.contextmanager
def held_back(client: Any) -> Iterator[None]:
    from nbflow.engine.backends.dask_plugin import set_reporting

    was, old = client.run_on_scheduler(set_reporting, on=True, window=3600.0)
    try:
        yield
    finally:
        client.run_on_scheduler(set_reporting, on=was, window=old)


def sample_nbflow(client: Any, spec: list[Any], variant: str) -> dict[str, float]:
    from distributed import get_task_stream

    from nbflow import locality

    wf, end = trace_spec("locality-links", spec)
    how = (session_8(client) if variant == "nbflow-s8" else held_back(client)
           if variant == "nbflow-held-back" else contextlib.nullcontext())
    with how, get_task_stream(client=client) as ts, locality.placement("locality"):
        t0, cpu0 = time.time(), time.process_time()
        run = wf.run(backend=client, cache=False)
        run[end]
        t1, cpu = time.time(), time.process_time() - cpu0
    return {"makespan": t1 - t0, "client process CPU": cpu, **links(ts.data, t0)}


def sample_dask(client: Any, spec: list[Any]) -> dict[str, float]:
    from distributed import get_task_stream

    nodes = delayed_graph(spec)
    with get_task_stream(client=client) as ts:
        t0, cpu0 = time.time(), time.process_time()
        client.compute(nodes["end"]).result()
        t1, cpu = time.time(), time.process_time() - cpu0
    return {"makespan": t1 - t0, "client process CPU": cpu, **links(ts.data, t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="chains,fan")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown --variants {unknown}; choose from {VARIANTS}")
    log = _harness.progress("links")
    doc: dict[str, Any] = {"benchmark": "locality_links", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg(), "workloads": {}}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers: dict[str, Callable[[], dict[str, float]]] = {
                v: (lambda v=v, spec=spec: sample_dask(client, spec) if v == "dask"
                    else sample_nbflow(client, spec, v)) for v in variants}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {v: {k: statistics.median(s[k] for s in ss) for k in ss[0]}
                   for v, ss in got.items()}
            doc["workloads"][name] = {"medians": med, "samples": got}
            for v, m in med.items():
                log(f"{name} {v:18s} " + ", ".join(f"{k} {x * 1e3:.1f} ms" for k, x in m.items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
