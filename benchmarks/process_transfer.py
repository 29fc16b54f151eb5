"""Large values between process tasks: shared memory (out-of-band pickle 5) against the pipe.

Two workflow shapes pass numpy arrays or pandas DataFrames of 1, 10 and 100 MB through the
process backend (``cache=False``; one worker process, so that no worker starts, and
imports numpy, in the middle of a measured run):

* **chain** — ``make -> step -> step -> step -> step``: each ``step`` returns its input, so
  every edge carries the whole value to a worker and the result back (4 edges);
* **fanout** — ``make -> 4 x peek``: every ``peek`` receives the value and returns a float
  (4 edges; the value goes out 4 times and comes back once).

Each configuration runs with ``NBFLOW_PROCESS_TRANSFER=shm`` (large buffers through
``/dev/shm``, the default) and ``=pipe`` (plain pickles through the pool's pipe, how the
backend worked before), alternated round-robin in one process so that the machine's load
hits both alike, after one warm-up run of each.  An edge's time is the duration of its
consumer task as the run records it (``run.tasks.duration_s``: pickling, the trip to the
worker, the call and the trip back); the same graph with 8-byte values gives the time of
an edge that carries nothing, and a configuration's **transfer time per edge** is the
median edge time minus that one, so pool start-up and scheduling cancel out.  Bytes come
from the backend's own counters: through the pipe, copied into shared memory, and handed
on by reference (no copy).

Targets (judged on the 10 and 100 MB configurations): shared memory at most half the
pipe's transfer time per edge; less than 1 % of the data through the pipe.

Usage::

    python benchmarks/process_transfer.py [--sizes 1,10,100] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

if __package__:
    from . import _harness
else:
    import _harness

MB = 1 << 20
EDGES = 4
MODES = ("shm", "pipe")


def make_value(kind: str, nbytes: int) -> Any:
    import numpy as np

    if kind == "numpy":
        return np.ones(max(1, nbytes // 8))
    import pandas as pd

    rows = max(1, nbytes // 32)  # four float64 columns
    return pd.DataFrame({c: np.full(rows, 1.0) for c in "abcd"})


def step(v: Any) -> Any:
    return v


def peek(v: Any) -> float:
    return float(len(v))


def build(nf: Any, shape: str, kind: str, nbytes: int) -> Any:
    make = nf.task(name="make", executor="process")(make_value)
    stepper = nf.task(executor="process")(step)
    peeker = nf.task(executor="process")(peek)
    with nf.Workflow(f"{shape}-{kind}-{nbytes}") as wf:
        x = make(kind, nbytes)
        if shape == "chain":
            for _ in range(EDGES):
                x = stepper(x)
        else:
            for _ in range(EDGES):
                peeker(x)
    return wf


def sample(nf: Any, shape: str, kind: str, nbytes: int, mode: str) -> dict[str, Any]:
    os.environ["NBFLOW_PROCESS_TRANSFER"] = mode
    wf = build(nf, shape, kind, nbytes)
    t0 = time.perf_counter()
    run = wf.run(backend="process", workers=1, cache=False)
    wall = time.perf_counter() - t0
    stats = dict(run.backends["process"].stats)
    tasks = run.tasks
    consumers = tasks[tasks["key"].str.startswith(("step", "peek"))]
    stats["edge_task_s"] = float(consumers["duration_s"].mean())  # send + run + send back
    t = run.transfers
    edge_rows = t[t["producer"].notna() & t["consumer"].notna()]
    out = {"wall_s": wall, **stats, "edge_bytes_counted": int(edge_rows["bytes"].sum()),
           "result_bytes_counted": int(t.loc[t["consumer"].isna(), "bytes"].sum())}
    del run, t, edge_rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="value sizes in MB")
    ap.add_argument("--shapes", default="chain,fanout")
    ap.add_argument("--kinds", default="numpy,pandas")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    log = _harness.progress("process_transfer")
    nf = _harness.import_nbflow()
    sizes = [int(float(s) * MB) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    kinds = args.kinds.split(",")
    results: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    before = os.environ.get("NBFLOW_PROCESS_TRANSFER")
    with _harness.nbflow_home(replace=True):
        try:
            for shape in shapes:
                for kind in kinds:
                    samplers = {}
                    for size in [8, *sizes]:
                        for mode in MODES:
                            samplers[f"{size}:{mode}"] = (
                                lambda sh=shape, k=kind, s=size, m=mode: sample(nf, sh, k, s, m))
                    for mode in MODES:  # warm-up: the forkserver, imports, page cache
                        sample(nf, shape, kind, 8, mode)
                    log(f"{shape}/{kind}: {len(samplers)} systems x {args.repeat}")
                    got = _harness.alternate(samplers, args.repeat, log=log)
                    empty = {m: statistics.median(x["edge_task_s"] for x in got[f"8:{m}"])
                             for m in MODES}
                    for size in sizes:
                        row: dict[str, Any] = {"shape": shape, "kind": kind, "mb": size / MB,
                                               "edges": EDGES}
                        for mode in MODES:
                            xs = got[f"{size}:{mode}"]
                            wall = statistics.median(x["wall_s"] for x in xs)
                            edge = statistics.median(x["edge_task_s"] for x in xs)
                            last = xs[-1]
                            row[mode] = {
                                "wall_median_s": wall,
                                "wall_samples_s": [x["wall_s"] for x in xs],
                                "edge_task_s": edge,
                                "edge_task_s_8_bytes": empty[mode],
                                "transfer_s_per_edge": max(0.0, edge - empty[mode]),
                                "pipe_bytes": last["pipe_bytes"],
                                "shm_copied_bytes": last["shm_copied_bytes"],
                                "shm_shared_bytes": last["shm_shared_bytes"],
                                "oob_buffers": last["oob_buffers"],
                                "edge_bytes_counted": last["edge_bytes_counted"],
                                "result_bytes_counted": last["result_bytes_counted"],
                            }
                        row["speedup_per_edge"] = _harness.ratio(
                            row["pipe"]["transfer_s_per_edge"], row["shm"]["transfer_s_per_edge"])
                        data = row["shm"]["edge_bytes_counted"] + row["shm"]["result_bytes_counted"]
                        row["shm_pipe_share"] = _harness.ratio(row["shm"]["pipe_bytes"], data)
                        results.append(row)
                        name = f"{shape}/{kind}/{size // MB}MB"
                        log(f"{name}: pipe {row['pipe']['transfer_s_per_edge'] * 1e3:.1f} ms/edge, "
                            f"shm {row['shm']['transfer_s_per_edge'] * 1e3:.1f} ms/edge")
                        if size >= 10 * MB:
                            targets[f"{name} shm/pipe time per edge"] = _harness.target(
                                _harness.ratio(row["shm"]["transfer_s_per_edge"],
                                               row["pipe"]["transfer_s_per_edge"]), 0.5, "<=")
                            targets[f"{name} share of data through the pipe"] = _harness.target(
                                row["shm_pipe_share"], 0.01, "<")
        finally:
            if before is None:
                os.environ.pop("NBFLOW_PROCESS_TRANSFER", None)
            else:
                os.environ["NBFLOW_PROCESS_TRANSFER"] = before
    load = os.getloadavg()
    doc = {
        "benchmark": "process_transfer",
        "machine": _harness.machine_info(getattr(nf, "__version__", None)),
        "load_average_at_end": load,
        "config": {"sizes_mb": [s / MB for s in sizes], "shapes": shapes, "kinds": kinds,
                   "repeat": args.repeat, "workers": 1, "edges": EDGES},
        "statistic": "median wall over repeats; systems alternated round-robin in one process",
        "results": results,
        "targets": targets,
        "all_met": all(t["met"] for t in targets.values()),
    }
    _harness.emit_json(doc, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
