"""Honest 80% bands: calibrated per-task intervals and joint draws for the ETA.

A duration prediction is wrong in two ways that behave differently:

- **per task**: two calls of one family in one run differ (input content, cache state,
  noise).  These errors are close to independent from task to task, so over many tasks
  they average out;
- **per run**: every call of a run can be slower or faster together (another machine,
  a loaded machine, a bigger data set).  This error is *shared*: it does not average out,
  and it is what makes the remaining time of a run uncertain.

The held-out log residuals ``log(actual / predicted)`` of a family are therefore split
(:func:`split_runs`) into within-run residuals (each run's residuals centred on that run's
median) and a between-run variance ``tau2`` (method of moments: the spread of the per-run
medians minus what the within-run noise alone gives them).  With few runs a family's
``tau2`` is a poor estimate, so it is shrunk towards the value pooled over all families
(:func:`pooled_tau2`, :func:`shrink_tau2`, an empirical-Bayes step); a family seen in a
single run has no between-run evidence of its own and takes the pooled value, or, when no
family of the history has two runs, a prior learned elsewhere (:func:`run_spread`, for
example from other workflows' traces).

**Intervals** (:func:`conformal_bounds`) are split-conformal quantiles: of a family's
leave-one-run-out residuals as they are when it has them from two or more runs (each is
the error of a model that did not see that run, run effect included), otherwise of the
within-run residuals combined with a normal run effect of variance ``tau2``.  The residuals
were measured on data the model did not see, and the finite-sample rank correction makes
the band cover at least its level when new tasks are exchangeable with the held-out ones.

**Joint draws** (:func:`joint_log_errors`) give the ETA's Monte Carlo, per draw, a run
effect per family (``tau * z``), one error shared by all tasks (the error of the run's
*total* work measured on held-out runs, :func:`work_spread`, counted for the families the
run has not shown yet; plus the uncertainty of the run's measured pace,
:func:`pace_factors`), and an independent within-run residual per task (resampled).  Once
calls of a family corrected online finished, its run effect is partly known:
:func:`posterior_tau2` is the normal-normal update of ``tau2`` by them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = [
    "LEVEL",
    "centred_within",
    "conformal_bounds",
    "joint_log_errors",
    "pace_factors",
    "pace_spread",
    "posterior_tau2",
    "run_shifts",
    "run_spread",
    "shrink_tau2",
    "split_runs",
    "total_spread",
    "work_errors",
    "work_spread",
]

LEVEL = 0.8  # the bands are 80% bands
SHRINK_RUNS = 2.0  # runs' worth of weight the pooled between-run variance keeps in a family's
NORMAL_NODES = 21  # points of the run-effect normal used when combining it with residuals
SHIFT_NODES = 41  # equal-probability points kept of an empirical run-shift distribution
MIN_RUN_TASKS = 3  # a run needs this many residuals to tell its median
MIN_WORK_TASKS = 5  # a run needs this many held-out predictions to tell its total's error
_NORMAL = NormalDist()


def split_runs(
    resid: np.ndarray, runs: np.ndarray, held_out: bool = True,
) -> tuple[np.ndarray, float, int]:
    """``(within, tau2, k)``: within-run residuals, run-effect variance, runs used.

    ``within`` are the residuals minus their run's median plus the median of the run
    medians (all residuals keep their place): the run effects are taken out, a systematic
    offset common to all runs stays (a point estimate rescaled for relative error is
    deliberately not the median of the durations, and its band must say so); ``k`` is
    the number of runs with at least :data:`MIN_RUN_TASKS` residuals
    (``tau2`` is 0 when ``k < 2``: no evidence).

    ``held_out`` (residuals of a model that did not see the run, leave one run out): each
    run's median *is* its run's error, so ``tau2`` is their mean square about their
    median (an offset common to all runs is not a run effect), corrected from
    "fitted on ``k - 1`` runs" to "fitted on all ``k``" by ``(k^2 - 1) / k^2``; otherwise
    (raw values) it is the sample variance of the per-run medians.  Either way the part
    the within-run noise explains (a median of ``n`` values has about ``pi / 2 *
    sigma^2 / n`` of variance) is taken off, and ``tau2`` is never negative.
    """
    resid = np.asarray(resid, dtype=float)
    if not len(resid):
        return resid, 0.0, 0
    s = pd.Series(resid)
    by_run = s.groupby(np.asarray(runs))
    sizes = by_run.size()
    enough = sizes >= MIN_RUN_TASKS
    medians = by_run.median()[enough].to_numpy()
    k = len(medians)
    centre = float(np.median(medians)) if k else float(np.median(resid))
    # Centring a run on its own median shrinks its spread (to nothing for a single value):
    # runs too small to tell their median keep their raw residuals (run effect included,
    # the cautious side), the others are scaled back up by sqrt(n / (n - 1)).
    n_r = by_run.transform("size").to_numpy()
    big = n_r >= MIN_RUN_TASKS
    within = resid.copy()
    centred = resid - by_run.transform("median").to_numpy()
    within[big] = centred[big] * np.sqrt(n_r[big] / (n_r[big] - 1.0)) + centre
    if k < 2:
        return within, 0.0, k
    sigma2 = float(np.var(within)) if len(within) > 1 else 0.0
    noise = float(np.mean(math.pi / 2 * sigma2 / sizes[enough]))
    if held_out:
        spread = float(np.mean((medians - centre) ** 2)) * (k * k - 1) / (k * k)
    else:
        spread = float(np.var(medians, ddof=1))
    return within, max(spread - noise, 0.0), k


def centred_within(resid: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """The within-run residuals of :func:`split_runs` from runs large enough to be centred
    only: what joint draws resample as per-task noise.  The draws add run effects of their
    own, so residuals that still carry one (a run too small to tell its median) would count
    it twice; they are left out here (and kept, as the cautious side, in intervals)."""
    resid = np.asarray(resid, dtype=float)
    if not len(resid):
        return resid
    within, _, _ = split_runs(resid, runs)
    n_r = pd.Series(resid).groupby(np.asarray(runs)).transform("size").to_numpy()
    return within[n_r >= MIN_RUN_TASKS]


def shrink_tau2(tau2: float, k: int, pooled: float, weight: float = SHRINK_RUNS) -> float:
    """A family's between-run variance from its ``k`` runs, shrunk towards ``pooled``.

    ``k - 1`` degrees of freedom against ``weight`` runs' worth of the pooled value: two
    runs barely move the pooled value, twenty nearly replace it.
    """
    if k < 2:
        return pooled
    dof = k - 1
    return (dof * tau2 + weight * pooled) / (dof + weight)


def work_spread(actual: np.ndarray, predicted: np.ndarray, runs: np.ndarray) -> tuple[float, int]:
    """``(tau2, k)``: variance of the error of a run's *total* work, from held-out predictions.

    Per run (with at least :data:`MIN_WORK_TASKS` predictions) the log ratio of its summed
    actual to its summed predicted durations: what an ETA gets wrong when it adds the
    remaining work up.  A few long calls dominate a sum, so this is not what the
    per-family spreads give; it is measured directly.  ``tau2`` is the mean square over
    the ``k`` runs, corrected as in :func:`split_runs` (held out, fitted on ``k - 1``
    runs); 0 when ``k < 2``.
    """
    d = pd.DataFrame({"y": np.asarray(actual, dtype=float), "p": np.asarray(predicted, dtype=float),
                      "run": np.asarray(runs)})
    d = d[np.isfinite(d["p"]) & (d["p"] > 0)]
    sums = d.groupby("run").agg(y=("y", "sum"), p=("p", "sum"), n=("y", "size"))
    sums = sums[(sums["n"] >= MIN_WORK_TASKS) & (sums["y"] > 0)]
    k = len(sums)
    if k < 2:
        return 0.0, k
    w = np.log(sums["y"].to_numpy() / sums["p"].to_numpy())
    return float(np.mean(w ** 2)) * (k * k - 1) / (k * k), k


def pooled_tau2(parts: Sequence[tuple[float, int]]) -> float | None:
    """Between-run variance of a typical family: the median over families ``(tau2, k)``
    with ``k >= 2`` runs, weighted by their degrees of freedom ``k - 1``; ``None`` when no
    family has two runs.

    A median, not a mean: a small family whose calls changed nature between runs (a step
    that was trivial in one run and real work in the next) has a between-run variance
    tens of times the others', and would otherwise set every family's band.
    """
    use = sorted((t, k - 1) for t, k in parts if k >= 2)
    if not use:
        return None
    total = sum(w for _, w in use)
    acc = 0.0
    for t, w in use:
        acc += w
        if acc >= total / 2:
            return float(t)
    return float(use[-1][0])


def _conformal_levels(n: int, level: float) -> tuple[float, float]:
    # Split conformal: with n held-out scores, the ceil((1 - a/2)(n + 1))-th smallest bounds a
    # new exchangeable score from above with probability >= 1 - a/2 (likewise below).
    a = (1.0 - level) / 2.0
    hi = min(math.ceil((1.0 - a) * (n + 1)) / n, 1.0)
    lo = max(math.floor(a * (n + 1)) / n, 0.0)
    return lo, hi


def conformal_bounds(
    within: np.ndarray, tau2: float = 0.0, level: float = LEVEL, shifts: np.ndarray | None = None,
) -> tuple[float, float]:
    """Lower and upper log-ratio bounds of a ``level`` interval.

    ``within``: held-out within-run log residuals (or any held-out residuals, with
    ``tau2=0``); ``tau2``: the variance of a normal run effect added to them.  The bounds
    are the rank-corrected quantiles (split conformal) of the residuals convolved with
    that normal (evaluated at :data:`NORMAL_NODES` equal-probability points).  ``shifts``
    (equal-probability points of an empirical run-shift distribution, :func:`run_shifts`)
    replace the normal when given: run shifts are heavy-tailed, most families do not move
    between runs and a few move by a factor of three, which no normal describes.
    """
    r = np.asarray(within, dtype=float)
    r = r[np.isfinite(r)]
    if not len(r):
        return (0.0, 0.0)
    lo_p, hi_p = _conformal_levels(len(r), level)
    if shifts is not None and len(shifts):
        r = (r[:, None] + np.asarray(shifts, dtype=float)[None, :]).ravel()
    elif tau2 > 0:
        u = (np.arange(NORMAL_NODES) + 0.5) / NORMAL_NODES
        z = np.array([_NORMAL.inv_cdf(p) for p in u]) * math.sqrt(tau2)
        r = (r[:, None] + z[None, :]).ravel()
    lo, hi = np.quantile(r, [lo_p, hi_p], method="inverted_cdf")
    return float(lo), float(hi)


def posterior_tau2(tau2: float, sigma2: float, n_finished: int) -> float:
    """What is left of the run effect's variance once ``n_finished`` tasks of the run, each
    with within-run variance ``sigma2``, showed how this run goes (normal-normal update)."""
    if tau2 <= 0 or n_finished <= 0:
        return max(tau2, 0.0)
    if sigma2 <= 0:
        return 0.0
    return 1.0 / (1.0 / tau2 + n_finished / sigma2)


def pace_spread(log_ratios: np.ndarray) -> float:
    """Standard error of a run's measured pace: the spread of its finished tasks' log
    ratios actual / predicted over the square root of how many there are (0 for fewer
    than two).  The pace multiplies every remaining duration, so its own uncertainty is a
    shared error of the remaining time."""
    lr = np.asarray(log_ratios, dtype=float)
    lr = lr[np.isfinite(lr)]
    if len(lr) < 2:
        return 0.0
    return float(np.std(lr, ddof=1) / math.sqrt(len(lr)))


def pace_factors(
    predictor: Predictor, finished: pd.DataFrame | None, samples: int, seed: int | None = 0,
    predicted: np.ndarray | None = None,
) -> np.ndarray:
    """Shared multipliers, shape ``(samples, 1)``, for the uncertainty of a run's pace.

    The ETA multiplies every remaining duration by the pace the run's finished tasks
    showed; that pace is itself measured from a few noisy tasks, so each Monte Carlo draw
    gets its own pace error: log-normal with the standard error :func:`pace_spread` of
    the finished tasks' log ratios actual / predicted (their online predictions;
    ``predicted``: those predictions when the caller has them already).
    """
    if finished is None or len(finished) < 2:
        return np.ones((samples, 1))
    p = (predictor.predict(finished, finished=finished)["duration_s"].to_numpy(dtype=float)
         if predicted is None else np.asarray(predicted, dtype=float))
    y = finished["duration_s"].to_numpy(dtype=float)
    ok = (y > 0) & (p > 0)
    se = pace_spread(np.log(y[ok] / p[ok]))
    z = np.random.default_rng(None if seed is None else seed + 1).standard_normal((samples, 1))
    return np.exp(se * z)


def joint_log_errors(
    groups: Sequence[tuple[np.ndarray, np.ndarray, float]], n_tasks: int, samples: int,
    rng: np.random.Generator, shared_sd: float = 0.0,
) -> np.ndarray:
    """Log errors of ``n_tasks`` durations, ``samples`` joint draws: shape ``(samples, n_tasks)``.

    ``groups``: ``(columns, within residuals, tau)`` per family.  Each draw has, per
    family, a standard normal ``z`` shared by its tasks (the family's run effect, ``tau *
    z``: on the traces, how much a run shifts one family says little about another, even
    in sign), plus ``shared_sd * z0`` with one normal shared by every task (the error of
    the run's total work and of its measured pace, which scale everything left), plus a
    within-run residual resampled independently per task.
    """
    out = np.zeros((samples, n_tasks))
    z0 = rng.standard_normal((samples, 1))
    for cols, within, tau in groups:
        z = rng.standard_normal((samples, 1))
        cols = np.asarray(cols, dtype=int)
        w = np.asarray(within, dtype=float)
        w = w[np.isfinite(w)]
        noise = w[rng.integers(0, len(w), (samples, len(cols)))] if len(w) else 0.0
        out[:, cols] = tau * z + shared_sd * z0 + noise
    return out


def work_errors(observations: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Held-out error of each run's total work, per workflow: one row per run.

    For every group of ``observations`` (column ``by``: the workflow, e.g. the trace
    family; all rows are one group when the column is missing) with at least two
    ``instance`` values, each instance is predicted offline by a
    :class:`~nbflow.predict.Predictor` fitted on the group's other instances, and the log
    ratio of its summed actual to its summed predicted durations is recorded.  Columns:
    ``group``, ``instance``, ``log_error``.
    """
    from nbflow.predict.model import Predictor

    groups = observations.groupby(by, sort=False) if by in observations.columns else [("all", observations)]
    rows = []
    for name, part in groups:
        instances = pd.unique(part["instance"])
        if len(instances) < 2:
            continue
        for inst in instances:
            test = part[part["instance"] == inst]
            pred = Predictor().fit(part[part["instance"] != inst]).predict(test)["duration_s"]
            total = float(test["duration_s"].sum())
            if total > 0:
                rows.append((name, inst, math.log(total / float(pred.sum()))))
    return pd.DataFrame(rows, columns=["group", "instance", "log_error"])


def total_spread(errors: pd.DataFrame) -> float | None:
    """Root mean square of :func:`work_errors` (a table of them, e.g. other workflows'
    runs): a prior for how far a run's total work is from its prediction, for
    ``Predictor(work_sd=...)`` when history has a single run.  ``None`` for no rows."""
    if not len(errors):
        return None
    return float(np.sqrt(np.mean(errors["log_error"].to_numpy(dtype=float) ** 2)))


def run_spread(observations: pd.DataFrame) -> float | None:
    """Between-run standard deviation of a typical task family's log durations.

    A prior for ``Predictor(run_sd=...)`` when no family of the history ran twice: per
    ``task`` with at least two ``instance`` values, the between-run variance of its
    per-run median log durations (:func:`split_runs`), pooled by :func:`pooled_tau2` (a
    median: most families of the traces do not shift between runs at all, a few shift
    a lot).  Raw durations, not residuals, so differences of input size between runs
    count as run effects.  ``None`` when no family ran twice.
    """
    need = {"task", "instance", "duration_s"}
    if not need <= set(observations.columns):
        return None
    parts = []
    for _task, rows in observations.groupby("task", sort=False):
        y = np.log(np.maximum(rows["duration_s"].to_numpy(dtype=float), 1e-3))
        _, tau2, k = split_runs(y, rows["instance"].to_numpy(), held_out=False)
        parts.append((tau2, k))
    pooled = pooled_tau2(parts)
    return None if pooled is None else math.sqrt(pooled)


SHIFT_SAMPLE = 2000  # size of the weighted resample run_shifts returns


def run_shifts(observations: pd.DataFrame, by: str = "family", seed: int = 0,
               weight: str = "work") -> np.ndarray | None:
    """A sample of how far one run moves a task family: a prior for ``Predictor(run_shifts=...)``.

    Per ``task`` with at least two ``instance`` values, within each group of ``by`` (the
    workflow; one group when the column is missing): the log median duration of each run
    about the median of those, scaled by ``sqrt(k / (k - 1))`` for ``k`` runs.  Unlike
    :func:`run_spread` (one standard deviation, a median over families) this keeps the
    shape: most families barely move, a few move several-fold, and those few are what a
    band must allow for.  Each family counts by its share of its workflow's work (the big
    steps are what an ETA adds up), each workflow equally; with ``weight="calls"`` by its
    number of calls instead (what the coverage of per-task intervals counts).  Returned as a
    weighted resample of :data:`SHIFT_SAMPLE` values (fixed ``seed``).  ``None`` when no
    family ran twice.
    """
    if weight not in ("work", "calls"):
        raise ValueError(f"weight must be 'work' or 'calls', got {weight!r}")
    need = {"task", "instance", "duration_s"}
    if not need <= set(observations.columns):
        return None
    groups = observations.groupby(by, sort=False) if by in observations.columns else [("all", observations)]
    vals: list[float] = []
    wts: list[float] = []
    parts = []
    for _, part in groups:
        total = float(part["duration_s"].sum())
        v: list[float] = []
        w: list[float] = []
        for _task, rows in part.groupby("task", sort=False):
            med = rows.groupby("instance")["duration_s"].median().to_numpy(dtype=float)
            k = len(med)
            if k < 2:
                continue
            lm = np.log(np.maximum(med, 1e-3))
            v.extend(((lm - np.median(lm)) * math.sqrt(k / (k - 1))).tolist())
            if weight == "calls":
                share = float(len(rows))
            else:
                share = float(rows["duration_s"].sum()) / total if total > 0 else 1.0
            w.extend([share / k] * k)
        if v:
            parts.append((v, w))
    for v, w in parts:
        s = sum(w)
        vals.extend(v)
        wts.extend(x / s / len(parts) for x in w)
    if not vals:
        return None
    rng = np.random.default_rng(seed)
    p = np.asarray(wts) / sum(wts)
    return np.asarray(vals)[rng.choice(len(vals), size=SHIFT_SAMPLE, p=p)]


def shift_errors(shifts: np.ndarray, nodes: int = SHIFT_NODES) -> np.ndarray:
    """The error of a family fitted on one run and used on another, from how far single runs
    move families (:func:`run_shifts`), as ``nodes`` equal-probability points (sorted log
    ratios).  That error is the difference of two runs' effects; :func:`run_shifts` reads a
    family seen in two runs as the two deviations ``+-(m1 - m2) / sqrt(2)`` about its centre,
    so the difference ``m1 - m2`` is ``sqrt(2)`` times a deviation, either sign (exact for
    families seen in two runs, the same variance for more)."""
    s = math.sqrt(2.0) * np.asarray(shifts, dtype=float).ravel()
    both = np.concatenate([s, -s])
    u = (np.arange(nodes) + 0.5) / nodes
    return np.quantile(both, u, method="inverted_cdf")
