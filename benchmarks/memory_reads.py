"""What a Dask run's preparation spends on predicted memory: every peak read, or only the
peaks that could be demanded (``predicted_peaks(at_least=MIN_BYTES)``), alternated.

A ``LocalCluster`` of threads (its workers record their process's peak RSS, as Dask workers
do) runs the *fan* workflow of ``benchmarks/locality.py`` ``--runs`` times, then the two
reads are timed in turn ``--repeat`` times each, through one kept connection as in a run's
preparation (``journal.one_reader``): the CPU of this thread per read (median, ms), the rows
that came to Python, and whether both give the same demands.

Usage::

    .venv/bin/python benchmarks/memory_reads.py --runs 21 --repeat 300 --json benchmarks/memory-reads.json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    from nbflow import locality
    from nbflow.predict import memory
    from nbflow.store.journal import one_reader
    from nbflow.store.store import get_store

    log = _harness.progress("memory-reads")
    doc: dict[str, Any] = {"benchmark": "memory_reads", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg()}
    with _harness.nbflow_home():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                               dashboard_address=None)
        client = Client(cluster, set_as_default=False)
        try:
            spec = WORKLOADS["fan"]()
            for _ in range(args.runs):
                wf, end = trace_spec("memory-reads", spec)
                with locality.placement("locality"):
                    wf.run(backend=client, cache=False)[end]
        finally:
            client.close()
            cluster.close()
        store = get_store()
        store.journal.flush()
        reads = {"every peak": lambda: memory.predicted_peaks("memory-reads", "x"),
                 "peaks that could be demanded": lambda: memory.predicted_peaks(
                     "memory-reads", "x", at_least=memory.MIN_BYTES)}
        cpu: dict[str, list[float]] = {k: [] for k in reads}
        with one_reader():
            for _ in range(args.repeat):
                for name, read in reads.items():
                    c0 = time.thread_time()
                    read()
                    cpu[name].append(time.thread_time() - c0)
            asked = ("memory-reads", "x", memory.RECENT_RUNS)
            rows = {"every peak": len(store.journal.query(memory._SQL, asked)),
                    "peaks that could be demanded": len(store.journal.query(
                        memory._SQL_AT_LEAST, (*asked, memory.MIN_BYTES)))}
            got = {k: read() for k, read in reads.items()}
    demands = {k: {n: p for n, p in v.items() if p >= memory.MIN_BYTES} for k, v in got.items()}
    doc["results"] = {k: {"cpu_ms_median": statistics.median(v) * 1e3, "rows": rows[k]}
                      for k, v in cpu.items()}
    doc["same_demands"] = len({repr(sorted(d.items())) for d in demands.values()}) == 1
    doc["load_after"] = os.getloadavg()
    for k, r in doc["results"].items():
        log(f"{k}: {r['cpu_ms_median']:.3f} ms CPU, {r['rows']} rows")
    log(f"same demands: {doc['same_demands']}; load {doc['load_before']} -> {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
