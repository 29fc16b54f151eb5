"""Live-widget benchmark: what watching a run costs, and how chatty the widget is.

What it measures
================

1. **Overhead.**  The same 2 000-task workflow (``--n``) is run with and without the live
   widget, alternating, ``--repeat`` times each (median reported): wall time (the target)
   and the process's CPU time (``time.process_time``: all its threads; far less sensitive
   to other processes on a loaded machine, and with the GIL-bound ``work`` tasks what the
   view costs in CPU is what it costs the run), plus the CPU time of the child process
   that fits the predictor (it runs beside the run, on another core).  "With" is exactly what a
   blocking ``%%workflow`` cell does in JupyterLab: the :class:`RunModel` subscribed to the
   run's events, a :class:`RunWidget` built, and the cell's thread ticking the widget every
   0.1 s until the run ends, then its final refresh.  There is no browser here, so the
   widget's comm is replaced by one that counts the messages it would send.  Two workloads:

   - ``work``: the default, 2 000 thread tasks that each hold the GIL for ~0.5 ms of pure
     Python work (a map over a list, a second stage per item, one sink), ``--workers`` 4;
   - ``noop``: 2 000 no-op coroutines (the worst case: the run itself costs almost nothing,
     so any fixed cost of the view shows).

   Target: with / without <= 1.10 for ``work``.

2. **Front-end messages per second.**  Comm messages sent to the front end during the
   ``work`` runs, per second of run time, and the largest number in any one-second window.
   Target: at most ~10 a second.

3. **Drawing a 10k-task graph.**  Grouping, layout (``dot`` if installed) and SVG of a
   finished 10 000-task run (a map of 5 000, a loop of 2 500 two-step chains, two sinks),
   from scratch, median of 5.  Target: under 1 s.  Also reported: the number of drawn nodes
   (target: at most ~200) and the SVG size.

The store
=========

A watched run predicts from the store's history (ETA, timeline), so the figures depend on
what the store holds.  The benchmark never uses the repository's ``.nbflow/`` or an
inherited ``NBFLOW_HOME``; each sample gets its own store in a temporary directory:

- ``fresh``: an empty store (a workflow's very first run: no ETA, only the widget);
- ``history``: a copy of a store seeded once, before timing, with ``--history`` rows (30 000
  by default) of earlier runs of the same workflows, whose predictor was fitted before
  timing (a kernel's later run: the fit is shared, so the ETA and the predicted bars are
  there from the start and the ETA's simulations are part of what is measured);
- ``history-cold``: the same seeded store, but a new copy at a new path per sample, so
  no fit of this process is shared (a kernel's first run).  Since session 5 a run shorter
  than ``nbflow.predict.live.FIT_WORTH_S`` (10 s) is estimated from the quick per-task
  estimate and starts no fit; ``--fit-worth-s 0`` starts it at the run's first tick (and
  asks for the first estimate then, not after its guessed cost), so the helper process's
  fit runs while the run goes and the ETA switches to it when it is ready; the JSON counts
  the fits (``fits_per_watched_run``), and a fit still going when a run ends is waited for
  before the next sample.

All are measured in the same session, their plain and watched samples alternated.
``--store PATH`` instead runs every sample on the given store as it is (it grows).

Output: one JSON document on stdout (``--json OUT`` also writes it to a file), with the
machine it was measured on.  Alternation, machine info and JSON output come from
``_harness.py``.

Command: ``.venv/bin/python benchmarks/widget.py --repeat 3 --json benchmarks/widget.json``
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import comm
from comm.base_comm import BaseComm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness

import nbflow as nf
from nbflow.core import events as ev
from nbflow.notebook.graphview import GraphView
from nbflow.notebook.model import RunModel
from nbflow.notebook.widget import RunWidget


class CountingComm(BaseComm):
    """Stands in for the kernel's comm: records when each message would have been sent."""

    sent: ClassVar[list[float]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                    **keys: Any) -> None:
        if msg_type == "comm_msg":
            CountingComm.sent.append(time.perf_counter())


def install_counting_comm() -> None:
    """Every widget made from now on counts its messages instead of sending them."""
    comm.create_comm = CountingComm


