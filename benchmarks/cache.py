"""Benchmarks of the run store (journal + result cache).  Prints JSON.

    .venv/bin/python benchmarks/cache.py [--json benchmarks/cache.json] [--quick]

Three measurements, each as a ratio or a budget so the machine's speed cancels out:

* ``cached_rerun``: a 1,000-task layered workflow, run once to fill the store, then run
  again fully cached; end to end (graph building, key computation, lookups, loading the
  stored values, journal) must stay under 0.5 s.
* ``overhead``: bare anyio (a task group spawning 10,000 no-op coroutines) against nbflow
  running 10,000 async no-op tasks as a chain and as a fan-out/fan-in with the journal and
  the cache on (cold: a fresh store per sample, so every task misses, is hashed, stored and
  journaled); budget: at most 3x the bare anyio time.  The same with the store off is
  reported for reference.  Each no-op gets its index, so no two tasks share a cache key.
* ``cold_1mb``: a workflow whose 16 tasks each produce a ~1 MB DataFrame, run with caching
  on (every result hashed, serialised, written, fsynced) and off; the ratio is reported.

Every sample uses a fresh ``NBFLOW_HOME`` in a temporary directory (unless stated).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shapes import chain, fan, layered

import nbflow as nf


async def anoop(*deps: object) -> None:
    return None


@nf.task
async def noop(i: int, *deps: object) -> None:
    return None


@nf.task
def node(i: int, *deps: int) -> int:
    return i + sum(deps) % 1000


@nf.task
def frame(i: int, *deps: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(i)
    return pd.DataFrame(rng.random((16_384, 8)), columns=list("abcdefgh"))  # 1 MiB of float64


def fresh_home() -> tempfile.TemporaryDirectory[str]:
    d = tempfile.TemporaryDirectory(prefix="nbflow-bench-")
    os.environ["NBFLOW_HOME"] = str(Path(d.name) / "store")
    return d


def build(task: Any, parents: list[list[int]], name: str) -> nf.Workflow:
    with nf.Workflow(name) as wf:
        refs: list[Any] = []
        for i, ps in enumerate(parents):
            refs.append(task(i, *[refs[p] for p in ps]))
    return wf


def timed(fn: Any) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bare_anyio(n: int) -> float:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(anoop)

    return timed(lambda: anyio.run(main))


def run_checked(wf: nf.Workflow, **kw: Any) -> nf.Run:
    run = wf.run(**kw)
    if run.status != "completed":
        raise RuntimeError(f"benchmark run ended {run.status}")
    return run


def cached_rerun(n: int, samples: int) -> dict[str, Any]:
    parents = layered(n, seed=1, layers=20)
    with fresh_home():
        cold = timed(lambda: run_checked(build(node, parents, "rerun")))
        times = []
        for _ in range(samples):
            def again() -> None:
                run = run_checked(build(node, parents, "rerun"))
                if not run.tasks["cached"].all():
                    raise RuntimeError("the re-run was not fully cached")
            times.append(timed(again))
    med = statistics.median(times)
    return {"tasks": n, "cold_s": cold, "cached_median_s": med, "cached_samples_s": times,
            "budget_s": 0.5, "ok": med < 0.5}


def overhead(n: int, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": n}
    bare = [bare_anyio(n) for _ in range(samples)]
    out["bare_anyio_median_s"] = statistics.median(bare)
    for shape, parents in (("chain", chain(n)), ("fan", fan(n))):
        on, off = [], []
        for _ in range(samples):
            with fresh_home():
                on.append(timed(lambda p=parents: run_checked(build(noop, p, "ovh"))))
            os.environ["NBFLOW_STORE"] = "off"
            try:
                off.append(timed(lambda p=parents: run_checked(build(noop, p, "ovh"), cache=False)))
            finally:
                del os.environ["NBFLOW_STORE"]
        ratio = statistics.median(on) / out["bare_anyio_median_s"]
        out[shape] = {"store_on_median_s": statistics.median(on),
                      "store_off_median_s": statistics.median(off),
                      "ratio_store_on_vs_bare": ratio,
                      "ratio_store_off_vs_bare": statistics.median(off) / out["bare_anyio_median_s"],
                      "us_per_task_store_on": statistics.median(on) / n * 1e6,
                      "budget_ratio": 3.0, "ok": ratio <= 3.0}
    return out


def cold_1mb(n: int, samples: int) -> dict[str, Any]:
    parents = [[]] + [[i - 1] for i in range(1, n)]  # a chain: each task waits for the last
    on, off = [], []
    for _ in range(samples):
        with fresh_home():
            on.append(timed(lambda: run_checked(build(frame, parents, "mb"))))
        with fresh_home():
            off.append(timed(lambda: run_checked(build(frame, parents, "mb"), cache=False)))
    return {"tasks": n, "result_bytes": 16_384 * 8 * 8, "cache_on_median_s": statistics.median(on),
            "cache_off_median_s": statistics.median(off),
            "ratio_on_vs_off": statistics.median(on) / statistics.median(off)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--quick", action="store_true", help="fewer samples (a smoke test)")
    args = p.parse_args(argv)
    samples = 2 if args.quick else 5
    t0 = time.perf_counter()
    before = os.environ.get("NBFLOW_HOME")
    try:
        results = {
            "cached_rerun": cached_rerun(1000, samples),
            "overhead": overhead(10_000, samples),
            "cold_1mb": cold_1mb(16, samples),
        }
    finally:
        if before is None:
            os.environ.pop("NBFLOW_HOME", None)
        else:
            os.environ["NBFLOW_HOME"] = before
    results["machine"] = {"python": sys.version.split()[0], "platform": platform.platform(),
                          "cpus": os.cpu_count(), "nbflow": nf.__version__,
                          "seconds": time.perf_counter() - t0}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
