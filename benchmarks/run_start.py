"""A Dask run's thread from its start to the first graph in Dask's client: session 12 (B)'s cuts.

On a warm ``LocalCluster`` (4 single-thread worker processes, the scheduler in a thread of
this process: the locality benchmark's cluster), runs a workload with nbflow (placement
``locality``), the same run with session 12 (B)'s changes switched off
(``nbflow-session-12-b-off``: :func:`session_12_b_off`) and ``dask.delayed``, alternated,
and reads per sample:

- ``graph queued``: wall clock from the call to the run's first graph handed to Dask's
  client (``Client._send_to_scheduler`` of its ``update-graph``);
- ``caller: start -> engine``: from ``Run.start_in_thread`` being called to ``Run.execute``
  beginning in the run's thread;
- ``run thread: CPU start -> graph queued``: the run thread's own CPU (``time.thread_time``)
  until the graph is queued (less moved by other processes than any wall-clock figure);
- ``journal writer started before the graph``: 1 when the journal's writer thread was
  started before the graph was queued (0 or 1 per sample; the median says which is usual);
- ``first compute start``: the first task executing on its worker (the workers' own logs,
  as ``locality_phases.py`` reads them), and ``result in hand``, the makespan.

The paired figure is the median over repeats of (switched off − this branch) in the same
repeat: what the cuts take off.

What :func:`session_12_b_off` puts back: the journal's writer started by the run's first
row (``RunStarted``, on the run's thread before its first graph) instead of once the first
graph is in Dask's client (``Run.defer_until_started``), and the run's event loop made in
the run's thread instead of by the caller before the thread starts.

Usage::

    .venv/bin/python benchmarks/run_start.py --workloads fan --repeat 30 --warmup 2 \
        --json benchmarks/run-start.json
    .venv/bin/python benchmarks/run_start.py --off loop      # one change alone switched off
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
else:
    import _harness
    from locality import WORKLOADS, delayed_graph, trace_spec

_marks: dict[str, float] = {}
_run_thread: list[int] = []  # the ident of the sample's run thread
_cpu0: list[float] = []  # its thread_time at its start


PARTS = ("journal", "loop")


@contextlib.contextmanager
def session_12_b_off(parts: tuple[str, ...] = PARTS) -> Iterator[None]:
    """nbflow with session 12 (B)'s changes switched off (``parts``: ``journal``, a
    subscriber's deferred work (the journal's writer start) done at once; ``loop``, the
    run's loop made in its thread)."""
    from nbflow.engine.run import Run

    def at_once(self: Any, fn: Any) -> None:
        fn()

    def in_its_thread(self: Any) -> None:  # (Run.start_in_thread before session 12)
        self._thread = threading.Thread(target=self._in_thread, name=f"nbflow-run-{self.id}", daemon=True)
        self._thread.start()

    defer, start = Run.defer_until_started, Run.start_in_thread
    if "journal" in parts:
        Run.defer_until_started = at_once  # type: ignore[method-assign]
    if "loop" in parts:
        Run.start_in_thread = in_its_thread  # type: ignore[method-assign]
    try:
        yield
    finally:
        Run.defer_until_started = defer  # type: ignore[method-assign]
        Run.start_in_thread = start  # type: ignore[method-assign]


def _mark(name: str) -> None:
    _marks.setdefault(name, time.time())


