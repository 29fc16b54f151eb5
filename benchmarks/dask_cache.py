"""What the result cache costs a run on Dask, and where that time goes.

A ``LocalCluster`` with 4 single-thread worker processes (on 127.0.0.1) runs workflows with
array intermediates, each in five ways, alternated ``--repeat`` times in one process:

- ``off``: ``cache=False`` (the baseline: tasks are submitted ahead of their inputs, so
  the cluster chains them without a round trip through this process);
- ``cold``: ``cache=True`` on an empty store: every task misses, runs, and its result is
  hashed and written by the worker holding it;
- ``warm``: the same run again, nothing changed: every task is a hit;
- ``cutoff``: the roots get a new argument they ignore: the roots miss and run, give the
  same values, and everything downstream is a hit (early cutoff);
- ``changed``: the roots give new values: every task misses, but the store knows the
  tasks' code, so no task may be submitted before its lookup, which needs its inputs'
  content hashes: one client <-> worker round trip (or more) per dependency level.

Each cache mode runs in two variants (``--variants``), each on its own fresh store:
``in-task`` (the default: each task hashes, and stores, its own result on its worker and
sends the facts with the result, ``engine/backends/dask_cache.py``) and ``round-trip``
(``NBFLOW_DASK_IN_TASK=0``: the cache asks the result's worker after the task ended, one
more Dask task and round trip per task, as before session 6).

Workloads (``--workloads``; sizes multiplied by ``--scale``):

- ``chains``: 4 independent chains of 5 tasks passing a 20 MB array on, then one summary;
- ``trace``: the 1000genome WfFormat trace replayed with its file sizes (largest output
  20 MB, at least 1 MB), as in ``locality.py``;
- ``deep``: one chain of 30 tasks passing a 100 KB array: many levels, little data.

Each sample records the makespan (wall clock), the CPU time of this process (all threads:
nbflow, Dask's client and, in a ``LocalCluster``, Dask's scheduler: ``time.process_time``)
and of the worker processes (psutil), the hits and misses, and where the cache's time
went: how many times a remote result was asked to do something on its worker
(``Remote.on_worker``: hash it, hash-and-write it) and the wall seconds spent waiting for
those calls, and the seconds spent loading stored results into this process.  The load
average is recorded before and after.  Figures taken under load are distorted (a round
trip costs more when the CPUs are busy): compare ratios within one run, and CPU seconds.

Usage::

    .venv/bin/python benchmarks/dask_cache.py --repeat 3 --json benchmarks/dask_cache.json
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

if __package__:
    from . import _harness
    from .locality import trace_plan
else:
    import _harness
    from locality import trace_plan

MB = 1_000_000
MODES = ("off", "cold", "warm", "cutoff", "changed")


# -- task bodies (module level) ---------------------------------------------------------------


def root(nbytes: int, seed: float, salt: int) -> Any:
    """A root: ``salt`` changes its cache key but not its value (early cutoff)."""
    import numpy as np

    return np.full(max(1, nbytes // 8), float(seed))


def step(a: Any) -> Any:
    return a + 1.0


def mix(nbytes: int, *parts: Any) -> Any:
    import numpy as np

    return np.full(max(1, nbytes // 8), float(sum(float(p[:1000].sum()) for p in parts)))


def summary(*parts: Any) -> float:
    return float(sum(float(p[:1000].sum()) for p in parts))


# -- workloads: (key, fn, args) with ("ref", key) for another task's result ---------------------

Spec = list[tuple[str, Callable[..., Any], tuple[Any, ...]]]


def wl_chains(scale: float) -> Spec:
    spec: Spec = []
    for c in range(4):
        spec.append((f"c{c}s0", root, (int(20 * MB * scale), 100 * c, "SALT")))
        for s in range(1, 5):
            spec.append((f"c{c}s{s}", step, (("ref", f"c{c}s{s - 1}"),)))
    spec.append(("end", summary, tuple(("ref", f"c{c}s4") for c in range(4))))
    return spec


def wl_deep(scale: float) -> Spec:
    spec: Spec = [("d0", root, (int(100_000 * scale), 1, "SALT"))]
    for s in range(1, 30):
        spec.append((f"d{s}", step, (("ref", f"d{s - 1}"),)))
    spec.append(("end", summary, (("ref", "d29"),)))
    return spec


def wl_trace(scale: float) -> Spec:
    preds, succs, sizes = trace_plan()
    n = len(preds)
    spec: Spec = []
    for u in range(n):
        size = int(sizes[u] * scale)
        if preds[u]:
            spec.append((f"t{u}", mix, (size, *(("ref", f"t{p}") for p in preds[u]))))
        else:
            spec.append((f"t{u}", root, (size, 100 * u, "SALT")))
    sinks = [u for u in range(n) if not succs[u]]
    spec.append(("end", summary, tuple(("ref", f"t{u}") for u in sinks)))
    return spec


WORKLOADS = {"chains": wl_chains, "trace": wl_trace, "deep": wl_deep}


def levels(spec: Spec) -> int:
    """The number of dependency levels (tasks on the longest path)."""
    depth: dict[str, int] = {}
    for key, _, args in spec:
        depth[key] = 1 + max([depth[a[1]] for a in args if isinstance(a, tuple) and a[:1] == ("ref",)]
                             or [0])
    return max(depth.values())


# -- where the cache's time goes -----------------------------------------------------------------


class Probe:
    """Counts and times ``Remote.on_worker`` calls (the cache's round trips to a worker) and
    loads of stored results into this process, by wrapping the two methods."""

    def __init__(self) -> None:
        from nbflow.engine.backends.dask import DaskResult
        from nbflow.store.store import Store

        self.lock = threading.Lock()
        self.calls = 0
        self.call_s = 0.0
        self.loads = 0
        self.load_s = 0.0
        probe = self
        on_worker, load = DaskResult.on_worker, Store.load

        def timed_on_worker(self: Any, fn: Any, *args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return on_worker(self, fn, *args)
            finally:
                with probe.lock:
                    probe.calls += 1
                    probe.call_s += time.perf_counter() - t0

        def timed_load(self: Any, entry: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return load(self, entry)
            finally:
                with probe.lock:
                    probe.loads += 1
                    probe.load_s += time.perf_counter() - t0

        DaskResult.on_worker = timed_on_worker  # type: ignore[method-assign]
        Store.load = timed_load  # type: ignore[method-assign]

    def mark(self) -> tuple[int, float, int, float]:
        with self.lock:
            return self.calls, self.call_s, self.loads, self.load_s


def worker_cpu(client: Any) -> float:
    def cpu() -> float:
        import psutil

        t = psutil.Process().cpu_times()
        return float(t.user + t.system)

    return float(sum(client.run(cpu).values()))


# -- one sample ------------------------------------------------------------------------------------


def trace_spec(nf: Any, name: str, spec: Spec, salt: int, seed_shift: int) -> tuple[Any, Any]:
    tasks = {fn: nf.task(fn) for _, fn, _ in spec}
    with nf.Workflow(name) as wf:
        refs: dict[str, Any] = {}
        for key, fn, args in spec:
            real = []
            for k, a in enumerate(args):
                if isinstance(a, tuple) and a[:1] == ("ref",):
                    real.append(refs[a[1]])
                elif a == "SALT":
                    real.append(salt)
                elif fn is root and k == 1:  # (a fraction: no chain meets a stored value)
                    real.append(a + seed_shift / 1000)
                else:
                    real.append(a)
            refs[key] = tasks[fn](*real)
    end = refs["end"]
    del refs
    return wf, end


def sample(nf: Any, client: Any, probe: Probe, name: str, spec: Spec, mode: str,
           counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    salt = counter[0] if mode == "cutoff" else 0
    shift = counter[0] if mode == "changed" else 0
    wf, end = trace_spec(nf, f"dask-cache-{name}", spec, salt, shift)
    wcpu0 = worker_cpu(client)
    p0 = probe.mark()
    t0, cpu0 = time.perf_counter(), time.process_time()
    run = wf.run(backend=client, cache=mode != "off")
    value = run[end]
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    p1 = probe.mark()
    wcpu = worker_cpu(client) - wcpu0
    t = run.tasks
    done = t[t["state"] == "completed"]
    out = {"makespan_s": seconds, "cpu_s": cpu, "worker_cpu_s": wcpu,
           "hits": int(done["cached"].sum()), "misses": int((~done["cached"].astype(bool)).sum()),
           "on_worker_calls": p1[0] - p0[0], "on_worker_wait_s": p1[1] - p0[1],
           "loads": p1[2] - p0[2], "load_s": p1[3] - p0[3], "value": value}
    del run, wf, end
    gc.collect()
    return out


def workload(nf: Any, client: Any, probe: Probe, name: str, spec: Spec, repeat: int,
             variants: list[str], log: Callable[[str], None]) -> dict[str, Any]:
    """``repeat`` rounds; each round runs ``off``, then per variant the four cache modes in
    order on a fresh store (``cold`` must come first); ``off`` first or last in turn, the
    variants' order rotated."""
    counter = [0]
    names = ["off"] + [_label(m, v) for v in variants for m in MODES[1:]]
    got: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    for r in range(repeat):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        if r % 2 == 0:
            got["off"].append(_sample_off(nf, client, probe, name, spec, counter))
        for v in order:
            os.environ["NBFLOW_DASK_IN_TASK"] = "0" if v == "round-trip" else "1"
            try:
                with _harness.nbflow_home(replace=True):
                    for mode in MODES[1:]:
                        gc.collect()
                        got[_label(mode, v)].append(sample(nf, client, probe, name, spec, mode, counter))
            finally:
                os.environ.pop("NBFLOW_DASK_IN_TASK", None)
        if r % 2 == 1:
            got["off"].append(_sample_off(nf, client, probe, name, spec, counter))
        log(f"{name}: round {r + 1}/{repeat}: " + ", ".join(
            f"{m} {got[m][-1]['makespan_s']:.2f}s" for m in names))
    per: dict[str, Any] = {}
    for m, xs in got.items():
        per[m] = {k: statistics.median(x[k] for x in xs)
                  for k in ("makespan_s", "cpu_s", "worker_cpu_s", "hits", "misses",
                            "on_worker_calls", "on_worker_wait_s", "loads", "load_s")}
        per[m]["samples_makespan_s"] = [x["makespan_s"] for x in xs]
        per[m]["samples_cpu_s"] = [x["cpu_s"] for x in xs]
        per[m]["same_value"] = len({round(x["value"], 6) for x in xs}) == 1
    base = per["off"]
    lv = levels(spec)
    ratios = {m: {"makespan": _harness.ratio(per[m]["makespan_s"], base["makespan_s"]),
                  "cpu": _harness.ratio(per[m]["cpu_s"], base["cpu_s"])} for m in names}
    extra = {m: {"makespan_s_per_level": (per[m]["makespan_s"] - base["makespan_s"]) / lv,
                 "cpu_s_per_level": (per[m]["cpu_s"] - base["cpu_s"]) / lv} for m in names}
    return {"tasks": len(spec), "levels": lv, "modes": per, "vs_off": ratios,
            "extra_vs_off": extra}


def _label(mode: str, variant: str) -> str:
    return mode if variant == "in-task" else f"{mode} ({variant})"


def _sample_off(nf: Any, client: Any, probe: Probe, name: str, spec: Spec,
                counter: list[int]) -> dict[str, Any]:
    with _harness.nbflow_home(replace=True):
        gc.collect()
        return sample(nf, client, probe, name, spec, "off", counter)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="chains,trace,deep")
    ap.add_argument("--scale", type=float, default=0.25, help="multiply every array size by this")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", default="in-task,round-trip",
                    help="in-task: the task hashes and stores its result (default); round-trip: "
                         "the cache asks the worker after each task (NBFLOW_DASK_IN_TASK=0)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    log = _harness.progress("dask_cache")
    nf = _harness.import_nbflow()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    with _harness.local_cluster() as client:
        probe = Probe()
        for name in args.workloads.split(","):
            spec = WORKLOADS[name](args.scale)
            variants = args.variants.split(",")
            workload(nf, client, probe, name, wl_deep(0.01), 1, variants,
                     lambda s: None)  # warm-up: imports on the workers
            results[name] = workload(nf, client, probe, name, spec, args.repeat, variants, log)
            r = results[name]
            log(f"{name} ({r['levels']} levels): " + ", ".join(
                f"{m} x{v['makespan']:.2f} (cpu x{v['cpu']:.2f})" for m, v in r["vs_off"].items()))
    doc = {"benchmark": "dask_cache", "machine": _harness.machine_info(),
           "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "config": {"workloads": args.workloads, "scale": args.scale, "repeat": args.repeat,
                      "variants": args.variants, "workers": 4},
           "statistic": ("median over rounds; each round: off, then per variant cold, warm, "
                         "cutoff, changed on a fresh store (off first or last in turn, "
                         "variants rotated)"),
           "results": results}
    _harness.emit_json(doc, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
