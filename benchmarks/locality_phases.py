"""Where the time of one Dask run goes, phase by phase: nbflow against plain Dask.

``benchmarks/locality.py`` measures the makespan of whole runs; this script breaks one run
of a workload into the phases it passes through, on a warm ``LocalCluster`` (4 single-thread
worker processes, the same as the locality benchmark), so a gap between nbflow and
``dask.delayed`` can be put on the phase that causes it.  Every timestamp is wall clock
(``time.time()``) relative to the call that starts the run; the workers are processes of
this machine, one clock.  When a task computed is read from its worker's own transition
log (its move to ``executing`` and then to ``memory``: :func:`dask_first_compute._worker_log`),
not from Dask's task stream, whose times are the worker's plus that worker's estimate of
its offset to the scheduler (``Worker.scheduler_delay``, from heartbeats: on one busy
machine noise of −4 to +55 ms, different per worker), which put a 3 ms gap before the
first compute that was not there (``dask_first_compute.py``, RESULTS: Session 11 (A)).

nbflow phases (``wf.run(backend=client, cache=False)`` then ``run[end]``, placement
``locality``):

- ``prepare``: :func:`nbflow.workflow.prepare` (static checks, journal subscriber, the
  history queries for priorities, memory and placement), with each part timed on its own;
- ``thread``: from ``prepare`` returning to the run's event loop starting in its thread;
- ``open``: :meth:`DaskBackend.open` (the cluster's thread count, the announcement topic,
  the workers for the placement rule);
- ``first submit``, ``first compute start`` / ``last compute end`` (in the workers'
  own logs: the first task executing, the last one computed);
- ``engine done``: the scheduler saw the last task complete;
- ``close``: :meth:`DaskBackend.aclose` (of which ``end-of-run reads`` is the locality
  agent reading the workers' transfer logs and memory state, when it does so there);
- ``wait returns``: ``wf.run`` returned;
- ``result``: ``run[end]`` has the value;
- ``graph queued`` / ``graph held by the client (queued -> written)`` / ``writes before the
  graph``: when the first graph was handed to Dask's client, how long the client kept it
  before writing it to the scheduler (its batching interval, 10 ms, counts from the write
  before), and how many writes went before it in the sample (:func:`graph_marks`; Dask's
  too).

``nbflow-session-5`` is the same run with session 6's changes switched off
(:func:`locality.session_5`), for a before/after in one run; ``nbflow-session-13-a-off``
the same with session 13 (A)'s changes switched off (:func:`first_graph.session_13_a_off`:
the first graph sent by the run's thread, at the end of the loop's turn);
``nbflow-session-12-b-off``
the same with session 12 (B)'s changes on the run's thread switched off
(:func:`run_start.session_12_b_off`); ``nbflow-session-10`` the
same with session 11's start cuts switched off (:func:`dask_start.session_10`).

``nbflow-unbatched`` is the same run with ``NBFLOW_DASK_BATCH=0``: one ``client.submit``
(one ``update-graph`` message) per task, as before session 5; ``update-graph messages``
counts the messages each run sent, ``CPU per task`` the process's CPU over its tasks.

Plain Dask: ``client.compute(graph)`` (graph built beforehand, like the nbflow workflow is
traced beforehand), first compute start, last compute end (the workers' own logs, as for
nbflow), ``.result()`` returned.

The medians over ``--repeat`` alternated samples are printed as a table (and JSON).

Usage::

    .venv/bin/python benchmarks/locality_phases.py --workloads fan,chains --repeat 5
    .venv/bin/python benchmarks/locality_phases.py --systems nbflow,nbflow-unbatched,nbflow-session-5,dask
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

if __package__:
    from . import _harness
    from .dask_first_compute import _worker_log
    from .dask_start import session_10
    from .first_graph import session_13_a_off
    from .locality import WORKLOADS, delayed_graph, session_5, trace_spec
    from .run_start import session_12_b_off
else:
    import _harness
    from dask_first_compute import _worker_log
    from dask_start import session_10
    from first_graph import session_13_a_off
    from locality import WORKLOADS, delayed_graph, session_5, trace_spec
    from run_start import session_12_b_off

_marks: dict[str, float] = {}
COUNTS = ("update-graph messages", "writes before the graph")  # (figures that are no times)
_spans: dict[str, float] = {}


def _mark(name: str) -> None:
    _marks.setdefault(name, time.time())


def _timed(owner: Any, attr: str, name: str, *, is_async: bool = False) -> Callable[[], None]:
    """Wrap ``owner.attr`` so its duration adds to ``_spans[name]`` (and its start and end
    are marked); returns the undo."""
    orig = getattr(owner, attr, None)
    if orig is None:  # (an older nbflow without this step: nothing to time)
        return lambda: None
    if is_async:
        @functools.wraps(orig)
        async def awrap(*a: Any, **k: Any) -> Any:
            _mark(name + " start")
            t0 = time.time()
            try:
                return await orig(*a, **k)
            finally:
                _spans[name] = _spans.get(name, 0.0) + time.time() - t0
                _marks[name + " end"] = time.time()
        setattr(owner, attr, awrap)
    else:
        @functools.wraps(orig)
        def wrap(*a: Any, **k: Any) -> Any:
            _mark(name + " start")
            t0 = time.time()
            try:
                return orig(*a, **k)
            finally:
                _spans[name] = _spans.get(name, 0.0) + time.time() - t0
                _marks[name + " end"] = time.time()
        setattr(owner, attr, wrap)
    return lambda: setattr(owner, attr, orig)


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    import anyio

    from nbflow import workflow
    from nbflow.engine import gcpolicy, scheduler, taskoutput
    from nbflow.engine import run as run_module
    from nbflow.engine.backends import dask as dask_backend
    from nbflow.engine.backends import dask_ahead, dask_plugin, dask_watch
    from nbflow.locality import agent
    from nbflow.server import cancel
    from nbflow.store import journal

    undo = [
        _timed(workflow, "prepare", "prepare"),
        _timed(workflow, "_check", "prepare: static checks"),
        _timed(workflow.store_hooks, "journal_subscriber", "prepare: journal subscriber"),
        _timed(workflow, "apply_learned_priorities", "prepare: priorities from history"),
        _timed(workflow, "apply_predicted_memory", "prepare: memory from history"),
        _timed(workflow, "_predict_placement", "prepare: sizes and durations from history"),
        _timed(workflow, "_has_history", "prepare: is there history"),
        _timed(workflow, "Run", "prepare: the engine's Run"),
        _timed(dask_backend.DaskBackend, "open", "open", is_async=True),
        _timed(dask_backend.DaskBackend, "_submit", "submit"),
        _timed(dask_backend.DaskBackend, "_flush", "flush"),
        _timed(scheduler.Scheduler, "run", "engine", is_async=True),
        _timed(dask_backend.DaskBackend, "aclose", "close", is_async=True),
        _timed(agent.LocalityAgent, "closing", "end-of-run reads"),
        # (the tail, finer: what runs between the last completion and the value in hand)
        _timed(agent.LocalityAgent, "_read", "tail: locality read (its thread)"),
        _timed(run_module.Run, "execute", "tail: execute", is_async=True),
        _timed(run_module.Run, "wait", "tail: wait"),
        _timed(dask_plugin.LooseRestrictions, "_completed", "tail: scheduler took a completion"),
        _timed(dask_plugin.LooseRestrictions, "_send", "tail: scheduler sent completions"),
        _timed(dask_watch.Watcher, "announced", "tail: client told of a completion"),
        _timed(dask_watch.Watcher, "_drain", "tail: run's loop took completions"),
        _timed(journal.Journal, "run_finished", "tail: journal run_finished"),
        _timed(journal.Journal, "flush", "tail: journal flush"),
        _timed(journal.Journal, "_join_idle", "tail: journal writer join"),
        _timed(cancel, "watch_for_cancel", "start: cancel watcher made"),
        _timed(cancel.CancelWatcher, "close", "tail: cancel watcher close"),
        _timed(gcpolicy, "leave", "tail: gcpolicy.leave"),
        _timed(gcpolicy, "enter", "start: gcpolicy.enter"),
        _timed(run_module.Run, "_let_go_of_displaced", "start: the previous run let go of"),
        _timed(dask_backend.DaskResult, "_fetch", "result: fetch"),
        _timed(dask_backend.DaskBackend, "_prefetch", "result: prefetch started"),
        _timed(dask_backend.DaskBackend, "_prefetched", "result: prefetch arrived"),
        _timed(anyio, "run", "thread: the event loop"),  # (before session 8)
        _timed(run_module, "run_on_fresh_loop", "thread: the event loop"),
        # (the start, finer: from the run's thread to its first graph)
        _timed(run_module.Run, "start_in_thread", "start: thread started (caller)"),
        _timed(run_module.Run, "_in_thread", "start: the run's thread"),
        _timed(taskoutput, "install", "start: taskoutput.install"),
        _timed(journal.Journal, "_signal", "start: journal writer woken"),
        _timed(scheduler.Scheduler, "run", "start: engine", is_async=True),
        _timed(scheduler.Scheduler, "_worker", "start: engine's first worker", is_async=True),
        _timed(dask_backend.DaskBackend, "_call", "start: first Dask call", is_async=True),
        _timed(dask_ahead.Ahead, "submitted", "start: successors sent ahead"),
        # (the Dask backend's batch, the graph handed to Dask's client: not the journal's)
        _timed(dask_backend.DaskBackend, "_flush", "start: Dask batch flush"),
    ]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


@contextlib.contextmanager
def graph_marks(client: Any) -> Iterator[None]:
    """Mark when the run's first graph is handed to Dask's client (``graph queued``) and
    when the client writes it to the scheduler (``graph written``), and count what the
    client wrote before it (``writes before the graph``).  The client sends what follows a
    write no sooner than its batching interval (10 ms) after it: a message written just
    before the graph (e.g. the release of a run let go of) holds the graph back."""
    from distributed import Client

    comm = client.scheduler_comm.comm
    queue, write = Client._send_to_scheduler, comm.write
    _marks["writes before the graph"] = 0.0  # (a count, kept with the marks)

    def queued(self: Any, msg: Any) -> Any:
        if msg.get("op") == "update-graph":
            _mark("graph queued")
        return queue(self, msg)

    async def written(payload: Any, *a: Any, **k: Any) -> Any:
        if "graph written" not in _marks:
            if any(isinstance(m, dict) and m.get("op") == "update-graph" for m in payload):
                _mark("graph written")
            else:
                _marks["writes before the graph"] += 1
        return await write(payload, *a, **k)

    Client._send_to_scheduler = queued  # type: ignore[method-assign]
    comm.write = written
    try:
        yield
    finally:
        Client._send_to_scheduler = queue  # type: ignore[method-assign]
        del comm.write  # (the instance attribute goes: the method is back)


def _graph_phases(t0: float) -> dict[str, float]:
    out = {"writes before the graph": _marks.get("writes before the graph", math.nan)}
    if "graph queued" in _marks and "graph written" in _marks:
        out["graph queued"] = _marks["graph queued"] - t0
        out["graph held by the client (queued -> written)"] = _marks["graph written"] - _marks["graph queued"]
    return out


def _compute_span(client: Any, t0: float) -> tuple[float, float]:
    """When the run's first task began executing and its last one was computed, from the
    call, in the workers' own transition logs (a task's move to ``memory`` counts only on
    the worker that executed it: a copy fetched elsewhere also reaches ``memory``)."""
    starts, stops = [], []
    for entries in client.run(_worker_log, since=t0).values():
        began: set[str] = set()
        for key, finish, ts in entries:
            if key.startswith("nbflow-aux"):
                continue
            if finish == "executing":
                began.add(key)
                starts.append(ts)
            elif key in began:
                stops.append(ts)
    return (min(starts) - t0, max(stops) - t0) if starts and stops else (math.nan, math.nan)


def sample_nbflow(client: Any, spec: list[Any], batched: bool = True,
                  before: bool = False, session_10_start: bool = False,
                  b_off: bool = False, a13_off: bool = False) -> dict[str, float]:
    from nbflow import locality

    wf, end = trace_spec("locality-phases", spec)  # (only the final result is named)
    _marks.clear()
    _spans.clear()
    old = os.environ.get("NBFLOW_DASK_BATCH")
    os.environ["NBFLOW_DASK_BATCH"] = "1" if batched else "0"
    try:
        as_before = (session_5() if before else session_10() if session_10_start
                     else contextlib.nullcontext())
        # (switched off first: the marks wrap whichever version it leaves in place)
        b = session_12_b_off() if b_off else contextlib.nullcontext()
        a13 = session_13_a_off() if a13_off else contextlib.nullcontext()
        with b, a13, instrumented(), locality.placement("locality"), as_before, graph_marks(client):
            _harness.settle_client(client)  # (the previous sample's messages go first)
            t0, cpu0 = time.time(), time.process_time()
            run = wf.run(backend=client, cache=False)
            t_wait = time.time()
            run[end]
            t_result, cpu = time.time(), time.process_time() - cpu0
            agent = run.backends["dask"].placement
            if agent is not None:  # (the deferred end-of-run read: its marks are this sample's)
                agent.settle()
    finally:
        if old is None:
            os.environ.pop("NBFLOW_DASK_BATCH", None)
        else:
            os.environ["NBFLOW_DASK_BATCH"] = old
    batch = run.backends["dask"].batch
    n_tasks = len(run.nodes)
    first, last = _compute_span(client, t0)
    out = {k: v for k, v in _spans.items() if k.startswith("prepare")}
    out.update({
        "thread (prepare end -> open start)": _marks["open start"] - _marks["prepare end"],
        "open": _spans["open"],
        "first submit": _marks["submit start"] - t0,
        "submit calls (sum)": _spans["submit"] + _spans.get("flush", 0.0),
        "update-graph messages": float(batch.messages if batch is not None else n_tasks),
        "first compute start": first,
        "last compute end": last,
        "engine done": _marks["engine end"] - t0,
        "close": _spans["close"],
        "end-of-run reads": _spans.get("end-of-run reads", 0.0),
        "wait returns": t_wait - t0,
        "result in hand (makespan)": t_result - t0,
        "CPU of this process (all threads)": cpu,
        "CPU per task": cpu / n_tasks,
        **_graph_phases(t0),
    })
    # The tail and the start, finer: when each step began and ended (from the call), and
    # its length; a step that did not happen in this run (e.g. no cancel watcher) is absent.
    for name in sorted({k.rsplit(" ", 1)[0] for k in _marks}):
        if name.split(":")[0] not in ("tail", "start", "result", "thread"):
            continue
        begin, end_ = _marks.get(name + " start"), _marks.get(name + " end")
        if begin is not None:
            out[f"{name} (begins at)"] = begin - t0
        if end_ is not None:
            out[f"{name} (ends at)"] = end_ - t0
        if name in _spans:
            out[f"{name} (lasts)"] = _spans[name]
    return out


def sample_dask(client: Any, spec: list[Any]) -> dict[str, float]:
    nodes = delayed_graph(spec)
    _marks.clear()
    with graph_marks(client):
        _harness.settle_client(client)  # (the previous sample's messages go first)
        t0, cpu0 = time.time(), time.process_time()
        fut = client.compute(nodes["end"])
        t_submit = time.time()
        fut.result()
        t_result, cpu = time.time(), time.process_time() - cpu0
    first, last = _compute_span(client, t0)
    return {"first submit": 0.0, "submit calls (sum)": t_submit - t0, "first compute start": first,
            "last compute end": last, "result in hand (makespan)": t_result - t0,
            "update-graph messages": 1.0, "CPU of this process (all threads)": cpu,
            "CPU per task": cpu / len(spec), **_graph_phases(t0)}


def _ordered(samples: list[dict[str, float]]) -> list[str]:
    """The phases of ``samples``: fixed figures as measured, then the steps of the start
    and the tail in the order they happen (by their median time from the call)."""
    keys: dict[str, None] = {}
    for s in samples:
        keys.update(dict.fromkeys(s))
    timed = [k for k in keys if k.endswith(("(begins at)", "(ends at)", "(lasts)"))]
    at = {k: statistics.median(s.get(k, math.inf) for s in samples) for k in timed
          if not k.endswith("(lasts)")}

    def when(k: str) -> float:  # (a step's length right after its start)
        step = k.rsplit(" (", 1)[0]
        return at.get(k, at.get(f"{step} (begins at)", math.inf) + 1e-9)

    return [k for k in keys if k not in timed] + sorted(timed, key=when)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan,chains")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--systems", default="nbflow,dask",
                    help="of nbflow, nbflow-unbatched, nbflow-session-5, nbflow-session-10, "
                         "nbflow-session-12-b-off, nbflow-session-13-a-off, dask")
    ap.add_argument("--settle", type=float, default=_harness.SETTLE_S,
                    help="seconds of quiet on the client before each sample, after its batch "
                         "window closes (0: start at once, as before session 13)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    _harness.SETTLE_S = args.settle
    systems = args.systems.split(",")
    unknown = sorted(set(systems) - {"nbflow", "nbflow-unbatched", "nbflow-session-5",
                                     "nbflow-session-10", "nbflow-session-12-b-off",
                                     "nbflow-session-13-a-off", "dask"})
    if unknown:
        ap.error(f"unknown --systems {unknown}")
    log = _harness.progress("phases")
    import nbflow

    # (the nbflow measured: PYTHONPATH may point at another checkout for a before figure,
    # while machine_info hashes the tree this script is in)
    doc: dict[str, Any] = {"benchmark": "locality_phases", "machine": _harness.machine_info(),
                           "nbflow_path": os.path.dirname(nbflow.__file__),
                           "workloads": {}, "load_before": os.getloadavg(), "settle_s": args.settle}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            every = {"nbflow": lambda spec=spec: sample_nbflow(client, spec),
                     "nbflow-unbatched": lambda spec=spec: sample_nbflow(client, spec, False),
                     "nbflow-session-5": lambda spec=spec: sample_nbflow(client, spec, before=True),
                     "nbflow-session-10": lambda spec=spec: sample_nbflow(client, spec,
                                                                          session_10_start=True),
                     "nbflow-session-12-b-off": lambda spec=spec: sample_nbflow(client, spec, b_off=True),
                     "nbflow-session-13-a-off": lambda spec=spec: sample_nbflow(client, spec, a13_off=True),
                     "dask": lambda spec=spec: sample_dask(client, spec)}
            samplers = {k: every[k] for k in systems}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            med = {system: {k: statistics.median(s.get(k, math.nan) for s in ss)
                            for k in _ordered(ss)}
                   for system, ss in got.items()}
            doc["workloads"][name] = {"medians_s": med, "samples": got}
            log(f"{name}:")
            for system, phases in med.items():
                for k, v in phases.items():
                    shown = f"{v:8.0f}   " if k in COUNTS else f"{v * 1000:8.1f} ms"
                    log(f"  {system:16s} {k:45s} {shown}")
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
