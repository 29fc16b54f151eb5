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

Every sample uses a fresh ``NBFLOW_HOME`` in a temporary directory (unless stated).  The
systems compared in one measurement are sampled round-robin, the starting one rotated from
repeat to repeat, with ``gc.collect()`` before each sample; figures are medians.  Timing,
machine info and JSON output come from ``_harness.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
from _harness import timed
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


def fresh_home() -> Any:
    """A new, empty run store for the duration of a ``with`` block."""
    return _harness.nbflow_home(replace=True)


def build(task: Any, parents: list[list[int]], name: str) -> nf.Workflow:
    with nf.Workflow(name) as wf:
        refs: list[Any] = []
        for i, ps in enumerate(parents):
            refs.append(task(i, *[refs[p] for p in ps]))
    return wf


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


def _store_off(fn: Any) -> float:
    """``timed(fn)`` with the run store switched off (no journal, no cache)."""
    os.environ["NBFLOW_STORE"] = "off"
    try:
        return timed(fn)
    finally:
        del os.environ["NBFLOW_STORE"]


def _store_on(fn: Any) -> float:
    """``timed(fn)`` on a fresh, empty run store (every task misses, is hashed and stored)."""
    with fresh_home():
        return timed(fn)


def overhead(n: int, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": n}
    shapes = {"chain": chain(n), "fan": fan(n)}
    samplers = {"bare": lambda: bare_anyio(n)}
    for shape, parents in shapes.items():
        samplers[f"{shape}.on"] = lambda p=parents: _store_on(lambda: run_checked(build(noop, p, "ovh")))
        samplers[f"{shape}.off"] = lambda p=parents: _store_off(
            lambda: run_checked(build(noop, p, "ovh"), cache=False))
    times = _harness.alternate(samplers, samples)
    bare = out["bare_anyio_median_s"] = statistics.median(times["bare"])
    for shape in shapes:
        on, off = statistics.median(times[f"{shape}.on"]), statistics.median(times[f"{shape}.off"])
        ratio = _harness.ratio(on, bare)
        out[shape] = {"store_on_median_s": on,
                      "store_off_median_s": off,
                      "ratio_store_on_vs_bare": ratio,
                      "ratio_store_off_vs_bare": _harness.ratio(off, bare),
                      "us_per_task_store_on": on / n * 1e6,
                      "budget_ratio": 3.0, "ok": _harness.meets(ratio, 3.0, "<=")}
    return out


def cold_1mb(n: int, samples: int) -> dict[str, Any]:
    parents = [[]] + [[i - 1] for i in range(1, n)]  # a chain: each task waits for the last
    times = _harness.alternate({
        "on": lambda: _store_on(lambda: run_checked(build(frame, parents, "mb"))),
        "off": lambda: _store_on(lambda: run_checked(build(frame, parents, "mb"), cache=False)),
    }, samples)
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    return {"tasks": n, "result_bytes": 16_384 * 8 * 8, "cache_on_median_s": on,
            "cache_off_median_s": off, "ratio_on_vs_off": _harness.ratio(on, off)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--quick", action="store_true", help="fewer samples (a smoke test)")
    args = p.parse_args(argv)
    samples = 2 if args.quick else 5
    t0 = time.perf_counter()
    results: dict[str, Any] = {  # each sample makes (and removes) its own NBFLOW_HOME
        "cached_rerun": cached_rerun(1000, samples),
        "overhead": overhead(10_000, samples),
        "cold_1mb": cold_1mb(16, samples),
    }
    results["machine"] = {**_harness.machine_info(nf.__version__), "cpus": os.cpu_count(),
                          "seconds": time.perf_counter() - t0}
    _harness.emit_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