@contextlib.contextmanager
def instrumented(client: Any) -> Iterator[None]:
    """Marks: the caller's start, the run thread's ``execute``, the journal writer's start,
    the graph queued (wrapping whatever version :func:`session_12_b_off` left in place)."""
    from nbflow.engine.run import Run
    from nbflow.store import journal

    start, in_thread, execute = Run.start_in_thread, Run._in_thread, Run.execute
    signal, queue = journal.Journal._signal, type(client)._send_to_scheduler

    def started(self: Any) -> None:
        _mark("start")
        start(self)

    def in_run_thread(self: Any, *loop: Any) -> None:
        _run_thread[:] = [threading.get_ident()]
        _cpu0[:] = [time.thread_time()]
        in_thread(self, *loop)

    async def executing(self: Any) -> None:
        _mark("execute")
        await execute(self)

    def signalled(self: Any, *a: Any, **k: Any) -> None:
        before = self._thread
        signal(self, *a, **k)
        if before is None and self._thread is not None:
            _mark("journal writer started")

    def queued(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph" and "graph queued" not in _marks:
            _mark("graph queued")
            if _run_thread and threading.get_ident() == _run_thread[0]:
                _marks["run thread cpu"] = time.thread_time() - _cpu0[0]
        return queue(self, msg)

    Run.start_in_thread = started  # type: ignore[method-assign]
    Run._in_thread = in_run_thread  # type: ignore[method-assign]
    Run.execute = executing  # type: ignore[method-assign]
    journal.Journal._signal = signalled  # type: ignore[method-assign]
    type(client)._send_to_scheduler = queued
    try:
        yield
    finally:
        Run.start_in_thread, Run._in_thread, Run.execute = start, in_thread, execute  # type: ignore[method-assign]
        journal.Journal._signal = signal  # type: ignore[method-assign]
        type(client)._send_to_scheduler = queue


def _first_compute(client: Any, t0: float) -> float:
    if __package__:
        from .locality_phases import _compute_span
    else:
        from locality_phases import _compute_span
    return _compute_span(client, t0)[0]


def sample_nbflow(client: Any, spec: list[Any], off: bool,
                  parts: tuple[str, ...] = PARTS) -> dict[str, float]:
    from nbflow import locality

    wf, end = trace_spec("run-start", spec)
    _marks.clear()
    _run_thread.clear()
    # (the switch first: the marks wrap whichever version it leaves in place)
    with (session_12_b_off(parts) if off else contextlib.nullcontext()), instrumented(client), \
            locality.placement("locality"):
        t0, cpu0 = time.time(), time.process_time()
        run = wf.run(backend=client, cache=False)
        run[end]
        t1, cpu = time.time(), time.process_time() - cpu0
    agent = run.backends["dask"].placement
    if agent is not None:  # (the deferred end-of-run read: over before the next sample)
        agent.settle()
    queued = _marks.get("graph queued", math.nan)
    writer = _marks.get("journal writer started", math.inf)
    return {"graph queued": queued - t0,
            "caller: start -> engine": _marks["execute"] - _marks["start"],
            "run thread: CPU start -> graph queued": _marks.get("run thread cpu", math.nan),
            "journal writer started before the graph": float(writer < queued),
            "first compute start": _first_compute(client, t0),
            "result in hand": t1 - t0, "CPU of this process": cpu}


def sample_dask(client: Any, spec: list[Any]) -> dict[str, float]:
    nodes = delayed_graph(spec)
    _marks.clear()
    queue = type(client)._send_to_scheduler

    def queued(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph":
            _mark("graph queued")
        return queue(self, msg)

    type(client)._send_to_scheduler = queued
    try:
        t0, cpu0 = time.time(), time.process_time()
        client.compute(nodes["end"]).result()
        t1, cpu = time.time(), time.process_time() - cpu0
    finally:
        type(client)._send_to_scheduler = queue
    return {"graph queued": _marks["graph queued"] - t0, "first compute start": _first_compute(client, t0),
            "result in hand": t1 - t0, "CPU of this process": cpu}


def main() -> None:
    _harness.on_off_main(benchmark="run_start", doc_string=__doc__, parts=PARTS,
                         off_name="nbflow-session-12-b-off", changes="session 12 (B)'s changes",
                         workloads=WORKLOADS, sample_nbflow=sample_nbflow, sample_dask=sample_dask,
                         is_count=lambda k: k.startswith("journal"), repeat=30)


if __name__ == "__main__":
    main()
