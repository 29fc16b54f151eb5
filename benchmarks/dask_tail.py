"""A small Dask run's tail and its client process's CPU: this code against itself with
session 11's cuts (engineer C) switched off, and against plain Dask, in one invocation.

Each sample is one run of a workload of ``benchmarks/locality.py`` on a warm
``LocalCluster`` (4 single-thread worker processes; its scheduler is a thread of this
process), measured phase by phase as ``benchmarks/locality_phases.py`` does (its samplers
are reused: wall clock from the call, the value in hand, ``time.process_time`` of the whole
process, Dask's scheduler included).  Systems, alternated round-robin:

- ``nbflow``: this tree;
- ``nbflow-session-10``: the same tree with the cuts below switched off (:func:`session_10`);
  or, with ``--off session-13-b``, ``nbflow-session-13-b-off``: session 13 (B)'s end of a
  run switched off (``end_read.session_13_b_off``);
  or, with ``--off c2``, ``nbflow-c2-off``: the same tree with session 11's second cut
  (engineer C: the run's loop tidied in its root task) switched off (``run_tail.c2_off``);
- ``dask``: the same graph as ``dask.delayed``, ``client.compute(end).result()``.

The cuts switched off by ``session-10``:

- the result brought with the run's end is asked of the worker that holds it
  (``DaskBackend._from_holder``), not relayed by the scheduler's ``gather``;
- the end-of-run read of the workers' logs waits for the caller to take that result
  (``LocalityAgent.waits_for_take``), not only for it to arrive;
- that read asks the workers and the scheduler together, in one hand-off to the client's
  loop (``LocalityAgent._ask``), not one after the other.

Printed and written (``--json``): per system, medians of the makespan, the process's CPU,
when the engine was done, when ``wf.run`` returned, and the tail (engine done -> value in
hand); the makespan ratio to plain Dask; and the median of the per-repeat differences
``nbflow - nbflow-<off>`` (a paired figure: both ran in the same repeat).

Usage::

    .venv/bin/python benchmarks/dask_tail.py --workloads fan --repeat 15 --warmup 1 \
        --json benchmarks/dask-tail-s11c.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

if __package__:
    from . import _harness, end_read, locality_phases, run_tail
    from .locality import WORKLOADS
    from .locality_phases import _timed, sample_dask, sample_nbflow
else:
    import _harness
    import end_read
    import locality_phases
    import run_tail
    from locality import WORKLOADS
    from locality_phases import _timed, sample_dask, sample_nbflow

FIGURES = ("result in hand (makespan)", "CPU of this process (all threads)", "first compute start",
           "last compute end", "engine done", "wait returns", "tail (engine done -> value in hand)",
           "tail: journal run_finished (lasts)", "execute ends -> wait returns",
           "result: prefetch arrived (begins at)", "start: journal commits (begins at)",
           "start: journal commits (lasts)", "tail: end-of-run read started (lasts)",
           "tail: locality read (its thread) (begins at)", "tail: locality read (its thread) (lasts)",
           "engine done -> journal run_finished begins", "last compute end -> engine done")


@contextlib.contextmanager
def session_10() -> Iterator[None]:
    """This session's cuts (engineer C) switched off: the code's path as at the end of
    session 10, for a before/after in one invocation."""
    from nbflow.engine.backends import dask as dask_backend
    from nbflow.locality.agent import LocalityAgent

    from_holder, ask = dask_backend.DaskBackend._from_holder, LocalityAgent._ask
    LocalityAgent.waits_for_take = False

    def one_then_the_other(self: Any, client: Any, keys: list[str]) -> Any:
        from nbflow.locality import agent, memory

        return (client.run(agent._at_close, keys, self.started),
                client.run_on_scheduler(memory.suspicious, keys))

    LocalityAgent._ask = one_then_the_other  # type: ignore[method-assign]

    async def nowhere(self: Any, r: Any) -> None:  # (Dask's gather, through the scheduler)
        return None

    dask_backend.DaskBackend._from_holder = nowhere  # type: ignore[method-assign]
    try:
        yield
    finally:
        dask_backend.DaskBackend._from_holder = from_holder  # type: ignore[method-assign]
        LocalityAgent.waits_for_take = True
        LocalityAgent._ask = ask  # type: ignore[method-assign]


@contextlib.contextmanager
def _more_marks() -> Iterator[None]:
    """Marks beyond ``locality_phases``': the journal writer's commits (when the first
    began, their summed length) and the start of the end-of-run read (on the run's tail)."""
    from nbflow.locality import agent
    from nbflow.store import journal

    undo = [_timed(journal.Journal, "_commit", "start: journal commits"),
            _timed(agent.LocalityAgent, "closing", "tail: end-of-run read started")]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread's CPU seconds so far (its own clock: nanoseconds, not the 10 ms ticks
    of ``psutil``), by thread id, with its name."""
    out = {}
    for t in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(t.ident)  # type: ignore[arg-type]
            out[t.ident] = (t.name, time.clock_gettime(clock))
        except (OSError, TypeError):  # (ended meanwhile)
            continue
    return out


_ended: list[tuple[int, str, float]] = []  # (ident, name, its CPU) of threads that ended


def _install_thread_end_clock() -> None:
    """Record every thread's own CPU as it ends (a run's thread and its journal writer
    start and end within a sample)."""
    run = threading.Thread.run

    def timed(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            _ended.append((threading.get_ident(), self.name, time.thread_time()))

    threading.Thread.run = timed  # type: ignore[method-assign]


class _WindowClock:
    """Stands in for ``time`` in ``locality_phases``: its samplers read
    ``time.process_time()`` as the run is called and as the value is in hand; each thread's
    CPU clock is read at the same two moments (see :func:`_by_thread`)."""

    def __init__(self) -> None:
        self.marks: list[tuple[dict[int, tuple[str, float]], int]] = []

    def process_time(self) -> float:
        self.marks.append((_thread_cpu(), len(_ended)))
        return time.process_time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _kind(name: str) -> str:
    """A thread's kind from its name (``nbflow-run-<id>`` -> ``nbflow-run``)."""
    for prefix in ("nbflow-run", "nbflow-journal", "nbflow-locality-read", "Dask-Offload"):
        if name.startswith(prefix):
            return prefix
    return name


