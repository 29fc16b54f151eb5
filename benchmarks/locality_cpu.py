"""Where the CPU of one Dask run goes: the client's threads, the scheduler, the workers.

On the 2-core machine the benchmarks run on, the client process, Dask's scheduler and the
four worker processes share the same cores: every millisecond of CPU nbflow spends outside
the tasks themselves is taken from the workers.  ``benchmarks/locality_phases.py`` cuts a
run into phases by wall clock; this script counts CPU per place, for nbflow and for plain
``dask.delayed`` on the same graph, alternated on one cluster:

- **client, per thread** (``psutil``: user + system time of every thread of this
  process, named after its Python thread; threads that ended during the run are summed
  as ``ended threads``).  With ``--cluster local`` (a ``LocalCluster``, as the locality
  benchmark uses) Dask's scheduler runs on the client's I/O loop thread, so its CPU is
  in the ``IO loop`` row; with ``--cluster subprocess`` it runs in a process of its own;
- **scheduler** (its process, ``--cluster subprocess`` only);
- **workers**: their processes' CPU, the sum of the tasks' compute durations from the
  task stream, and what is left (the workers' own loop, receiving and sending);
- per task: the mean compute duration on the workers (is each task slower?) and the idle
  time between tasks on a worker while the run was going (are there gaps?).

Every CPU figure is counted from the call that starts the run to the value in hand, then
again after nbflow's deferred end-of-run read of the workers' logs (``after settle``),
which runs in a helper thread once the run returned.

Usage::

    .venv/bin/python benchmarks/locality_cpu.py --workloads chains,trace --repeat 5
    .venv/bin/python benchmarks/locality_cpu.py --workloads chains,fan,trace --repeat 5 --warmup 1 --hold-all

``--hold-all`` alternates nbflow with every result held by a future of this process
(``NBFLOW_DASK_HOLD_ALL=1``, session 6's path) against the default, where intermediates
that would be handed over are sent unheld.  ``--before`` (session 5's code) holds every
future too.

``--session-8`` alternates the default against session 8's path (``nbflow-s8``: the scheduler
plugin sends every turn's completions at once, and every watched future, unheld ones too,
is handed to Dask's client loop; :func:`locality.session_8`).

``--announce`` alternates the default, where nbflow's scheduler plugin sends the
completions of one turn of the scheduler's loop in one event, against the workers
announcing each result themselves (``NBFLOW_DASK_ANNOUNCE=1`` and the plugin's reports
switched off for the run: session 7's path; ``nbflow-announce``).  ``--wrapper`` also
measures, inside a Dask task on a worker, the CPU of nbflow's task wrapper per call
(bare call, ``_apply_located`` without and with its announcement).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, delayed_graph, session_5, session_8, trace_spec
else:
    import _harness
    from locality import WORKLOADS, delayed_graph, session_5, session_8, trace_spec


def _pid() -> int:
    return os.getpid()


def _proc_cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _proc_detail(pid: int) -> tuple[float, float, int]:
    """(user, system, minor page faults) of a process (``/proc/PID/stat``)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    try:
        with open(f"/proc/{pid}/stat") as f:
            minflt = int(f.read().rsplit(")", 1)[1].split()[7])
    except OSError:  # (not Linux: no fault count)
        minflt = 0
    return float(t.user), float(t.system), minflt


def _threads() -> dict[str, float]:
    """CPU seconds of every live thread of this process, by Python thread name."""
    import psutil

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for t in psutil.Process().threads():
        name = names.get(t.id, "native")
        name = name.split("-")[0] if name.startswith(("AnyIO worker", "ThreadPoolExecutor")) else name
        key = f"{name}#{t.id}"
        out[key] = t.user_time + t.system_time
    return out


