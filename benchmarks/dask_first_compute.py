"""One Dask run step by step, in the clocks of the places that took each step.

``locality_phases.py`` dates a task's computation with Dask's task stream, whose times are
the worker's clock *plus that worker's estimate of its offset to the scheduler*
(``Worker.scheduler_delay``, taken from heartbeat round trips).  On one busy machine that
estimate is noise of −4 to +55 ms, different per worker and changing with every heartbeat
(this script records it), so a phase ending or starting "on a worker" there is off by as
much.  This script dates every step where it happened, each in its own clock (the workers
are processes of this machine: one clock), for nbflow (placement ``locality``) and
``dask.delayed`` alternated on a warm ``LocalCluster`` (4 single-thread worker processes,
the scheduler in a thread of this process: the locality benchmark's cluster).  Times are
from the call, ms:

- ``graph queued``: nbflow (or Dask) handed the ``update-graph`` message to Dask's client;
  ``graph written`` (its size: ``graph bytes``): the client wrote the ``update-graph``
  message; ``scheduler: update-graph begins`` / ``ends``: the scheduler's handler (and of
  it the materialisation, the ordering and the task states, as the scheduler's own
  ``update-graph`` event reports them); ``compute-task queued`` / ``written``: the first
  task's message on the scheduler's batched stream to its worker; ``worker: compute-task
  handled`` / ``worker: executing``: that worker's state machine took it and started it
  (the worker's own logs);
- for *fan* (``root``, ``d0``..``d7``, ``end``), ``fan: ...``: each task's move to
  processing and to memory on the scheduler (its transition log) and its start and end on
  its worker (the worker's own transition log), as the gaps between them; ``fan: derives'
  workers (n)``: on how many workers the derives ran (a spread fan moves the root's 30 MB);
- the tail: ``client: told end is in memory`` (Dask's report), ``client: plugin's event
  with end`` (nbflow's scheduler plugin), ``nbflow: engine done``, ``nbflow: backend
  close begins`` / ``closed``, ``nbflow: wait returns``, ``result in hand``;
- ``cpu <thread>: <from> -> <to>``: each thread's CPU between the call, the graph's write,
  the root and the end reaching memory, and the result (``pthread_getcpuclockid``).

Systems (``--systems``): ``nbflow``; ``nbflow-none`` (no placement hints: Dask places);
``nbflow-window0`` (nbflow's scheduler plugin sends each turn's completions at once);
``nbflow-no-start-send`` (the plugin does not send what waits when a held task starts);
``nbflow-session-10`` (session 11's two tail changes off: the final result is gathered as
the run closes instead of coming with its completion, and the deferred locality read
starts as the backend closes instead of after the run's thread ended), and each alone,
``nbflow-no-carry`` and ``nbflow-read-at-close``; ``nbflow-session-11-a1`` (session 11's
second-round CPU cuts on the path to the graph switched off: :func:`locality.session_11_a1`);
``dask``.

Usage::

    .venv/bin/python benchmarks/dask_first_compute.py --workloads fan --repeat 30 --warmup 2 \
        --systems nbflow,nbflow-session-10,dask --json benchmarks/dask-first-compute.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

if __package__:
    from . import _harness
    from .locality import WORKLOADS, delayed_graph, session_11_a1, session_11_tail, trace_spec
else:
    import _harness
    from locality import WORKLOADS, delayed_graph, session_11_a1, session_11_tail, trace_spec

_marks: dict[str, float] = {}
_last_write: dict[int, tuple[float, list[str]]] = {}  # stream -> its last write (time, ops)
_writes_before: list[str] = []  # what went to the derives' worker just before their tasks
# mark -> {thread name: CPU seconds} when it was reached (see _cpu_now)
_cpu: dict[str, dict[str, float]] = {}
WINDOWS = ("call", "graph written", "root in memory", "end in memory", "result")


def _thread_group(name: str) -> str:
    """Threads by what they are (Dask names its helper threads with a counter)."""
    for prefix in ("Dask-Offload", "ThreadPoolExecutor", "AnyIO worker", "asyncio", "nbflow-run-"):
        if name.startswith(prefix):
            return prefix.rstrip("-")
    return name.rstrip("0123456789-_ ") or name


def _cpu_now(mark: str) -> None:
    """Every thread's CPU seconds so far (``pthread_getcpuclockid``: exact, ~µs each)."""
    import threading

    if mark in _cpu:
        return
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))  # type: ignore[arg-type]
        except (OSError, TypeError, ValueError):  # (a thread that just ended)
            continue
        group = _thread_group(t.name)
        out[group] = out.get(group, 0.0) + cpu
    out["(process)"] = time.process_time()
    _cpu[mark] = out


