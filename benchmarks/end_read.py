"""Where the CPU of a Dask run's end-of-run locality read goes, and what asking differently costs.

The read (:meth:`nbflow.locality.agent.LocalityAgent._read`) asks every worker for its
transfer-log entries of the run's keys and its memory evidence, and the scheduler for the
run's restarted tasks, builds ``run.transfers``' rows, journals them, lets the journal's
writer go and reads the next run's history ahead.  On the ``LocalCluster`` of
``locality.py`` (4 single-thread worker processes, the scheduler in a thread of this
process) most of it is not the reading thread's: the messages are handled by Dask's client
loop and the scheduler, so this process's CPU (``time.process_time``, every thread) is
what is counted, each part measured while nothing else runs.

``--part run``: ``--runs`` *fan* (or ``--workload``) runs one after another, each read
waited for before the next run (no overlap), its parts timed by wrapping them: the two
questions (``_ask``), the rows (``edges_from_logs``), the journaling (``TransferSink``),
the writer let go (``_release``, with the read ahead in it) and the read ahead alone.

``--systems`` (``--part run``): ``now`` (this tree) and ``session-13-b-off`` (this tree with
session 13 (B)'s changes switched off: :func:`session_13_b_off`), alternated run by run.

``--part ask``: the questions alone, alternated ``--repeat`` times, asked as the read asks
them (``read``: on this cluster, the workers by a message, the scheduler, which runs in this
process, read directly), as it asked them before (``both``: the workers and the scheduler
by messages, together) and other ways: the workers only,
the scheduler only, both through one message to the scheduler that broadcasts to the
workers itself (``via-scheduler``), and ``both`` with Dask's broadcast connections kept
(``reuse-comm``: ``distributed.scheduler.reuse-broadcast-comm``).

Usage::

    .venv/bin/python benchmarks/end_read.py --part all --runs 25 --repeat 60 --json benchmarks/end-read.json
    .venv/bin/python benchmarks/end_read.py --part run --runs 40 --systems now,session-13-b-off \\
        --json benchmarks/end-read-s13b.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

if __package__:
    from . import _harness
    from .locality import WORKLOADS, trace_spec
else:
    import _harness
    from locality import WORKLOADS, trace_spec

PARTS = (("_ask", "the two questions"), ("edges_from_logs", "rows"), ("sink", "journaling"),
         ("_release", "writer let go + read ahead"), ("read_ahead", "read ahead alone"),
         ("_read", "the whole read"))


B13_PARTS = ("ask", "park", "held")  # (session_13_b_off's parts)


@contextlib.contextmanager
def session_13_b_off(parts: tuple[str, ...] = B13_PARTS) -> Iterator[None]:
    """Session 13 (B)'s changes switched off: the end-of-run read asks every worker by
    ``client.run`` (the scheduler's table read here, as in session 12), not the workers the
    run's tasks were sent to through the scheduler's own broadcast
    (``LocalityAgent.asks_here``); its thread is started as the run closes, not parked
    during the run (``LocalityAgent.parks``); and a held task's completion is sent by the
    scheduler plugin at the end of its turn, not within its transition
    (``LooseRestrictions.held_now``: a scheduler in this process).  ``parts``: which of
    them (``ask``, ``park``, ``held``)."""
    from nbflow.engine.backends.dask_plugin import LooseRestrictions
    from nbflow.locality.agent import LocalityAgent

    asks_here, parks, held_now = LocalityAgent.asks_here, LocalityAgent.parks, LooseRestrictions.held_now
    LocalityAgent.asks_here = asks_here and "ask" not in parts
    LocalityAgent.parks = parks and "park" not in parts
    LooseRestrictions.held_now = held_now and "held" not in parts
    try:
        yield
    finally:
        LocalityAgent.asks_here, LocalityAgent.parks = asks_here, parks
        LooseRestrictions.held_now = held_now


SYSTEMS = {"now": contextlib.nullcontext, "session-13-b-off": session_13_b_off}


def part_run(client: Any, workload: str, runs: int, systems: list[str]) -> dict[str, Any]:
    """``runs`` runs per system, the systems alternated run by run; per system, the medians
    of each part's CPU (one system: its figures alone, as before)."""
    got = _run_alternated(client, workload, runs, systems)
    skip = 2  # (the first runs of each: imports, no history)
    per = {name: {"transfer_rows_per_run": statistics.median(spent.pop("rows")),
                  "median_ms": {k: (statistics.median(v[skip:]) * 1e3 if len(v) > skip else None)
                                for k, v in spent.items()},
                  "calls": {k: len(v) for k, v in spent.items()}}
           for name, spent in got.items()}
    return per if len(systems) > 1 else per[systems[0]]


def _run_alternated(client: Any, workload: str, runs: int,
                    systems: list[str]) -> dict[str, dict[str, list[float]]]:
    from nbflow import locality
    from nbflow.locality import agent
    from nbflow.predict import ahead
    from nbflow.store import hooks

    spent: dict[str, list[float]] = {name: [] for name, _ in PARTS}
    spent["_read thread"] = []

    def timing(obj: Any, attr: str, name: str) -> Callable[[], None]:
        real = getattr(obj, attr)

        def timed(*a: Any, **k: Any) -> Any:
            c0, t0 = time.process_time(), time.thread_time()
            try:
                return real(*a, **k)
            finally:
                spent[name].append(time.process_time() - c0)
                if name == "_read":
                    spent["_read thread"].append(time.thread_time() - t0)

        setattr(obj, attr, timed)
        return lambda: setattr(obj, attr, real)

    agent_class = agent.LocalityAgent
    undo = [timing(agent_class, "_ask", "_ask"), timing(agent, "edges_from_logs", "edges_from_logs"),
            timing(hooks.TransferSink, "__call__", "sink"), timing(agent_class, "_release", "_release"),
            timing(ahead, "read_ahead", "read_ahead"), timing(agent_class, "_read", "_read")]
    out = {name: {k: [] for k in [*spent, "rows"]} for name in systems}
    try:
        wf, end = trace_spec(f"end-read-{workload}", WORKLOADS[workload]())
        with locality.placement("locality"):
            for i in range(runs * len(systems)):
                name = systems[i % len(systems)]
                for v in spent.values():
                    v.clear()
                with SYSTEMS[name]():
                    run = wf.run(backend=client, cache=False)
                    run[end]
                    run.locality.agent.settle()
                    rows = len(run.transfers)
                del run
                time.sleep(0.02)  # (the journal writer exits: nothing of this run left running)
                for k, v in spent.items():
                    out[name][k].append(sum(v))
                out[name]["rows"].append(float(rows))
    finally:
        for u in undo:
            u()
    return out


async def _via_scheduler(keys: list[str], since: float, dask_scheduler: Any = None) -> Any:
    """(On the scheduler) both questions: the workers' through its own broadcast."""
    from distributed.protocol.pickle import dumps

    from nbflow.locality import agent, memory

    msg = dict(op="run", function=dumps(agent._at_close), args=dumps((keys, since)),
               kwargs=dumps({}), wait=True)
    got = await dask_scheduler.broadcast(msg=msg, on_error="return_pickle")
    return {w: r["result"] for w, r in got.items()}, memory.suspicious(keys, dask_scheduler)


def part_ask(client: Any, repeat: int) -> dict[str, Any]:
    import dask

    from nbflow.locality import agent, memory

    keys = [f"end-read-{i}" for i in range(10)]
    since = time.time()

    def both() -> Any:  # (as the read asked before session 12 (A2), on any cluster)
        return client.sync(agent._both, client, keys, since)

    def reuse() -> Any:
        with dask.config.set({"distributed.scheduler.reuse-broadcast-comm": True}):
            return both()

    ways: dict[str, Callable[[], Any]] = {
        "read": lambda: agent.LocalityAgent()._ask(client, keys),
        "both": both,
        "workers-only": lambda: client.run(agent._at_close, keys, since),
        "scheduler-only": lambda: client.run_on_scheduler(memory.suspicious, keys),
        "via-scheduler": lambda: client.run_on_scheduler(_via_scheduler, keys, since),
        "reuse-comm": reuse,
    }
    for f in ways.values():
        f()

    def sample(f: Callable[[], Any]) -> Callable[[], tuple[float, float]]:
        def one() -> tuple[float, float]:
            time.sleep(0.01)  # (the previous question's replies all handled)
            c0, t0 = time.process_time(), time.perf_counter()
            f()
            return time.process_time() - c0, time.perf_counter() - t0

        return one

    got = _harness.alternate({k: sample(f) for k, f in ways.items()}, repeat)
    return {k: {"cpu_ms": statistics.median(c for c, _ in v) * 1e3,
                "wall_ms": statistics.median(w for _, w in v) * 1e3} for k, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["run", "ask", "all"], default="all")
    ap.add_argument("--workload", default="fan", choices=sorted(WORKLOADS))
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=60)
    ap.add_argument("--systems", default="now",
                    help=f"(--part run) any of {sorted(SYSTEMS)}, comma-separated")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    log = _harness.progress("end_read")
    doc: dict[str, Any] = {"benchmark": "end_read", "machine": _harness.machine_info(),
                           "command": vars(args), "load_before": os.getloadavg()}
    with _harness.nbflow_home(), _harness.local_cluster() as client:
        if args.part in ("run", "all"):
            doc["run"] = part_run(client, args.workload, args.runs, args.systems.split(","))
            for name, got in (doc["run"].items() if "median_ms" not in doc["run"]
                              else [("now", doc["run"])]):
                log(f"run, {name}: {got['median_ms']}")
        if args.part in ("ask", "all"):
            doc["ask"] = part_ask(client, args.repeat)
            log(f"ask: {doc['ask']}")
    doc["load_after"] = os.getloadavg()
    doc["threads_at_end"] = threading.active_count()
    _harness.emit_json(doc, args.json)


if __name__ == "__main__":
    main()