class Meter:
    """CPU of every place, before and after (see the module)."""

    def __init__(self, client: Any, scheduler_pid: int | None) -> None:
        self.client = client
        self.scheduler_pid = scheduler_pid
        self.worker_pids = list(client.run(_pid).values())

    def messages(self) -> tuple[int, int]:
        """Messages sent so far (scheduler -> this client, this client -> scheduler): what
        the IO loop handles, counted exactly, so it does not depend on the load.  The
        scheduler's side is read only when it runs in this process (a LocalCluster)."""
        comm = getattr(self.client, "scheduler_comm", None)
        up = int(getattr(comm, "message_count", 0))
        sched = getattr(getattr(self.client, "cluster", None), "scheduler", None)
        down_comm = getattr(sched, "client_comms", {}).get(self.client.id) if sched is not None else None
        return int(getattr(down_comm, "message_count", 0)), up

    def snap(self) -> dict[str, Any]:
        return {"process": time.process_time(), "threads": _threads(), "messages": self.messages(),
                "scheduler": _proc_cpu(self.scheduler_pid) if self.scheduler_pid else 0.0,
                "workers": [_proc_detail(p) for p in self.worker_pids]}

    @staticmethod
    def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        out = {"client process": b["process"] - a["process"],
               "scheduler process": b["scheduler"] - a["scheduler"],
               "worker processes": sum(u1 + s1 - u0 - s0 for (u0, s0, _), (u1, s1, _)
                                       in zip(a["workers"], b["workers"], strict=True)),
               "worker processes, system": sum(s1 - s0 for (_, s0, _), (_, s1, _)
                                               in zip(a["workers"], b["workers"], strict=True)),
               "worker page faults (thousands)": sum(f1 - f0 for (_, _, f0), (_, _, f1)
                                                     in zip(a["workers"], b["workers"], strict=True)) / 1e6}
        out["messages scheduler -> client"] = float(b["messages"][0] - a["messages"][0])
        out["messages client -> scheduler"] = float(b["messages"][1] - a["messages"][1])
        live = 0.0
        by_name: dict[str, float] = {}
        for key, cpu in b["threads"].items():
            d = cpu - a["threads"].get(key, 0.0)
            live += d
            name = key.split("#")[0]
            by_name[name] = by_name.get(name, 0.0) + d
        for name, d in by_name.items():
            out[f"client thread: {name}"] = d
        out["client thread: ended threads"] = max(0.0, out["client process"] - live)
        return out


