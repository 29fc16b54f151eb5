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

**fanout-notebook-value** (``--case fanout-notebook-value``): one value made in the
notebook (a numpy array, a DataFrame; ``--sizes``, 100 MB by default) is the argument of
``--fanout`` (8) process tasks.  Three systems, alternated: ``pipe`` (plain pickles),
``shm-per-call`` (shared memory, but the value copied into a new segment for every call:
how the backend worked before values of the run's process were kept once per run) and
``shm`` (today: one copy, then by reference).  Per system: the run's wall time, the median
task duration, bytes through the pipe, copied into shared memory and handed on by
reference, and the bytes ``run.transfers`` counts.

Usage::

    python benchmarks/process_transfer.py [--sizes 1,10,100] [--repeat 3] [--json OUT]
    python benchmarks/process_transfer.py --case fanout-notebook-value [--sizes 100] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
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


FANOUT_SYSTEMS = ("shm", "shm-per-call", "pipe")


def peek_k(v: Any, k: int) -> float:
    return float(len(v)) + k


@contextlib.contextmanager
def per_call_copies() -> Iterator[None]:
    """The backend as it was before: large values of this process copied per call."""
    from nbflow.engine.backends import shm

    original = shm.Packer

    class PerCall(original):  # type: ignore[misc, valid-type]
        def __init__(self, prefix: str, threshold: int, registry: Any = None,
                     kept: Any = None) -> None:
            super().__init__(prefix, threshold, registry, None)

    shm.Packer = PerCall  # type: ignore[misc]
    try:
        yield
    finally:
        shm.Packer = original  # type: ignore[misc]


def fanout_sample(nf: Any, value: Any, system: str, fanout: int) -> dict[str, Any]:
    os.environ["NBFLOW_PROCESS_TRANSFER"] = "pipe" if system == "pipe" else "shm"
    peeker = nf.task(name="peek", executor="process")(peek_k)
    with nf.Workflow(f"fanout-notebook-value-{system}") as wf:
        for k in range(fanout):
            peeker(value, k)
    ctx = per_call_copies() if system == "shm-per-call" else contextlib.nullcontext()
    with ctx:
        t0 = time.perf_counter()
        run = wf.run(backend="process", workers=1, cache=False)
        wall = time.perf_counter() - t0
    stats = dict(run.backends["process"].stats)
    t = run.transfers
    out = {"wall_s": wall, **stats,
           "task_s": float(run.tasks["duration_s"].median()),
           "edge_bytes_counted": int(t.loc[t["consumer"].notna(), "bytes"].sum())}
    del run, t
    return out


def fanout_case(nf: Any, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    sizes = [int(float(s) * MB) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    results: list[dict[str, Any]] = []
    targets: dict[str, Any] = {}
    for kind in kinds:
        for size in sizes:
            value = make_value(kind, size)
            samplers = {sy: (lambda sy=sy, v=value: fanout_sample(nf, v, sy, args.fanout))
                        for sy in FANOUT_SYSTEMS}
            for sy in FANOUT_SYSTEMS:  # warm-up: the forkserver, imports, page cache
                fanout_sample(nf, make_value(kind, 8), sy, 2)
            log(f"fanout-notebook-value/{kind}/{size // MB}MB: {len(samplers)} systems x {args.repeat}")
            got = _harness.alternate(samplers, args.repeat, log=log)
            row: dict[str, Any] = {"case": "fanout-notebook-value", "kind": kind, "mb": size / MB,
                                   "tasks": args.fanout}
            for sy in FANOUT_SYSTEMS:
                xs = got[sy]
                last = xs[-1]
                row[sy] = {"wall_median_s": statistics.median(x["wall_s"] for x in xs),
                           "wall_samples_s": [x["wall_s"] for x in xs],
                           "task_median_s": statistics.median(x["task_s"] for x in xs),
                           **{k: last[k] for k in ("pipe_bytes", "shm_copied_bytes",
                                                   "shm_shared_bytes", "oob_buffers",
                                                   "edge_bytes_counted")}}
            row["wall_shm_over_per_call"] = _harness.ratio(row["shm"]["wall_median_s"],
                                                            row["shm-per-call"]["wall_median_s"])
            row["wall_shm_over_pipe"] = _harness.ratio(row["shm"]["wall_median_s"],
                                                       row["pipe"]["wall_median_s"])
            results.append(row)
            name = f"fanout-notebook-value/{kind}/{size // MB}MB"
            log(f"{name}: wall shm {row['shm']['wall_median_s']:.2f} s, per-call "
                f"{row['shm-per-call']['wall_median_s']:.2f} s, pipe {row['pipe']['wall_median_s']:.2f} s")
            targets[f"{name} copied into shared memory once"] = _harness.target(
                float(row["shm"]["shm_copied_bytes"]) / max(1, row["shm-per-call"]["shm_copied_bytes"]),
                1.0 / args.fanout + 0.01, "<=")
            del value
    return {"results": results, "targets": targets,
            "config": {"case": "fanout-notebook-value", "sizes_mb": [s / MB for s in sizes],
                       "kinds": kinds, "tasks": args.fanout, "repeat": args.repeat, "workers": 1}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,10,100", help="value sizes in MB")
    ap.add_argument("--shapes", default="chain,fanout")
    ap.add_argument("--kinds", default="numpy,pandas")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--case", default="shapes", choices=("shapes", "fanout-notebook-value"))
    ap.add_argument("--fanout", type=int, default=8, help="tasks sent the notebook value")
    args = ap.parse_args(argv)
    log = _harness.progress("process_transfer")
    nf = _harness.import_nbflow()
    if args.case == "fanout-notebook-value":
        if args.sizes == ap.get_default("sizes"):
            args.sizes = "100"
        before = os.environ.get("NBFLOW_PROCESS_TRANSFER")
        with _harness.nbflow_home(replace=True):
            try:
                got = fanout_case(nf, args, log)
            finally:
                if before is None:
                    os.environ.pop("NBFLOW_PROCESS_TRANSFER", None)
                else:
                    os.environ["NBFLOW_PROCESS_TRANSFER"] = before
        doc = {"benchmark": "process_transfer",
               "machine": _harness.machine_info(getattr(nf, "__version__", None)),
               "load_average_at_end": os.getloadavg(),
               "statistic": "median over repeats; systems alternated round-robin in one process",
               **got, "all_met": all(t["met"] for t in got["targets"].values())}
        _harness.emit_json(doc, args.json)
        return 0
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
