"""nbflow's own CPU on the path from a Dask run's call to its graph being handed to Dask.

On a warm ``LocalCluster`` (4 single-thread worker processes, the scheduler in a thread of
this process: the locality benchmark's cluster), runs a workload with nbflow (placement
``locality``) and, alternated in the same invocation, the same run with session 11's
second-round cuts switched off (``nbflow-session-11-a1``: :func:`locality.session_11_a1`).
Each sample reads the CPU time of the run's own thread (``time.thread_time``: CPU, not wall
clock, so the other processes of a busy machine move it far less than they move a
makespan) spent in the steps of the Dask backend on that path:

- ``open``: ``DaskBackend.open`` (the cluster's shape, the batch check);
- ``submit ahead``: ``Ahead.submitted`` for the run's first task, which submits every
  ready task and everything that follows it (of it, ``placement``: the locality agent's
  ``choose``, and of that the rule, ``Placer.choose``);
- ``flush``: ``DaskBackend._flush``, the whole graph in one message (of it, ``unheld``:
  deciding which results go without a future this process holds, and ``dask
  _graph_to_futures``: Dask's own packing of the message, and ``the displaced run let
  go``: the run this one displaced from ``nf.last_run()`` dropped once the graph is
  handed over, ``Run._let_go_of_displaced``);
- ``run thread: start -> graph queued``: everything the run's thread did before the
  graph was handed to Dask's client.

Usage::

    .venv/bin/python benchmarks/submit_cpu.py --workloads fan --repeat 40 --warmup 2 \
        --json benchmarks/submit-cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, session_11_a1, trace_spec
else:
    import _harness
    from locality import WORKLOADS, session_11_a1, trace_spec

_cpu: dict[str, float] = {}
_run_thread: list[int] = []  # the ident of the sample's run thread
_start: dict[str, float] = {}


def _timed(owner: Any, attr: str, name: str, is_async: bool = False) -> tuple[Any, str, Any]:
    """Wrap ``owner.attr`` to add the run thread's CPU inside it to ``_cpu[name]``."""
    real = getattr(owner, attr)

    def add(t: float) -> None:
        if _run_thread and threading.get_ident() == _run_thread[0]:
            _cpu[name] = _cpu.get(name, 0.0) + time.thread_time() - t

    if is_async:
        @functools.wraps(real)
        async def awrap(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return await real(*a, **k)
            finally:
                add(t)
        setattr(owner, attr, awrap)
    else:
        @functools.wraps(real)
        def wrap(*a: Any, **k: Any) -> Any:
            t = time.thread_time()
            try:
                return real(*a, **k)
            finally:
                add(t)
        setattr(owner, attr, wrap)
    return owner, attr, real


@contextlib.contextmanager
def instrumented(client: Any) -> Iterator[None]:
    """The steps of :mod:`this module <submit_cpu>` timed in the run's thread."""
    from nbflow.engine import run as run_mod
    from nbflow.engine.backends import dask as dask_backend
    from nbflow.engine.backends import dask_ahead
    from nbflow.locality import agent

    placement = importlib.import_module("nbflow.locality.placement")  # (the package's name is a function)
    undo = [
        _timed(dask_backend.DaskBackend, "open", "open", is_async=True),
        _timed(dask_ahead.Ahead, "submitted", "submit ahead"),
        _timed(agent.LocalityAgent, "choose", "submit ahead: placement"),
        _timed(placement.Placer, "choose", "submit ahead: placement: the rule"),
        _timed(dask_backend.DaskBackend, "_flush", "flush"),
        _timed(dask_backend.DaskBackend, "_unheld", "flush: unheld"),
        _timed(type(client), "_graph_to_futures", "flush: dask _graph_to_futures"),
        _timed(run_mod.Run, "_let_go_of_displaced", "flush: the displaced run let go"),
    ]
    in_thread = run_mod.Run._in_thread

    def started(self: Any, *loop: Any) -> None:
        _run_thread[:] = [threading.get_ident()]
        _start["run thread"] = time.thread_time()
        in_thread(self, *loop)

    queue = type(client)._send_to_scheduler

    def queued(self: Any, msg: Any) -> Any:
        if (isinstance(msg, dict) and msg.get("op") == "update-graph" and _run_thread
                and threading.get_ident() == _run_thread[0] and "run thread" in _start):
            _cpu.setdefault("run thread: start -> graph queued", time.thread_time() - _start["run thread"])
        return queue(self, msg)

    run_mod.Run._in_thread = started  # type: ignore[method-assign]
    type(client)._send_to_scheduler = queued
    try:
        yield
    finally:
        run_mod.Run._in_thread = in_thread  # type: ignore[method-assign]
        type(client)._send_to_scheduler = queue
        for owner, attr, real in undo:
            setattr(owner, attr, real)


def sample(client: Any, spec: list[Any], before: bool) -> dict[str, float]:
    from nbflow import locality

    wf, end = trace_spec("submit-cpu", spec)
    _cpu.clear()
    _start.clear()
    _run_thread.clear()
    # (the switch first: the timing wraps whichever version it leaves in place)
    with (session_11_a1() if before else contextlib.nullcontext()), instrumented(client), \
            locality.placement("locality"):
        t0 = time.perf_counter()
        run = wf.run(backend=client, cache=False)
        run[end]
        makespan = time.perf_counter() - t0
    return {**_cpu, "makespan": makespan}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan")
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("submit-cpu")
    doc: dict[str, Any] = {"benchmark": "submit_cpu", "machine": _harness.machine_info(),
                           "workloads": {}, "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {"nbflow": lambda spec=spec: sample(client, spec, False),
                        "nbflow-session-11-a1": lambda spec=spec: sample(client, spec, True)}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            keys = list(dict.fromkeys(k for ss in got.values() for s in ss for k in s))
            med = {system: {k: statistics.median(s.get(k, 0.0) for s in ss) for k in keys}
                   for system, ss in got.items()}
            # per sample pair (the same rotation): before - after, the cut
            paired = {k: statistics.median(b.get(k, 0.0) - a.get(k, 0.0) for a, b in
                                           zip(got["nbflow"], got["nbflow-session-11-a1"], strict=True))
                      for k in keys}
            doc["workloads"][name] = {"medians_s": med, "paired_cut_s": paired, "samples": got}
            log(f"{name} (ms; the cut: median of paired differences, session-11-a1 - nbflow):")
            for k in keys:
                log(f"  {k:42s} nbflow {med['nbflow'][k] * 1e3:8.3f}   "
                    f"session-11-a1 {med['nbflow-session-11-a1'][k] * 1e3:8.3f}   "
                    f"cut {paired[k] * 1e3:+8.3f}")
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
