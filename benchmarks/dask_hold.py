"""What holding every intermediate result costs plain Dask (no nbflow involved).

nbflow keeps every Dask result of a run on the cluster by default, so that ``run[ref]``
works for any task; ``dask.delayed`` computed with ``client.compute(final)`` frees each
intermediate result as soon as its consumers have run.  This script runs the workloads of
``benchmarks/locality.py`` as plain ``dask.delayed`` graphs in both ways on the same
``LocalCluster`` (4 single-thread worker processes), alternated, and reports the median
makespans: ``end-only`` computes the final node (Dask frees intermediates), ``hold-all``
computes every node at once and keeps all the futures until the final one is in hand (what
nbflow's default does to the workers).

Usage::

    .venv/bin/python benchmarks/dask_hold.py --workloads chains,fan --repeat 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, delayed_graph
else:
    import _harness
    from locality import WORKLOADS, delayed_graph


def once(client: Any, spec: list[Any], hold: bool) -> float:

    nodes = delayed_graph(spec)
    t0 = time.perf_counter()
    if hold:
        futures = client.compute(list(nodes.values()))
        futures[-1].result()  # the final node is the last one of every workload
        seconds = time.perf_counter() - t0
        client.cancel(futures)
    else:
        client.compute(nodes["end"]).result()
        seconds = time.perf_counter() - t0
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="chains,fan")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask_hold")
    doc: dict[str, Any] = {"benchmark": "dask_hold", "machine": _harness.machine_info(),
                           "workloads": {}}
    with _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {"end-only": lambda spec=spec: once(client, spec, False),
                        "hold-all": lambda spec=spec: once(client, spec, True)}
            _harness.alternate(samplers, 1)  # warm-up
            got = _harness.alternate(samplers, args.repeat)
            med = {k: statistics.median(v) for k, v in got.items()}
            doc["workloads"][name] = {"median_s": med, "samples_s": got,
                                      "hold_all_vs_end_only": med["hold-all"] / med["end-only"]}
            log(f"{name}: end-only {med['end-only']:.2f}s, hold-all {med['hold-all']:.2f}s")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
