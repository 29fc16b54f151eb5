"""Adaptive map batching: many tiny items through ``task.map``, against Dask.  Prints JSON.

    .venv/bin/python benchmarks/batching.py [--n 100000] [--repeat 3] [--json benchmarks/batching.json]
    .venv/bin/python benchmarks/batching.py --quick        # 5,000 items, 1 repeat (smoke run)
    .venv/bin/python benchmarks/batching.py --phases-only --loops 0   # nbflow's own cost per item, by phase

``--n`` items (default 100 000), each ~20 µs of pure-Python work (a spin on
``time.perf_counter``), go through:

* ``nbflow_adaptive``: ``work.map(items)`` (the default: adaptive chunks), thread backend;
* ``nbflow_unbatched``: ``work.map(items, batch=False)``: one thread hand-off per item;
* ``nbflow_fixed_N``: ``work.map(items, batch=N)`` for each ``--fixed`` size;
* ``nbflow_process``: the adaptive map on ``backend="process"`` (chunks go to worker
  processes, so both cores work; only with ``--process``);
* ``nbflow_on_loop_floor``: the same work as an ``async def`` task (runs on the event loop,
  no hand-off, never batched): nbflow's cost per ordinary task plus the work.  (It was the
  floor batching could approach while a batched item cost what an ordinary task costs;
  batched items are now cheaper: their checks, queueing and state events are per map or
  per chunk, so the adaptive map passes it);
* ``dask_bag``: ``db.from_sequence(items).map(f).compute()`` with Dask's defaults (about 100
  partitions; the multiprocessing scheduler);
* ``dask_delayed``: one ``dask.delayed`` call per item, ``dask.compute`` with the default
  (threaded) scheduler, at ``--delayed-n`` items (default 2 000: at 20 000 items one sample
  took 450 s here, 22 ms per item, so the full size is not feasible; the per-item figure
  is what compares).

``adaptive_phases_us_per_item`` splits one adaptive map (best of ``--repeat``) into its
phases: tracing, ``prepare`` (``nf.check`` and planning, before the first dispatch), the run
and reading the results, each in wall and CPU µs per item.

Every nbflow sample is end to end: tracing the map, the run and reading the results; every
Dask sample builds its collection and computes it.  For nbflow the run's execution phase
(``run.duration_s``: from the first dispatch to the end, without tracing and the checks
made before a run starts) is reported too, as ``run_phase``.  The run store is off
(``NBFLOW_STORE=off``) unless ``--store on``: these figures are the scheduler and the
batching, as in ``overhead.py``.  Systems are sampled round-robin (``_harness.alternate``)
and figures are medians; targets are ratios measured in the same run:

* unbatched / adaptive >= 5 (adaptive batching is at least 5x faster than no batching);
* dask_bag / adaptive > 1 (faster than Dask's bag with default partitioning).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness
from _harness import timed

nf = _harness.import_nbflow()
log = _harness.progress("batching")

WORK_S = 20e-6
LOOPS = 100  # iterations of spin's loop; calibrate() sets it to ~WORK_S of work


def spin(x: int) -> int:
    """~20 µs of pure-Python CPU work (holds the GIL, like most small Python functions).

    A fixed amount of work, not a wait for the clock: under contention for the GIL a
    clock-based spin would end early and make the item look cheaper than it is.
    """
    s = 0
    for k in range(LOOPS):
        s += k
    return x + 1 + s * 0


def calibrate() -> int:
    """Set LOOPS so that one spin() takes about WORK_S on this machine (best of 5)."""
    global LOOPS
    LOOPS = 1000
    best = min(timed_calls(200) for _ in range(5))
    LOOPS = max(1, round(1000 * WORK_S / best))
    return LOOPS


def timed_calls(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        spin(i)
    return (time.perf_counter() - t0) / n


work = nf.task(name="work")(spin)


async def _spin_on_loop(x: int) -> int:
    return spin(x)


# The same work as a coroutine task: it runs on the event loop with no hand-off at all, so
# its time is the work plus nbflow's per-task cost, the floor that batching can approach.
work_on_loop = nf.task(name="work_on_loop")(_spin_on_loop)


Sample = dict[str, float]  # "total": end to end; "run" (nbflow): the run's execution phase;
# "cpu" (nbflow): the process's CPU seconds over the sample (under load the steadier figure)


def nbflow_sampler(n: int, batch: Any, backend: str = "local", task: Any = work) -> Callable[[], Sample]:
    def sample() -> Sample:
        runs = []

        cpu: list[float] = []

        def go() -> None:
            c0 = time.process_time()
            items = list(range(n))
            with nf.Workflow("batching") as wf:
                ref = task.map(items, batch=batch)
            run = wf.run(backend=backend, cache=False)
            out = run[ref]
            assert len(out) == n and out[-1] == n, "wrong results"
            runs.append(run)
            cpu.append(time.process_time() - c0)

        total = timed(go)
        return {"total": total, "run": runs[0].duration_s, "cpu": cpu[0]}

    return sample


def dask_bag_sampler(n: int) -> Callable[[], Sample]:
    import dask.bag as db

    def sample() -> Sample:
        def go() -> None:
            out = db.from_sequence(list(range(n))).map(spin).compute()
            assert len(out) == n and out[-1] == n

        return {"total": timed(go)}

    return sample


def dask_delayed_sampler(n: int) -> Callable[[], Sample]:
    import dask

    def sample() -> Sample:
        def go() -> None:
            f = dask.delayed(spin, pure=False)
            out = dask.compute(*[f(i) for i in range(n)])
            assert len(out) == n and out[-1] == n

        return {"total": timed(go)}

    return sample


def trace_cost(n: int, repeat: int = 3) -> float:
    """µs per item to trace ``work.map(items)`` (the graph-building budget is 10 µs a call)."""
    items = list(range(n))

    def build() -> None:
        with nf.Workflow("batching"):
            work.map(items)

    return min(timed(build) for _ in range(repeat)) / n * 1e6


def phases(n: int, repeat: int = 3) -> dict[str, Any]:
    """µs per item of each phase of an adaptive map, end to end (the best of ``repeat``):
    ``trace`` (``work.map(items)``), ``prepare`` (``nf.check`` and planning the run: what
    ``wf.run`` does before the first dispatch), ``run`` (the run itself), ``read``
    (``run[ref]``).  Both the wall time and the process's CPU time (all its threads) are
    given: under load the CPU time is the steadier figure of the two.  ``collect_after`` is
    the full collection that frees the run's graph and records once nothing holds the run:
    outside the end-to-end samples (each starts after a collection), but a notebook pays it
    at some later moment.  ``--store on`` measures the same with the journal writing."""
    from nbflow.workflow import prepare, run_options

    items = list(range(n))
    best: dict[str, dict[str, float]] = {}
    prepared: list[float] = []  # prepare's CPU per item in each sample (history grows by a run each)
    for _ in range(repeat):
        wall, cpu = [time.perf_counter()], [time.process_time()]
        with nf.Workflow("batching") as wf:
            ref = work.map(items)
        _mark(wall, cpu)
        run = prepare(wf, run_options(wf, cache=False))
        _mark(wall, cpu)
        run.start_in_thread()
        run.wait()
        _mark(wall, cpu)
        out = run[ref]
        _mark(wall, cpu)
        assert len(out) == n
        # What the run leaves to the collector: the graph and its records, freed by a full
        # collection once nothing holds the run (not part of the end-to-end figures, which
        # start each sample after a collection; a notebook pays it at some later moment).
        del out, run, wf, ref
        nf.Workflow("empty").run(cache=False)  # (the newest run is kept as nf.last_run())
        gc.collect()
        _mark(wall, cpu)
        prepared.append(round((cpu[2] - cpu[1]) / n * 1e6, 2))
        for k, name in enumerate(("trace", "prepare", "run", "read", "collect_after")):
            for clock, ts in (("wall_us", wall), ("cpu_us", cpu)):
                v = (ts[k + 1] - ts[k]) / n * 1e6
                row = best.setdefault(name, {})
                row[clock] = min(row.get(clock, math.inf), v)
    best["total"] = {c: sum(best[p][c] for p in ("trace", "prepare", "run", "read"))
                     for c in ("wall_us", "cpu_us")}  # (collect_after is outside every sample)
    out: dict[str, Any] = {p: {c: round(v, 2) for c, v in row.items()} for p, row in best.items()}
    # The best prepare is usually the first sample's, with the least history; with the store
    # on, each later one reads the runs before it (a 100 000-item run each).
    out["prepare_cpu_us_each_sample"] = prepared
    return out


def _mark(wall: list[float], cpu: list[float]) -> None:
    wall.append(time.perf_counter())
    cpu.append(time.process_time())


def chunk_sizes(n: int) -> dict[str, Any]:
    """One adaptive run, to report how the chunk sizes evolved (not timed)."""
    with nf.Workflow("batching") as wf:
        work.map(list(range(n)))
    run = wf.run(cache=False)
    starts = run.tasks.sort_values("start")
    # Items of one chunk start together (one TaskStarted time per chunk).
    sizes = starts.groupby("start", sort=True).size().tolist()
    return {"chunks": len(sizes), "first_sizes": sizes[:12], "median_size": statistics.median(sizes)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="items in the map")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fixed", type=int, nargs="*", default=[100, 1000], help="fixed chunk sizes")
    p.add_argument("--delayed-n", type=int, default=2000, help="items for dask.delayed")
    p.add_argument("--process", action="store_true", help="also the adaptive map on backend='process'")
    p.add_argument("--store", choices=("off", "on"), default="off")
    p.add_argument("--quick", action="store_true", help="5,000 items, 1 repeat")
    p.add_argument("--json", dest="json_out", default=None, help="also write the JSON here")
    p.add_argument("--phases-only", action="store_true",
                   help="only the per-phase µs per item of an adaptive map (no other system)")
    p.add_argument("--loops", type=int, default=None,
                   help="iterations of the work loop instead of calibrating (0: no work, so the "
                        "figures are nbflow's own cost per item)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.repeat, args.delayed_n = 5_000, 1, 500
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.store == "off":
        os.environ["NBFLOW_STORE"] = "off"
    n = args.n
    delayed_n = min(args.delayed_n, n)
    samplers: dict[str, Callable[[], Sample]] = {
        "nbflow_adaptive": nbflow_sampler(n, None),
        "nbflow_unbatched": nbflow_sampler(n, False),
    }
    for size in args.fixed:
        samplers[f"nbflow_fixed_{size}"] = nbflow_sampler(n, size)
    if args.process:
        samplers["nbflow_process"] = nbflow_sampler(n, None, "process")
    samplers["nbflow_on_loop_floor"] = nbflow_sampler(n, None, task=work_on_loop)
    samplers["dask_bag"] = dask_bag_sampler(n)
    samplers["dask_delayed"] = dask_delayed_sampler(delayed_n)
    global LOOPS
    if args.loops is None:
        loops = calibrate()
    else:
        loops = LOOPS = max(0, args.loops)
    per_call = min(timed_calls(2000) for _ in range(3))
    if args.phases_only:
        log(f"spin: {loops} loops, {per_call * 1e6:.1f} µs per call; phases at n={n}, best of {args.repeat}")
        with _harness.nbflow_home():
            nbflow_sampler(500, None)()  # (warm-up)
            doc = {"machine": _harness.machine_info(),
                   "params": {"n": n, "spin_loops": loops, "spin_us_measured": per_call * 1e6,
                              "repeat": args.repeat, "argv": sys.argv[1:]},
                   "adaptive_phases_us_per_item": phases(n, repeat=max(1, args.repeat))}
        _harness.emit_json(doc, args.json_out)
        return 0
    log(f"spin: {loops} loops, {per_call * 1e6:.1f} µs per call")
    with _harness.nbflow_home():
        log(f"warm-up, then {args.repeat} repeat(s) of {len(samplers)} systems at n={n}")
        # Imports, first-call code paths and pools: outside the timed samples.
        for warm in (nbflow_sampler(500, None), nbflow_sampler(500, False), dask_bag_sampler(500),
                     dask_delayed_sampler(500)):
            warm()
        if args.process:
            nbflow_sampler(500, None, "process")()
        samples = _harness.alternate(samplers, args.repeat, log=log)
        sizes = chunk_sizes(n)
        trace_us = trace_cost(n)
        phase_us = phases(n, repeat=max(1, args.repeat))
        log(f"phases, µs per item: {phase_us}")
    results: dict[str, Any] = {}
    for name, xs in samples.items():
        items = delayed_n if name == "dask_delayed" else n
        results[name] = _harness.summarize([x["total"] for x in xs], items)
        results[name]["items"] = items
        if "run" in xs[0]:
            results[name]["run_phase"] = _harness.summarize([x["run"] for x in xs], items)
        if "cpu" in xs[0]:  # this process's CPU time over the sample, all its threads
            results[name]["cpu_us_per_item"] = round(statistics.median(x["cpu"] for x in xs) / items * 1e6, 2)
    med = {k: v["median_s"] for k, v in results.items()}
    per = {k: v["us_per_task"] for k, v in results.items()}
    run_med = {k: v["run_phase"]["median_s"] for k, v in results.items() if "run_phase" in v}
    targets = {
        "run_phase_unbatched_over_adaptive": _harness.target(
            _harness.ratio(run_med["nbflow_unbatched"], run_med["nbflow_adaptive"]), 5.0, ">=",
            report_only=True),
        "unbatched_over_adaptive": _harness.target(
            _harness.ratio(med["nbflow_unbatched"], med["nbflow_adaptive"]), 5.0, ">="),
        "dask_bag_over_adaptive": _harness.target(
            _harness.ratio(med["dask_bag"], med["nbflow_adaptive"]), 1.0, ">"),
        "dask_delayed_over_adaptive_per_item": _harness.target(
            _harness.ratio(per["dask_delayed"], per["nbflow_adaptive"]), 1.0, ">"),
    }
    targets["adaptive_over_on_loop_floor"] = _harness.target(
        _harness.ratio(med["nbflow_adaptive"], med["nbflow_on_loop_floor"]), 1.5, "<=", report_only=True)
    targets["trace_us_per_item"] = _harness.target(trace_us, 10.0, "<=")
    if "nbflow_process" in med:
        targets["dask_bag_over_process"] = _harness.target(
            _harness.ratio(med["dask_bag"], med["nbflow_process"]), 1.0, ">", report_only=True)
    doc = {
        "machine": _harness.machine_info(),
        "params": {"n": n, "work_s": WORK_S, "spin_loops": loops, "spin_us_measured": per_call * 1e6,
                   "repeat": args.repeat, "fixed": args.fixed,
                   "delayed_n": delayed_n, "store": args.store, "argv": sys.argv[1:]},
        "results": results,
        "adaptive_chunks": sizes,
        "adaptive_phases_us_per_item": phase_us,
        "targets": targets,
    }
    _harness.emit_json(doc, args.json_out)
    met = [t["met"] for t in targets.values() if t["value"] is not None and not t.get("report_only")]
    log(f"targets met: {sum(met)}/{len(met)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
