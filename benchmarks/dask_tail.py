"""A small Dask run's tail and its client process's CPU: this code against itself with
session 11's cuts (engineer C) switched off, and against plain Dask, in one invocation.

Each sample is one run of a workload of ``benchmarks/locality.py`` on a warm
``LocalCluster`` (4 single-thread worker processes; its scheduler is a thread of this
process), measured phase by phase as ``benchmarks/locality_phases.py`` does (its samplers
are reused: wall clock from the call, the value in hand, ``time.process_time`` of the whole
process, Dask's scheduler included).  Systems, alternated round-robin:

- ``nbflow``: this tree;
- ``nbflow-session-10``: the same tree with the cuts below switched off (:func:`session_10`);
- ``dask``: the same graph as ``dask.delayed``, ``client.compute(end).result()``.

The cuts switched off by ``session-10``:

- the result brought with the run's end is asked of the worker that holds it
  (``DaskBackend._from_holder``), not relayed by the scheduler's ``gather``;

Printed and written (``--json``): per system, medians of the makespan, the process's CPU,
when the engine was done, when ``wf.run`` returned, and the tail (engine done -> value in
hand); the makespan ratio to plain Dask; and the median of the per-repeat differences
``nbflow - nbflow-session-10`` (a paired figure: both ran in the same repeat).

Usage::

    .venv/bin/python benchmarks/dask_tail.py --workloads fan --repeat 15 --warmup 1 \
        --json benchmarks/dask-tail-s11c.json
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS
    from .locality_phases import sample_dask, sample_nbflow
else:
    import _harness
    from locality import WORKLOADS
    from locality_phases import sample_dask, sample_nbflow

FIGURES = ("result in hand (makespan)", "CPU of this process (all threads)", "first compute start",
           "last compute end", "engine done", "wait returns", "tail (engine done -> value in hand)",
           "result: prefetch arrived (begins at)")


@contextlib.contextmanager
def session_10() -> Iterator[None]:
    """This session's cuts (engineer C) switched off: the code's path as at the end of
    session 10, for a before/after in one invocation."""
    from nbflow.engine.backends import dask as dask_backend

    from_holder = dask_backend.DaskBackend._from_holder

    async def nowhere(self: Any, r: Any) -> None:  # (Dask's gather, through the scheduler)
        return None

    dask_backend.DaskBackend._from_holder = nowhere  # type: ignore[method-assign]
    try:
        yield
    finally:
        dask_backend.DaskBackend._from_holder = from_holder  # type: ignore[method-assign]


def _nbflow(client: Any, spec: list[Any], before: bool) -> dict[str, float]:
    with session_10() if before else contextlib.nullcontext():
        got = sample_nbflow(client, spec)
    got["tail (engine done -> value in hand)"] = got["result in hand (makespan)"] - got["engine done"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask_tail")
    doc: dict[str, Any] = {"benchmark": "dask_tail", "machine": _harness.machine_info(),
                           "workloads": {}, "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {"nbflow": lambda spec=spec: _nbflow(client, spec, False),
                        "nbflow-session-10": lambda spec=spec: _nbflow(client, spec, True),
                        "dask": lambda spec=spec: sample_dask(client, spec)}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {s: {k: statistics.median(x.get(k, math.nan) for x in xs) for k in FIGURES}
                   for s, xs in got.items()}
            dask_ms = med["dask"]["result in hand (makespan)"]
            paired = {k: statistics.median(a.get(k, math.nan) - b.get(k, math.nan)
                                           for a, b in zip(got["nbflow"], got["nbflow-session-10"],
                                                           strict=True))
                      for k in FIGURES}
            doc["workloads"][name] = {
                "medians_s": med, "paired_nbflow_minus_session_10_s": paired,
                "ratio_to_dask": {s: m["result in hand (makespan)"] / dask_ms for s, m in med.items()},
                "samples": got}
            log(f"{name}:")
            for k in FIGURES:
                row = "  ".join(f"{s} {med[s][k] * 1000:7.2f}" for s in med)
                log(f"  {k:40s} {row}   paired {paired[k] * 1000:+6.2f} ms")
            log("  ratio to dask: " + ", ".join(f"{s} {r:.3f}" for s, r in
                                               doc["workloads"][name]["ratio_to_dask"].items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
