"""Dask runs one right after another: what the previous run's end-of-run work costs the next.

``benchmarks/locality.py`` measures one run at a time, each sample starting once the
previous one's deferred work is over.  A Python loop of ``wf.run()`` on Dask (or an
``nf.loop``, a papermill batch) starts the next run at once: the previous run's end-of-run
locality read (round trips to every worker and the scheduler, the transfer rows built and
journaled) and then the history questions read ahead for the next run
(:mod:`nbflow.predict.ahead`) run in their own thread while the next run prepares and
submits, in the process that holds Dask's scheduler.

On the same ``LocalCluster`` as ``locality.py`` (4 single-thread worker processes, the
scheduler in a thread of this process), one sample is ``--runs`` runs of the ``fan``
workflow (or ``--workload``) in a row, each taking its result (``run[end]``) and nothing
else waited for in between, as:

- ``nbflow``: nbflow as it is;
- ``ahead-off``: the same with the history read ahead switched off
  (``nbflow.predict.ahead.off()``: each preparation reads its history itself);
- ``read-at-once``: the same as ``nbflow``, but a run's end-of-run read does not wait for
  the next run's graph to reach Dask (``LocalityAgent.waits_for_next`` off: it reads once
  the caller took its results, as before session 12; see ``nbflow.locality.under_way``);
- ``settled``: the same as ``nbflow``, but between two runs, off the clock, the previous
  run's end-of-run work is waited for (the read's thread and the read ahead): the runs
  then never overlap it.  ``nbflow`` − ``settled`` is what that work costs the next runs
  when they follow at once;
- ``session-13-b-off``: the same as ``nbflow`` with session 13 (B)'s end of a run switched
  off (``end_read.session_13_b_off``: the read asks every worker through the scheduler,
  its thread started as the run closes);
- ``dask``: the same number of ``client.compute(graph).result()`` calls, each on a fresh
  ``dask.delayed`` graph of the workflow (built before the clock).

Each system has its own store (one graph's runs, as a user's loop has), alternated,
``--repeat`` samples.  Per system, medians of: the whole batch's wall time and this
process's CPU (``time.process_time``, every thread), both per run; each run's wall time
(the first run of a batch apart: its predecessor is the previous sample's); ``prepare``'s
wall time and its thread's CPU; from ``prepare``'s start to the run's first graph handed
to Dask's client (``graph queued``, as ``dask_start.py`` marks it); the end-of-run read's
thread CPU (``LocalityAgent._read``: most of the read's CPU is in Dask's client loop and
the scheduler, see ``end_read.py``) and the read ahead's (``ahead.read_ahead``) per run;
and how many preparations were told their history read ahead (``ahead.use`` returned
True).  Ratios to ``dask`` of the same invocation, and each system's wall and CPU per run
paired with ``nbflow``'s of the same repeat.

Usage::

    .venv/bin/python benchmarks/back_to_back.py --runs 20 --repeat 15 --warmup 1 \
        --json benchmarks/back-to-back.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__:
    from . import _harness, end_read
    from .locality import WORKLOADS, delayed_graph, trace_spec
else:
    import _harness
    import end_read
    from locality import WORKLOADS, delayed_graph, trace_spec

SYSTEMS = ("nbflow", "ahead-off", "read-at-once", "settled", "session-13-b-off", "dask")
READ_THREAD = "nbflow-locality-read"


class Spies:
    """Counters around the parts of a run this benchmark breaks out (installed once)."""

    def __init__(self) -> None:
        self.prepare_s: list[float] = []
        self.prepare_cpu_s: list[float] = []
        self.read_cpu_s: list[float] = []
        self.ahead_cpu_s: list[float] = []
        self.told = 0
        self.to_graph_s: list[float] = []  # from prepare's start to the graph at Dask's client
        self._prepared_at: float | None = None
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.prepare_s, self.prepare_cpu_s = [], []
            self.read_cpu_s, self.ahead_cpu_s = [], []
            self.told, self.to_graph_s, self._prepared_at = 0, [], None

    def install(self) -> None:
        from nbflow import workflow
        from nbflow.locality import agent
        from nbflow.predict import ahead

        prepare, read, read_ahead, use = (workflow.prepare, agent.LocalityAgent._read,
                                          ahead.read_ahead, ahead.use)

        def timed_prepare(*a: Any, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            self._prepared_at = t0
            try:
                return prepare(*a, **k)
            finally:
                self.prepare_s.append(time.perf_counter() - t0)
                self.prepare_cpu_s.append(time.thread_time() - c0)

        def timed_read(me: Any, *a: Any, **k: Any) -> Any:
            c0 = time.thread_time()
            try:
                return read(me, *a, **k)
            finally:
                with self.lock:
                    self.read_cpu_s.append(time.thread_time() - c0)

        def timed_ahead(*a: Any, **k: Any) -> Any:
            c0 = time.thread_time()
            try:
                return read_ahead(*a, **k)
            finally:
                with self.lock:
                    self.ahead_cpu_s.append(time.thread_time() - c0)

        def counted_use(*a: Any, **k: Any) -> bool:
            got = use(*a, **k)
            if got:
                with self.lock:
                    self.told += 1
            return got

        def queued(client: Any, msg: Any) -> Any:
            if msg.get("op") == "update-graph" and self._prepared_at is not None:
                self.to_graph_s.append(time.perf_counter() - self._prepared_at)
                self._prepared_at = None  # (the run's first graph only)
            return queue(client, msg)

        from distributed import Client

        queue = Client._send_to_scheduler
        Client._send_to_scheduler = queued  # type: ignore[method-assign]
        workflow.prepare = timed_prepare  # type: ignore[assignment]
        agent.LocalityAgent._read = timed_read  # type: ignore[method-assign]
        ahead.read_ahead = timed_ahead  # (looked up when each run's sink is made)
        ahead.use = counted_use


def settle_reads(timeout: float = 30.0) -> None:
    """Wait for every deferred end-of-run read (and the read ahead that ends it)."""
    for t in threading.enumerate():
        if t.name == READ_THREAD:
            t.join(timeout)


@contextlib.contextmanager
def own_store(system: str) -> Iterator[None]:
    """Each system runs on its own store (a folder of the benchmark's): as a user's loop
    runs one graph, a store holds only that system's runs, and only its graph is read
    ahead there (``ahead-off`` names none: nothing is read ahead on its store)."""
    home = os.environ["NBFLOW_HOME"]
    os.environ["NBFLOW_HOME"] = str(Path(home) / system)
    try:
        yield
    finally:
        os.environ["NBFLOW_HOME"] = home


@contextlib.contextmanager
def read_at_once(on: bool) -> Iterator[None]:
    """(``read-at-once``) Every end-of-run read within reads without waiting for a run
    under way."""
    from nbflow.locality.agent import LocalityAgent

    was = LocalityAgent.waits_for_next
    LocalityAgent.waits_for_next = was and not on
    try:
        yield
    finally:
        LocalityAgent.waits_for_next = was


def batch_nbflow(client: Any, wf: Any, end: Any, runs: int, system: str,
                 spies: Spies) -> dict[str, Any]:
    from nbflow import locality
    from nbflow.predict import ahead

    settle_reads()  # (the previous sample's last read: not on this sample's clock)
    spies.reset()
    walls, values = [], []
    off = ahead.off() if system == "ahead-off" else contextlib.nullcontext()
    wall = cpu = 0.0
    b13 = end_read.session_13_b_off() if system == "session-13-b-off" else contextlib.nullcontext()
    with own_store(system), off, read_at_once(system == "read-at-once"), b13, \
            locality.placement("locality"):
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            run = wf.run(backend=client, cache=False)
            values.append(run[end])
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            walls.append(dt)
            wall, cpu = wall + dt, cpu + dc
            del run
            if system == "settled":
                settle_reads()
        settle_reads()  # (ahead.off() covers the last run's read too)
    return _sample(walls, wall, cpu, values, spies)


def batch_dask(client: Any, spec: list[Any], runs: int) -> dict[str, Any]:
    settle_reads()
    graphs = [delayed_graph(spec)["end"] for _ in range(runs)]
    walls, values = [], []
    wall = cpu = 0.0
    for g in graphs:
        t0, c0 = time.perf_counter(), time.process_time()
        values.append(client.compute(g).result())
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        walls.append(dt)
        wall, cpu = wall + dt, cpu + dc
    return _sample(walls, wall, cpu, values, None)


def _sample(walls: list[float], wall: float, cpu: float, values: list[Any],
            spies: Spies | None) -> dict[str, Any]:
    n = len(walls)
    out: dict[str, Any] = {"wall_per_run_s": wall / n, "cpu_per_run_s": cpu / n,
                           "first_run_s": walls[0], "later_runs_median_s": statistics.median(walls[1:]),
                           "values": values}
    if spies is not None:
        with spies.lock:
            out.update(prepare_s=statistics.median(spies.prepare_s),
                       prepare_thread_cpu_s=statistics.median(spies.prepare_cpu_s),
                       read_thread_cpu_s=statistics.median(spies.read_cpu_s or [0.0]),
                       ahead_thread_cpu_s=statistics.median(spies.ahead_cpu_s or [0.0]),
                       prepare_to_graph_s=statistics.median(spies.to_graph_s or [0.0]),
                       told=spies.told)
    return out


FIGURES = ("wall_per_run_s", "cpu_per_run_s", "first_run_s", "later_runs_median_s", "prepare_s",
           "prepare_to_graph_s", "prepare_thread_cpu_s", "read_thread_cpu_s", "ahead_thread_cpu_s", "told")


def measure(workload: str, runs: int, repeat: int, warmup: int, systems: list[str],
            log: Callable[[str], None]) -> dict[str, Any]:
    spec = WORKLOADS[workload]()
    spies = Spies()
    spies.install()
    out: dict[str, Any] = {"workload": workload, "runs_per_sample": runs, "tasks": len(spec)}
    with _harness.local_cluster() as client:
        traced = {s: trace_spec(f"back-to-back-{s}", spec) for s in systems if s != "dask"}
        samplers: dict[str, Callable[[], dict[str, Any]]] = {
            s: (lambda s=s: batch_dask(client, spec, runs) if s == "dask"
                else batch_nbflow(client, *traced[s], runs, s, spies)) for s in systems}
        if warmup:
            _harness.alternate(samplers, warmup)
        samples = _harness.alternate(samplers, repeat, log=log)
    values = {round(v, 6) for ss in samples.values() for s in ss for v in s["values"]}
    out["same_result_everywhere"] = len(values) == 1
    per: dict[str, Any] = {}
    for s, ss in samples.items():
        per[s] = {f: statistics.median(x[f] for x in ss) for f in FIGURES if f in ss[0]}
        per[s]["samples_wall_per_run_s"] = [x["wall_per_run_s"] for x in ss]
        per[s]["samples_cpu_per_run_s"] = [x["cpu_per_run_s"] for x in ss]
    out["systems"] = per
    if "dask" in per:
        out["wall_vs_dask"] = {s: _harness.ratio(p["wall_per_run_s"], per["dask"]["wall_per_run_s"])
                               for s, p in per.items() if s != "dask"}
        out["cpu_vs_dask"] = {s: _harness.ratio(p["cpu_per_run_s"], per["dask"]["cpu_per_run_s"])
                              for s, p in per.items() if s != "dask"}
    out["paired_vs_nbflow_ms"] = _paired(samples)
    return out


def _paired(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per system, the median over repeats of (its wall per run − nbflow's, same repeat), ms,
    and in how many repeats it was lower."""
    base = samples.get("nbflow")
    if base is None:
        return {}
    out = {}
    for s, ss in samples.items():
        if s == "nbflow":
            continue
        d = [(x["wall_per_run_s"] - b["wall_per_run_s"]) * 1e3 for x, b in zip(ss, base, strict=True)]
        c = [(x["cpu_per_run_s"] - b["cpu_per_run_s"]) * 1e3 for x, b in zip(ss, base, strict=True)]
        out[s] = {"wall_ms": statistics.median(d), "cpu_ms": statistics.median(c),
                  "lower_wall_in": sum(1 for x in d if x < 0), "of": len(d)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="fan", choices=sorted(WORKLOADS))
    ap.add_argument("--runs", type=int, default=20, help="runs in a row per sample")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    systems = args.systems.split(",")
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown --systems {unknown}; choose from {list(SYSTEMS)}")
    if args.runs < 2:
        ap.error("--runs must be at least 2 (a run after another is what is measured)")
    log = _harness.progress("back_to_back")
    doc: dict[str, Any] = {"benchmark": "back_to_back", "machine": _harness.machine_info(),
                           "command": {"runs": args.runs, "repeat": args.repeat,
                                       "warmup": args.warmup, "systems": systems},
                           "load_before": os.getloadavg()}
    with _harness.nbflow_home():
        doc["result"] = measure(args.workload, args.runs, args.repeat, args.warmup, systems, log)
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
