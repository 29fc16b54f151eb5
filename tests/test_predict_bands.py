"""Calibrated 80% bands (nbflow.predict.bands) on synthetic data whose laws are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nbflow.predict import Predictor
from nbflow.predict.bands import (
    conformal_bounds,
    joint_log_errors,
    pace_spread,
    pooled_tau2,
    posterior_tau2,
    run_spread,
    shrink_tau2,
    split_runs,
    total_spread,
    work_spread,
)
from nbflow.predict.candidates import fit_mean
from nbflow.predict.eta import RunSnapshot, eta_of
from nbflow.predict.model import PredictionError, mdape


def _runs(rng: np.random.Generator, name: str, runs: int, per_run: int, run_sd: float,
          task_sd: float, base: float = 2.0, tag: str = "run") -> pd.DataFrame:
    """A family of constant duration ``base`` times a run effect times a task error."""
    rows = []
    for r in range(runs):
        effect = rng.normal(0.0, run_sd)
        y = base * np.exp(effect + rng.normal(0.0, task_sd, per_run))
        for i in range(per_run):
            rows.append({"instance": f"{tag}{r}", "task": name, "input_bytes": 1000.0,
                         "duration_s": y[i], "start_s": float(i), "end_s": i + y[i]})
    return pd.DataFrame(rows)


def _coverage(p: Predictor, test: pd.DataFrame) -> float:
    out = p.predict(test)
    inside = (out["duration_lo"] <= test["duration_s"]) & (test["duration_s"] <= out["duration_hi"])
    return float(inside.mean())


def test_conformal_bounds_cover_80_percent_by_construction() -> None:
    rng = np.random.default_rng(20)
    # A skewed residual law (log of a gamma): the bounds come from ranks, not a normal fit.
    law = lambda n: np.log(rng.gamma(2.0, 1.0, n))  # noqa: E731
    lo, hi = conformal_bounds(law(300))
    fresh = law(200_000)
    assert 0.75 <= float(np.mean((lo <= fresh) & (fresh <= hi))) <= 0.85
    # With a run effect of known variance added to fresh residuals, adding the same
    # variance to the bounds keeps them at 80%; leaving it out does not.
    tau = 0.6
    fresh_run = law(200_000) + rng.normal(0.0, tau, 200_000)
    lo2, hi2 = conformal_bounds(law(300), tau2=tau**2)
    assert 0.75 <= float(np.mean((lo2 <= fresh_run) & (fresh_run <= hi2))) <= 0.85
    assert float(np.mean((lo <= fresh_run) & (fresh_run <= hi))) < 0.72


def test_split_runs_separates_run_effects_from_task_noise() -> None:
    rng = np.random.default_rng(21)
    runs = np.repeat(np.arange(60), 40)
    effects = rng.normal(0.0, 0.3, 60)
    resid = effects[runs] + rng.normal(0.0, 0.2, len(runs))
    within, tau2, k = split_runs(resid, runs, held_out=False)
    assert k == 60
    assert 0.09 * 0.6 < tau2 < 0.09 * 1.5
    # Run effects are gone from the within-run residuals: every run has the same median.
    med = pd.Series(within).groupby(runs).median()
    assert np.ptp(med.to_numpy()) < 1e-9
    assert abs(np.std(within) - 0.2) < 0.03
    # One run: no evidence of run effects.
    assert split_runs(resid[:40], runs[:40])[1:] == (0.0, 1)


def test_pooling_and_shrinking_of_between_run_variance() -> None:
    # A weighted median: one odd family with a huge variance does not set everyone's band.
    assert pooled_tau2([(0.05, 3), (0.04, 3), (9.0, 3)]) == pytest.approx(0.05)
    assert pooled_tau2([(1.0, 1)]) is None
    # Two runs barely move the pooled value; many runs nearly replace it.
    assert shrink_tau2(1.0, 2, 0.1) < 0.5
    assert shrink_tau2(1.0, 40, 0.1) > 0.9
    assert shrink_tau2(1.0, 1, 0.1) == 0.1
    # Finished tasks of a run leave less of its run effect unknown.
    assert posterior_tau2(0.1, 0.04, 0) == 0.1
    assert posterior_tau2(0.1, 0.04, 10) < 0.01
    assert pace_spread(np.array([0.0])) == 0.0
    assert pace_spread(np.array([0.1, -0.1] * 50)) == pytest.approx(np.std([0.1, -0.1] * 50, ddof=1) / 10)


def test_intervals_cover_80_percent_of_new_runs_that_differ() -> None:
    rng = np.random.default_rng(22)
    hist = _runs(rng, "step", runs=8, per_run=40, run_sd=0.4, task_sd=0.15)
    p = Predictor().fit(hist)
    test = _runs(rng, "step", runs=300, per_run=20, run_sd=0.4, task_sd=0.15, tag="new")
    assert 0.75 <= _coverage(p, test) <= 0.85


def test_single_training_run_is_widened_by_a_prior_from_other_families() -> None:
    rng = np.random.default_rng(23)
    one_run = _runs(rng, "step", runs=1, per_run=60, run_sd=0.5, task_sd=0.1)
    test = _runs(rng, "step", runs=300, per_run=20, run_sd=0.5, task_sd=0.1, tag="new")
    # Other workflows' history, where runs differ about as much: the prior.
    others = pd.concat([_runs(rng, f"other{j}", runs=4, per_run=30, run_sd=0.5, task_sd=0.1,
                              base=1.0 + j) for j in range(6)], ignore_index=True)
    prior = run_spread(others)
    assert prior is not None and 0.3 < prior < 0.8
    narrow = _coverage(Predictor().fit(one_run), test)
    wide = _coverage(Predictor(run_sd=prior).fit(one_run), test)
    assert narrow < 0.5  # one run shows only its own noise
    assert 0.72 <= wide <= 0.9
    assert run_spread(one_run) is None  # nothing ran twice
    with pytest.raises(PredictionError, match="run_sd"):
        Predictor(run_sd=-1.0)
    with pytest.raises(PredictionError, match="work_sd"):
        Predictor(work_sd=float("nan"))


def test_joint_draws_share_run_effects_per_family_and_one_across_all() -> None:
    rng = np.random.default_rng(24)
    within = rng.normal(0.0, 0.2, 500)
    groups = [(np.arange(0, 50), within, 0.5), (np.arange(50, 100), within, 0.5)]
    e = joint_log_errors(groups, 100, 4000, rng)
    a, b, c = e[:, 0], e[:, 1], e[:, 50]
    # Two tasks of one family: correlation tau^2 / (tau^2 + sigma^2) = 0.25 / 0.29.
    assert abs(np.corrcoef(a, b)[0, 1] - 0.25 / 0.29) < 0.06
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.06  # another family: its own run effect
    # The shared term (a run's total work, its pace) couples every task.
    e2 = joint_log_errors(groups, 100, 4000, rng, shared_sd=0.5)
    assert abs(np.corrcoef(e2[:, 0], e2[:, 50])[0, 1] - 0.25 / 0.54) < 0.06


def test_eta_band_holds_about_80_percent_of_true_remaining_times() -> None:
    # History: a 40-call chain whose runs differ by a run effect (sd 0.3) with task noise.
    rng = np.random.default_rng(25)
    p = Predictor().fit(_runs(rng, "step", runs=8, per_run=40, run_sd=0.3, task_sd=0.3))
    n, half = 40, 20
    inside = []
    for r in range(60):
        y = 2.0 * np.exp(rng.normal(0.0, 0.3) + rng.normal(0.0, 0.3, n))
        snap = RunSnapshot(
            keys=[f"step-{i}" for i in range(n)], names=["step"] * n, kinds=["task"] * n,
            deps=[[i - 1] if i else [] for i in range(n)],
            states=["completed"] * half + ["pending"] * (n - half), elapsed=[math.nan] * n,
            durations=list(y[:half]) + [math.nan] * (n - half), input_bytes=[1000.0] * n,
            priorities=[0] * n, workers=1, taken_at=0.0, run_elapsed_s=float(y[:half].sum()),
        )
        e = eta_of(snap, p, samples=100, seed=r)
        inside.append(e.remaining_lo <= float(y[half:].sum()) <= e.remaining_hi)
    assert 0.7 <= float(np.mean(inside)) <= 0.9


def test_mean_candidate_answers_the_mean_and_wins_where_run_medians_jump() -> None:
    assert fit_mean(np.zeros(3), np.array([1.0, 2.0, 6.0]))(np.zeros(2)).tolist() == [3.0, 3.0]
    # Two kinds of call (1 s and 3 s) in shares that swing around one half from run to
    # run: each run's median jumps between the kinds, the mean stays between them.
    rng = np.random.default_rng(26)
    rows = []
    for r in range(6):
        slow = np.arange(100) < (40 if r % 2 else 60)
        y = np.where(slow, 3.0, 1.0) * np.exp(rng.normal(0.0, 0.1, 100))
        rows += [{"instance": f"run{r}", "task": "mix", "input_bytes": 1000.0, "duration_s": v}
                 for v in y]
    p = Predictor().fit(pd.DataFrame(rows))
    assert p.summary().set_index("task").loc["mix", "model"] == "mean"


def test_online_bayes_correction_learns_its_shrinkage_from_history() -> None:
    rng = np.random.default_rng(27)
    # Runs differ a lot (sd 1.0 in log) against the noise of single calls (0.1): two
    # finished calls of a run already say how the run goes.
    hist = _runs(rng, "step", runs=6, per_run=30, run_sd=1.0, task_sd=0.1)
    p = Predictor().fit(hist)
    assert p.families["step"].online == "bayes"
    assert p._k0("step") < 0.2
    typical = float(p.predict(pd.DataFrame({"task": ["step"], "input_bytes": [1000.0]}))["duration_s"][0])
    y = typical * np.exp(1.2 + rng.normal(0.0, 0.1, 30))  # a run 3.3x slower than predicted
    run = pd.DataFrame({"task": "step", "input_bytes": 1000.0, "duration_s": y})
    finished, rest = run.iloc[:2], run.iloc[2:]
    offline = p.predict(rest)["duration_s"].to_numpy()
    online = p.predict(rest, finished=finished)
    truth = rest["duration_s"].to_numpy()
    assert (online["online"] == "bayes").all()
    assert mdape(truth, online["duration_s"].to_numpy()) < 0.3 * mdape(truth, offline)
    # Where runs barely differ against the call noise, the same rule hardly moves.
    quiet = Predictor().fit(_runs(rng, "step", runs=6, per_run=30, run_sd=0.05, task_sd=0.5))
    assert quiet._k0("step") > 10


def test_total_work_error_is_measured_and_counts_only_for_families_not_yet_seen() -> None:
    # Held-out totals 2x too high in one run and 2x too low in another: log errors -/+ log 2.
    runs = np.repeat(["a", "b"], 10)
    actual = np.r_[np.full(10, 1.0), np.full(10, 4.0)]
    predicted = np.full(20, 2.0)
    tau2, k = work_spread(actual, predicted, runs)
    assert k == 2 and tau2 == pytest.approx(math.log(2) ** 2 * 3 / 4)
    assert work_spread(actual[:10], predicted[:10], runs[:10]) == (0.0, 1)
    assert total_spread(pd.DataFrame({"log_error": [0.3, -0.4]})) == pytest.approx(math.sqrt(0.125))
    assert total_spread(pd.DataFrame({"log_error": []})) is None
    # With one run of history the work_sd prior is the shared error of a run's total ...
    rng = np.random.default_rng(28)
    p = Predictor(work_sd=0.5).fit(_runs(rng, "step", runs=1, per_run=40, run_sd=0.0, task_sd=0.05))
    rows = pd.DataFrame({"task": ["step"] * 30, "input_bytes": 1000.0})
    spread = lambda d: float(np.std(np.log(d.sum(axis=1))))  # noqa: E731
    assert 0.4 < spread(p.sample(rows, n=2000)) < 0.6
    # ... until calls of the family finished in this run: they showed its run effect.
    done = pd.DataFrame({"task": ["step"] * 5, "input_bytes": 1000.0, "duration_s": 2.0})
    assert spread(p.sample(rows, n=2000, finished=done)) < 0.1
