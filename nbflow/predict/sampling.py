"""Joint draws of a run's remaining durations for the ETA's Monte Carlo (``Predictor.sample``).

Each draw multiplies every task's point estimate by ``exp(run effect + shared + noise)``:

- a **run effect** per family, shared by the family's tasks: how much this run shifts
  that family.  A family whose history holds two or more runs draws it from a normal with
  its own between-run variance (:mod:`nbflow.predict.bands`), reduced by what the run's
  finished calls of the family already showed when it is corrected online;
- a family whose history holds a **single run** (or none: a task predicted from a similar
  name or the global prior) has no evidence of its own about how runs differ.  Between-run
  shifts are heavy-tailed: most families of a workflow do not move between two runs, a few
  move by 2–3x (a step whose input doubled, a call that hit a slow node).  A normal whose
  variance is the typical (median) family's misses exactly those few, and when one of them
  dominates the remaining work the whole band misses.  Such a family therefore draws its
  shift from the **shifts other families showed** (:func:`shift_pool`): the per-run median
  held-out residuals of the history's families that ran at least twice, weighted by their
  share of the work, or, when fewer than :data:`MIN_SHIFT_FAMILIES` of them did, the
  predictor's ``run_shifts`` prior (:func:`nbflow.predict.bands.run_shifts` of other
  workflows).  A family fitted on one run differs from a new run by the difference of
  two such shifts (its own run had one too), so it draws ``a - b``.  With neither, it keeps
  the normal of the pooled variance, as before;
- a family with a few runs of its own that agree is not proof that the next run will not
  shift: as often as the pooled variance outweighs its own runs (``2 / (k - 1 + 2)`` of
  the draws for ``k`` runs, the weight :func:`nbflow.predict.bands.shrink_tau2` gives the
  pool) it draws a shift from the pool, otherwise its own normal.  The pool is the
  history's own shifts first, so a history whose families never moved between runs keeps
  its bands as narrow as they were;
- tasks predicted by **name similarity** share the run effect of the family that answered
  for them: a batch of new names (``..._sequence_7``, ``..._sequence_8``) answered from one
  family errs together, not independently;
- one **shared** error of the run's total work for the families the run has not shown
  yet, and ``shared_sd`` (the pace's uncertainty), as :func:`nbflow.predict.bands.joint_log_errors`
  does;
- per task an independent within-run residual, resampled.

The draws stay centred where they were (shifts are centred on the median of the pool), so
the ETA's median moves little; what changes is how far the band reaches when the remaining
work sits in families history cannot vouch for.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbflow.predict.bands import SHRINK_RUNS, joint_log_errors, posterior_tau2, split_runs

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["MIN_SHIFT_FAMILIES", "sample", "shift_pool"]

MIN_SHIFT_FAMILIES = 3  # families with two or more runs before the history's own shifts are used
MIN_RUN_RESIDUALS = 1  # held-out residuals a run needs to count one shift of its family
HEAVY = True  # (switch for comparisons: off draws every run effect from a normal, as before)
MIX = True  # (likewise: off keeps the normal for every family with two or more runs)
_POOLS: weakref.WeakKeyDictionary[Any, tuple[np.ndarray, np.ndarray] | None] = weakref.WeakKeyDictionary()


def shift_pool(predictor: Predictor) -> tuple[np.ndarray, np.ndarray] | None:
    """``(shifts, weights)``: how far runs moved families, or None when nothing says.

    From the predictor's own families that ran at least twice: per family, the median of
    each run's held-out log residuals about the median of those run medians, scaled so
    that their mean square is the family's between-run variance net of its calls' noise
    (:func:`nbflow.predict.bands.split_runs`), each family weighted by
    its share of the history's work (``n`` times its median duration: the big steps are
    what an ETA adds up), split equally over its runs.  Used when at least
    :data:`MIN_SHIFT_FAMILIES` families qualify; otherwise the ``run_shifts`` prior given to
    the predictor (equal weights), if any.  Computed once per predictor.
    """
    if predictor in _POOLS:
        return _POOLS[predictor]
    vals: list[float] = []
    wts: list[float] = []
    fams = 0
    for f in predictor.families.values():
        if f.k_offline < 2 or not len(f.resid_offline):
            continue
        med = pd.Series(f.resid_offline).groupby(np.asarray(f.runs_offline)).agg(["median", "size"])
        med = med[med["size"] >= MIN_RUN_RESIDUALS]["median"].to_numpy(dtype=float)
        k = len(med)
        if k < 2:
            continue
        d = med - np.median(med)
        # A run's median also carries the noise of its few calls, which is no run effect:
        # the shifts are scaled to the family's between-run variance with that noise taken
        # off (bands.split_runs, which also undoes the shrinking by centring on k runs), so
        # a history whose runs agree gives a pool of near-zeros.
        _, tau2, _ = split_runs(f.resid_offline, f.runs_offline)
        ms = float(np.mean(d ** 2))
        d = d * math.sqrt(tau2 / ms) if ms > 0 else d
        vals.extend(d.tolist())
        wts.extend([f.n * f.median_s / k] * k)
        fams += 1
    pool: tuple[np.ndarray, np.ndarray] | None = None
    prior = getattr(predictor, "run_shifts", None)
    if fams >= MIN_SHIFT_FAMILIES:
        w = np.asarray(wts, dtype=float)
        pool = (np.asarray(vals, dtype=float), w / w.sum())
    else:
        if prior is not None and len(prior):
            p = np.asarray(prior, dtype=float)
            pool = (p, np.full(len(p), 1.0 / len(p)))
    _POOLS[predictor] = pool
    return pool


def _heavy(pool: tuple[np.ndarray, np.ndarray], samples: int, rng: np.random.Generator,
           alone: bool) -> np.ndarray:
    """Run effects of one family for ``samples`` draws, shape ``(samples, 1)``, resampled
    from ``pool``: the difference of two shifts when the family was fitted on one run."""
    vals, w = pool
    a = vals[rng.choice(len(vals), size=samples, p=w)]
    if alone:
        a = a - vals[rng.choice(len(vals), size=samples, p=w)]
    return a.reshape(samples, 1)


def sample(
    predictor: Predictor, rows: pd.DataFrame, n: int = 40, finished: pd.DataFrame | None = None,
    seed: int | None = 0, shared_sd: float = 0.0, point: np.ndarray | None = None,
) -> np.ndarray:
    """``n`` joint draws of the durations of ``rows``, shape ``(n, len(rows))`` (see the
    module docstring; :meth:`nbflow.predict.Predictor.sample` is this).  ``point``: the
    rows' ``predict(rows, finished=finished)`` durations, when the caller has them already
    (a prediction with many finished tasks costs more than the draws)."""
    from nbflow.predict.model import _codes_by_task, _prepare

    point = (predictor.predict(rows, finished=finished)["duration_s"].to_numpy() if point is None
             else np.asarray(point, dtype=float))
    rng = np.random.default_rng(seed)
    q = _prepare(rows, "rows", need_duration=False)
    task = q["task"].to_numpy()
    codes = _codes_by_task(q)
    online = finished is not None and len(finished) > 0
    done = finished["task"].astype(str).value_counts() if online and finished is not None else None
    pool = shift_pool(predictor) if HEAVY else None
    # One run effect per family that answers: names answered by the same family share it.
    answering: dict[Any, list[str]] = {}
    fam_of: dict[Any, Any] = {}
    for name in pd.unique(task):
        fam = predictor._resolve(name, codes.get(name))[0]
        ident = id(fam) if fam is not None else ("prior", name)
        answering.setdefault(ident, []).append(name)
        fam_of[ident] = fam
    groups = []
    extra = np.zeros((n, len(point)))
    for ident, names in answering.items():
        fam = fam_of[ident]
        cols = np.flatnonzero(np.isin(task, names))
        _, tau2 = predictor._band(fam, online=online)
        within = predictor._draw_noise(fam, online)
        shrink = 1.0
        if fam is None or fam.online != "none":  # corrected online: the run effect is
            m = sum(int(done.get(nm, 0)) for nm in names) if done is not None else 0  # partly known
            sigma2 = float(np.var(within)) if len(within) > 1 else 0.0
            post = posterior_tau2(tau2, sigma2, m)
            shrink = math.sqrt(post / tau2) if tau2 > 0 else 1.0
            tau2 = post
        no_evidence = fam is None or fam.k_offline < 2
        if pool is not None and no_evidence:
            extra[:, cols] = shrink * _heavy(pool, n, rng, alone=fam is not None and fam.n_runs < 2)
            groups.append((cols, within, 0.0))
        elif pool is not None and MIX:
            # A few runs that agree do not rule out a shift the next time: as often as the
            # pooled variance's weight against the family's own runs (bands.shrink_tau2),
            # the run effect is a shift from the pool instead of the family's own normal.
            w = SHRINK_RUNS / (fam.k_offline - 1 + SHRINK_RUNS)
            mix = rng.random((n, 1)) < w
            z = rng.standard_normal((n, 1)) * math.sqrt(tau2)
            extra[:, cols] = np.where(mix, shrink * _heavy(pool, n, rng, alone=False), z)
            groups.append((cols, within, 0.0))
        else:
            groups.append((cols, within, math.sqrt(tau2)))
    # The total's error lives in the families this run has not shown yet: its variance
    # scales with the square of their share of the predicted remaining work.
    unseen = np.ones(len(point), dtype=bool)
    if done is not None:
        unseen = ~np.isin(task, done.index.to_numpy())
    total = float(point.sum())
    share = float(point[unseen].sum()) / total if total > 0 else 1.0
    shared = math.sqrt(predictor._tau2_work * share ** 2 + shared_sd ** 2)
    return point * np.exp(joint_log_errors(groups, len(point), n, rng, shared_sd=shared) + extra)
