"""Task duration prediction: per-family model choice, online correction, 80% intervals.

:class:`Predictor` learns from observation rows (see :mod:`nbflow.predict.observations`):
``task`` (the family a row belongs to), ``duration_s`` and, when known, ``input_bytes``,
``instance`` (the run) and ``start_s``/``end_s`` (when in its run it started and ended).

How it works, per task family:

1. **Model choice by held-out error.**  Every candidate of
   :mod:`nbflow.predict.candidates` (median, mean, linear and power law in input size,
   nearest neighbours in log input size) is scored on data it did not see: leave one run out when
   the family has several runs, otherwise five interleaved folds.  The candidate with
   the lowest median absolute percentage error wins (a model other than the median must
   beat the median by 5%) and is refitted on everything.  With a single run of history
   the folds cannot show how a model fares on another run; there the median gives way to
   the mean when a paired bootstrap of their held-out errors cannot separate them
   (:func:`_separated`): the median of one run sits on whichever kind of call had the
   majority, the mean moves smoothly when the mix changes.  Each candidate's estimate is
   first rescaled by the factor that minimises its held-out *relative* error (see
   :func:`relative_error_scale`): on a skewed family the best point is not the median.
   A toss-up's mean keeps that rescaling only when the same bootstrap separates its gain
   (held-out errors that cannot tell the median from the mean cannot place the point
   between or around them either).
   A call whose input size was seen before (a size that singles out few calls of the
   family) gets the median duration of those calls instead (``model`` ``same size``): in
   a workflow run again, the same input file is the same work.  With several runs this is
   kept only if it beats the model across runs; with one run it is the prior.
2. **Online correction.**  ``predict(rows, finished=...)`` takes the tasks of the same run
   that already finished.  A run on a slower machine or with bigger inputs than history
   shifts all its tasks; the finished ones show by how much.  Three corrections are
   candidates, and the one chosen per family is again the one with the lowest error when
   history is replayed run by run (each run's tasks predicted from the tasks of that run
   that finished before they started):

   - ``factor``: multiply by the run's speed factor: the median ratio actual/predicted of
     the finished tasks of this family, shrunk towards the run-wide median ratio (itself
     shrunk towards 1) by the number of finished tasks, so two lucky tasks do not swing it;
   - ``local``: the median duration of the finished tasks of this family in this run with
     the nearest input sizes (once at least three finished), because tasks of one run share
     a machine and a data set far more than tasks of different runs do;
   - ``blend``: the geometric mean of the two; ``none`` keeps the offline estimate;
   - ``bayes``: the run's effect on the family as an empirical-Bayes posterior mean: the
     mean log ratio of its ``m`` finished calls times ``m / (m + k0)``, where ``k0`` is the
     family's within-run over between-run variance learned from history (see 3.), so the
     shrinkage is measured, not fixed.

   With a single run of history nothing shows that runs differ, so no correction is
   applied (``none``), and the band given with finished tasks is the offline band; a
   family never seen before uses ``factor``.
3. **Intervals** are calibrated on data the model did not see (:mod:`nbflow.predict.bands`):
   the held-out log residuals of the chosen model (offline or online, whichever is
   answering) are split into within-run residuals and a between-run variance; the 80%
   interval is the split-conformal 10%/90% rank of the within-run residuals combined with
   that run effect.  A family's between-run variance is shrunk towards the median over
   families; a family seen in a single run takes twice that pooled value (the run it was
   fitted on had an effect of its own), or, when no family of the history ran twice, the
   prior ``run_sd`` given to the predictor (or, given ``run_shifts``, an empirical
   heavy-tailed distribution of run shifts in place of that normal,
   :func:`nbflow.predict.bands.run_shifts`).  Families with few residuals use the
   within-run residuals of all families pooled.  A call answered through a *similar
   name* gets the band of that fallback as measured on history (:meth:`Predictor._learn_similar`).
   A *same-size* answer gets the model's band made symmetric: its error is the difference
   of two calls of one input, symmetric about 0 whatever the skew of calls about the model.

A task name never seen before falls back, in this order, to

- **code lineage**: when observations and rows carry a ``code`` column (the lineage key of
  the task's code, :mod:`nbflow.predict.lineage`, which ``nf.history`` reads), a renamed task whose code
  is unchanged uses the history of the name that ran that code;
- the family with the most **similar name** (at least 60% similar);
- the **global prior** (median duration of all history, with the spread of all history as
  its interval).

A known name whose code changed keeps the history of its previous versions (the closest
thing there is) and says so.  The ``source`` column of the prediction tells which:
``history``, ``history (code changed)``, ``code lineage: <name>``, ``similar name:
<name>`` or ``global prior``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nbflow.core.errors import NbflowError
from nbflow.predict.bands import (
    centred_within,
    conformal_bounds,
    pooled_tau2,
    shift_errors,
    shrink_tau2,
    split_runs,
    work_spread,
)
from nbflow.predict.candidates import CANDIDATES, FLOOR_S, Fitted, fit_median

__all__ = ["PredictionError", "Predictor", "mdape"]

MIN_OWN_RESIDUALS = 15  # below this, a family's interval uses the pooled residuals
SHRINK_FAMILY = 4.0  # finished tasks of a family that give its own factor half the weight
SHRINK_RUN = 8.0  # finished tasks of a run that give the run-wide factor half the weight
LOCAL_MIN = 3  # finished tasks of a family before the ``local`` correction is possible
MAX_REPLAY_POINTS = 64  # per run, when choosing online corrections: bounds fit cost (O(points x tasks))
ONLINE_STRATEGIES = ("none", "factor", "local", "blend", "bayes")
SIGNIFICANT_S = 0.05  # errors are judged on tasks longer than this (shorter ones are noise)
PREFER_SIMPLE = 0.05  # relative held-out gain a model needs over the median to be chosen
MIN_SCALE_RESIDUALS = 10  # held-out residuals a family needs before its point is rescaled
SCALE_POINT = True  # (switch for comparisons: off gives each model's plain estimate)
SCALE_GAIN = PREFER_SIMPLE  # relative gain in held-out error (and move) a rescaling needs
SCALE_MAX = 1.25  # the most a point estimate is rescaled, either way
SHIFT_ROBUST = True  # (switch for comparisons: prefer the mean when one run cannot tell)
SYMMETRIC_SAME_SIZE = True  # (switch for comparisons: same-size answers get a symmetric band)
SHIFT_ROBUST_SCALE = True  # (switch for comparisons: a toss-up's mean keeps a rescaling only when separated)
SEPARATED_Z = 1.645  # bootstrap z beyond which a difference of held-out errors is not luck
BOOTSTRAP_DRAWS = 200  # resamples of that bootstrap
BOOTSTRAP_MAX_N = 2000  # tasks per resample (bounds the cost on large families)
SIMILAR_CUTOFF = 0.6  # name similarity (difflib ratio) for the similar-name fallback
MAX_SIMILAR_FAMILIES = 40  # families measured to calibrate similar-name answers (bounds fit cost)
EXACT_MAX_SHARE = 0.5  # an input size shared by more of a family's calls is not specific


class PredictionError(NbflowError, ValueError):
    """Observations or rows handed to a :class:`Predictor` cannot be used as they are."""


def mdape(actual: np.ndarray, predicted: np.ndarray, min_s: float = SIGNIFICANT_S) -> float:
    """Median absolute percentage error (in %) over tasks with ``actual > min_s``.

    Falls back to all tasks when none is that long; ``nan`` for an empty sample.
    """
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    keep = actual > min_s
    if not keep.any():
        keep = actual > 0
    if not keep.any():
        return float("nan")
    return float(np.median(np.abs(predicted[keep] - actual[keep]) / actual[keep]) * 100.0)


@dataclass
class _Family:
    """What the predictor knows about one task family."""

    name: str
    model: str
    fitted: Fitted
    n: int
    median_s: float = 1.0
    online: str = "none"
    resid_offline: np.ndarray = field(default_factory=lambda: np.empty(0))
    resid_online: np.ndarray = field(default_factory=lambda: np.empty(0))
    runs_offline: np.ndarray = field(default_factory=lambda: np.empty(0))  # run of each residual
    runs_online: np.ndarray = field(default_factory=lambda: np.empty(0))
    # Calibration (see nbflow.predict.bands): within-run residuals and between-run variance.
    within_offline: np.ndarray = field(default_factory=lambda: np.empty(0))
    within_online: np.ndarray = field(default_factory=lambda: np.empty(0))
    tau2_offline: float = 0.0
    tau2_online: float = 0.0
    n_runs: int = 1  # runs of history the family was seen in
    k_offline: int = 0  # runs with enough held-out residuals to tell their median
    draw_offline: np.ndarray = field(default_factory=lambda: np.empty(0))  # per-task noise of draws
    draw_online: np.ndarray = field(default_factory=lambda: np.empty(0))
    k_online: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    codes: frozenset[str] = frozenset()
    exact: dict[float, float] = field(default_factory=dict)  # input size -> median duration


def relative_error_scale(log_resid: np.ndarray, min_n: int = MIN_SCALE_RESIDUALS) -> float:
    """The factor ``s`` that minimises the median of ``|s * predicted / actual - 1|``.

    ``log_resid`` are held-out ``log(actual / predicted)``.  A model fitted in log space
    (or the median) aims at the middle of the durations, but the error that is judged is
    relative to the *actual* duration, which is asymmetric: predicting 2x too much costs
    100%, predicting 2x too little costs 50%.  On a skewed family the best constant is
    therefore not the median; this finds it from residuals the model did not see.  With
    fewer than ``min_n`` residuals the answer is 1 (no evidence to move).
    """
    r = np.exp(-np.asarray(log_resid, dtype=float))  # predicted / actual
    r = r[np.isfinite(r)]
    if len(r) < min_n:
        return 1.0
    # The objective is piecewise linear in s with kinks at 1 / r_i: the optimum is at one.
    cands = np.unique(1.0 / r)
    if len(cands) > 400:  # a quantile grid is enough and keeps this O(n * 400)
        cands = np.quantile(cands, np.linspace(0, 1, 401))
    errs = np.median(np.abs(cands[:, None] * r[None, :] - 1.0), axis=1)
    i = int(np.argmin(errs))
    base = float(np.median(np.abs(r - 1.0)))
    if errs[i] > base * (1 - SCALE_GAIN) or abs(math.log(cands[i])) < math.log(1 + SCALE_GAIN):
        return 1.0  # a small gain or a small move is within the noise of the median
    return float(np.clip(cands[i], 1 / SCALE_MAX, SCALE_MAX))


def _separated(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> bool:
    """Do two models' held-out MdAPEs differ by more than the luck of the sample?

    A paired bootstrap over the tasks (longer than :data:`SIGNIFICANT_S`; fixed seed, so
    a fit is reproducible): separated when the difference of the two MdAPEs is larger
    than :data:`SEPARATED_Z` bootstrap standard deviations of that difference.
    """
    keep = y > SIGNIFICANT_S
    if keep.sum() < 2:
        return True  # nothing to judge on: keep the default choice
    ea = np.abs(p_a[keep] - y[keep]) / y[keep]
    eb = np.abs(p_b[keep] - y[keep]) / y[keep]
    n = len(ea)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, (BOOTSTRAP_DRAWS, min(n, BOOTSTRAP_MAX_N)))
    diff = np.median(ea[idx], axis=1) - np.median(eb[idx], axis=1)
    return abs(float(np.median(ea) - np.median(eb))) > SEPARATED_Z * float(np.std(diff))


def _skew_scale(resid: np.ndarray, inst: np.ndarray) -> float:
    # The rescaling corrects the skew of the durations around the model, which carries
    # over to new runs; shifts between runs do not, so each run's residuals are centred.
    centred = resid - pd.Series(resid).groupby(inst).transform("median").to_numpy()
    return relative_error_scale(centred)


def _scaled(fitted: Fitted, scale: float) -> Fitted:
    if scale == 1.0:
        return fitted
    return lambda xq: fitted(xq) * scale


def _log_ratio(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(actual, FLOOR_S)) - np.log(np.maximum(predicted, FLOOR_S))


def _prepare(frame: pd.DataFrame, what: str, need_duration: bool, fill_x: bool = False) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise PredictionError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    required = ["task", "duration_s"] if need_duration else ["task"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PredictionError(
            f"{what} lacks column(s) {missing}; give one row per task with at least "
            f"{required} (nbflow.predict.observations_from_wfformat and nf.history produce them)"
        )
    if need_duration:  # history rows: learn from attempts that really ran to completion
        if "state" in frame.columns:
            frame = frame[frame["state"] == "completed"]
        if "cached" in frame.columns:
            frame = frame[~frame["cached"].astype(bool)]
    out = pd.DataFrame(index=frame.index)
    out["task"] = frame["task"].astype(str)
    # Unknown input sizes stay NaN: fitting treats them as 0 (the size laws then reduce to
    # the median), predicting answers them with the family's median.
    x = frame["input_bytes"] if "input_bytes" in frame.columns else np.nan
    out["input_bytes"] = pd.to_numeric(pd.Series(x, index=frame.index), errors="coerce").astype(float)
    if fill_x:
        out["input_bytes"] = out["input_bytes"].fillna(0.0)
    if need_duration:
        y = pd.to_numeric(frame["duration_s"], errors="coerce")
        if y.isna().any() or (y < 0).any():
            bad = frame.index[y.isna() | (y < 0)][:3].tolist()
            raise PredictionError(
                f"{what}: duration_s must be a number >= 0 (rows {bad}); drop unfinished tasks first"
            )
        out["duration_s"] = y.astype(float)
    out["instance"] = frame["instance"].astype(str) if "instance" in frame.columns else "run"
    # The code lineage key of each row, when known (code lineage); None otherwise.
    if "code" in frame.columns:
        out["code"] = [c if isinstance(c, str) and c else None for c in frame["code"]]
    else:
        out["code"] = None
    for col in ("start_s", "end_s"):
        if col in frame.columns:
            out[col] = pd.to_numeric(frame[col], errors="coerce")
    if "start_s" not in out.columns:
        out["start_s"] = np.arange(len(out), dtype=float)
    if "end_s" not in out.columns:
        out["end_s"] = out["start_s"] + out.get("duration_s", 0.0)
    return out


def _folds(instances: np.ndarray) -> list[np.ndarray]:
    """Held-out masks: one per run when there are several runs, else 5 interleaved folds."""
    runs = pd.unique(instances)
    if len(runs) >= 2:
        return [instances == r for r in runs]
    n = len(instances)
    if n < 6:
        return []
    k = 5
    idx = np.arange(n) % k
    return [idx == i for i in range(k)]


class _Finished:
    """The finished tasks of one run, with the offline prediction of each."""

    def __init__(self, task: np.ndarray, x: np.ndarray, y: np.ndarray, p0: np.ndarray) -> None:
        self.task, self.x, self.y = task, x, y
        self.lr = _log_ratio(y, p0)

    def correct(
        self, family: str, x: np.ndarray, p0: np.ndarray, k0: float = math.inf,
    ) -> dict[str, np.ndarray]:
        """Estimates of every online strategy for queries of ``family`` (sizes ``x``).

        ``k0``: the family's within-run over between-run variance, learned from history;
        the ``bayes`` estimate of this run's effect on the family is the mean log ratio of
        its ``m`` finished calls times ``m / (m + k0)`` (the posterior mean of a normal run
        effect): no correction where history shows runs do not differ (``k0`` infinite),
        a quick one where they differ a lot against the noise of single calls.
        """
        n_run = len(self.lr)
        run_f = float(np.median(self.lr)) * n_run / (n_run + SHRINK_RUN) if n_run else 0.0
        mine = self.task == family
        m = int(mine.sum())
        fam_f = float(np.median(self.lr[mine])) if m else 0.0
        f = (m * fam_f + SHRINK_FAMILY * run_f) / (m + SHRINK_FAMILY)
        factor = p0 * np.exp(f)
        bayes = float(np.mean(self.lr[mine])) * m / (m + k0) if m and math.isfinite(k0) else 0.0
        out = {"none": p0, "factor": factor, "bayes": p0 * math.exp(bayes)}
        if m >= LOCAL_MIN:
            local = CANDIDATES["knn"](np.nan_to_num(self.x[mine]), self.y[mine])(np.nan_to_num(x))
            local = np.where(np.isnan(x), float(np.median(self.y[mine])), local)
            out["local"] = local
            out["blend"] = np.sqrt(local * factor)
        else:
            out["local"] = factor
            out["blend"] = factor
        return out


class Predictor:
    """Predict task durations from history; see the module docstring for how.

    >>> import pandas as pd
    >>> obs = pd.DataFrame({"task": ["a"] * 20, "input_bytes": range(20),
    ...                     "duration_s": [1.0 + i for i in range(20)]})
    >>> p = Predictor().fit(obs)
    >>> round(float(p.predict(pd.DataFrame({"task": ["a"], "input_bytes": [30]})).duration_s[0]))
    31
    """

    def __init__(self, candidates: Mapping[str, object] | None = None, run_sd: float | None = None,
                 work_sd: float | None = None, run_shifts: Sequence[float] | None = None) -> None:
        names = list(CANDIDATES) if candidates is None else list(candidates)
        unknown = [c for c in names if c not in CANDIDATES]
        if unknown or not names:
            raise PredictionError(f"unknown candidate model(s) {unknown}; choose from {list(CANDIDATES)}")
        for what, v in (("run_sd", run_sd), ("work_sd", work_sd)):
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise PredictionError(
                    f"{what} must be a number >= 0 (a log-scale standard deviation), got {v!r}")
        self.candidates = names
        self._use_shifts = False
        # The between-run spread to assume when no family of the history ran twice (a prior
        # learned elsewhere, e.g. nbflow.predict.bands.run_spread of other workflows).
        self.run_sd = run_sd
        # Likewise for the error of a run's total work (bands.total_spread of other workflows).
        self.work_sd = work_sd
        # And a sample of how far single runs move families (bands.run_shifts of other
        # workflows), heavy-tailed: ETA draws resample it for families history saw in one
        # run only, and when no family of the history ran twice the bands of such families
        # use the errors it implies for a one-run fit (bands.shift_errors) instead of a normal.
        self.run_shifts = None if run_shifts is None else _shifts(run_shifts)
        self._shift_errors = None if self.run_shifts is None else shift_errors(self.run_shifts)
        self.families: dict[str, _Family] = {}
        self._prior_s = 1.0
        self._prior_resid = np.array([-1.0, 1.0])
        self._pooled_offline = np.empty(0)
        self._pooled_online = np.empty(0)
        self._tau2_offline = 0.0
        self._tau2_online = 0.0
        self._tau2_work = 0.0
        self._draw_pooled_offline = np.empty(0)
        self._draw_pooled_online = np.empty(0)
        self._code_owner: dict[str, str] = {}
        # Held-out log residuals of the similar-name fallback, measured on history (see
        # _learn_similar): the band of a call answered through another family's name.
        self._similar_resid = np.empty(0)
        self._similar_held_out = False

    # ------------------------------------------------------------------ fitting

    def fit(self, observations: pd.DataFrame) -> Predictor:
        """Learn from observation rows (one per finished task); returns ``self``."""
        obs = _prepare(observations, "observations", need_duration=True, fill_x=True)
        if obs.empty:
            raise PredictionError("observations is empty: there is no history to learn from yet")
        y_all = obs["duration_s"].to_numpy()
        self._prior_s = max(float(np.median(y_all)), FLOOR_S)
        self._prior_resid = _log_ratio(y_all, np.full(len(y_all), self._prior_s))
        oof = np.full(len(obs), np.nan)
        self.families = {}
        for fam, idx in obs.groupby("task", sort=False).indices.items():
            rows = obs.iloc[idx]
            family, pred = self._fit_family(str(fam), rows)
            self.families[str(fam)] = family
            oof[idx] = pred
        self._calibrate()  # offline bands first: the online "bayes" strategy uses them
        self._choose_online(obs, oof)
        self._learn_lineage(obs)
        self._learn_similar(obs)
        self._calibrate()
        tau2, k = work_spread(obs["duration_s"].to_numpy(), oof, obs["instance"].to_numpy())
        prior = self.work_sd ** 2 if self.work_sd is not None else 0.0
        self._tau2_work = tau2 if k >= 2 else prior
        return self

    def _calibrate(self) -> None:
        """Split each family's held-out residuals into within-run noise and a between-run
        variance, shrink the latter towards the pooled value (see nbflow.predict.bands)."""
        fams = list(self.families.values())
        parts_off, parts_on = [], []
        for f in fams:
            f.within_offline, t_off, k_off = split_runs(f.resid_offline, f.runs_offline)
            f.within_online, t_on, k_on = split_runs(f.resid_online, f.runs_online)
            f.k_offline, f.k_online = k_off, k_on
            f.draw_offline = centred_within(f.resid_offline, f.runs_offline)
            f.draw_online = centred_within(f.resid_online, f.runs_online)
            parts_off.append((t_off, k_off))
            parts_on.append((t_on, k_on))
        prior = None if self.run_sd is None else self.run_sd ** 2
        pool_off = pooled_tau2(parts_off)
        self._use_shifts = pool_off is None and self.run_shifts is not None
        pool_off = pool_off if pool_off is not None else (prior or 0.0)
        pool_on = pooled_tau2(parts_on)
        pool_on = pool_on if pool_on is not None else pool_off
        for f, (t_off, k_off), (t_on, k_on) in zip(fams, parts_off, parts_on, strict=True):
            # A family seen in one run was fitted on that run's own effect as well: a new
            # run differs from it by two run effects' worth of variance (1 + 1/1).
            alone = 2.0 if f.n_runs < 2 else 1.0
            f.tau2_offline = shrink_tau2(t_off, k_off, pool_off * alone)
            f.tau2_online = (shrink_tau2(t_on, k_on, pool_on * alone) if len(f.resid_online)
                             else f.tau2_offline)
        self._tau2_offline, self._tau2_online = pool_off, pool_on
        res_off = [f.within_offline for f in fams if len(f.within_offline)]
        res_on = [f.within_online for f in fams if len(f.within_online)]
        self._pooled_offline = np.concatenate(res_off) if res_off else self._prior_resid
        self._pooled_online = np.concatenate(res_on) if res_on else self._pooled_offline
        d_off = [f.draw_offline for f in fams if len(f.draw_offline)]
        d_on = [f.draw_online for f in fams if len(f.draw_online)]
        self._draw_pooled_offline = np.concatenate(d_off) if d_off else self._pooled_offline
        self._draw_pooled_online = np.concatenate(d_on) if d_on else self._draw_pooled_offline

    def _fit_family(self, name: str, rows: pd.DataFrame) -> tuple[_Family, np.ndarray]:
        x = rows["input_bytes"].to_numpy(dtype=float)
        y = rows["duration_s"].to_numpy(dtype=float)
        folds = _folds(rows["instance"].to_numpy())
        if not folds:
            fam = _Family(name, "median", fit_median(x, y), len(y), max(float(np.median(y)), FLOOR_S))
            fam.n_runs = len(pd.unique(rows["instance"]))
            return fam, np.full(len(y), np.nan)
        preds: dict[str, np.ndarray] = {}
        scores: dict[str, float] = {}
        inst = rows["instance"].to_numpy()
        scales: dict[str, float] = {}
        for cand in self.candidates:
            p = np.empty(len(y))
            for test in folds:
                train = ~test
                p[test] = CANDIDATES[cand](x[train], y[train])(x[test])
            scales[cand] = _skew_scale(_log_ratio(y, p), inst) if SCALE_POINT else 1.0
            preds[cand] = p * scales[cand]
            scores[cand] = mdape(y, preds[cand])
        # Lowest held-out error wins, but a model more complex than the first candidate
        # (the median) must beat it clearly: small wins on few runs are mostly luck.
        base = self.candidates[0]
        best = base
        for cand in self.candidates[1:]:
            bar = min(scores[best], scores[base] * (1 - PREFER_SIMPLE))
            if np.nan_to_num(scores[cand], nan=np.inf) < bar:
                best = cand
        toss_up = False
        if (SHIFT_ROBUST and len(pd.unique(inst)) < 2 and best == base and "mean" in preds
                and not _separated(y, preds[best], preds["mean"])):
            best = "mean"  # within one run the two are a toss-up; across runs the mean holds
            toss_up = True
        scale = scales[best]
        if (SHIFT_ROBUST_SCALE and toss_up and scale != 1.0
                and not _separated(y, preds[best], preds[best] / scale)):
            # The same held-out errors that could not tell the median from the mean cannot
            # place the point between or around them either: the rescaling of a toss-up's
            # mean is kept only when its gain stands out of the bootstrap noise, otherwise
            # it is that run's luck (a point moved by luck is off on the next run).
            preds[best] = preds[best] / scale
            scale = 1.0
        fam = _Family(name, best, _scaled(CANDIDATES[best](x, y), scale), len(y),
                      max(float(np.median(y)), FLOOR_S), scores=scores)
        fam.scale = scale
        fam.resid_offline = _log_ratio(y, preds[best])
        fam.runs_offline = inst
        fam.n_runs = len(pd.unique(inst))
        fam.exact = _exact_sizes(x, y)
        if fam.exact and len(pd.unique(inst)) >= 2:
            # Several runs: keep the same-size memory only if it beats the model across runs.
            p_ex = preds[best].copy()
            for test in folds:
                seen = _exact_sizes(x[~test], y[~test])
                hit = np.array([seen.get(float(v), np.nan) for v in x[test]])
                p_ex[test] = np.where(np.isnan(hit), p_ex[test], hit)
            score = mdape(y, p_ex)
            fam.scores["exact_size"] = score
            if not score < scores[best]:
                fam.exact = {}
        return fam, preds[best]

    def _learn_lineage(self, obs: pd.DataFrame) -> None:
        """Which code digests each family ran, and which family ran each digest most."""
        known = obs[obs["code"].notna()]
        self._code_owner = {}
        if known.empty:
            return
        counts = known.groupby(["code", "task"]).size().sort_values(ascending=False)
        for (code, task), _n in counts.items():
            self._code_owner.setdefault(str(code), str(task))
        for task, codes in known.groupby("task")["code"]:
            fam = self.families.get(str(task))
            if fam is not None:
                fam.codes = frozenset(str(c) for c in codes)

    def _learn_similar(self, obs: pd.DataFrame) -> None:
        """Measure the similar-name fallback on history: each family predicted by the family
        with the most similar *other* name, as a new name would be.

        A call answered through another family's name is not a call of that family: its
        error is how far two similarly named families are apart, which neither family's
        own residuals say (on a workflow whose steps carry a sequence number in their name
        these errors are much smaller than a pooled band).  These log residuals calibrate
        the band of similar-name answers.  At most :data:`MAX_SIMILAR_FAMILIES` families
        are measured (evenly spread), which bounds the cost of the name matching.
        """
        names = list(self.families)
        self._similar_resid = np.empty(0)
        if len(names) < 2:
            return
        step = max(1, math.ceil(len(names) / MAX_SIMILAR_FAMILIES))
        groups = obs.groupby("task", sort=False).indices
        inst = obs["instance"].to_numpy()
        x_all = obs["input_bytes"].to_numpy(dtype=float)
        y_all = obs["duration_s"].to_numpy(dtype=float)
        parts = []
        held = []
        for name in names[::step]:
            others = [n for n in names if n != name]
            close = difflib.get_close_matches(name, others, n=1, cutoff=SIMILAR_CUTOFF)
            if not close:
                continue
            match = self.families[close[0]]
            mine, theirs = groups[name], groups[close[0]]
            for run in pd.unique(inst[mine]):
                q = mine[inst[mine] == run]
                train = theirs[inst[theirs] != run]
                if len(train):  # the other family without this run: a run it did not see
                    fitted = _scaled(CANDIDATES[match.model](x_all[train], y_all[train]), match.scale)
                    held.append(True)
                else:
                    fitted = match.fitted
                    held.append(False)
                parts.append(_log_ratio(y_all[q], fitted(x_all[q])))
        # Residuals from runs the answering family did not see carry the run effect already,
        # and are used alone when there are enough; otherwise (e.g. one run of history) all
        # are, and the band adds the run effect (see predict).
        use = [p for p, h in zip(parts, held, strict=True) if h]
        self._similar_held_out = sum(len(p) for p in use) >= MIN_OWN_RESIDUALS
        if not self._similar_held_out:
            use = parts
        if use:
            self._similar_resid = np.concatenate(use)

    def _choose_online(self, obs: pd.DataFrame, oof: np.ndarray) -> None:
        """Replay history run by run to pick each family's online correction."""
        ok = ~np.isnan(oof)
        if obs.loc[ok, "instance"].nunique() < 2:
            return  # one run of history: no evidence that runs differ, so no correction
        est = {s: np.full(len(obs), np.nan) for s in ONLINE_STRATEGIES}
        task = obs["task"].to_numpy()
        x = obs["input_bytes"].to_numpy(dtype=float)
        y = obs["duration_s"].to_numpy(dtype=float)
        start = obs["start_s"].to_numpy(dtype=float)
        end = obs["end_s"].to_numpy(dtype=float)
        for idx in obs.groupby("instance", sort=False).indices.values():
            idx = idx[ok[idx]]
            for members in _same_finished_sets(start[idx], end[idx], MAX_REPLAY_POINTS):
                q, fin = idx[members[0]], idx[members[1]]
                finished = _Finished(task[fin], x[fin], y[fin], oof[fin])
                for fam in pd.unique(task[q]):
                    qq = q[task[q] == fam]
                    for s, v in finished.correct(fam, x[qq], oof[qq], self._k0(fam)).items():
                        est[s][qq] = v
        for name, fam in self.families.items():
            sel = (task == name) & ok
            if not sel.any():
                continue
            scores = {s: mdape(y[sel], est[s][sel]) for s in ONLINE_STRATEGIES}
            fam.online = min(ONLINE_STRATEGIES, key=lambda s: np.nan_to_num(scores[s], nan=np.inf))
            fam.resid_online = _log_ratio(y[sel], est[fam.online][sel])
            fam.runs_online = obs["instance"].to_numpy()[sel]
            fam.scores.update({f"online_{s}": v for s, v in scores.items()})

    # --------------------------------------------------------------- predicting

    def predict(self, rows: pd.DataFrame, finished: pd.DataFrame | None = None) -> pd.DataFrame:
        """Predict ``rows`` (columns ``task`` and, ideally, ``input_bytes``).

        ``finished``: tasks of the same run that already finished (with ``duration_s``),
        used to correct the estimates online.  Returns a DataFrame with ``rows``' index and
        columns ``duration_s``, ``duration_lo``, ``duration_hi`` (an 80% interval),
        ``model`` (the family model that answered), ``source`` (how that family was found:
        ``history``, ``history (code changed)``, ``code lineage: <family>``, ``similar
        name: <family>`` or ``global prior``; rows may carry a ``code`` column, the task
        code's lineage key, for the first two), ``online`` (the correction applied, or
        ``none``) and ``n_history`` (observations of the family that answered).
        """
        if not self.families:
            raise PredictionError("this Predictor is not fitted: call .fit(observations) first")
        q = _prepare(rows, "rows", need_duration=False)
        fin = None
        if finished is not None and len(finished):
            f = _prepare(finished, "finished", need_duration=True)
            p0f, _, _ = self._offline(f)
            fin = _Finished(f["task"].to_numpy(), f["input_bytes"].to_numpy(dtype=float),
                            f["duration_s"].to_numpy(dtype=float), p0f)
        p0, model, source = self._offline(q)
        codes = _codes_by_task(q)
        point = p0.copy()
        lo = np.empty(len(q))
        hi = np.empty(len(q))
        online = np.full(len(q), "none", dtype=object)
        n_hist = np.zeros(len(q), dtype=int)
        task = q["task"].to_numpy()
        x = q["input_bytes"].to_numpy(dtype=float)
        for name in pd.unique(task):
            sel = task == name
            known, how = self._resolve(name, codes.get(name))
            strategy = known.online if known is not None else "factor"
            if fin is not None:
                point[sel] = fin.correct(name, x[sel], p0[sel], self._k0(name))[strategy]
                online[sel] = strategy
            scores, tau2 = self._interval_scores(known, online=fin is not None)
            if how.startswith("similar name") and len(self._similar_resid) >= MIN_OWN_RESIDUALS:
                # Answered through another name: the band is the error of that fallback as
                # measured on history, plus the run effect the answering family carries.
                scores = self._similar_resid
                tau2 = 0.0 if self._similar_held_out else self._band(known, online=fin is not None)[1]
            shifts = self._shifts_for(known) if tau2 > 0 or self._use_shifts else None
            lo_q, hi_q = conformal_bounds(scores, tau2, shifts=shifts)
            lo[sel] = point[sel] * np.exp(min(lo_q, 0.0))
            hi[sel] = point[sel] * np.exp(max(hi_q, 0.0))
            same = sel & (model == "same size")
            if SYMMETRIC_SAME_SIZE and same.any():
                # A same-size answer is another call of the same input: its error is the
                # difference of two calls' errors, symmetric about 0 whatever the skew of
                # the calls about the model.  The model's residuals still give its width
                # (nothing in history scores this path on its own), not its shape.
                r = np.asarray(scores, dtype=float)
                lo_s, hi_s = conformal_bounds(np.concatenate([r, -r]), tau2, shifts=shifts)
                lo[same] = point[same] * np.exp(min(lo_s, 0.0))
                hi[same] = point[same] * np.exp(max(hi_s, 0.0))
            n_hist[sel] = known.n if known is not None else 0
        return pd.DataFrame(
            {
                "duration_s": point,
                "duration_lo": lo,
                "duration_hi": hi,
                "model": model,
                "source": source,
                "online": online,
                "n_history": n_hist,
            },
            index=rows.index,
        )

    def _resolve(self, name: str, code: str | None = None) -> tuple[_Family | None, str]:
        """The family that answers for task ``name`` (whose code lineage key is ``code``, if
        known) and the ``source`` text saying how it was found (see the module doc)."""
        fam = self.families.get(name)
        if fam is not None:
            changed = code is not None and bool(fam.codes) and code not in fam.codes
            return fam, "history (code changed)" if changed else "history"
        owner = self._code_owner.get(code) if code is not None else None
        if owner is not None and owner in self.families:
            return self.families[owner], f"code lineage: {owner}"
        close = difflib.get_close_matches(name, list(self.families), n=1, cutoff=SIMILAR_CUTOFF)
        if close:
            return self.families[close[0]], f"similar name: {close[0]}"
        return None, "global prior"

    def _k0(self, name: str) -> float:
        """Within-run over between-run variance of family ``name`` (inf: runs do not differ)."""
        fam = self.families.get(name)
        if fam is None or fam.tau2_offline <= 0 or len(fam.within_offline) < 2:
            return math.inf
        return float(np.var(fam.within_offline)) / fam.tau2_offline

    def _interval_scores(self, fam: _Family | None, online: bool) -> tuple[np.ndarray, float]:
        """Conformal scores and added run-effect variance for ``fam``'s interval.

        A family with enough held-out residuals from two or more runs of its own has
        leave-one-run-out residuals: each already is the error of a model that did not
        see that run, run effect included, so they are the conformal scores as they are.
        Otherwise the run effect cannot be seen in them and is added (:meth:`_band`).
        """
        if fam is not None:
            own = fam.resid_online if online else fam.resid_offline
            k = fam.k_online if online else fam.k_offline
            if k >= 2 and len(own) >= MIN_OWN_RESIDUALS:
                return own, 0.0
        return self._band(fam, online)

    def _shifts_for(self, fam: _Family | None) -> np.ndarray | None:
        """The empirical run-shift prior for ``fam``'s band, when it applies: a family seen in
        a single run, in a history where no family ran twice, given ``run_shifts``.  The
        difference of two runs' shifts is the error of a family fitted on one run used on
        another, so it replaces the doubled normal run effect."""
        if self._use_shifts and fam is not None and fam.n_runs < 2:
            return self._shift_errors
        return None

    def _draw_noise(self, fam: _Family | None, online: bool) -> np.ndarray:
        """Per-task noise that joint draws resample for ``fam``: its centred within-run
        residuals, or those of all families pooled when it has too few."""
        if fam is None:
            return self._prior_resid
        own = fam.draw_online if online else fam.draw_offline
        if len(own) >= MIN_OWN_RESIDUALS:
            return own
        return self._draw_pooled_online if online else self._draw_pooled_offline

    def _band(self, fam: _Family | None, online: bool) -> tuple[np.ndarray, float]:
        """``(within-run residuals, between-run variance)`` that calibrate ``fam``'s band."""
        if fam is None:
            return self._prior_resid, self._tau2_online if online else self._tau2_offline
        if online and not len(fam.resid_online):
            # History could not replay an online correction for this family (one run), so
            # none is applied: the estimate is the offline one, and so is its band.
            online = False
        own = fam.within_online if online else fam.within_offline
        tau2 = fam.tau2_online if online else fam.tau2_offline
        if len(own) >= MIN_OWN_RESIDUALS:
            return own, tau2
        return (self._pooled_online if online else self._pooled_offline), tau2

    def _offline(self, q: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = np.full(len(q), self._prior_s)
        model = np.full(len(q), "prior", dtype=object)
        source = np.full(len(q), "global prior", dtype=object)
        task = q["task"].to_numpy()
        x = q["input_bytes"].to_numpy(dtype=float)
        codes = _codes_by_task(q)
        for name in pd.unique(task):
            sel = task == name
            fam, how = self._resolve(name, codes.get(name))
            source[sel] = how
            if fam is None:
                continue
            xs = x[sel]
            unknown = np.isnan(xs)
            p[sel] = np.where(unknown, fam.median_s, fam.fitted(np.nan_to_num(xs)))
            model[sel] = np.where(unknown, "median", fam.model)
            if fam.exact:  # an input size seen before: most likely the same input
                hit = np.array([fam.exact.get(float(v), np.nan) for v in xs])
                use = ~np.isnan(hit)
                p[sel] = np.where(use, hit, p[sel])
                model[sel] = np.where(use, "same size", model[sel])
        return p, model, source

    def sample(
        self, rows: pd.DataFrame, n: int = 40, finished: pd.DataFrame | None = None,
        seed: int | None = 0, shared_sd: float = 0.0,
    ) -> np.ndarray:
        """``n`` joint draws of the durations of ``rows``: an array of shape ``(n, len(rows))``.

        Each draw is the point estimate times ``exp(run effects + task error)``: one run
        effect per draw and family, shared by the family's tasks (its spread is the
        family's between-run variance, reduced by what the ``finished`` calls of the family
        already showed when the family is corrected online), and per task a within-run
        held-out residual of its family, drawn independently (see
        :mod:`nbflow.predict.bands`).  Every task of a draw also shares the error of the
        run's total work, measured on held-out runs of history
        (:func:`nbflow.predict.bands.work_spread`; the ``work_sd`` prior when history has a
        single run), scaled by the share of the rows' predicted work in families none of
        whose calls are among the ``finished`` (the others showed their run effect), and
        ``shared_sd``, a further shared log-normal error of that standard deviation (e.g.
        the uncertainty of a measured pace).  A family whose history cannot show how runs
        differ draws its run effect from the shifts other families showed instead of a
        normal (heavy-tailed; :mod:`nbflow.predict.sampling`, which does the drawing).
        """
        if not (isinstance(shared_sd, int | float) and shared_sd >= 0):
            raise PredictionError(f"shared_sd must be a number >= 0, got {shared_sd!r}")
        from nbflow.predict.sampling import sample

        return sample(self, rows, n=n, finished=finished, seed=seed, shared_sd=shared_sd)

    def summary(self) -> pd.DataFrame:
        """One row per family: chosen model, online correction, size and held-out errors."""
        rows = []
        for f in self.families.values():
            rows.append({"task": f.name, "model": f.model, "online": f.online, "n": f.n, **f.scores})
        return pd.DataFrame(rows)


def _shifts(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    if not len(a) or not np.isfinite(a).all():
        raise PredictionError("run_shifts must be a non-empty list of finite log-scale shifts "
                              "(e.g. nbflow.predict.bands.run_shifts(other_observations))")
    return a


def _exact_sizes(x: np.ndarray, y: np.ndarray) -> dict[float, float]:
    """Median duration per input size, for sizes that single out a few calls.

    A size shared by more than :data:`EXACT_MAX_SHARE` of the family (every call of a
    task that reads the same reference file) says nothing about one call, so it is left
    to the model; unknown sizes (0) likewise.
    """
    sizes = pd.Series(y).groupby(x)
    med = sizes.median()
    cnt = sizes.size()
    keep = cnt[cnt <= max(1, EXACT_MAX_SHARE * len(y))].index
    return {float(k): max(float(med[k]), FLOOR_S) for k in keep if k > 0}


def _codes_by_task(q: pd.DataFrame) -> dict[str, str]:
    """The code digest of each task name among prepared rows (first one given wins)."""
    known = q[q["code"].notna()]
    if known.empty:
        return {}
    return {str(t): str(c) for t, c in known.groupby("task", sort=False)["code"].first().items()}


def _same_finished_sets(
    start: np.ndarray, end: np.ndarray, max_sets: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group a run's tasks by the set of its tasks finished before they started.

    Returns ``(queries, finished)`` pairs of positions; the finished set only grows with
    the start time, so sorting once gives every set as a prefix of the end-sorted tasks.
    ``max_sets`` bounds the replay: a run of n tasks can have n distinct sets, and replaying
    each costs O(n), so beyond ``max_sets`` the queries are grouped at evenly spaced
    checkpoints and each sees the finished set of the checkpoint at or before it (a subset
    of what had finished: the replay never sees the future).
    """
    by_end = np.argsort(end, kind="stable")
    ends = end[by_end]
    counts = np.searchsorted(ends, start, side="right")
    distinct = np.unique(counts)
    if max_sets is not None and len(distinct) > max_sets:
        checkpoints = distinct[np.linspace(0, len(distinct) - 1, max_sets).astype(int)]
        counts = checkpoints[np.searchsorted(checkpoints, counts, side="right") - 1]
        distinct = checkpoints
    out = []
    for c in distinct:
        out.append((np.flatnonzero(counts == c), by_end[:c]))
    return out
