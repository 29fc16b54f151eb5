"""The ETA of a run in flight: a cheap snapshot of its state, then many simulations of
what is left (:func:`snapshot`, :func:`eta_of`).

An ETA answers: how long will *the rest of this graph* take on *these workers*, given what
history says about each task?  The answer comes from simulating the engine's own dispatch
policy (:func:`nbflow.predict.simulate.simulate`: longest remaining path first, then
priority, then first-come) with predicted durations, many times over:

- each task's duration is drawn from its prediction and the held-out errors of its family
  (:meth:`nbflow.predict.Predictor.sample`), coupled across tasks because one run's tasks
  tend to be slow or fast together;
- the median of the simulated makespans is the estimate, the 10% and 90% quantiles are its
  80% band.

Finished tasks are gone from the graph, and running tasks start at once with their
predicted duration minus the time they have already run (at least a tenth of the
prediction: a task past its estimate is taken to be nearly done, not done).  As tasks
finish, fewer unknowns remain and the finished tasks correct the estimates of the rest
(online correction), so the band narrows.

Nodes that are not task calls (collecting a map, branch gates, constants) take no time.
A ``map`` whose items are not known yet counts as nothing until it expands.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbflow.core.graphs import topological_order
from nbflow.engine.priority import longest_remaining_path
from nbflow.predict.bands import pace_factors
from nbflow.predict.eta_types import Eta
from nbflow.predict.simulate import simulate

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["DEFAULT_SAMPLES", "RunSnapshot", "eta_of", "run_pace", "snapshot"]

DEFAULT_SAMPLES = 40
PACE_SHRINK = 8.0  # finished tasks that give a run's own pace half its weight in an ETA
TASK_KINDS = ("task", "undo")
TERMINAL = ("completed", "failed", "cancelled", "skipped")
RUNNING = ("running", "retrying")


@dataclass(frozen=True)
class RunSnapshot:
    """What an ETA needs to know about a run at one moment (cheap to take, on any thread)."""

    keys: list[str]
    names: list[str]
    kinds: list[str]
    deps: list[list[int]]
    states: list[str]
    elapsed: list[float]  # seconds each running task has run; nan otherwise
    durations: list[float]
    input_bytes: list[float]
    priorities: list[int]
    workers: int
    taken_at: float
    run_elapsed_s: float
    levels: list[float] | None = None  # the scheduler's dispatch levels (learned or unit)
    # served from the result cache: finished, but in a lookup's time, not the task's (None: none)
    cached: list[bool] | None = None


def priority_of(ref: Any) -> int:
    spec = getattr(getattr(ref, "task", None), "spec", None)
    return int(getattr(spec, "priority", 0) or 0)


def _workers_of(run: Any) -> int:
    """How many tasks of ``run`` can run at once: its ``workers`` when set, else the threads
    of the cluster or process pool its tasks went to (a Dask run's 2 workers are 2, not the
    local thread pool's size), else the thread pool's size."""
    if run.workers:
        return int(run.workers)
    backends = getattr(run, "backends", None) or {}
    capacities = [getattr(b, "capacity", None) for name, b in backends.items() if name in ("dask", "process")]
    remote: list[float] = [float(c) for c in capacities if isinstance(c, (int, float)) and 1 <= c < math.inf]
    if remote:
        return int(sum(remote))
    from nbflow.engine.backends.local import DEFAULT_THREADS

    return DEFAULT_THREADS


def _state_of(run: Any) -> tuple[list[Any], list[str], list[float], list[float], list[float], Any, Any]:
    """``(nodes, states, starts, durations, input_bytes, levels, cached)`` of a run, as of now.

    A live run gives a cheap copy (``run.state_now()``): a snapshot is taken while the run
    goes on, often from an event subscriber, and building the public ``run.tasks``
    DataFrame there would stall the run for milliseconds.  A stored run gives its table.
    """
    state_now = getattr(run, "state_now", None)
    if state_now is None:
        t = run.tasks
        ib = t["input_bytes"].astype(float).tolist() if "input_bytes" in t.columns else [math.nan] * len(t)
        starts = [x.timestamp() if isinstance(x, pd.Timestamp) and not pd.isna(x) else math.nan
                  for x in t["start"]]
        cached = t["cached"].astype(bool).tolist() if "cached" in t.columns else None
        return (list(run.nodes), t["state"].tolist(), starts, t["duration_s"].astype(float).tolist(), ib,
                None, cached)
    s = state_now()
    return (s["nodes"], s["state"], s["start"], s["duration"], s["input_bytes"], s["level"],
            s.get("cached"))


_Static = tuple[list[str], list[str], list[str], list[list[int]], list[int]]
# run -> (the nodes the parts were read from, what a snapshot takes from them)
_STATIC: weakref.WeakKeyDictionary[Any, tuple[list[Any], _Static]] = weakref.WeakKeyDictionary()
_STATIC_LOCK = threading.Lock()


def _same_nodes(kept: list[Any], nodes: list[Any], n: int) -> bool:
    """Are ``nodes[:n]`` the very node objects in ``kept``?  (By identity, never ``==``: a
    node's own equality is not the question.  ~45–70 µs for 2 000 nodes under load, where
    reading their parts again costs 3–5 ms: ``benchmarks/static_key.py``; and a snapshot is
    taken only when an estimate is due.)"""
    return len(kept) == n and all(map(operator.is_, kept, nodes))


def _static_of(run: Any, nodes: list[Any], n: int) -> _Static:
    """Keys, names, kinds, dependencies and priorities of ``run``'s first ``n`` nodes.  They
    change only when the graph does, so they are read again only then, not on every live
    estimate (2 000 nodes cost ~20 ms per snapshot).  The lists are shared by the
    snapshots of the run and must not be changed.

    The graph changes in two ways while a run goes: nodes are appended (a map's items, a
    loop's iterations, compensations), and a node is replaced by another object (a map's
    own node becomes the ``collect`` of its items: :func:`nbflow.engine.resolvers.
    expand_map`, after appending them).  Both show as nodes that are not the same objects
    as the ones the parts were read from, so that is the key; the node count and the last
    node were not enough: a snapshot taken between the two steps of an expansion kept the
    map as it was for good (the task after it simulated as waiting for nothing: too short
    an ETA), and so did every snapshot of a map over an empty list."""
    with _STATIC_LOCK:
        try:
            got = _STATIC.get(run)
        except TypeError:  # (a stand-in run that cannot be referred to weakly: not kept)
            got = None
    if got is not None and _same_nodes(got[0], nodes, n):
        return got[1]
    head = nodes[:n]
    static = ([r.key for r in head], [r.name for r in head], [r.kind for r in head],
              [list(r.deps) for r in head], [priority_of(r) for r in head])
    with _STATIC_LOCK, contextlib.suppress(TypeError):
        _STATIC[run] = (head, static)
    return static


def snapshot(run: Any) -> RunSnapshot:
    """Freeze the state of ``run`` for :func:`eta_of` (cheap: a few list copies; the
    graph's parts that do not change come from :func:`_static_of`)."""
    now = time.time()
    nodes, states, starts, durations, ib, levels, cached = _state_of(run)
    n = min(len(nodes), len(states))
    elapsed = [now - starts[i] if states[i] in RUNNING and starts[i] == starts[i] else math.nan
               for i in range(n)]
    started = getattr(run, "started_at", math.nan)
    keys, names, kinds, deps, priorities = _static_of(run, nodes, n)
    return RunSnapshot(
        keys=keys, names=names, kinds=kinds,
        deps=deps, states=states[:n], elapsed=elapsed,
        durations=durations[:n], input_bytes=ib[:n],
        priorities=priorities, workers=_workers_of(run), taken_at=now,
        run_elapsed_s=now - started if started == started else 0.0,
        levels=levels[:n] if levels is not None else None,
        cached=list(cached[:n]) if cached is not None else None,
    )


def topo_order(ids: list[int], deps: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Renumber ``ids`` (the nodes that have not ended: a node's successors are among them)
    in a topological order, first-in first-out (:func:`nbflow.core.graphs.topological_order`,
    the one sort the scheduler uses too); with it, per position, its successors' positions.
    Edges from nodes outside ``ids`` (ended ones) are left out."""
    local = {i: k for k, i in enumerate(ids)}
    succs: list[list[int]] = [[] for _ in ids]
    indegree = [0] * len(ids)
    for k, j in enumerate(ids):
        for d in deps[j]:
            p = local.get(d)
            if p is not None:
                succs[p].append(k)
                indegree[k] += 1
    order = topological_order(succs=succs, indegree=indegree, lowest_first=False)
    if order is None:
        raise ValueError(f"the {len(ids)} nodes left to run wait for each other in a cycle, so no ETA "
                         "can be simulated; the graph was changed after tracing (ref.after()?)")
    pos = [0] * len(ids)
    for p, k in enumerate(order):
        pos[k] = p
    return [ids[k] for k in order], [sorted(pos[s] for s in succs[k]) for k in order]


def draw_durations(
    predictor: Predictor, names: list[str], inputs: list[float], finished: pd.DataFrame | None,
    samples: int, seed: int, codes: list[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, str]]:
    rows = pd.DataFrame({"task": names, "input_bytes": inputs})
    if codes is not None:
        rows["code"] = codes
    if not len(rows):
        return np.zeros((samples, 0)), np.zeros(0), [], {}
    pred = predictor.predict(rows, finished=finished)
    if hasattr(predictor, "families"):  # a fitted Predictor: its draws reuse the prediction
        from nbflow.predict.sampling import sample as joint_sample

        draws = joint_sample(predictor, rows, n=samples, finished=finished, seed=seed,
                             point=pred["duration_s"].to_numpy())
    else:  # (the quick estimate, or a stand-in)
        draws = predictor.sample(rows, n=samples, finished=finished, seed=seed)
    src = pred["source"].astype(str)
    no_hist = sorted(set(rows.loc[~src.str.startswith("history"), "task"]))
    fallbacks = {str(t): s for t, s in zip(rows["task"], src, strict=True) if s != "history"}
    return draws, pred["duration_s"].to_numpy(), no_hist, dict(sorted(fallbacks.items()))


def run_pace(predictor: Predictor, finished: pd.DataFrame | None,
             predicted: np.ndarray | None = None) -> float:
    """How much slower (> 1) or faster this run's finished tasks were than predicted.

    The predictor corrects each task family from its own finished calls where its history
    showed that this helps; what is left, measured against those corrected predictions, is
    the pace of the run as a whole (a loaded machine, per-task overhead, a bigger data
    set): the ratio of their total actual to their total predicted duration, in log space
    shrunk towards 1 by how few tasks finished (:data:`PACE_SHRINK` of them give it half
    its weight; ``predicted``: the finished tasks' online predictions, when known already).
    """
    if finished is None or not len(finished):
        return 1.0
    p = (predictor.predict(finished, finished=finished)["duration_s"].to_numpy(dtype=float)
         if predicted is None else np.asarray(predicted, dtype=float))
    y = finished["duration_s"].to_numpy(dtype=float)
    ok = (y > 0) & (p > 0)
    n = int(ok.sum())
    if not n:
        return 1.0
    # Total actual over total predicted: what the remaining time is made of is seconds, so
    # a long task's ratio counts for more than a short one's (a median of per-task ratios
    # let tiny tasks with large relative errors set the pace: twice the ETA error).
    lr = math.log(float(y[ok].sum()) / float(p[ok].sum()))
    return math.exp(lr * n / (n + PACE_SHRINK))


def eta_of(snap: RunSnapshot, predictor: Predictor | None, samples: int = DEFAULT_SAMPLES,
           seed: int = 0, pace: bool = True, max_finished: int | None = None) -> Eta:
    """The :class:`Eta` of a run at the moment ``snap`` was taken.

    With ``pace`` (the default) the remaining durations are multiplied by the run's own
    pace so far (:func:`run_pace`).  ``max_finished`` bounds how many of the run's finished
    tasks the online correction and the pace learn from (evenly spread over the graph;
    None: all): predicting with thousands of finished tasks costs far more than the
    simulation, and a few hundred say as much about the run's pace."""
    n = len(snap.keys)
    done = sum(1 for s in snap.states if s in TERMINAL)
    left = [i for i in range(n) if snap.states[i] not in TERMINAL]
    if not left:
        return Eta(0.0, 0.0, 0.0, snap.run_elapsed_s, done, n)
    if predictor is None:
        return Eta(math.nan, math.nan, math.nan, snap.run_elapsed_s, done, n)
    order, succs = topo_order(left, snap.deps)
    is_task = [snap.kinds[i] in TASK_KINDS for i in order]
    task_ids = [i for i, t in zip(order, is_task, strict=True) if t]
    # Cache hits finished in a lookup's time: as evidence of the run's pace they would say
    # the run is thousands of times faster than history (an ETA of 0 ms with work left).
    hit = snap.cached or [False] * n
    fin_ids = [i for i in range(n) if snap.states[i] == "completed" and snap.kinds[i] in TASK_KINDS
               and snap.durations[i] == snap.durations[i] and not hit[i]]
    if max_finished is not None and len(fin_ids) > max_finished:
        fin_ids = [fin_ids[k] for k in np.linspace(0, len(fin_ids) - 1, max_finished).astype(int)]
    finished = pd.DataFrame({
        "task": [snap.names[i] for i in fin_ids],
        "input_bytes": [snap.input_bytes[i] for i in fin_ids],
        "duration_s": [snap.durations[i] for i in fin_ids],
    }) if fin_ids else None
    draws, _, no_hist, _ = draw_durations(predictor, [snap.names[i] for i in task_ids],
                                   [snap.input_bytes[i] for i in task_ids], finished, samples, seed)
    if pace:  # the run's pace, and how sure it is (its spread: nbflow.predict.bands)
        # (one online prediction of the finished tasks serves both)
        fp = (predictor.predict(finished, finished=finished)["duration_s"].to_numpy(dtype=float)
              if finished is not None and len(finished) else None)
        draws = (draws * run_pace(predictor, finished, fp)
                 * pace_factors(predictor, finished, len(draws), seed, predicted=fp))
    col = {i: c for c, i in enumerate(task_ids)}
    running = [snap.states[i] in RUNNING for i in order]
    levels = ([snap.levels[i] for i in order] if snap.levels is not None else longest_remaining_path(succs))
    # Running tasks hold their workers from the start of the simulation.
    levels = [lv + 1e12 if r else lv for lv, r in zip(levels, running, strict=True)]
    prios = [snap.priorities[i] for i in order]
    spans = []
    for s in range(draws.shape[0]):
        dur = np.zeros(len(order))
        for p, i in enumerate(order):
            c = col.get(i)
            if c is None:
                continue
            d = float(draws[s, c])
            if running[p] and snap.elapsed[i] == snap.elapsed[i]:
                d = max(d - snap.elapsed[i], 0.1 * d)
            dur[p] = d
        spans.append(simulate(succs, dur.tolist(), snap.workers, priorities=prios, levels=levels).makespan)
    lo, mid, hi = np.quantile(spans, [0.1, 0.5, 0.9])
    return Eta(float(mid), float(lo), float(hi), snap.run_elapsed_s, done, n, no_hist)