def _stream(stream: list[dict[str, Any]]) -> dict[str, float]:
    """Per-task compute seconds and per-worker idle gaps from a task stream."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    durations = []
    for rec in stream:
        if str(rec.get("key", "")).startswith("nbflow-aux"):
            continue
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute":
                durations.append(ss["stop"] - ss["start"])
                by_worker.setdefault(rec.get("worker", "?"), []).append((ss["start"], ss["stop"]))
    gaps = 0.0
    for spans in by_worker.values():
        spans.sort()
        for (_, e0), (s1, _) in itertools.pairwise(spans):
            gaps += max(0.0, s1 - e0)
    return {"tasks computed": float(len(durations)), "compute sum": sum(durations),
            "compute per task": statistics.mean(durations) if durations else float("nan"),
            "idle between tasks (sum over workers)": gaps,
            "workers used": float(len(by_worker))}


def _apply_quiet(topic: str, fn: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any] | None) -> Any:
    return fn(*args, **kwargs) if kwargs else fn(*args)


@contextlib.contextmanager
def experiment(name: str) -> Iterator[None]:
    """Switch one piece of nbflow's Dask path off, to see what it costs (not a mode of
    nbflow: the results of such a run may lack what the piece provides)."""
    from nbflow.engine.backends import dask as dask_backend
    from nbflow.locality import agent

    if name == "no-announce":  # workers do not announce results; the client asks, batched
        orig = dask_backend._apply_located
        dask_backend._apply_located = _apply_quiet  # type: ignore[assignment]
        try:
            yield
        finally:
            dask_backend._apply_located = orig
    elif name == "no-locate":  # no announcement and no question: what locating costs at most
        orig = dask_backend._apply_located
        where = dask_backend.DaskBackend._where

        async def nowhere(self: Any, unique: str) -> Any:
            return None, None, None, ()

        dask_backend._apply_located = _apply_quiet  # type: ignore[assignment]
        dask_backend.DaskBackend._where = nowhere  # type: ignore[method-assign]
        try:
            yield
        finally:
            dask_backend._apply_located = orig
            dask_backend.DaskBackend._where = where  # type: ignore[method-assign]
    elif name == "no-end-read":  # no end-of-run read of the workers' logs and memory
        closing = agent.LocalityAgent.closing
        agent.LocalityAgent.closing = lambda self, client, stays_open=False: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            agent.LocalityAgent.closing = closing  # type: ignore[method-assign]
    else:
        yield


@contextlib.contextmanager
def holding_all(on: bool) -> Iterator[None]:
    """``NBFLOW_DASK_HOLD_ALL=1`` for one run: every result held by a future of this
    process, as before session 7 (nothing sent unheld)."""
    if not on:
        yield
        return
    old = os.environ.get("NBFLOW_DASK_HOLD_ALL")
    os.environ["NBFLOW_DASK_HOLD_ALL"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("NBFLOW_DASK_HOLD_ALL", None)
        else:
            os.environ["NBFLOW_DASK_HOLD_ALL"] = old


@contextlib.contextmanager
def announcing(client: Any, on: bool) -> Iterator[None]:
    """The workers announce each result (session 7's path) for one run: the backend is
    told so by ``NBFLOW_DASK_ANNOUNCE=1``, and the scheduler plugin's completion events
    are switched off meanwhile."""
    if not on:
        yield
        return
    from nbflow.engine.backends.dask_plugin import set_reporting

    old = os.environ.get("NBFLOW_DASK_ANNOUNCE")
    os.environ["NBFLOW_DASK_ANNOUNCE"] = "1"
    was = client.run_on_scheduler(set_reporting, on=False)
    try:
        yield
    finally:
        client.run_on_scheduler(set_reporting, on=was)
        if old is None:
            os.environ.pop("NBFLOW_DASK_ANNOUNCE", None)
        else:
            os.environ["NBFLOW_DASK_ANNOUNCE"] = old


@contextlib.contextmanager
def windowed(client: Any, window: float) -> Iterator[None]:
    """The scheduler plugin holds completions for ``window`` seconds (sent together, or at
    once with a completion some client holds) for one run."""
    if not window:
        yield
        return
    from nbflow.engine.backends.dask_plugin import set_reporting

    was, old = client.run_on_scheduler(set_reporting, on=True, window=window)
    try:
        yield
    finally:
        client.run_on_scheduler(set_reporting, on=was, window=old)


def _burn_wrapper(mode: str, calls: int) -> float:
    """In a Dask task: process CPU seconds per call of nbflow's task wrapper around a
    function that does nothing (``bare``: the call alone; ``quiet``: ``_apply_located``
    without an announcement, the default with nbflow's plugin; ``announce``: with its
    announcement, on a topic nobody subscribes to)."""
    import numpy as np

    from nbflow.engine.backends.dask import _apply_located

    value = np.zeros(1000)

    def fn(x: Any) -> Any:
        return x

    args = (value,)
    t0 = time.process_time()
    if mode == "bare":
        for _ in range(calls):
            fn(*args)
    else:
        topic = "nbflow-benchmark-wrapper" if mode == "announce" else None
        for _ in range(calls):
            _apply_located(topic, fn, args, None)
    time.sleep(0.2)  # (the worker's loop sends what was logged meanwhile: counted too)
    return (time.process_time() - t0) / calls


def wrapper_cost(client: Any, calls: int = 2000, repeat: int = 5) -> dict[str, float]:
    """Median µs of worker-process CPU per call of each wrapper mode (see _burn_wrapper);
    the modes alternate, each in a task of its own on one worker."""
    worker = sorted(client.scheduler_info()["workers"])[0]
    got: dict[str, list[float]] = {"bare": [], "quiet": [], "announce": []}
    for _ in range(repeat):
        for mode in got:
            fut = client.submit(_burn_wrapper, mode, calls, workers=[worker], pure=False)
            got[mode].append(fut.result() * 1e6)
    return {m: statistics.median(v) for m, v in got.items()}


def sample_nbflow(client: Any, meter: Meter, spec: list[Any], keep: str = "reachable",
                  before: bool = False, switch_off: str = "",
                  hold_all: bool = False, announce: bool = False,
                  window: float = 0.0, s8: bool = False) -> dict[str, float]:
    from distributed import get_task_stream

    from nbflow import locality

    wf, end = trace_spec("locality-cpu", spec)
    as_before = (session_5() if before else session_8(client) if s8
                 else contextlib.nullcontext())
    with get_task_stream(client=client) as ts, locality.placement("locality", keep=keep), \
            as_before, experiment(switch_off), holding_all(hold_all or before), \
            announcing(client, announce or before), windowed(client, window):
        a = meter.snap()
        t0 = time.perf_counter()
        run = wf.run(backend=client, cache=False)
        run[end]
        wall = time.perf_counter() - t0
        b = meter.snap()
        agent = run.backends["dask"].placement
        if agent is not None:
            agent.settle()
        c = meter.snap()
    out = {"makespan": wall, **Meter.delta(a, b), **_stream(ts.data)}
    out["client process after settle"] = Meter.delta(a, c)["client process"]
    backend = run.backends["dask"]
    out["announcements"] = float(getattr(backend, "told_by_worker", 0))
    out["handed over"] = float(getattr(backend, "handed_over", 0))
    out["scheduler asked"] = float(getattr(backend, "asked_scheduler", 0))
    out["unheld"] = float(getattr(backend, "unheld", 0))
    watcher = getattr(backend, "_watcher", None)
    out["completions late"] = float(getattr(watcher, "late", 0))
    return out


def sample_dask(client: Any, meter: Meter, spec: list[Any]) -> dict[str, float]:
    from distributed import get_task_stream

    nodes = delayed_graph(spec)
    with get_task_stream(client=client) as ts:
        a = meter.snap()
        t0 = time.perf_counter()
        client.compute(nodes["end"]).result()
        wall = time.perf_counter() - t0
        b = meter.snap()
    out = {"makespan": wall, **Meter.delta(a, b), **_stream(ts.data)}
    out["client process after settle"] = out["client process"]
    return out


@contextlib.contextmanager
def cluster(kind: str) -> Iterator[tuple[Any, int | None]]:
    if kind == "local":
        with _harness.local_cluster() as client:
            yield client, None
        return
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    cl = SubprocessCluster(host="127.0.0.1", n_workers=4, threads_per_worker=1,
                           dashboard_address=None, worker_class="distributed.Worker")
    client = Client(cl, set_as_default=False)
    try:
        yield client, client.run_on_scheduler(_pid)
    finally:
        client.close()
        cl.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="chains,trace")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cluster", choices=["local", "subprocess"], default="local")
    ap.add_argument("--keep-all", action="store_true", help="also nbflow with keep='all'")
    ap.add_argument("--switch-off", default="",
                    help="experiments, comma-separated: no-announce, no-locate, no-end-read")
    ap.add_argument("--before", action="store_true",
                    help="also nbflow with this session's changes switched off (nbflow-s5)")
    ap.add_argument("--hold-all", action="store_true",
                    help="also nbflow holding a future for every result (NBFLOW_DASK_HOLD_ALL=1: "
                         "session 6's code path; nbflow-held)")
    ap.add_argument("--announce", action="store_true",
                    help="also nbflow with the workers announcing each result "
                         "(NBFLOW_DASK_ANNOUNCE=1: session 7's path; nbflow-announce)")
    ap.add_argument("--window", type=float, default=0.0,
                    help="also nbflow with the plugin holding completions this many ms to send "
                         "them together (nbflow-window)")
    ap.add_argument("--session-8", action="store_true",
                    help="also nbflow with session 9's changes switched off (nbflow-s8: no "
                         "completions window, every watched future handed to the client loop)")
    ap.add_argument("--wrapper", action="store_true",
                    help="also the worker-side CPU of nbflow's task wrapper per call")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("cpu")
    doc: dict[str, Any] = {"benchmark": "locality_cpu", "machine": _harness.machine_info(),
                           "cluster": args.cluster, "workloads": {},
                           "load_before": os.getloadavg()}
    with _harness.nbflow_home(), cluster(args.cluster) as (client, spid):
        meter = Meter(client, spid)
        if args.wrapper:
            doc["wrapper_us_per_call"] = wrapper_cost(client)
            log("worker CPU per call of the task wrapper, µs: " + ", ".join(
                f"{m} {v:.1f}" for m, v in doc["wrapper_us_per_call"].items()))
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers: dict[str, Callable[[], dict[str, float]]] = {
                "nbflow": lambda spec=spec: sample_nbflow(client, meter, spec),
                "dask": lambda spec=spec: sample_dask(client, meter, spec)}
            if args.before:  # the same run with session 6's changes switched off
                samplers["nbflow-s5"] = lambda spec=spec: sample_nbflow(client, meter, spec, before=True)
            if args.session_8:  # the same run with session 9's changes switched off
                samplers["nbflow-s8"] = lambda spec=spec: sample_nbflow(client, meter, spec, s8=True)
            if args.hold_all:  # the same run with session 7's unheld intermediates off
                samplers["nbflow-held"] = lambda spec=spec: sample_nbflow(client, meter, spec,
                                                                          hold_all=True)
            if args.window:  # completions held for a window by the plugin, sent together
                samplers["nbflow-window"] = lambda spec=spec: sample_nbflow(
                    client, meter, spec, window=args.window / 1e3)
            if args.announce:  # the same run with the workers announcing each result
                samplers["nbflow-announce"] = lambda spec=spec: sample_nbflow(client, meter, spec,
                                                                              announce=True)
            for piece in filter(None, args.switch_off.split(",")):
                samplers[f"nbflow-{piece}"] = functools.partial(sample_nbflow, client, meter, spec,
                                                                switch_off=piece)
            if args.keep_all:  # every result held to the end (keep="all"): what memory costs
                samplers["nbflow-keep-all"] = lambda spec=spec: sample_nbflow(client, meter, spec, "all")
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {}
            for system, ss in got.items():
                keys = sorted({k for s in ss for k in s})
                med[system] = {k: statistics.median(s.get(k, 0.0) for s in ss) for k in keys}
            doc["workloads"][name] = {"tasks": len(spec), "medians": med, "samples": got}
            n = len(spec)
            log(f"{name} ({n} tasks): median ms (per task)")
            keys = sorted(set().union(*med.values()))
            log("  " + " " * 45 + "".join(f"{m:>22s}" for m in med))
            for k in keys:
                row = [med[m].get(k, 0.0) for m in med]
                if k in ("tasks computed", "workers used", "announcements", "scheduler asked",
                         "handed over", "unheld", "completions late") or k.startswith("messages"):
                    log(f"  {k:45s}" + "".join(f"{v:22.0f}" for v in row))
                else:
                    log(f"  {k:45s}" + "".join(f"{v * 1e3:13.1f} ({v * 1e3 / n:5.2f})" for v in row))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
