"""Makespan of real workflow shapes: nbflow against its own policy simulated with zero overhead.

Replays a WfCommons WfFormat trace through nbflow: one async task per trace task, which
sleeps ``runtimeInSeconds * scale`` seconds and depends (ordering only) on the trace
task's parents.  It prints JSON with the measured makespan (first task start to last task
end, median of ``--repeat`` runs), the lower bound ``max(critical path, work / workers)``
and the zero-overhead makespan of the engine's dispatch policy
(:func:`nbflow.predict.simulate.simulate`), both on the scaled durations, and their ratios.
The budget is ``ratio_to_simulated <= 1.05``: the engine may lose at most 5% against a
perfect, zero-overhead execution of the very same dispatch policy.

How a task sleeps (``--sleep``):

- ``precise`` (default): ``anyio.sleep`` until 2 ms before the task's deadline, then
  event-loop checkpoints until the deadline.  asyncio's timers wake up to ~1 ms late
  (epoll's millisecond resolution, rounded up), which on 20 ms tasks is a 4-5% error in
  the *task body* that the zero-overhead simulation cannot know about; this mode removes
  it so the comparison measures the scheduler.  The checkpoints yield to the loop, so the
  scheduler runs as usual meanwhile.
- ``loop``: a plain ``await anyio.sleep(seconds)``.

Either way each run also reports the policy simulated on the task durations nbflow
actually measured (``simulated_measured_s``, ``ratio_to_simulated_measured``: scheduler
overhead alone), how much the task bodies overshot their nominal durations, and the share
of tasks started in the same position as in that simulation (``order_match``).

Usage::

    python benchmarks/makespan.py TRACE.json --workers 4 --scale 0.001 [--repeat 3] [--json OUT]
    python benchmarks/makespan.py --all [--traces DIR] --workers 4 --scale auto [--json OUT]
    python benchmarks/makespan.py --all --learned --workers 16 [--json OUT]

``--learned`` replays each trace twice on one store (the first run records history) and
reports the second run's learned priorities against the unit-weight policy and the
policy with true durations, simulated on the true durations (see :func:`bench_learned`).

``--scale auto`` picks, per trace, the scale that makes the median task runtime 20 ms.
``--all`` runs every ``*.json`` trace in ``--traces`` (default: the WfCommons traces kept in
the repository, ``tests/data/wfcommons``; pass another directory to replay more).  The run
store goes to a temporary directory unless ``NBFLOW_HOME`` is set.  Machine info and JSON
output come from ``_harness.py``; the JSON gains a ``machine`` entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__:
    from . import _harness
else:
    import _harness

if TYPE_CHECKING:
    from nbflow.predict.wfformat import Trace

DEFAULT_TRACES = _harness.DEFAULT_TRACES
TARGET_MEDIAN_S = 0.020
BUDGET = 1.05
SPIN_MARGIN_S = 0.002  # precise sleep: the last stretch is waited with loop checkpoints


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One replay of a trace."""

    makespan_s: float
    wall_s: float
    simulated_measured_s: float
    ratio_to_simulated_measured: float
    mean_overshoot_ms: float
    max_overshoot_ms: float
    order_match: float


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The benchmark figures of one trace."""

    trace: str
    tasks: int
    workers: int
    scale: float
    sleep: str
    median_task_ms: float
    makespan_s: float
    lower_bound_s: float
    simulated_s: float
    ratio_to_lower_bound: float
    ratio_to_simulated: float
    ratio_to_simulated_measured: float
    within_budget: bool
    runs: list[RunFigures]


def auto_scale(trace: Trace, target_s: float = TARGET_MEDIAN_S) -> float:
    """The scale that makes the median (positive) task runtime ``target_s`` seconds."""
    runtimes = [t.runtime_s for t in trace.tasks if t.runtime_s > 0]
    if not runtimes:
        return 1.0
    return target_s / statistics.median(runtimes)


async def loop_sleep(seconds: float) -> None:
    """A plain event-loop sleep (asyncio wakes it up to ~1 ms late)."""
    import anyio

    await anyio.sleep(seconds)


async def precise_sleep(seconds: float) -> None:
    """Sleep on the loop until shortly before the deadline, then checkpoint until it passes."""
    import anyio

    deadline = time.perf_counter() + seconds
    if seconds > SPIN_MARGIN_S:
        await anyio.sleep(seconds - SPIN_MARGIN_S)
    while time.perf_counter() < deadline:
        await anyio.lowlevel.checkpoint()


SLEEPS: dict[str, Callable[[float], Awaitable[None]]] = {"precise": precise_sleep, "loop": loop_sleep}


def _make_task(nf: Any, category: str, sleep: Callable[[float], Awaitable[None]]) -> Any:
    @nf.task(name=category)
    async def work(seconds: float, *deps: object) -> None:  # deps: ordering only
        await sleep(seconds)

    return work


def _epoch(value: Any) -> float:
    """Epoch seconds from a ``run.tasks`` start/end cell (a pandas Timestamp or a float)."""
    stamp = getattr(value, "timestamp", None)
    return float(stamp()) if callable(stamp) else float(value)


def replay(
    nf: Any,
    trace: Trace,
    order: Sequence[str],
    scale: float,
    workers: int,
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """Build and run the workflow once; return (makespan, wall time, {task id: (start, end)})."""
    tasks = {c: _make_task(nf, c, sleep) for c in trace.categories()}
    refs: dict[str, Any] = {}
    with nf.Workflow(trace.name) as wf:
        for tid in order:  # creation order = the simulated order
            t = trace.task(tid)
            refs[tid] = tasks[t.category](t.runtime_s * scale, *[refs[p] for p in t.parents])
    t0 = time.perf_counter()
    run = wf.run(workers=workers, cache=False)
    wall = time.perf_counter() - t0
    df = run.tasks
    by_key = {
        str(k): (_epoch(s), _epoch(e)) for k, s, e in zip(df["key"], df["start"], df["end"], strict=True)
    }
    times = {tid: by_key[ref.key] for tid, ref in refs.items()}
    first = min(s for s, _ in times.values())
    last = max(e for _, e in times.values())
    return last - first, wall, times


def bench_trace(
    nf: Any,
    path: Path,
    workers: int,
    scale: float | None,
    repeat: int,
    sleep: str,
    log: Callable[[str], None],
) -> TraceResult:
    """Replay one trace ``repeat`` times and compare with the bound and the simulation."""
    from nbflow.predict.simulate import simulate
    from nbflow.predict.wfformat import load_trace

    trace = load_trace(path)
    order = trace.topological_order()
    graph = trace.indexed(order)
    s = auto_scale(trace) if scale is None else scale
    nominal = [d * s for d in graph.durations]
    simulated = simulate(graph.succs, nominal, workers).makespan
    lower = trace.lower_bound(workers) * s

    runs: list[RunFigures] = []
    for k in range(repeat):
        makespan, wall, times = replay(nf, trace, order, s, workers, SLEEPS[sleep])
        measured = [times[tid][1] - times[tid][0] for tid in graph.ids]
        sim_measured = simulate(graph.succs, measured, workers)
        overshoot = [(m - d) * 1e3 for m, d in zip(measured, nominal, strict=True)]
        real_order = sorted(range(len(graph.ids)), key=lambda i: times[graph.ids[i]][0])
        same = sum(a == b for a, b in zip(real_order, sim_measured.order, strict=True))
        runs.append(
            RunFigures(
                makespan_s=makespan,
                wall_s=wall,
                simulated_measured_s=sim_measured.makespan,
                ratio_to_simulated_measured=_ratio(makespan, sim_measured.makespan),
                mean_overshoot_ms=statistics.fmean(overshoot) if overshoot else 0.0,
                max_overshoot_ms=max(overshoot, default=0.0),
                order_match=same / len(graph.ids) if graph.ids else 1.0,
            )
        )
        log(
            f"  {path.stem} run {k + 1}/{repeat}: makespan {makespan:.4f}s "
            f"(simulated {simulated:.4f}s, wall {wall:.4f}s)"
        )

    med = statistics.median(r.makespan_s for r in runs)
    positive = [t.runtime_s for t in trace.tasks if t.runtime_s > 0]
    return TraceResult(
        trace=path.stem,
        tasks=len(trace),
        workers=workers,
        scale=s,
        sleep=sleep,
        median_task_ms=statistics.median(positive) * s * 1e3 if positive else 0.0,
        makespan_s=med,
        lower_bound_s=lower,
        simulated_s=simulated,
        ratio_to_lower_bound=_ratio(med, lower),
        ratio_to_simulated=_ratio(med, simulated),
        ratio_to_simulated_measured=statistics.median(r.ratio_to_simulated_measured for r in runs),
        within_budget=_ratio(med, simulated) <= BUDGET,
        runs=runs,
    )


def bench_learned(
    nf: Any, path: Path, workers: int, scale: float | None, sleep: str, log: Callable[[str], None],
) -> dict[str, Any]:
    """``--learned``: replay a trace twice on one store; the second run has history.

    The first run dispatches with unit weights and records each task's duration; the second
    weighs the critical path by them (``nbflow/predict/priorities.py``).  Both policies and
    the oracle (weights = the trace's true durations) are also simulated on the true scaled
    durations, so the gain of learning is measured without the machine's noise:
    ``recovered`` = (unit - learned) / (unit - oracle) of the simulated makespans.
    """
    from nbflow.engine.priority import longest_remaining_path
    from nbflow.predict.priorities import learned_weights, mean_durations
    from nbflow.predict.simulate import simulate
    from nbflow.predict.wfformat import load_trace

    # Named after the file, so that each trace's history is its own first run only.
    trace = dataclasses.replace(load_trace(path), name=path.stem)
    order = trace.topological_order()
    graph = trace.indexed(order)
    s = auto_scale(trace) if scale is None else scale
    nominal = [d * s for d in graph.durations]
    unit = simulate(graph.succs, nominal, workers).makespan
    oracle = simulate(graph.succs, nominal, workers,
                      levels=longest_remaining_path(graph.succs, [d + 1e-9 for d in nominal])).makespan
    first, _, _ = replay(nf, trace, order, s, workers, SLEEPS[sleep])
    counters: dict[str, int] = {}
    first_keys = {}  # the task keys replay() gives: "<category>-<n-th call>", in creation order
    for tid in order:
        c = trace.task(tid).category
        first_keys[tid] = f"{c}-{counters.get(c, 0)}"
        counters[c] = counters.get(c, 0) + 1
    means, key_means = mean_durations(trace.name)
    cats = [trace.task(t).category for t in graph.ids]
    keys = [first_keys[t] for t in graph.ids]
    weights = learned_weights(cats, ["task"] * len(cats), means, keys, key_means)
    learned = simulate(graph.succs, nominal, workers,
                       levels=longest_remaining_path(graph.succs, weights)).makespan if weights else unit
    second, _, _ = replay(nf, trace, order, s, workers, SLEEPS[sleep])
    gain = unit / oracle - 1 if oracle > 0 else 0.0
    recovered = (unit - learned) / (unit - oracle) if unit - oracle > 1e-12 else None
    log(f"  {path.stem}: unit {unit:.4f}s oracle {oracle:.4f}s learned {learned:.4f}s; "
        f"measured run 1 {first:.4f}s run 2 {second:.4f}s")
    return {
        "trace": path.stem, "tasks": len(trace), "workers": workers, "scale": s,
        "simulated_unit_s": unit, "simulated_oracle_s": oracle, "simulated_learned_s": learned,
        "oracle_gain": gain, "learned_gain": unit / learned - 1 if learned > 0 else 0.0,
        "recovered": recovered,
        "meets_target": None if gain < 0.03 else (recovered is not None and recovered >= 0.8),
        "measured_first_s": first, "measured_second_s": second,
        "measured_second_vs_oracle": second / oracle if oracle > 0 else None,
    }


def _ratio(a: float, b: float) -> float:
    """``a / b``; a zero denominator (an empty trace) gives inf, or 1.0 when ``a`` is zero too."""
    return a / b if b > 0 else float("inf") if a > 0 else 1.0


def _parse_scale(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a number or 'auto', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("scale must be > 0 or 'auto'")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("trace", nargs="?", type=Path, help="a WfFormat JSON file")
    p.add_argument("--all", action="store_true", help="run every *.json trace in --traces")
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="directory for --all")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument(
        "--scale",
        type=_parse_scale,
        default=None,
        help="seconds of sleep per trace second, or 'auto' (median task 20 ms; the default)",
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sleep", choices=sorted(SLEEPS), default="precise", help="how a task sleeps")
    p.add_argument("--json", type=Path, dest="out", help="also write the JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--learned", action="store_true",
                   help="replay twice on one store: unit vs learned vs oracle priorities")
    args = p.parse_args(argv)
    if (args.trace is None) == (not args.all):
        p.error("give either a TRACE file or --all")
    if args.workers < 1 or args.repeat < 1:
        p.error("--workers and --repeat must be >= 1")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    # The plain benchmark measures the unit-weight policy: repeats must not learn.
    os.environ["NBFLOW_LEARNED_PRIORITY"] = "1" if args.learned else "0"
    with _harness.nbflow_home():
        nf = _harness.import_nbflow()

        if args.learned:
            paths = sorted(args.traces.glob("*.json")) if args.all else [args.trace]
            rows = [bench_learned(nf, path, args.workers, args.scale, args.sleep, log) for path in paths]
            judged = [r for r in rows if r["meets_target"] is not None]
            payload_l = {
                "mode": "learned", "workers": args.workers, "traces": rows,
                "traces_where_oracle_gains_3pct": len(judged),
                "all_recover_80pct": all(r["meets_target"] for r in judged),
            }
            text = json.dumps(payload_l, indent=2)
            print(text)
            if args.out is not None:
                args.out.write_text(text + "\n")
            return 0

        def one(path: Path) -> TraceResult:
            return bench_trace(nf, path, args.workers, args.scale, args.repeat, args.sleep, log)

        if args.all:
            paths = sorted(args.traces.glob("*.json"))
            if not paths:
                p.error(f"no *.json traces in {args.traces}")
            results = [one(path) for path in paths]
            payload: dict[str, Any] = {
                "traces_dir": str(args.traces),
                "workers": args.workers,
                "scale": "auto" if args.scale is None else args.scale,
                "repeat": args.repeat,
                "sleep": args.sleep,
                "budget_ratio_to_simulated": BUDGET,
                "max_ratio_to_simulated": max(r.ratio_to_simulated for r in results),
                "max_ratio_to_simulated_measured": max(r.ratio_to_simulated_measured for r in results),
                "all_within_budget": all(r.within_budget for r in results),
                "results": [asdict(r) for r in results],
            }
        else:
            payload = asdict(one(args.trace))
        payload["machine"] = _harness.machine_info(getattr(nf, "__version__", None))

    _harness.emit_json(payload, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
