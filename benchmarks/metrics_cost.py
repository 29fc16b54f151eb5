"""Cost of recording task metrics: 10k no-op tasks with metrics on, against metrics off.

Metrics (``nbflow/engine/metrics.py``: CPU time of thread/process tasks, input features)
are always on in nbflow.  *Off* here replaces the scheduler's metrics hook with one that
does nothing (``TaskMetrics.wrap`` returns the function, ``unwrap`` the value, ``row`` None), in the
same process, alternating on/off sample by sample so the machine's noise cancels.  Both
wall time and CPU time of the process (``time.process_time``: what this process itself
spent, unaffected by other processes on a shared machine) are reported; the budget is
judged on CPU time.  Each
sample builds and runs a fresh workflow of ``--n`` no-op tasks (each taking its parent's
result, so every task has an argument to extract features from) with ``cache=False``.

Target: metrics on costs at most 5% more per task than off (ratio on/off <= 1.05).

Usage::

    python benchmarks/metrics_cost.py [--n 10000] [--repeat 7] [--journal on|off] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _shapes import make  # noqa: E402

if __package__:
    from . import _harness
else:
    import _harness

BUDGET = 1.05


def noop(*deps: object) -> int:
    return 1


async def anoop(*deps: object) -> int:
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--shapes", default="chain,layered")
    ap.add_argument("--kinds", default="async,sync")
    ap.add_argument("--journal", choices=("on", "off"), default="on")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.journal == "off":
        os.environ["NBFLOW_STORE"] = "off"
    else:
        os.environ.setdefault("NBFLOW_HOME", tempfile.mkdtemp(prefix="nbflow-metrics-"))
    import nbflow as nf
    from nbflow.engine.metrics import TaskMetrics

    real_wrap, real_unwrap, real_row = TaskMetrics.wrap, TaskMetrics.unwrap, TaskMetrics.row

    def off_wrap(self: Any, i: int, fn: Any, executor: Any, a: Any, kw: Any) -> Any:
        return fn

    def off_unwrap(self: Any, i: int, value: Any) -> Any:
        return value

    def off_row(self: Any, i: int) -> Any:
        return None

    tasks = {"async": nf.task(anoop), "sync": nf.task(noop)}

    def sample(parents: list[list[int]], kind: str, on: bool) -> tuple[float, float]:
        TaskMetrics.wrap = real_wrap if on else off_wrap  # type: ignore[method-assign]
        TaskMetrics.unwrap = real_unwrap if on else off_unwrap  # type: ignore[method-assign]
        TaskMetrics.row = real_row if on else off_row  # type: ignore[method-assign]
        gc.collect()
        t0 = time.perf_counter()
        c0 = time.process_time()
        with nf.Workflow("metrics-cost") as wf:
            refs: list[Any] = []
            for ps in parents:
                refs.append(tasks[kind](*[refs[p] for p in ps]))
        run = wf.run(cache=False)
        dt = time.perf_counter() - t0
        dc = time.process_time() - c0
        if run.status != "completed":
            raise RuntimeError(f"run ended {run.status}")
        return dt, dc

    results = []
    for shape in args.shapes.split(","):
        parents = make(shape, args.n)
        for kind in args.kinds.split(","):
            sample(parents, kind, True)  # warm-up
            on, off = [], []
            for _ in range(args.repeat):
                off.append(sample(parents, kind, False))
                on.append(sample(parents, kind, True))
            m_on, m_off = statistics.median(w for w, _ in on), statistics.median(w for w, _ in off)
            c_on, c_off = statistics.median(c for _, c in on), statistics.median(c for _, c in off)
            row = {
                "shape": shape, "kind": kind, "n": args.n, "journal": args.journal,
                "wall_us_per_task_on": m_on / args.n * 1e6, "wall_us_per_task_off": m_off / args.n * 1e6,
                "wall_ratio_on_off": m_on / m_off,
                "cpu_us_per_task_on": c_on / args.n * 1e6, "cpu_us_per_task_off": c_off / args.n * 1e6,
                "cpu_ratio_on_off": c_on / c_off, "within_budget": c_on / c_off <= BUDGET,
            }
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    TaskMetrics.wrap, TaskMetrics.unwrap = real_wrap, real_unwrap  # type: ignore[method-assign]
    TaskMetrics.row = real_row  # type: ignore[method-assign]
    # The hook alone, timed in a tight loop (far less noisy than whole runs): what it adds
    # per task, against the per-task CPU cost of the runs above with the hook off.
    import timeit

    m = TaskMetrics()
    hook = {}
    for kind, executor in (("async", "async"), ("sync", "thread")):
        # What the scheduler does per task: wrap before the call, row() for the finishing
        # event (unwrap runs only for a process/Dask worker's envelope, never here).
        def one(executor: str = executor) -> None:
            f = m.wrap(7, noop, executor, (1,), None)
            if executor == "thread":
                f(1)  # the thread wrapper's own work: two thread_time() calls around the call
            m.row(7)
        reps = 200_000
        best = min(timeit.repeat(one, number=reps, repeat=5)) / reps
        base = statistics.median(r["cpu_us_per_task_off"] for r in results if r["kind"] == kind) \
            if any(r["kind"] == kind for r in results) else float("nan")
        hook[kind] = {"hook_us_per_task": best * 1e6, "run_cpu_us_per_task_off": base,
                      "hook_share": best * 1e6 / base, "within_budget": best * 1e6 / base <= BUDGET - 1}
    print(json.dumps(hook), file=sys.stderr)
    out = {"budget": BUDGET, "results": results, "hook_alone": hook}
    _harness.emit_json(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