class _CpuMarks(SchedulerPlugin):
    """A scheduler plugin (the scheduler runs in this process): snapshots the threads' CPU
    as the run's root and end reach memory."""

    name = "first-compute-cpu-marks"

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory":
            role = _name(key)
            if role in ("root", "end"):
                _cpu_now(f"{role} in memory")


def cpu_windows() -> dict[str, float]:
    """CPU seconds of each thread group between consecutive marks of :data:`WINDOWS`
    (``cpu <group>: <from> -> <to> (s)``); groups under 0.05 ms are left out."""
    out: dict[str, float] = {}
    for a, b in itertools.pairwise(WINDOWS):
        if a not in _cpu or b not in _cpu:
            continue
        for group, end in _cpu[b].items():
            d = end - _cpu[a].get(group, 0.0)
            if d > 5e-5:
                out[f"cpu {group}: {a} -> {b} (s)"] = d
    return out


def _mark(name: str, when: float | None = None) -> None:
    _marks.setdefault(name, time.time() if when is None else when)


@contextlib.contextmanager
def marks(client: Any) -> Iterator[None]:
    """Mark the graph's write by the client, the scheduler's ``update-graph`` handler, and
    the first ``compute-task`` the scheduler queues and writes to a worker."""
    sched = client.cluster.scheduler
    comm = client.scheduler_comm.comm
    write = comm.write
    handlers = sched.stream_handlers
    update = handlers["update-graph"]

    queue = type(client)._send_to_scheduler

    def queued_graph(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph":
            _mark("graph queued")
        return queue(self, msg)

    async def written(payload: Any, *a: Any, **k: Any) -> Any:
        if "graph written" not in _marks and any(
                isinstance(m, dict) and m.get("op") == "update-graph" for m in payload):
            _mark("graph written")
            _cpu_now("graph written")
            for m in payload:
                if isinstance(m, dict) and m.get("op") == "update-graph":
                    ser = m.get("expr_ser")
                    frames = getattr(ser, "frames", None) or ()
                    _marks["graph bytes"] = float(sum(len(f) for f in frames))
        return await write(payload, *a, **k)

    async def updating(**kw: Any) -> Any:
        _mark("scheduler: update-graph begins")
        try:
            return await update(**kw)
        finally:
            _mark("scheduler: update-graph ends")

    undo = []
    for address, stream in list(sched.stream_comms.items()):
        send, swrite = stream.send, stream.comm.write

        def queued(*msgs: Any, send: Any = send, address: str = address) -> Any:
            for m in msgs:
                if isinstance(m, dict) and m.get("op") == "compute-task":
                    _mark("compute-task queued")
                    _marks.setdefault("compute-task worker", address)  # type: ignore[arg-type]
                    if _name(m.get("key")).startswith("derive"):
                        _mark("derives: compute-task queued")
            return send(*msgs)

        async def swritten(payload: Any, *a: Any, swrite: Any = swrite, **k: Any) -> Any:
            ops = [m.get("op") for m in payload if isinstance(m, dict)]
            if "compute-task" in ops:
                _mark("compute-task written")
            derives = [m for m in payload if isinstance(m, dict) and m.get("op") == "compute-task"
                       and _name(m.get("key")).startswith("derive")]
            if (derives and "derives: compute-task queued" in _marks
                    and "derives: compute-task written" not in _marks):
                _mark("derives: compute-task written")
                last = _last_write.get(id(swrite))
                if last is not None:  # (what this stream wrote before, and when)
                    _marks["derives: the stream's write before (at)"] = last[0]
                    _writes_before.append(",".join(last[1]))
            _last_write[id(swrite)] = (time.time(), [str(o) for o in ops])
            return await swrite(payload, *a, **k)

        stream.send = queued
        stream.comm.write = swritten
        undo.append(stream)
    client_handlers = client._stream_handlers
    in_memory, event = client_handlers["key-in-memory"], client_handlers["event"]

    def told_in_memory(key: Any = None, **k: Any) -> Any:
        if _name(key) == "end":
            _mark("client: told end is in memory")
        return in_memory(key=key, **k)

    def told_event(topic: Any = None, event: Any = None, **k: Any) -> Any:
        msg = event[1] if isinstance(event, (tuple, list)) and len(event) == 2 else None
        if isinstance(msg, dict) and any(_name(d[0]) == "end" for d in msg.get("done", ())):
            _mark("client: plugin's event with end")
        return told(topic=topic, event=event, **k)

    told = event
    client_handlers["key-in-memory"], client_handlers["event"] = told_in_memory, told_event
    comm.write = written
    handlers["update-graph"] = updating
    type(client)._send_to_scheduler = queued_graph
    try:
        yield
    finally:
        type(client)._send_to_scheduler = queue
        client_handlers["key-in-memory"], client_handlers["event"] = in_memory, event
        handlers["update-graph"] = update
        del comm.write
        for stream in undo:
            del stream.send
            del stream.comm.write


def _worker_marks(dask_worker: Any, since: float) -> dict[str, float]:
    """On a worker: when it handled its first compute-task after ``since`` and when that
    task began executing (its story)."""
    out: dict[str, float] = {}
    first = None
    for ev in dask_worker.state.stimulus_log:
        if type(ev).__name__ == "ComputeTaskEvent" and (ev.handled or 0) >= since:
            first = ev
            break
    if first is None:
        return out
    out["worker: compute-task handled"] = float(first.handled)
    # (the task stream's times are the worker's plus its estimate of the scheduler's
    # offset: on one machine that estimate is noise of a few ms, different per worker)
    out["worker: scheduler_delay (s)"] = float(dask_worker.scheduler_delay)
    for rec in dask_worker.state.story(first.key):
        if isinstance(rec, tuple) and len(rec) >= 6 and rec[2] == "executing":
            out["worker: executing"] = float(rec[-1])
            break
    return out


def _scheduler_marks(sched: Any, t0: float, prefix: str) -> dict[str, float]:
    """The first of the run's tasks to go to processing, and the update-graph metrics."""
    out: dict[str, float] = {}
    for rec in sched.transition_log:
        key, _start, finish, *_rest, ts = rec
        if ts < t0 or not str(key).startswith(prefix):
            continue
        if finish == "processing":
            out["scheduler: first task processing"] = ts
            break
    for _when, msg in reversed(list(sched.get_events("scheduler") or ())):
        if isinstance(msg, dict) and msg.get("action") == "update-graph" and "metrics" in msg:
            m = msg["metrics"]
            if m.get("start_timestamp_seconds", 0) >= t0:
                out["update-graph: materialise (s)"] = m["materialization_duration_seconds"]
                out["update-graph: order (s)"] = -m["ordering_duration_seconds"]
                out["update-graph: task states (s)"] = -m["state_initialization_duration_seconds"]
            break
    return out


def _first_compute(stream: list[dict[str, Any]]) -> float:
    starts = [ss["start"] for rec in stream for ss in rec.get("startstops", ())
              if ss.get("action") == "compute" and not str(rec.get("key", "")).startswith("nbflow-aux")]
    return min(starts) if starts else math.nan


def _delay(dask_worker: Any) -> float:
    return float(dask_worker.scheduler_delay)


def _spans(client: Any, stream: list[dict[str, Any]]) -> dict[str, float]:
    """The run's compute in the workers' own clocks: the task stream's times less each
    worker's current estimate of its offset to the scheduler (which the worker added)."""
    delays = client.run(_delay)
    starts, stops, busy = [], [], 0.0
    used = set()
    for rec in stream:
        if str(rec.get("key", "")).startswith("nbflow-aux"):
            continue
        d = delays.get(rec.get("worker"), 0.0)
        for ss in rec.get("startstops", ()):
            if ss.get("action") == "compute":
                starts.append(ss["start"] - d)
                stops.append(ss["stop"] - d)
                busy += ss["stop"] - ss["start"]
                used.add(rec.get("worker"))
    if not starts:
        return {}
    return {"compute: first start, workers' clocks": min(starts),
            "compute: last end, workers' clocks": max(stops),
            "compute: sum of task seconds (s)": busy, "compute: workers used (n)": float(len(used))}


_ROLES = {"root": "root", "make-0": "root", "end": "end", "summary-0": "end"}


def _name(key: Any) -> str:
    """A fan task's role, ``root``, ``end`` or ``derive``, from nbflow's key
    (``derive-3-<run tag>-<n>``: a task named by its function) or Dask's (``d3-<stamp>``)."""
    k = str(key)
    parts = k.rsplit("-", 2)
    base = parts[0] if len(parts) == 3 and len(parts[1]) == 8 else k.rsplit("-", 1)[0]
    return _ROLES.get(base, "derive" if base.startswith(("d", "derive")) else base) + (
        "" if base in _ROLES else f":{base}")


def _worker_log(dask_worker: Any, since: float) -> list[tuple[str, str, float]]:
    """On a worker: its tasks' moves to executing and to memory since ``since``, in its
    own clock (its transition log; the task stream's times carry the worker's estimate of
    its offset to the scheduler, which on one busy machine is off by milliseconds)."""
    out = []
    for rec in dask_worker.state.log:
        # (key, start, requested, reached, recommendations, stimulus id, time)
        if (isinstance(rec, tuple) and len(rec) == 7 and rec[3] in ("executing", "memory")
                and isinstance(rec[6], float) and rec[6] >= since):
            out.append((str(rec[0]), rec[3], rec[6]))
    return out


def fan_steps(sched: Any, worker_logs: dict[str, list[tuple[str, str, float]]],
              t0: float) -> dict[str, float]:
    """A *fan* run (``root``, ``d0``..``d7``, ``end``) step by step: when the scheduler moved
    each task to processing and to memory (its transition log) and when its worker began
    executing it and had its result (the worker's own log), as the gaps between them."""
    proc: dict[str, float] = {}
    mem: dict[str, float] = {}
    for rec in sched.transition_log:
        key, finish, ts = rec[0], rec[2], rec[-1]
        if ts < t0:
            continue
        n = _name(key)
        if finish == "processing":
            proc.setdefault(n, ts)
        elif finish == "memory":
            mem.setdefault(n, ts)
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    for entries in worker_logs.values():
        for key, finish, ts in entries:
            n = _name(key)
            if finish == "executing":
                began.setdefault(n, ts)
            elif n in began:
                ended.setdefault(n, ts)
    derives = [n for n in began if n.startswith("derive:")]
    need = ("root", "end")
    if (not derives or any(n not in began or n not in ended or n not in mem or n not in proc
                           for n in need)):
        return {}
    first_proc = min(proc.get(n, math.inf) for n in derives)
    last_mem = max(mem.get(n, -math.inf) for n in derives)
    d_start = min(began[n] for n in derives)
    d_stop = max(ended.get(n, -math.inf) for n in derives)
    return {
        "fan: root processing -> executing on its worker": began["root"] - proc["root"],
        "fan: root executes": ended["root"] - began["root"],
        "fan: root done -> scheduler has it": mem["root"] - ended["root"],
        "fan: scheduler has root -> first derive processing": first_proc - mem["root"],
        "fan: first derive processing -> derives execute": d_start - first_proc,
        "fan: derives, first executing -> last done": d_stop - d_start,
        "fan: last derive done -> scheduler has them all": last_mem - d_stop,
        "fan: scheduler has them -> end processing": proc["end"] - last_mem,
        "fan: end processing -> executing": began["end"] - proc["end"],
        "fan: end executes": ended["end"] - began["end"],
        "fan: end done -> scheduler has it": mem["end"] - ended["end"],
        "fan: derives' workers (n)": float(sum(1 for e in worker_logs.values()
                                              if any(_name(k) in derives for k, _, _ in e))),
        "fan: scheduler has end (at)": mem["end"] - t0,
        "fan: end done on its worker (at)": ended["end"] - t0,
    }


def _collect(client: Any, t0: float, prefix: str, stream: list[dict[str, Any]]) -> dict[str, float]:
    sched = client.cluster.scheduler
    got = dict(_marks)
    got.update(_scheduler_marks(sched, t0, prefix))
    worker = _marks.get("compute-task worker")
    if worker is not None:
        got.update(client.run(_worker_marks, since=t0, workers=[worker])[worker])
    got["first compute start"] = _first_compute(stream)
    got.update(_spans(client, stream))
    steps = fan_steps(sched, client.run(_worker_log, since=t0), t0)
    if "worker: scheduler_delay (s)" in got:  # the same start in the worker's own clock
        got["first compute start, worker's clock"] = (
            got["first compute start"] - got["worker: scheduler_delay (s)"])
    out = {}
    for k, v in got.items():
        if isinstance(v, str):
            continue
        out[k] = v if k.endswith(("(s)", "(n)")) or k == "graph bytes" else v - t0
    out.update({f"{k} (s)" if not k.endswith(("(at)", "(n)")) else k: v for k, v in steps.items()})
    if _writes_before:
        out["derives: the write before had free-keys (n)"] = float("free-keys" in _writes_before[0])
        _writes_before.clear()
    return out


@contextlib.contextmanager
def plugin_variant(client: Any, variant: str) -> Iterator[None]:
    """nbflow's scheduler plugin as a variant: ``window0`` sends every turn's completions
    at once (no window); ``no-start-send`` does not send what waits when a held task starts
    (it goes with that task's own completion, or when the window closes)."""
    from nbflow.engine.backends.dask_recovery import NAME

    plugin = client.cluster.scheduler.plugins.get(NAME)
    if plugin is None or variant == "":
        yield
        return
    window, transition = plugin.window, plugin.transition
    if variant == "window0":
        plugin.window = 0.0
    elif variant == "no-start-send":
        def without(key: Any, start: str, finish: str, *a: Any, **k: Any) -> None:
            if finish != "processing":
                transition(key, start, finish, *a, **k)
        plugin.transition = without
    try:
        yield
    finally:
        plugin.window = window
        if "transition" in vars(plugin):
            del plugin.transition


@contextlib.contextmanager
def nbflow_marks() -> Iterator[None]:
    """Mark when nbflow's engine is done and when the backend closes (the run's tail)."""
    import functools

    from nbflow.engine import scheduler
    from nbflow.engine.backends import dask as dask_backend

    run, aclose = scheduler.Scheduler.run, dask_backend.DaskBackend.aclose

    @functools.wraps(run)
    async def engine(*a: Any, **k: Any) -> Any:
        try:
            return await run(*a, **k)
        finally:
            _mark("nbflow: engine done")

    @functools.wraps(aclose)
    async def closing(*a: Any, **k: Any) -> Any:
        _mark("nbflow: backend close begins")
        try:
            return await aclose(*a, **k)
        finally:
            _mark("nbflow: backend closed")

    scheduler.Scheduler.run = engine  # type: ignore[method-assign]
    dask_backend.DaskBackend.aclose = closing  # type: ignore[method-assign]
    try:
        yield
    finally:
        scheduler.Scheduler.run = run  # type: ignore[method-assign]
        dask_backend.DaskBackend.aclose = aclose  # type: ignore[method-assign]


def sample_nbflow(client: Any, spec: list[Any], place: str = "locality",
                  variant: str = "") -> dict[str, float]:
    with session_11_tail(carry=variant not in ("session-10", "no-carry"),
                         read_after_run=variant not in ("session-10", "read-at-close")), \
            (session_11_a1() if variant == "session-11-a1" else contextlib.nullcontext()):
        return _sample_nbflow(client, spec, place, variant)


def _sample_nbflow(client: Any, spec: list[Any], place: str, variant: str) -> dict[str, float]:
    from distributed import get_task_stream

    from nbflow import locality

    wf, end = trace_spec("first-compute", spec)
    _marks.clear()
    _cpu.clear()
    with get_task_stream(client=client) as ts, locality.placement(place), marks(client), \
            plugin_variant(client, variant), nbflow_marks():
        _cpu_now("call")
        t0, cpu0 = time.time(), time.process_time()
        run = wf.run(backend=client, cache=False)
        _mark("nbflow: wait returns")
        run[end]
        t1, cpu = time.time(), time.process_time() - cpu0
        _cpu_now("result")
    return _sample(client, spec, ts.data, t0, t1, cpu)


def _sample(client: Any, spec: list[Any], stream: Any, t0: float, t1: float,
            cpu: float) -> dict[str, float]:
    """One sample's figures: its marks and task stream from ``t0``, the CPU windows, the
    result in hand at ``t1`` and this process's ``cpu`` over the call."""
    out = _collect(client, t0, spec[0][0], stream)
    out.update(cpu_windows())
    out["result in hand"] = t1 - t0
    out["CPU of this process"] = cpu
    return out


def sample_dask(client: Any, spec: list[Any]) -> dict[str, float]:
    from distributed import get_task_stream

    nodes = delayed_graph(spec)
    _marks.clear()
    _cpu.clear()
    with get_task_stream(client=client) as ts, marks(client):
        _cpu_now("call")
        t0, cpu0 = time.time(), time.process_time()
        client.compute(nodes["end"]).result()
        t1, cpu = time.time(), time.process_time() - cpu0
        _cpu_now("result")
    return _sample(client, spec, ts.data, t0, t1, cpu)


def _print_order(kv: tuple[str, float]) -> tuple[bool, float]:
    """Moments first, by time; then lengths and counts."""
    k, v = kv
    return k.endswith(("(s)", "(n)")) or k in ("graph bytes", "CPU of this process"), v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--systems", default="nbflow,dask",
                    help="of nbflow, nbflow-none, nbflow-window0, nbflow-no-start-send, "
                         "nbflow-session-10, nbflow-no-carry, nbflow-read-at-close, "
                         "nbflow-session-11-a1, "
                         "dask "
                         "(see the module)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("first-compute")
    doc: dict[str, Any] = {"benchmark": "dask_first_compute", "machine": _harness.machine_info(),
                           "workloads": {}, "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        client.cluster.scheduler.add_plugin(_CpuMarks())
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            every = {"nbflow": lambda spec=spec: sample_nbflow(client, spec),
                     "nbflow-none": lambda spec=spec: sample_nbflow(client, spec, "none"),
                     "nbflow-window0": lambda spec=spec: sample_nbflow(client, spec, variant="window0"),
                     "nbflow-no-start-send": lambda spec=spec: sample_nbflow(
                         client, spec, variant="no-start-send"),
                     "nbflow-session-10": lambda spec=spec: sample_nbflow(
                         client, spec, variant="session-10"),
                     "nbflow-no-carry": lambda spec=spec: sample_nbflow(client, spec, variant="no-carry"),
                     "nbflow-read-at-close": lambda spec=spec: sample_nbflow(
                         client, spec, variant="read-at-close"),
                     "nbflow-session-11-a1": lambda spec=spec: sample_nbflow(
                         client, spec, variant="session-11-a1"),
                     "dask": lambda spec=spec: sample_dask(client, spec)}
            samplers = {k: every[k] for k in args.systems.split(",")}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med: dict[str, dict[str, float]] = {}
            for system, ss in got.items():
                keys: dict[str, None] = {}
                for s in ss:
                    keys.update(dict.fromkeys(s))
                vals = {k: statistics.median(s.get(k, math.nan) for s in ss) for k in keys}
                med[system] = dict(sorted(vals.items(), key=_print_order))
            doc["workloads"][name] = {"medians": med, "samples": got}
            log(f"{name}:")
            shown_keys = dict.fromkeys(k for m in med.values() for k in m)
            for k in shown_keys:
                if k.startswith("cpu ") and not k.startswith("cpu (process)"):
                    continue  # (per thread: in the JSON)
                raw = k == "graph bytes" or k.endswith("(n)")
                shown = [("%10.0f" if raw else "%8.2f ms") % (
                    med[s].get(k, math.nan) * (1 if raw else 1000)) for s in med]
                log(f"  {k:42s} " + "   ".join(f"{s}: {v}" for s, v in zip(med, shown, strict=True)))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
