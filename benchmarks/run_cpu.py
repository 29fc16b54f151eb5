"""A small Dask run's fixed cost in the client process, by the thread nbflow runs it on.

``benchmarks/locality_cpu.py`` counts the client's CPU per thread with ``psutil``, whose
thread times tick in 10 ms steps and which sums every thread that ended during the run as
*ended threads*.  This script names them: every thread nbflow starts is timed from the
inside (``time.thread_time`` when its ``run`` returns), the notebook's thread around each
step of a run, and the cyclic collector through ``gc.callbacks``.  Per run, medians of
``--repeat`` blocks of ``--runs`` runs (one workload's runs back to back, as in a notebook):

- ``main: trace`` / ``main: wf.run`` / ``main: run[end]``: the caller's thread: tracing,
  then checking, planning, starting and waiting for the run, then fetching the value;
- ``thread: nbflow-run``: the run's own thread (its event loop: the engine, the events
  and their listeners, the Dask backend's bookkeeping);
- ``thread: nbflow-journal``: the journal's writer; ``journal: commits`` and
  ``journal: connections`` count its transactions and the connections it opened;
- ``thread: ...``: every other thread that started and ended meanwhile (the locality
  read, a cancel watcher, anyio's worker threads); ``threads started: ...`` counts them;
- ``journal: cancel polls``: the writer's looks for cancel requests (where it does them);
- ``dask: results/bytes gathered at the run's end``: what came with the run's end because
  the caller will take it (a named sink's small result: ``run[end]`` here);
- ``gc: <thread> gen <n>``: CPU in the cyclic collector, by thread and generation;
- ``process``: the whole process (``time.process_time``; includes Dask's IO loop, which
  this script does not split: see ``locality_cpu.py``).

With ``--profile FILE``, the measured blocks also run under yappi with its CPU clock (which
slows every thread several-fold: the figures above are then not the ones to quote) and
FILE lists, per kind of thread, the functions that took its CPU per run (own time, then
nbflow's functions by total time): where a run's own CPU goes, by thread.

Point ``PYTHONPATH`` at another tree to compare versions (alternate the invocations)::

    .venv/bin/python benchmarks/run_cpu.py --workloads fan,chains --runs 10 --repeat 3   # ~2 min quiet
    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/run_cpu.py --workloads fan,chains --runs 10 --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, trace_spec
else:
    import _harness
    from locality import WORKLOADS, trace_spec

_PREFIXES = ("nbflow-run", "nbflow-journal", "nbflow-locality-read", "nbflow-cancel-watch",
             "nbflow-lease", "AnyIO worker", "ThreadPoolExecutor")
_cpu: collections.Counter[str] = collections.Counter()
_gc: collections.Counter[str] = collections.Counter()
_gc_start: dict[int, float] = {}
_counts: collections.Counter[str] = collections.Counter()


def _kind(name: str) -> str:
    return next((p for p in _PREFIXES if name.startswith(p)), name)


def _install() -> None:
    """Time every thread from the inside, and the collector, from now on."""
    run = threading.Thread.run

    def timed(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            _cpu[f"thread: {_kind(self.name)}"] += time.thread_time()

    threading.Thread.run = timed  # type: ignore[method-assign]
    start = threading.Thread.start

    def counted_start(self: threading.Thread) -> None:
        _counts[f"threads started: {_kind(self.name)}"] += 1
        start(self)

    threading.Thread.start = counted_start  # type: ignore[method-assign]

    def collector(phase: str, info: dict[str, Any]) -> None:
        if _between[0]:  # (the benchmark's own collection between local runs)
            return
        ident = threading.get_ident()
        if phase == "start":
            _gc_start[ident] = time.thread_time()
        elif ident in _gc_start:
            _gc[f"gc: {_kind(threading.current_thread().name)} gen {info['generation']}"] += (
                time.thread_time() - _gc_start.pop(ident))

    gc.callbacks.append(collector)
    from nbflow.store import journal

    for name, what in (("_commit", "journal: commits"), ("_connect", "journal: connections")):
        real = getattr(journal.Journal, name)

        def counted(self: Any, *a: Any, _real: Callable[..., Any] = real, _what: str = what) -> Any:
            _counts[_what] += 1
            return _real(self, *a)

        setattr(journal.Journal, name, counted)


_between = [False]  # True while the benchmark collects between local runs
_polls = [0]  # (cancel polls counted so far, where the journal counts them)


def _journal() -> Any:
    from nbflow.store.store import get_store

    store = get_store(warn=False)
    return store.journal if store is not None and hasattr(store.journal, "cancel_polls") else None


def block(client: Any, spec: list[Any], runs: int) -> dict[str, float]:
    """``runs`` runs of one workload; CPU per run by place (ms) and counts per run."""
    from nbflow import locality

    _cpu.clear()
    _gc.clear()
    _counts.clear()
    main: collections.Counter[str] = collections.Counter()
    p0 = time.process_time()
    between = 0.0  # (the benchmark's own collections between local runs: not counted)
    for _ in range(runs):
        t0 = time.thread_time()
        wf, end = trace_spec("run-cpu", spec)
        t1 = time.thread_time()
        with locality.placement("locality"):
            run = wf.run(backend=client, cache=False)
            t2 = time.thread_time()
            run[end]
            t3 = time.thread_time()
            backend = run.backends.get("dask")
            agent = backend.placement if backend is not None else None
            if agent is not None:
                agent.settle()  # (the deferred end-of-run read: its rows are journaled)
        main["main: trace"] += t1 - t0
        main["main: wf.run"] += t2 - t1
        main["main: run[end]"] += t3 - t2
        if backend is not None:
            _counts["dask: results gathered at the run's end"] += len(getattr(backend, "prefetched", ()))
            _counts["dask: bytes gathered at the run's end"] += sum(
                n or 0 for _, n in getattr(backend, "prefetched", ()))
        else:  # (until session 9 a local run's arrays were freed by a full collection only:
            # without one here, ten runs of chains held 4 GB.  Now the previous run is freed
            # by reference counting as the next one starts, inside `main: wf.run`; the
            # collection stays, off the books, so the figures compare with earlier ones)
            del run, wf, end
            c0 = time.process_time()
            _between[0] = True
            gc.collect()
            _between[0] = False
            between += time.process_time() - c0
        journal = _journal()
        if journal is not None:
            _counts["journal: cancel polls"] += journal.cancel_polls - _polls[0]
            _polls[0] = journal.cancel_polls
    process = time.process_time() - p0 - between
    out = {"process": process * 1e3 / runs}
    for counter in (main, _cpu, _gc):
        out.update({k: v * 1e3 / runs for k, v in counter.items()})
    out.update({k: v / runs for k, v in _counts.items()})
    return out


def _profile_start() -> Any:
    import yappi

    yappi.set_clock_type("cpu")
    yappi.set_context_name_callback(lambda: _kind(threading.current_thread().name))
    yappi.start(builtins=False, profile_threads=True)
    return yappi


def _where(st: Any) -> str:
    return f"{st.module.split('site-packages/')[-1]}:{st.lineno} {st.name}"


def _ours(st: Any) -> bool:
    return "nbflow" in st.module and "benchmarks" not in st.module


def _profile_write(yappi: Any, path: str, runs: int, top: int = 40) -> None:
    """Per kind of thread: CPU per run, its functions by own time, nbflow's by total time."""
    yappi.stop()
    kinds: dict[str, set[int]] = collections.defaultdict(set)
    cpu: collections.Counter[str] = collections.Counter()
    for t in yappi.get_thread_stats():
        kinds[t.name].add(t.id)
        cpu[t.name] += t.ttot
    with open(path, "w") as f:
        f.write(f"yappi, CPU clock, per run ({runs} runs); nbflow's own threads and the caller\n")
        for kind, total in cpu.most_common():
            f.write(f"  {kind:30s} {total * 1e3 / runs:8.2f} ms  ({len(kinds[kind])} thread(s))\n")
        for kind in cpu:
            if not kind.startswith(("nbflow", "MainThread", "_MainThread", "IO loop")):
                continue
            ids = kinds[kind]
            stats = yappi.get_func_stats(filter_callback=lambda st, ids=ids: st.ctx_id in ids)
            rows = [(st.tsub, st.ttot, st.ncall, _where(st), _ours(st)) for st in stats]
            f.write(f"\n== {kind}: own time (ms per run, calls per run)\n")
            for tsub, _, n, where, _ in sorted(rows, reverse=True)[:top]:
                f.write(f"  {tsub * 1e3 / runs:7.3f} {n / runs:7.1f}  {where}\n")
            f.write(f"-- {kind}: nbflow's functions by total time\n")
            mine = sorted(((ttot, n, where) for _, ttot, n, where, ours in rows if ours), reverse=True)
            for ttot, n, where in mine[:top]:
                f.write(f"  {ttot * 1e3 / runs:7.3f} {n / runs:7.1f}  {where}\n")
    yappi.clear_stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan,chains")
    ap.add_argument("--runs", type=int, default=10, help="runs per block")
    ap.add_argument("--repeat", type=int, default=3, help="blocks (medians over them)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--backend", default="dask", choices=("dask", "local"),
                    help="a LocalCluster of 4 workers, or the thread backend")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="also profile the measured blocks with yappi (CPU clock) into FILE")
    args = ap.parse_args()
    log = _harness.progress("run-cpu")
    doc: dict[str, Any] = {"benchmark": "run_cpu", "machine": _harness.machine_info(),
                           "load_before": os.getloadavg(), "workloads": {}}
    doc["backend"] = args.backend
    _install()
    cluster = _harness.local_cluster() if args.backend == "dask" else contextlib.nullcontext("local")
    with _harness.nbflow_home(), cluster as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            block(client, spec, 2)  # (warm-up: imports, the first connection, the code's syntax trees)
            yappi = _profile_start() if args.profile else None
            samples = [block(client, spec, args.runs) for _ in range(args.repeat)]
            if yappi is not None:
                where = f"{args.profile}.{name}" if "," in args.workloads else args.profile
                _profile_write(yappi, where, args.runs * args.repeat)
            keys = sorted({k for s in samples for k in s})
            med = {k: statistics.median(s.get(k, 0.0) for s in samples) for k in keys}
            doc["workloads"][name] = {"tasks": len(spec), "medians": med, "samples": samples}
            log(f"{name} ({len(spec)} tasks): per run, median of {args.repeat} blocks of {args.runs}")
            for k in keys:
                unit = "" if k.startswith(("journal:", "threads", "dask:")) else " ms"
                log(f"  {k:40s} {med[k]:8.2f}{unit}")
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
