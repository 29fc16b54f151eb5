"""From ``wf.run`` being called to the run's first graph in Dask's client: session 13 (A)'s cuts.

On a warm ``LocalCluster`` (4 single-thread worker processes, the scheduler in a thread of
this process: the locality benchmark's cluster), runs a workload with nbflow (placement
``locality``), the same run with session 13 (A)'s changes switched off
(``nbflow-session-13-a-off``: :func:`session_13_a_off`) and ``dask.delayed``, alternated,
each sample after the client's batch window closed (``_harness.settle_client``), and reads:

- ``graph queued``: wall clock from the call to the run's first graph handed to Dask's
  client (``Client._send_to_scheduler`` of its ``update-graph``); ``graph written``: the
  client wrote it to the scheduler;
- ``caller: CPU call -> run thread started``: the calling thread's own CPU
  (``time.thread_time``) from the call until ``Run.start_in_thread`` returned
  (the options, ``prepare``, the thread's start);
- ``run thread: CPU start -> graph queued``: the run thread's own CPU until the graph was
  queued (0 when the caller sent it, before the thread started); ``CPU on the way to the
  graph``: the caller's (until it queued the graph, or started the run's thread) and the
  run thread's;
- ``loop turns before the graph``: turns of the run's event loop (each a ``select`` that
  lets go of the GIL) before the graph was queued;
- ``first compute start``: the first task executing on its worker (the workers' own logs,
  as ``locality_phases.py`` reads them); ``result in hand``, the makespan; the CPU of this
  process.

CPU figures move far less with other processes' load than wall-clock ones.  The paired
figure is the median over repeats of (switched off − this branch) in the same repeat.

Usage::

    .venv/bin/python benchmarks/first_graph.py --workloads fan --repeat 40 --warmup 2 \
        --json benchmarks/first-graph.json
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, delayed_graph, trace_spec
    from .run_start import _first_compute
else:
    import _harness
    from locality import WORKLOADS, delayed_graph, trace_spec
    from run_start import _first_compute

_marks: dict[str, float] = {}
_run_thread: list[int] = []  # the ident of the sample's run thread
_cpu0: list[float] = []  # its thread_time at its start
_caller: list[int] = [0]  # the ident of the thread that calls wf.run


PARTS = ("before-start", "turn")


@contextlib.contextmanager
def session_13_a_off(parts: tuple[str, ...] = PARTS) -> Iterator[None]:
    """nbflow with session 13 (A)'s changes switched off (``parts``: ``before-start``, the
    run's first graph sent by its thread, not by the caller before the thread starts (and
    so the engine not waiting for the cluster's first news), ``DaskBackend.send_before_start``;
    ``turn``, sent at the end of the loop's turn that starts the first task, not within
    it, ``DaskBackend.first_graph_at_once``)."""
    from nbflow.engine.backends.dask import DaskBackend

    before = DaskBackend.send_before_start, DaskBackend.first_graph_at_once
    DaskBackend.send_before_start = "before-start" not in parts
    DaskBackend.first_graph_at_once = "turn" not in parts
    try:
        yield
    finally:
        DaskBackend.send_before_start, DaskBackend.first_graph_at_once = before


def _mark(name: str) -> None:
    _marks.setdefault(name, time.time())


@contextlib.contextmanager
def _graph_marks(client: Any) -> Iterator[None]:
    """``graph queued`` (and the run thread's CPU then) and ``graph written``."""
    queue = type(client)._send_to_scheduler
    comm = client.scheduler_comm.comm
    write = comm.write

    def queued(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph" and "graph queued" not in _marks:
            _mark("graph queued")
            if _run_thread and threading.get_ident() == _run_thread[0]:
                _marks["run thread cpu"] = time.thread_time() - _cpu0[0]
            elif threading.get_ident() == _caller[0] and "caller cpu0" in _marks:  # (before the thread)
                _marks["caller cpu at graph"] = time.thread_time() - _marks["caller cpu0"]
                _marks["run thread cpu"] = 0.0
        return queue(self, msg)

    async def written(payload: Any, *a: Any, **k: Any) -> Any:
        if "graph written" not in _marks and any(
                isinstance(m, dict) and m.get("op") == "update-graph" for m in payload):
            _mark("graph written")
        return await write(payload, *a, **k)

    type(client)._send_to_scheduler = queued
    comm.write = written
    try:
        yield
    finally:
        type(client)._send_to_scheduler = queue
        del comm.write  # (the instance attribute goes: the method is back)


@contextlib.contextmanager
def _run_marks() -> Iterator[None]:
    """The caller's CPU to the run thread's start, the run thread's start, its loop's turns."""
    import asyncio

    from nbflow.engine.run import Run

    start, in_thread = Run.start_in_thread, Run._in_thread
    run_once = asyncio.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def started(self: Any) -> None:
        start(self)
        _marks.setdefault("caller cpu", time.thread_time() - _marks["caller cpu0"])

    def in_run_thread(self: Any, *loop: Any) -> None:
        _run_thread[:] = [threading.get_ident()]
        _cpu0[:] = [time.thread_time()]
        in_thread(self, *loop)

    def turn(self: Any) -> None:
        if (_run_thread and threading.get_ident() == _run_thread[0]
                and "graph queued" not in _marks):
            _marks["turns"] = _marks.get("turns", 0.0) + 1
        run_once(self)

    Run.start_in_thread = started  # type: ignore[method-assign]
    Run._in_thread = in_run_thread  # type: ignore[method-assign]
    asyncio.BaseEventLoop._run_once = turn  # type: ignore[attr-defined]
    try:
        yield
    finally:
        Run.start_in_thread, Run._in_thread = start, in_thread  # type: ignore[method-assign]
        asyncio.BaseEventLoop._run_once = run_once  # type: ignore[attr-defined]


def sample_nbflow(client: Any, spec: list[Any], off: bool,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    from nbflow import locality

    wf, end = trace_spec("first-graph", spec)
    _marks.clear()
    _run_thread.clear()
    # (the switch first: the marks wrap whichever version it leaves in place)
    with (session_13_a_off(parts) if off else contextlib.nullcontext()), _run_marks(), \
            _graph_marks(client), locality.placement("locality"):
        _harness.settle_client(client)  # (the previous sample's messages go first)
        t0, cpu0 = time.time(), time.process_time()
        _caller[0] = threading.get_ident()
        _marks["caller cpu0"] = time.thread_time()
        run = wf.run(backend=client, cache=False)
        run[end]
        t1, cpu = time.time(), time.process_time() - cpu0
    agent = run.backends["dask"].placement
    if agent is not None:  # (the deferred end-of-run read: over before the next sample)
        agent.settle()
    return {"graph queued": _marks.get("graph queued", math.nan) - t0,
            "graph written": _marks.get("graph written", math.nan) - t0,
            "caller: CPU call -> run thread started": _marks.get("caller cpu", math.nan),
            "run thread: CPU start -> graph queued": _marks.get("run thread cpu", math.nan),
            # (the caller's until the graph, when it sent it; else until the thread started)
            "CPU on the way to the graph (caller + run thread)":
                _marks.get("caller cpu at graph", _marks.get("caller cpu", math.nan))
                + _marks.get("run thread cpu", math.nan),
            "loop turns before the graph": _marks.get("turns", 0.0),
            "first compute start": _first_compute(client, t0),
            "result in hand": t1 - t0, "CPU of this process": cpu}


def sample_dask(client: Any, spec: list[Any]) -> dict[str, float]:
    nodes = delayed_graph(spec)
    _marks.clear()
    with _graph_marks(client):
        _harness.settle_client(client)
        t0, cpu0 = time.time(), time.process_time()
        client.compute(nodes["end"]).result()
        t1, cpu = time.time(), time.process_time() - cpu0
    return {"graph queued": _marks["graph queued"] - t0, "graph written": _marks["graph written"] - t0,
            "first compute start": _first_compute(client, t0),
            "result in hand": t1 - t0, "CPU of this process": cpu}


COUNTS = ("loop turns before the graph",)


def main() -> None:
    _harness.on_off_main(benchmark="first_graph", doc_string=__doc__, parts=PARTS,
                         off_name="nbflow-session-13-a-off", changes="session 13 (A)'s changes",
                         workloads=WORKLOADS, sample_nbflow=sample_nbflow, sample_dask=sample_dask,
                         is_count=lambda k: k in COUNTS, repeat=40)


if __name__ == "__main__":
    main()