def _by_thread(sample: Any) -> dict[str, float]:
    """``sample()``, with the CPU each thread used between the call and the value in hand:
    ``CPU: <kind of thread>`` (Dask's ``IO loop`` runs the client and, on a
    ``LocalCluster``, the scheduler; ``nbflow-run`` the run's event loop; ``nbflow-journal``
    the journal's writer; ``MainThread`` the caller)."""
    clock = _WindowClock()
    was, locality_phases.time = locality_phases.time, clock  # type: ignore[assignment]
    try:
        got = sample()
    finally:
        locality_phases.time = was  # type: ignore[assignment]
    (before, n0), (after, n1) = clock.marks[0], clock.marks[-1]
    used: dict[str, float] = {}
    for ident, (name, cpu) in after.items():  # (alive at the end; started before or during)
        used[_kind(name)] = used.get(_kind(name), 0.0) + cpu - before.get(ident, (name, 0.0))[1]
    for ident, name, cpu in _ended[n0:n1]:  # (ended during the sample)
        used[_kind(name)] = used.get(_kind(name), 0.0) + cpu - before.get(ident, (name, 0.0))[1]
    for kind, cpu in used.items():
        if cpu > 0:
            got[f"CPU: {kind}"] = cpu
    return got


# --off: which cuts the paired system lacks (c2-<part>: one of them)
OFF: dict[str, Any] = {"session-10": session_10, "c2": run_tail.c2_off,
                       "session-13-b": end_read.session_13_b_off,
                       **{f"session-13-b-{p}": functools.partial(end_read.session_13_b_off, (p,))
                          for p in end_read.B13_PARTS},
                       **{f"c2-{p}": functools.partial(run_tail.c2_off, (p,)) for p in run_tail.C2_PARTS}}


def _nbflow(client: Any, spec: list[Any], off: str | None) -> dict[str, float]:
    with OFF[off]() if off else contextlib.nullcontext(), _more_marks():
        got = _by_thread(lambda: sample_nbflow(client, spec))
    got["tail (engine done -> value in hand)"] = got["result in hand (makespan)"] - got["engine done"]
    got["execute ends -> wait returns"] = got["wait returns"] - got["tail: execute (ends at)"]
    got["engine done -> journal run_finished begins"] = (
        got.get("tail: journal run_finished (begins at)", math.nan) - got["engine done"])
    got["last compute end -> engine done"] = got["engine done"] - got["last compute end"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="fan")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--off", choices=sorted(OFF), default="session-10",
                    help="the cuts the paired system runs without")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("dask_tail")
    other = f"nbflow-{args.off}" + ("-off" if args.off.startswith(("c2", "session-13")) else "")
    _install_thread_end_clock()
    doc: dict[str, Any] = {"benchmark": "dask_tail", "machine": _harness.machine_info(),
                           "workloads": {}, "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        for name in args.workloads.split(","):
            spec = WORKLOADS[name]()
            samplers = {"nbflow": lambda spec=spec: _nbflow(client, spec, None),
                        other: lambda spec=spec: _nbflow(client, spec, args.off),
                        "dask": lambda spec=spec: _by_thread(lambda: sample_dask(client, spec))}
            _harness.alternate(samplers, args.warmup)
            got = _harness.alternate(samplers, args.repeat)
            shown = [*FIGURES, *sorted({k for xs in got.values() for x in xs for k in x
                                        if k.startswith("CPU: ")})]
            med = {s: {k: statistics.median(x.get(k, math.nan) for x in xs) for k in shown}
                   for s, xs in got.items()}
            dask_ms = med["dask"]["result in hand (makespan)"]
            paired = {k: statistics.median(a.get(k, math.nan) - b.get(k, math.nan)
                                           for a, b in zip(got["nbflow"], got[other],
                                                           strict=True))
                      for k in shown}
            doc["workloads"][name] = {
                "medians_s": med, f"paired_nbflow_minus_{other.removeprefix('nbflow-')}_s": paired,
                "ratio_to_dask": {s: m["result in hand (makespan)"] / dask_ms for s, m in med.items()},
                "samples": got}
            log(f"{name}:")
            for k in shown:
                row = "  ".join(f"{s} {med[s][k] * 1000:7.2f}" for s in med)
                log(f"  {k:40s} {row}   paired {paired[k] * 1000:+6.2f} ms")
            log("  ratio to dask: " + ", ".join(f"{s} {r:.3f}" for s, r in
                                               doc["workloads"][name]["ratio_to_dask"].items()))
    doc["load_after"] = os.getloadavg()
    log(f"load average before {doc['load_before']}, after {doc['load_after']}")
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
