"""How honest the ETA's 80% band has been, and the correction that makes it hold.

The band of :func:`nbflow.predict.inflight.eta_of` is the spread of simulations whose
durations are drawn from what the predictor knows about its errors.  What it does not know
stays out of it: a run whose whole workload differs in a way no task's inputs show, a
machine that overshoots, a family whose two runs of history happened to agree.  Rather than
guess each such source, the ETA can be checked against the truth the store already holds:
for a past run, the ETA it would have been given at a quarter, half and three quarters of
its tasks done (from a predictor that did not see that run) is compared with the time it
really still took.  This is a *conformal* correction:

- each past ETA gives a **score**, how far the true remaining time fell from the median in
  units of the band's half-width on that side, in log space (:func:`band_score`; inside the
  band is a score of at most 1);
- the band of a new ETA is stretched about its median, in log space, by the score that 80%
  of the past ETAs stayed within (:func:`conformal_scale`, with the new ETA itself counted
  as one more, unseen score: the usual finite-sample correction),
  so a store whose bands held keeps them, one whose ETAs missed by 3x widens them, and one
  whose bands were too cautious narrows them (never below :data:`MIN_SCALE` of their width);
- the stretch this workflow's own past runs ask for (all marks together: a workflow has
  few runs) and the one the store's other workflows ask for (at the mark nearest to how
  much of the run is done, when they have enough scores there: early ETAs extrapolate
  further, and need more room) are combined (in log space), the others weighing as much as
  :data:`POOL_RUNS` past runs of this one (as the pooled between-run variance does in
  :mod:`nbflow.predict.bands`), so a workflow with little history of its own borrows how
  honest the ETA was elsewhere, and one with a long history is judged by its own.

The store's past runs are read back from the journal (:func:`snapshot_at` rebuilds a
finished run's state at any moment from its tasks' start and end times and its graph), and
each past run is scored once per process (:func:`store_scores`).  That costs a fit per past
run, so the views (``run.eta()``, the widget, the progress line) have it worked out in a
helper process and apply the result (:mod:`nbflow.predict.eta_scores`).

Because the score is relative to the band's own width, a band that was narrow because the
history agreed stays narrow (blast-like workloads), while one whose history disagreed gets
room.  The median is not moved.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbflow.predict.eta_types import Eta
from nbflow.predict.inflight import TASK_KINDS, RunSnapshot, eta_of

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["LEVEL", "MARKS", "POOL_RUNS", "Calibration", "band_score", "calibrate", "calibration_at",
           "conformal_quantile", "conformal_scale", "past_run_scores", "snapshot_at", "store_calibration",
           "store_scores"]

LEVEL = 0.8  # the band is an 80% band
MARKS = (0.25, 0.5, 0.75)  # shares of tasks done at which a past run's ETA is scored
POOL_RUNS = 2.0  # the other workflows' stretch weighs as much as this many own past runs
MIN_SCALE = 0.5  # a band is never narrowed below half its simulated width
MIN_HALF = 0.01  # log half-width below which a band counts as 1% wide (a score must stay finite)
OWN_RUNS = 3  # newest past runs of the workflow scored for its calibration
POOL_WORKFLOWS = 4  # other workflows (their newest run each) scored for the prior
MIN_MARK_SCORES = 8  # other workflows' scores at one mark needed to calibrate that mark alone
MIN_POOL_RUNS = 3  # other workflows' runs needed before they count at all (one or two say more about
# themselves than about ETAs in general: a no-op workflow whose ETA missed its engine overhead 37x)


@dataclass(frozen=True)
class Calibration:
    """The stretch of the ETA band (``scale``: log half-widths are multiplied by it), and
    how many past ETAs of this workflow (``own``) and of others (``pooled``) it rests on."""

    scale: float = 1.0
    own: int = 0
    pooled: int = 0

    def __str__(self) -> str:
        return f"band x{self.scale:.2f} (from {self.own} ETAs of this workflow, {self.pooled} of others)"


def band_score(remaining_s: float, lo: float, hi: float, true_s: float) -> float:
    """How far ``true_s`` fell from the ETA's median ``remaining_s``, in log space, in units
    of the band's half-width on that side (``lo`` below, ``hi`` above): at most 1 inside
    the band.  NaN when any of them is not a positive number (nothing to score)."""
    vals = (remaining_s, lo, hi, true_s)
    if not all(v == v and v > 0 for v in vals):
        return math.nan
    m, t = math.log(remaining_s), math.log(true_s)
    half = (math.log(hi) - m) if t >= m else (m - math.log(lo))
    return abs(t - m) / max(half, MIN_HALF)


def conformal_scale(own: Sequence[float], pooled: Sequence[float] = (), level: float = LEVEL,
                    pool_runs: float = POOL_RUNS, marks: int = len(MARKS)) -> Calibration:
    """The stretch of the band: the score ``level`` of the past ETAs stayed within (with the
    new ETA counted as one more score: :func:`conformal_quantile`), from this workflow's own
    scores (``own``) and from the other workflows' (``pooled``), the two combined in log
    space with weights ``k`` (own past runs: ``len(own) / marks``) and ``pool_runs``.  A
    quantile is combined, not the scores: mixing the scores would let one far-off workflow
    set the tail of every other one.  Without any score the band is left as it is."""
    a = [float(x) for x in own if x == x]
    b = [float(x) for x in pooled if x == x]
    if not a and not b:
        return Calibration()
    if not b:
        q = conformal_quantile(a, level)
    elif not a:
        q = conformal_quantile(b, level)
    else:
        k = len(a) / marks
        q = math.exp((k * math.log(max(conformal_quantile(a, level), MIN_HALF))
                      + pool_runs * math.log(max(conformal_quantile(b, level), MIN_HALF))) / (k + pool_runs))
    return Calibration(scale=max(q, MIN_SCALE), own=len(a), pooled=len(b))


def conformal_quantile(scores: Sequence[float], level: float = LEVEL) -> float:
    """The ``ceil(level * (n + 1))``-th smallest of ``n`` scores: of the ``n`` past scores
    and a new one, the new one is as likely as any to be the largest, so a bound that
    ``level`` of all ``n + 1`` stay within sits that high (the largest score when ``n`` is
    too small to say more)."""
    x = np.sort(np.asarray(scores, dtype=float))
    rank = math.ceil(level * (len(x) + 1))
    return float(x[min(rank, len(x)) - 1])


def calibrate(eta: Eta, calibration: Calibration | None) -> Eta:
    """``eta`` with its band stretched about its median by ``calibration.scale`` (log space)."""
    if calibration is None or calibration.scale == 1.0:
        return eta
    m, lo, hi = eta.remaining_s, eta.remaining_lo, eta.remaining_hi
    if not (m == m and m > 0 and lo > 0 and hi > 0):
        return eta
    k = calibration.scale
    return dataclasses.replace(eta, remaining_lo=float(m * (lo / m) ** k),
                               remaining_hi=float(m * (hi / m) ** k))


def snapshot_at(tasks: pd.DataFrame, deps: Sequence[Sequence[int]], t: float, workers: int,
                started: float) -> RunSnapshot:
    """A finished run's state at time ``t`` (epoch seconds), rebuilt from its ``tasks`` table
    (``Run.tasks`` columns: ``key``, ``task``, ``state``, ``start``, ``end``, ``duration_s``,
    and ``kind``/``input_bytes`` when known) and ``deps`` (per row, the rows it waits for):
    a task that ended by ``t`` is completed, one that started by then is running, any other
    is pending (as the run's live snapshot would have said)."""
    def epoch(col: str) -> np.ndarray:
        v = tasks[col]
        if pd.api.types.is_datetime64_any_dtype(v):
            return np.asarray([x.timestamp() if not pd.isna(x) else math.nan for x in v], dtype=float)
        return v.to_numpy(dtype=float)

    start, end = epoch("start"), epoch("end")
    n = len(tasks)
    kinds = tasks["kind"].astype(str).tolist() if "kind" in tasks.columns else ["task"] * n
    states, elapsed = [], []
    for i in range(n):
        if end[i] == end[i] and end[i] <= t:
            states.append("completed")
            elapsed.append(math.nan)
        elif start[i] == start[i] and start[i] <= t:
            states.append("running")
            elapsed.append(t - start[i])
        else:
            states.append("pending")
            elapsed.append(math.nan)
    done = [s == "completed" for s in states]
    durations = [float(d) if done[i] else math.nan for i, d in enumerate(tasks["duration_s"].astype(float))]
    ib = (tasks["input_bytes"].astype(float).tolist() if "input_bytes" in tasks.columns else [math.nan] * n)
    return RunSnapshot(
        keys=tasks["key"].astype(str).tolist(), names=tasks["task"].astype(str).tolist(), kinds=kinds,
        deps=[list(d) for d in deps], states=states, elapsed=elapsed,
        durations=durations,
        input_bytes=ib, priorities=[0] * n, workers=workers, taken_at=t, run_elapsed_s=t - started,
        cached=tasks["cached"].astype(bool).tolist() if "cached" in tasks.columns else None)


def past_run_scores(tasks: pd.DataFrame, deps: Sequence[Sequence[int]], workers: int,
                    predictor: Predictor | None, marks: Sequence[float] = MARKS,
                    samples: int = 20) -> list[float]:
    """The scores (:func:`band_score`) of the ETAs a finished run would have been given when
    each share in ``marks`` of its tasks had finished, by ``predictor`` (which must not have
    seen this run), against the time its work really went on after that: one per mark, NaN
    where there is nothing to score."""
    if predictor is None:
        return [math.nan] * len(marks)
    kinds = tasks["kind"].astype(str) if "kind" in tasks.columns else pd.Series(["task"] * len(tasks))
    mine = tasks[(kinds.isin(TASK_KINDS)).to_numpy() & (tasks["state"] == "completed").to_numpy()]
    ends = mine["end"]
    ends = np.sort(np.asarray([x.timestamp() if isinstance(x, pd.Timestamp) else float(x) for x in ends],
                              dtype=float))
    ends = ends[ends == ends]
    if len(ends) < 4:
        return [math.nan] * len(marks)
    starts = tasks["start"]
    first = min(x.timestamp() if isinstance(x, pd.Timestamp) else float(x) for x in starts if not pd.isna(x))
    out = []
    for m in marks:
        t = float(ends[max(1, round(m * len(ends))) - 1])
        true = float(ends[-1]) - t
        if true <= 0:
            out.append(math.nan)
            continue
        e = eta_of(snapshot_at(tasks, deps, t, workers, first), predictor, samples=samples)
        out.append(band_score(e.remaining_s, e.remaining_lo, e.remaining_hi, true))
    return out


_SCORES: dict[tuple[str, str], list[float]] = {}  # (store, past run id) -> its scores
_LOCK = threading.Lock()


def store_calibration(name: str, exclude_run: str | None = None, home: Any = None,
                      fit: Callable[[list[str], set[str]], Predictor | None] | None = None,
                      done_share: float = 0.5) -> Calibration:
    """The conformal correction of ``name``'s ETA band, with ``done_share`` of its tasks
    done, from the store's own past runs (:func:`store_scores`, :func:`calibration_at`)."""
    return calibration_at(*store_scores(name, exclude_run, home, fit), done_share)


def calibration_at(own_runs: Sequence[Sequence[float]], pool_runs: Sequence[Sequence[float]],
                   done_share: float, marks: Sequence[float] = MARKS) -> Calibration:
    """The correction for an ETA with ``done_share`` of the tasks done, from the scores of
    this workflow's past runs (``own_runs``, one list per run, one score per mark) and of
    other workflows' (``pool_runs``).  How honest a band is depends on how much of a run is
    done (an early ETA extrapolates further): the other workflows' scores at the nearest
    mark are used when there are at least :data:`MIN_MARK_SCORES` of them, all their marks
    otherwise, and none from fewer than :data:`MIN_POOL_RUNS` runs; a workflow's own few
    runs are too few to split by mark, so all of theirs count."""
    at = int(np.argmin([abs(m - done_share) for m in marks]))
    own = [x for r in own_runs for x in r]
    if len(pool_runs) < MIN_POOL_RUNS:
        pool_runs = []
    at_mark = [r[at] for r in pool_runs if len(r) > at and r[at] == r[at]]
    pooled = at_mark if len(at_mark) >= MIN_MARK_SCORES else [x for r in pool_runs for x in r]
    return conformal_scale(own, pooled, marks=len(marks))


def store_scores(name: str, exclude_run: str | None = None, home: Any = None,
                 fit: Callable[[list[str], set[str]], Predictor | None] | None = None,
                 ) -> tuple[list[list[float]], list[list[float]]]:
    """The scores (per run, per mark: :func:`past_run_scores`) of ``name``'s
    :data:`OWN_RUNS` newest completed runs and of the newest completed run of up to
    :data:`POOL_WORKFLOWS` other workflows (none when there are fewer than
    :data:`MIN_POOL_RUNS` of them: :func:`calibration_at` would not use them, and each
    costs a fit); each past run scored once per process with a
    predictor fitted on the store's history without that run (nor ``exclude_run``, the run
    asking).  ``fit(excluded run ids, task names)`` makes that predictor (default: the
    store's history, those tasks only).  No store or no past runs: no scores."""
    from nbflow.store.history import _require_store, load_run, runs

    try:
        store = _require_store(home)
        table = runs(home=home).iloc[::-1]  # oldest first: the last rows are the latest runs
    except Exception:  # no usable store: nothing to learn from
        return [], []
    table = table[(table["status"] == "completed") & (table["id"] != exclude_run)]
    own_ids = table.loc[table["name"] == name, "id"].tolist()[-OWN_RUNS:]
    others = table[table["name"] != name].drop_duplicates("name", keep="last")
    pool_ids = others["id"].tolist()[-POOL_WORKFLOWS:]
    if len(pool_ids) < MIN_POOL_RUNS:
        pool_ids = []
    if fit is None:
        fit = _history_fitter(home)
    scored: dict[str, list[float]] = {}
    for rid in [*own_ids, *pool_ids]:
        key = (str(store.home), str(rid))
        with _LOCK:
            cached = _SCORES.get(key)
        if cached is None:
            try:
                run = load_run(str(rid), home=home)
                tasks = run.tasks
                idx = {k: i for i, k in enumerate(tasks["key"])}
                g = run.graph
                deps = [[idx[p] for p in g.predecessors(k) if p in idx] for k in tasks["key"]]
                excluded = [str(rid)] + ([exclude_run] if exclude_run else [])
                predictor = fit(excluded, set(tasks["task"].dropna().astype(str)))
                cached = past_run_scores(tasks, deps, int(run.workers or 4), predictor)
            except Exception:  # a run that cannot be read back or scored says nothing
                cached = []
            with _LOCK:
                _SCORES[key] = cached
        scored[str(rid)] = cached
    return [scored[str(r)] for r in own_ids], [scored[str(r)] for r in pool_ids]


def _history_fitter(home: Any) -> Callable[[list[str], set[str]], Predictor | None]:
    """Fits on the store's history of some tasks without some runs (the history read once,
    at the first fit: scoring several past runs must not read the store several times)."""
    from nbflow.predict.fitting import recent_history
    from nbflow.predict.history import history
    from nbflow.predict.model import Predictor

    read: list[pd.DataFrame] = []

    def fit(excluded: list[str], names: set[str]) -> Predictor | None:
        if not read:
            h = history(home=home)
            read.append(h[(h["state"] == "completed") & ~h["cached"] & h["duration_s"].notna()])
        h = read[0]
        h = h[~h["run_id"].isin(excluded) & h["task"].isin(names)]
        return Predictor().fit(recent_history(h)) if not h.empty else None

    return fit
