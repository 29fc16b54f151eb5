"""How the scheduler orders a batch of nbflow's Dask tasks: ``dask.order`` against
submission order, alternated with plain Dask, on the locality benchmark's workloads.

nbflow sends the Dask tasks it submits in one turn of its event loop as one graph
(``nbflow.engine.backends.dask_batch``).  The scheduler can order that graph as it orders
any (``dask.order``: one chain to its end before the next, the critical path first), or
take the tasks in the order nbflow submitted them.  ``dask_batch.DASK_ORDER`` switches
between the two; this script alternates both with ``client.compute`` of the same graph
on a warm 4-worker ``LocalCluster``, and records makespan and the process's CPU time
(medians), and the load average before and after.

Usage::

    .venv/bin/python benchmarks/dask_order.py --workloads trace,chains --repeat 4 \
        --json benchmarks/dask_order.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, run_dask, trace_spec
else:
    import _harness
    from locality import WORKLOADS, run_dask, trace_spec


def run_nbflow(client: Any, spec: list[Any], dask_order: bool) -> dict[str, float]:
    from nbflow.engine.backends import dask_batch

    dask_batch.DASK_ORDER = dask_order
    try:
        wf, end = trace_spec("dask-order", spec)
        t0, cpu0 = time.perf_counter(), time.process_time()
        run = wf.run(backend=client, cache=False)
        run[end]
        return {"makespan_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0}
    finally:
        dask_batch.DASK_ORDER = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="trace,chains")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask_order")
    doc: dict[str, Any] = {"benchmark": "dask_order", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg(), "workloads": {}}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {"dask-order": lambda spec=spec: run_nbflow(client, spec, True),
                        "submission-order": lambda spec=spec: run_nbflow(client, spec, False),
                        "dask": lambda spec=spec: run_dask(client, spec)}
            _harness.alternate(samplers, 1)  # (warm-up: imports, history for placement)
            got = _harness.alternate(samplers, args.repeat)
            doc["workloads"][name] = {
                m: {"makespan_s": statistics.median(s["makespan_s"] for s in ss),
                    "cpu_s": statistics.median(s["cpu_s"] for s in ss),
                    "samples_makespan_s": [s["makespan_s"] for s in ss]}
                for m, ss in got.items()}
            log(f"{name}: " + ", ".join(f"{m} {v['makespan_s']:.2f}s cpu {v['cpu_s']:.2f}s"
                                        for m, v in doc["workloads"][name].items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
