"""Memory of a notebook cell run again: is a dropped run's memory given back at once?

The cell of the defect report, run ``--iterations`` times in one fresh process: a workflow
of ``--chains`` chains, each a ``make`` of ``--mb`` MB of float64 and four ``inc`` steps
(so a run holds ``chains * 5 * mb`` MB of results), run with ``cache=False``; then the
run, the workflow and the Refs are dropped, as re-running a cell does.  Two systems,
alternated over ``--repeat`` fresh processes each:

* ``refcount``: nothing else happens: the memory comes back only if reference counting
  frees it (the collector runs when its allocation counts say so, as in a notebook);
* ``collect``: ``gc.collect()`` after each drop: what a full collection gives back, the
  floor.

Figures, per system: the most memory live after a drop (``tracemalloc``, which numpy
reports its arrays' data to: the bytes still held, not what the allocator keeps), and the
peak RSS; the ratio of the live peaks refcount / collect (target ≤ 1.10: re-running costs
nothing more than a full collection would leave).  ``nf.last_run()`` keeps the latest run,
so one run's results are live after a drop in both systems.  Memory, not time, so the load of
the machine does not move it.  ``--nbflow PATH`` measures another checkout of nbflow (e.g.
the code before the fix).

    .venv/bin/python benchmarks/run_memory.py --json benchmarks/run_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from statistics import median
from typing import Any

import _harness

CHILD = r"""
import gc, json, sys, tracemalloc
import numpy as np, psutil
import nbflow as nf

tracemalloc.start()  # (numpy reports its arrays' data to it: live bytes, not what malloc keeps)

iterations, chains, mb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
collect = sys.argv[4] == "collect"

@nf.task
def make(n):
    return np.ones(n)

@nf.task
def inc(a):
    return a + 1

p = psutil.Process()
rss, live = [], []
for i in range(iterations):
    with nf.Workflow("memx") as wf:
        for c in range(chains):
            r = make(int(mb * 1e6) // 8)
            for _ in range(4):
                r = inc(r)
    run = wf.run(cache=False)
    del run, wf, r
    if collect:
        gc.collect()
    rss.append(p.memory_info().rss)
    live.append(tracemalloc.get_traced_memory()[0])
print(json.dumps({"rss": rss, "live": live, "nbflow": nf.__file__}))
"""


def sample(system: str, args: argparse.Namespace, home: str) -> dict[str, Any]:
    env = dict(os.environ, NBFLOW_HOME=home)
    if args.nbflow:
        env["PYTHONPATH"] = args.nbflow
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.iterations), str(args.chains), str(args.mb), system],
        capture_output=True, text=True, env=env, timeout=600, check=True,
        cwd=home,  # (not the checkout: ``python -c`` imports from the working directory first)
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    rss, live = out["rss"], out["live"]
    return {"live_mb": [round(b / 1e6, 1) for b in live], "peak_live_mb": round(max(live) / 1e6, 1),
            "rss_mb": [round(b / 1e6, 1) for b in rss], "growth_mb": round((max(rss) - rss[0]) / 1e6, 1),
            "peak_mb": round(max(rss) / 1e6, 1), "nbflow": out["nbflow"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--mb", type=float, default=20.0, help="MB per array (the report's: 20)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--nbflow", default=None, help="a directory holding another nbflow package")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("run_memory")
    nf = _harness.import_nbflow()
    systems = ["refcount", "collect"]
    samples: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    with tempfile.TemporaryDirectory() as home:
        for r, order in _harness.rotations(systems, args.repeat):
            for system in order:
                s = sample(system, args, home)
                samples[system].append(s)
                log(f"repeat {r} {system}: live after each drop up to {s['peak_live_mb']} MB; "
                    f"RSS growth {s['growth_mb']} MB, peak {s['peak_mb']} MB")
    live = {s: median(x["peak_live_mb"] for x in samples[s]) for s in systems}
    peak = {s: median(x["peak_mb"] for x in samples[s]) for s in systems}
    growth = {s: median(x["growth_mb"] for x in samples[s]) for s in systems}
    value = _harness.ratio(live["refcount"], live["collect"])
    _harness.emit_json({
        "benchmark": "run_memory",
        "machine": _harness.machine_info(getattr(nf, "__version__", None)),
        "load_average": os.getloadavg(),
        "params": vars(args),
        "run_results_mb": args.chains * 5 * args.mb,
        "peak_live_mb": live,
        "peak_mb": peak,
        "growth_mb": growth,
        "peak_live_refcount_over_collect": _harness.target(value, 1.10, "<="),
        "peak_rss_refcount_over_collect": _harness.ratio(peak["refcount"], peak["collect"]),
        "samples": samples,
    }, args.json)


if __name__ == "__main__":
    main()