def _spin(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    k = 0
    while time.perf_counter() < end:
        k += 1
    return k


SPIN_MS = 0.5  # the work of a ``work`` task (--spin-ms)


def _set_spin(ms: float) -> None:
    global SPIN_MS
    SPIN_MS = ms


@nf.task
def work(i: int) -> int:
    _spin(SPIN_MS)
    return i


@nf.task
def stage(x: int) -> int:
    _spin(SPIN_MS)
    return x + 1


@nf.task
def sink(xs: list[int]) -> int:
    return len(xs)


@nf.task
async def noop(i: int) -> int:
    return i


@nf.task
async def noop_sink(xs: list[int]) -> int:
    return len(xs)


def build(kind: str, n: int) -> nf.Workflow:
    with nf.Workflow(f"bench-{kind}") as wf:
        if kind == "work":
            firsts = work.map(list(range(n // 2)))
            sink([stage(i) for i in range(n // 2 - 2)] + [firsts])
        else:
            noop_sink(noop.map(list(range(n - 2))))
    return wf


def run_plain(wf: nf.Workflow, workers: int | None) -> float:
    t0 = time.perf_counter()
    run = wf.start(workers=workers, cache=False)
    run.wait()
    return time.perf_counter() - t0


def run_watched(wf: nf.Workflow, workers: int | None) -> tuple[float, dict[str, Any]]:
    """What a blocking %%workflow cell does with a front end (minus the IPython display call)."""
    t0 = time.perf_counter()
    model = RunModel(wf)

    def factory(run: Any) -> ev.Subscriber | None:
        return model if run.workflow is wf else None

    unregister = nf.on_run(factory)
    run = wf.start(workers=workers, cache=False)
    model.run = run
    widget = RunWidget(model, run)
    first = len(CountingComm.sent)
    start = time.perf_counter()
    while True:  # exactly LiveView.follow
        widget.tick()
        if model.finished.wait(widget.interval) or run.done:
            break
    run.wait()
    widget.final()
    elapsed = time.perf_counter() - t0
    unregister()
    stamps = CountingComm.sent[first:]
    run_s = time.perf_counter() - start
    window = max((sum(1 for s in stamps if t <= s < t + 1.0) for t in stamps), default=0)
    from nbflow.predict.live import live_eta

    eta = live_eta(run)  # (the live ETA the widget asked: how many estimates, and made where)
    return elapsed, {"messages": len(stamps), "seconds": run_s, "max_in_1s": window,
                     "layouts": widget.graph.layouts_computed, "estimates": eta.simulations,
                     "estimates_in_kernel": eta.simulations - len(getattr(eta, "pids", []))}


def history_rows() -> int:
    """Task attempts recorded in the current store (``NBFLOW_HOME``)."""
    return len(nf.history())


def seed_store(home: str, rows: int, n: int, workers: int | None,
               log: Callable[[str], None] | None = None) -> int:
    """Fill the store at ``home`` with at least ``rows`` task attempts of the benchmark's
    own workflows (``work`` and ``noop`` runs of ``n`` tasks in turn); returns the count."""
    with _harness.nbflow_home(home):
        have, k = history_rows(), 0
        while have < rows:
            kind = ("work", "noop")[k % 2]
            run_plain(build(kind, n), workers if kind == "work" else None)
            have, k = history_rows(), k + 1
            if log is not None:
                log(f"seeding {home}: {have}/{rows} rows")
        return have


@contextlib.contextmanager
def sample_store(seed: str | None, given: str | None = None, at: str | None = None) -> Iterator[str]:
    """The store of one sample: ``given`` as it is, else a new store, empty or a copy of
    ``seed``, in a new temporary directory (or at the path ``at``, replaced: the same path
    every time, so a fit of this process cached for that store is used again).
    ``NBFLOW_HOME`` points at it while the context lasts."""
    if given is not None:
        with _harness.nbflow_home(given) as home:
            yield home
        return
    if at is not None:
        shutil.rmtree(at, ignore_errors=True)
        if seed is not None:
            shutil.copytree(seed, at)
        with _harness.nbflow_home(at):
            yield at
        return
    with tempfile.TemporaryDirectory(prefix="nbflow-widget-") as tmp:
        home = os.path.join(tmp, "store")
        if seed is not None:
            shutil.copytree(seed, home)
        with _harness.nbflow_home(home):
            yield home


def _fit_shared(eta_mod: Any) -> None:
    """Fit the current store's shared predictor now (as a kernel's first run did).  Older
    nbflow versions (before the fit process) are measured too, to compare in one session."""
    fit = getattr(eta_mod, "fit_in_process", None)
    eta_mod.shared_predictor(**({"fit": fit} if fit is not None else {}))


WARM = "history"  # the seeded store whose predictor is fitted before timing (a kernel's later run)
COLD = "history-cold"  # the seeded store, new each sample, nothing fitted yet (a first run): the
# full fit runs during the run only with --fit-worth-s 0 (else a short run uses the quick estimate)


def overhead(kind: str, n: int, workers: int | None, repeat: int,
             stores: dict[str, str | None], given: str | None = None) -> dict[str, Any]:
    """Plain vs watched runs of ``kind`` on each store of ``stores`` (label -> seeded store to
    copy per sample, or None for an empty one), all alternated in one session.  The
    :data:`WARM` label's copy is made at one path, and its predictor fitted before timing
    (as for a kernel's second run: the fit is shared); any other label's copy is new."""
    from nbflow.predict import eta as eta_mod
    from nbflow.predict import fitting

    with tempfile.TemporaryDirectory(prefix="nbflow-widget-warm-") as tmp:
        at = {label: os.path.join(tmp, label) for label in stores if label == WARM and given is None}
        for label, seed in stores.items():  # warm-up: imports, first widget, thread pools, the fit
            with sample_store(seed, given, at.get(label)):
                run_plain(build(kind, 200), workers)
                run_watched(build(kind, 200), workers)
                if label in at:
                    _fit_shared(eta_mod)
                    # a kernel's later run has the ETA band's calibration too: a watched
                    # run with the shared fit starts it (in the helper), waited for here
                    run_watched(build(kind, 200), workers)
                    fitting.wait_for_fits()
        return _overhead(kind, n, workers, repeat, stores, given, at)


def _overhead(kind: str, n: int, workers: int | None, repeat: int, stores: dict[str, str | None],
              given: str | None, at: dict[str, str]) -> dict[str, Any]:
    def fresh() -> nf.Workflow:  # built, then its garbage collected, before the clock starts
        wf = build(kind, n)
        gc.collect()
        return wf

    def sampler(watched: bool, seed: str | None, path: str | None) -> Callable[[], dict[str, Any]]:
        def sample() -> dict[str, Any]:
            wf = fresh()
            with sample_store(seed, given, path):
                fits, scorings = len(fitting.fit_pids()), len(eta_scores.score_pids())
                cpu, child, helpers = time.process_time(), _children_cpu(), _helper_cpu()
                wall, info = run_watched(wf, workers) if watched else (run_plain(wf, workers), None)
                out = {"wall": wall, "info": info, "cpu": time.process_time() - cpu,
                       "child_cpu": _children_cpu() - child,
                       "helper_cpu": {k: v - helpers.get(k, 0.0) for k, v in _helper_cpu().items()}}
                # A fit the run started and that is still going must not run into the next
                # sample: waited for here, outside the timed part, and counted.
                fitting.wait_for_fits()
                out["fits"] = len(fitting.fit_pids()) - fits
                out["scorings"] = len(eta_scores.score_pids()) - scorings
                return out
        return sample

    from nbflow.predict import eta_scores, fitting

    samplers = {f"{mode}/{label}": sampler(mode == "watched", seed, at.get(label))
                for label, seed in stores.items() for mode in ("plain", "watched")}
    samples = _harness.alternate(samplers, repeat, log=_harness.progress(f"widget {kind}"))
    out: dict[str, Any] = {"tasks": len(build(kind, n).nodes), "workers": workers}
    for label in stores:
        plain, watched = samples[f"plain/{label}"], samples[f"watched/{label}"]
        msgs = [s["info"] for s in watched]
        p, w = statistics.median(s["wall"] for s in plain), statistics.median(s["wall"] for s in watched)
        pc, wc = statistics.median(s["cpu"] for s in plain), statistics.median(s["cpu"] for s in watched)
        rate = [m["messages"] / max(m["seconds"], 1.0) for m in msgs]  # a sub-second run: its first second
        out[label] = {
            "plain_s": round(p, 4),
            "watched_s": round(w, 4),
            "ratio": round(w / p, 3),
            "plain_cpu_s": round(pc, 4),
            "watched_cpu_s": round(wc, 4),
            "cpu_ratio": round(wc / pc, 3),
            "fit_process_cpu_s": round(statistics.median(s["child_cpu"] for s in watched), 4),
            # the same, per helper: the fit's (which also makes the ETA's estimates) and the
            # band calibration's, during the watched run
            "helper_cpu_s": {h: round(statistics.median(s["helper_cpu"].get(h, 0.0) for s in watched), 4)
                             for h in ("fit", "scoring")},
            # full fits the watched runs started (each one ran during its run): 0 means the
            # quick estimate served the whole run
            "fits_per_watched_run": statistics.median(s.get("fits", 0) for s in watched),
            # the ETA band's calibrations (scoring past runs, in a helper) they started
            "scorings_per_watched_run": statistics.median(s.get("scorings", 0) for s in watched),
            "messages_per_run": statistics.median(m["messages"] for m in msgs),
            # the live ETA's estimates per watched run, and those made in the kernel's process
            # (the others in the helper); per sample, as the median hides a sometimes-paid one
            "estimates": [m.get("estimates", 0) for m in msgs],
            "estimates_in_kernel": [m.get("estimates_in_kernel", 0) for m in msgs],
            "messages_per_s": round(statistics.median(rate), 2) if rate else 0.0,
            "max_messages_in_1s": max(m["max_in_1s"] for m in msgs),
            "samples": {k: [round(s[key], 4) for s in group] for k, key, group in (
                ("plain_s", "wall", plain), ("watched_s", "wall", watched),
                ("plain_cpu_s", "cpu", plain), ("watched_cpu_s", "cpu", watched))},
        }
    return out


def draw_10k(repeat: int = 5) -> dict[str, Any]:
    with nf.Workflow("bench-draw") as wf:
        xs = noop.map(list(range(5000)))
        ys = [noop(noop(i)) for i in range(2500)]
        noop_sink(xs)
        noop_sink(ys)
    model = RunModel(wf)
    unregister = nf.on_run(lambda run: model if run.workflow is wf else None)
    wf.run(cache=False)
    unregister()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        view = GraphView(model)
        svg = view.svg()
        times.append(time.perf_counter() - t0)
    assert view.grouping is not None and view.layout is not None
    return {"tasks": len(model), "drawn_nodes": len(view.grouping.groups), "level": view.grouping.level,
            "layout": view.layout.engine, "seconds": round(statistics.median(times), 4),
            "svg_bytes": len(svg)}


def _thread_cpu(seen: dict[int, tuple[str, float]]) -> None:
    """Record the CPU seconds of every live thread of this process into ``seen`` (native id
    -> (name, seconds)), keeping the largest (a thread that ended keeps its last figure)."""
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    for t in psutil.Process().threads():
        name = names.get(t.id) or seen.get(t.id, ("(unnamed)", 0.0))[0]
        seen[t.id] = (name, max(seen.get(t.id, ("", 0.0))[1], t.user_time + t.system_time))


def _children_cpu() -> float:
    """CPU seconds of this process's live child processes (a fit in a process pool)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def _helper_cpu() -> dict[str, float]:
    """CPU seconds of the fit's helper process and of the band calibration's (0 when not
    started; older nbflow versions without one: 0)."""
    import psutil

    from nbflow.predict import eta_scores, fitting

    out = {}
    for label, mod in (("fit", fitting), ("scoring", eta_scores)):
        pool = getattr(mod, "_POOL", None)
        total = 0.0
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(psutil.Error, ValueError, AttributeError):
                c = psutil.Process(proc.pid).cpu_times()
                total += c.user + c.system
        out[label] = total
    return out


@contextlib.contextmanager
def _sampling(seen: dict[int, tuple[str, float]], every: float = 0.05) -> Iterator[None]:
    """Sample the threads' CPU time every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            _thread_cpu(seen)

    sampler = threading.Thread(target=loop, name="bench-sampler", daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        _thread_cpu(seen)


def _by_role(seen: dict[int, tuple[str, float]], before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per kind of thread (names without their numbers) spent since ``before``."""
    out: dict[str, float] = {}
    for tid, (name, cpu) in seen.items():
        role = "".join(ch for ch in name if not ch.isdigit()).split("-run")[0].rstrip("-_ ") or name
        if role.startswith("nbflow-predictor"):
            role = "nbflow-predictor"
        out[role] = round(out.get(role, 0.0) + cpu - before.get(tid, ("", 0.0))[1], 4)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile(kind: str, n: int, workers: int | None, seed: str | None, warm: bool = False,
            top: int = 40) -> dict[str, Any]:
    """Where a watched run's time goes: CPU seconds per thread (psutil, sampled every 50 ms,
    a plain run alongside) and the cell thread's cProfile in CPU time (the widget), nbflow's
    functions only."""
    import cProfile
    import io
    import pstats

    from nbflow.predict import eta as eta_mod
    from nbflow.predict import fitting

    out: dict[str, Any] = {}
    tmp = tempfile.TemporaryDirectory(prefix="nbflow-widget-prof-")
    at = os.path.join(tmp.name, "store") if warm else None
    with sample_store(seed, at=at):  # warm-up: imports, first widget (and the fit, if warm)
        run_plain(build(kind, 200), workers)
        run_watched(build(kind, 200), workers)
        if warm:
            _fit_shared(eta_mod)
            run_watched(build(kind, 200), workers)  # (starts the band's calibration: waited for)
            fitting.wait_for_fits()
    for watched in (False, True):
        wf = build(kind, n)
        gc.collect()
        with sample_store(seed, at=at):
            before: dict[int, tuple[str, float]] = {}
            _thread_cpu(before)
            seen = dict(before)
            children = _children_cpu()
            prof = cProfile.Profile(time.thread_time)  # CPU time: waits (for dot, the GIL) do not count
            with _sampling(seen):
                prof.enable()
                wall = run_watched(wf, workers)[0] if watched else run_plain(wf, workers)
                prof.disable()
            children = _children_cpu() - children
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats("nbflow/", top)
        out["watched" if watched else "plain"] = {
            "wall_s": round(wall, 4), "cpu_s_by_thread": _by_role(seen, before),
            "cpu_s_child_processes": round(children, 4),
            "cell_thread_profile": text.getvalue().splitlines()}
    tmp.cleanup()
    return out


def set_fit_worth(seconds: float) -> None:
    """``--fit-worth-s``: how long a run must be for the live ETA to start the full fit."""
    from nbflow.predict import live as live_mod

    live_mod.FIT_WORTH_S = seconds
    if seconds == 0:
        # The full fit starts as soon as the ETA first asks for a predictor; a patient
        # view asks only once the run has gone for the guessed cost of its first estimate
        # (ETA_GUESS_S_PER_TASK per task left: 5 s for 2 000 tasks, longer than a quiet
        # sample), so without this no fit ever ran in the "cold" samples
        # (fit_process_cpu_s 0.0). A real run long enough to want the fit gets there too.
        live_mod.ETA_GUESS_S_PER_TASK = 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--history", type=int, default=30_000,
                    help="rows of history in the seeded store (0: only the empty store)")
    ap.add_argument("--store", default=None, help="run every sample on this store as it is")
    ap.add_argument("--seed", default=None,
                    help="keep the seeded store here (filled up to --history rows) for quick re-runs")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: thread CPU and cProfile of a plain and a watched run per store")
    ap.add_argument("--spin-ms", type=float, default=SPIN_MS, help="milliseconds of work per work task")
    ap.add_argument("--workloads", default="work,noop", help="which overhead workloads to run")
    ap.add_argument("--no-draw", action="store_true", help="skip the 10k-task drawing figure")
    ap.add_argument("--fit-worth-s", type=float, default=None,
                    help="set nbflow.predict.live.FIT_WORTH_S (0: the full fit starts with the run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.json is not None:  # (the samples run in other directories: resolve it now)
        args.json = os.path.abspath(args.json)
    _set_spin(args.spin_ms)
    if args.fit_worth_s is not None:
        set_fit_worth(args.fit_worth_s)
    workloads = args.workloads.split(",")
    install_counting_comm()
    rows = 0
    log = _harness.progress("widget")
    with tempfile.TemporaryDirectory(prefix="nbflow-widget-seed-") as tmp:
        stores: dict[str, str | None] = {"fresh": None}
        if args.store is not None:
            stores = {"given": None}
        elif args.history > 0:
            seed = args.seed or os.path.join(tmp, "seed")
            rows = seed_store(seed, args.history, args.n, args.workers, log)
            stores[WARM] = stores[COLD] = seed
        if args.profile:
            prof: dict[str, Any] = {"benchmark": "widget-profile", "loadavg": os.getloadavg(),
                                    "machine": _harness.machine_info(nf.__version__)}
            for label, seed_dir in stores.items():
                prof[label] = profile("work", args.n, args.workers, seed_dir, warm=label == WARM)
            _harness.emit_json(prof, args.json)
            return
        res = {kind: overhead(kind, args.n, args.workers if kind == "work" else None, args.repeat, stores,
                              args.store) for kind in workloads}
    draw = None
    if not args.no_draw:
        with sample_store(None):
            draw = draw_10k()
    out = {
        "benchmark": "widget",
        "machine": _harness.machine_info(nf.__version__),
        "loadavg": os.getloadavg(),
        "history_rows": rows,
        "spin_ms": SPIN_MS,
        "fit_worth_s": args.fit_worth_s,
        **res,
        "draw_10k": draw,
        "targets": {
            "work_ratio_max": 1.10, "messages_per_s_max": 10, "draw_10k_s_max": 1.0, "drawn_nodes_max": 200},
        "pass": {
            "overhead": (max(res["work"][label]["ratio"] for label in stores) <= 1.10) if "work" in res
            else None,
            "messages": all(r[label]["max_messages_in_1s"] <= 10 for r in res.values() for label in stores),
            "draw_10k": draw["seconds"] < 1.0 and draw["drawn_nodes"] <= 200 if draw is not None else None,
        },
    }
    _harness.emit_json(out, args.json)


if __name__ == "__main__":
    main()
