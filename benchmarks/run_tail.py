"""A run's tail on the caller's path, on any backend: from the engine's end to ``wf.run``
returning, this code against itself with session 11's second cut (engineer C) switched
off, in one invocation.

The cut (switched off by :func:`c2_off`, which puts the code it replaced back): the run's
event loop is tidied in its root task, after the engine (``engine.run``: ``_then_tidy``),
not by two more ``run_until_complete`` calls (each a task and two turns of the loop, each
turn a ``select`` that lets go of the GIL).  (Two journal cuts measured with the ``journal``
part of this switch were not kept: ``benchmarks/RESULTS.md``, Session 11 (C2).)

Each sample is one ``wf.run`` of a small local workflow (``--tasks`` plain no-op tasks
after one root, then one sink; the store on, so the journal writes the run), on a fresh
``NBFLOW_HOME``.  With ``--busy N`` (default 1), N threads of this process spin in
Python meanwhile, as Dask's scheduler thread does beside a Dask run on a
``LocalCluster``: every hand-off of the GIL on the way out then waits for them (up to
the switch interval, 5 ms).  ``--busy 0`` measures the quiet case.  Systems, alternated
round-robin: ``nbflow`` (this tree) and ``nbflow-c2-off``.

Figures per system (medians, ms): ``wf.run`` (the call to its return), ``tail`` (the
engine's end, as ``Scheduler.run`` returns, to ``wf.run`` returning), the journal's
``run_finished`` (the run's rows committed), ``execute returns -> wf.run returns`` (the
loop's close, the thread's end, the caller's wake-up), and the process's CPU per run (the
busy threads excluded: each one's own clock); and the median of the per-repeat
differences ``nbflow - nbflow-c2-off`` (paired: both ran in the same repeat).

Usage::

    .venv/bin/python benchmarks/run_tail.py --repeat 100 --warmup 3 --busy 0 \\
        --json benchmarks/run-tail-s11c2.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness
else:
    import _harness


# -- the code the cuts replaced (as at 2f24b61), put back by c2_off --------------------------


def _old_run_on_fresh_loop(main: Any, loop: Any = None) -> None:
    loop = loop or asyncio.new_event_loop()  # (since session 12 (B) the caller makes it)
    try:
        loop.run_until_complete(main())
    finally:
        try:
            left = asyncio.all_tasks(loop)
            if left:
                for t in left:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


C2_PARTS = ("loop",)  # (and, at a09e76a, "journal": tried, measured, not kept; see RESULTS)


@contextlib.contextmanager
def c2_off(parts: tuple[str, ...] = C2_PARTS) -> Iterator[None]:
    """Session 11's second cuts (engineer C) switched off, those named in ``parts``
    (:data:`C2_PARTS`): the run's tail as at 2f24b61."""
    from nbflow.engine import run as run_module

    was = run_module.run_on_fresh_loop
    if "loop" in parts:
        run_module.run_on_fresh_loop = _old_run_on_fresh_loop
    try:
        yield
    finally:
        run_module.run_on_fresh_loop = was


# -- the local sample ----------------------------------------------------------------------


class _Busy:
    """``n`` threads running Python until stopped (a scheduler's thread beside the run)."""

    def __init__(self, n: int) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._spin, name=f"busy-{k}", daemon=True) for k in range(n)]

    def _spin(self) -> None:
        x = 0
        while not self.stop.is_set():
            for _ in range(200):
                x += 1

    def __enter__(self) -> _Busy:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _cpu_without(busy: _Busy) -> float:
    """The process's CPU seconds so far, less the busy threads' own."""
    spent = sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident))  # type: ignore[arg-type]
                for t in busy.threads if t.ident is not None and t.is_alive())
    return time.process_time() - spent


def sample(nf: Any, tasks: int, busy: _Busy, off: tuple[str, ...]) -> dict[str, float]:
    @nf.task
    def root() -> int:
        return 1

    @nf.task
    def middle(x: int, i: int) -> int:
        return x + i

    @nf.task
    def sink(*xs: int) -> int:
        return sum(xs)

    with nf.Workflow("tail") as wf:
        r = root()
        sink(*[middle(r, i) for i in range(tasks)])
    marks: dict[str, float] = {}
    with c2_off(off) if off else contextlib.nullcontext(), _marked(marks):
        c0 = _cpu_without(busy)
        t0 = time.perf_counter()
        run = wf.run(cache=False)
        t1 = time.perf_counter()
        cpu = _cpu_without(busy) - c0
    assert run.status == "completed", run.status
    return {"wf.run": t1 - t0, "tail": t1 - marks["engine done"],
            "journal run_finished": marks["run_finished returns"] - marks["run_finished called"],
            "execute returns -> wf.run returns": t1 - marks["execute returns"], "CPU": cpu}


@contextlib.contextmanager
def _marked(marks: dict[str, float]) -> Iterator[None]:
    """Mark (``perf_counter``) the engine's end (``Scheduler.run`` returns), the journal's
    ``run_finished`` and the end of ``Run.execute``."""
    from nbflow.engine import run as run_module
    from nbflow.engine import scheduler
    from nbflow.store import journal

    engine, execute, finished = scheduler.Scheduler.run, run_module.Run.execute, journal.Journal.run_finished

    async def engine_marked(self: Any) -> None:
        try:
            await engine(self)
        finally:
            marks["engine done"] = time.perf_counter()

    async def execute_marked(self: Any) -> None:
        try:
            await execute(self)
        finally:
            marks["execute returns"] = time.perf_counter()

    def finished_marked(self: Any) -> None:
        marks["run_finished called"] = time.perf_counter()
        try:
            finished(self)
        finally:
            marks["run_finished returns"] = time.perf_counter()

    scheduler.Scheduler.run = engine_marked  # type: ignore[method-assign]
    run_module.Run.execute = execute_marked  # type: ignore[method-assign]
    journal.Journal.run_finished = finished_marked  # type: ignore[method-assign]
    try:
        yield
    finally:
        scheduler.Scheduler.run, run_module.Run.execute = engine, execute  # type: ignore[method-assign]
        journal.Journal.run_finished = finished  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--busy", type=int, default=1)
    ap.add_argument("--off", default=",".join(C2_PARTS),
                    help=f"the cuts nbflow-c2-off runs without (of {', '.join(C2_PARTS)})")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("run_tail")
    nf = _harness.import_nbflow()
    doc: dict[str, Any] = {"benchmark": "run_tail", "machine": _harness.machine_info(),
                           "args": vars(args), "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _Busy(args.busy) as busy:
        off = tuple(args.off.split(","))
        samplers = {"nbflow": lambda: sample(nf, args.tasks, busy, ()),
                    "nbflow-c2-off": lambda: sample(nf, args.tasks, busy, off)}
        _harness.alternate(samplers, args.warmup)
        got = _harness.alternate(samplers, args.repeat)
    figures = ("wf.run", "tail", "journal run_finished", "execute returns -> wf.run returns", "CPU")
    med = {s: {k: statistics.median(x[k] for x in xs) for k in figures} for s, xs in got.items()}
    pairs = list(zip(got["nbflow"], got["nbflow-c2-off"], strict=True))
    paired = {k: statistics.median(a[k] - b[k] for a, b in pairs) for k in figures}
    doc.update({"medians_s": med, "paired_nbflow_minus_c2_off_s": paired, "samples": got,
                "load_after": os.getloadavg()})
    for k in figures:
        row = "  ".join(f"{s} {med[s][k] * 1000:7.2f}" for s in med)
        log(f"  {k:36s} {row}   paired {paired[k] * 1000:+6.2f} ms")
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
