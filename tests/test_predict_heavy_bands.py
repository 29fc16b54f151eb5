"""The ETA band allows for a family shifting several-fold between runs when history cannot
rule it out, and stays as narrow as before where history shows that runs do not shift.

Synthetic histories (fixed seeds): three small families ``c1..c3`` run in four runs, and a
dominant family ``big`` (one long call per run).  A new run has finished its small calls
and has only ``big`` left; its true remaining time is ``big``'s duration in that run.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nbflow.predict import Predictor, sampling
from nbflow.predict.bands import run_shifts
from nbflow.predict.eta import RunSnapshot, eta_of
from nbflow.predict.model import PredictionError

SMALL = ("c1", "c2", "c3", "c4", "c5")


def _history(shifts: dict[str, list[float]], big_runs: list[int], big_s: float = 10.0,
             seed: int = 0) -> pd.DataFrame:
    """Four runs; family ``f`` of run ``r`` is ``shifts[f][r]`` times its usual duration."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(4):
        for f in SMALL:
            for i in range(10):
                rows.append({"instance": f"r{r}", "task": f, "key": f"{f}-{i}", "input_bytes": 1.0,
                             "duration_s": BASE[f] * shifts[f][r] * math.exp(0.05 * rng.standard_normal())})
        if r in big_runs:
            rows.append({"instance": f"r{r}", "task": "big", "key": "big", "input_bytes": 1.0,
                         "duration_s": big_s * math.exp(0.02 * rng.standard_normal())})
    return pd.DataFrame(rows).assign(output_bytes=1.0, start_s=0.0)


def _only_big_left() -> RunSnapshot:
    """50 small calls finished as usual, ``big`` not started yet, on 4 workers."""
    names = [f for f in SMALL for _ in range(10)] + ["big"]
    n = len(names)
    states = ["completed"] * (n - 1) + ["pending"]
    return RunSnapshot(
        keys=[f"{nm}-{i}" for i, nm in enumerate(names)], names=names, kinds=["task"] * n,
        deps=[[] for _ in range(n)], states=states, elapsed=[math.nan] * n,
        durations=[BASE[nm] for nm in names[:-1]] + [math.nan], input_bytes=[1.0] * n, priorities=[0] * n,
        workers=4, taken_at=0.0, run_elapsed_s=5.0)


# Like the traces: most families do not move between runs, a few move 2-3x, and those few
# are among the big steps (what an ETA adds up).
BASE = {"c1": 2.0, "c2": 2.0, "c3": 0.5, "c4": 0.5, "c5": 0.5}
SHIFTING = {"c1": [1.0, 3.0, 1.0, 1 / 3], "c2": [1.0, 1.0, 0.4, 2.5], "c3": [1.0] * 4, "c4": [1.0] * 4,
            "c5": [1.0] * 4}
STEADY = {f: [1.0, 1.0, 1.0, 1.0] for f in SMALL}


def test_a_dominant_family_seen_in_one_run_that_shifts_3x_stays_inside_the_band(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # History: the small families moved 2-3x between runs; `big` ran in one run only (10 s).
    predictor = Predictor().fit(_history(SHIFTING, big_runs=[3]))
    true_remaining = 30.0  # this run, `big` takes 3x what its one run of history took
    e = eta_of(_only_big_left(), predictor, samples=400, seed=0)
    assert e.remaining_lo <= true_remaining <= e.remaining_hi
    assert 7.0 <= e.remaining_s <= 14.0  # the point estimate still says "about what it took"
    monkeypatch.setattr(sampling, "HEAVY", False)  # a normal run effect of the typical family's spread
    before = eta_of(_only_big_left(), predictor, samples=400, seed=0)
    assert not before.remaining_lo <= true_remaining <= before.remaining_hi


def test_the_band_is_not_wider_where_history_shows_no_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every family, `big` included, took the same time in all four runs.
    predictor = Predictor().fit(_history(STEADY, big_runs=[0, 1, 2, 3]))
    e = eta_of(_only_big_left(), predictor, samples=400, seed=0)
    monkeypatch.setattr(sampling, "HEAVY", False)
    monkeypatch.setattr(sampling, "MIX", False)
    before = eta_of(_only_big_left(), predictor, samples=400, seed=0)
    width, width_before = e.remaining_hi - e.remaining_lo, before.remaining_hi - before.remaining_lo
    assert width <= 1.05 * width_before + 1e-9
    assert e.remaining_lo <= 10.0 <= e.remaining_hi and width < 0.25 * 10.0  # narrow, and right


def test_a_single_run_history_takes_its_shifts_from_a_prior() -> None:
    # History of one run: nothing in it says how runs differ, so without a prior the band of
    # `big` is the pooled normal; with other workflows' shifts it reaches 3x.
    one = _history(SHIFTING, big_runs=[0])
    one = one[one["instance"] == "r0"]  # (a run whose small families took their usual time)
    others = _history(SHIFTING, big_runs=[], seed=1).assign(family="other")
    prior = run_shifts(others)
    assert prior is not None and len(prior) and float(np.quantile(np.abs(prior), 0.9)) > 0.5
    with_prior = eta_of(_only_big_left(), Predictor(run_shifts=prior).fit(one), samples=400, seed=0)
    assert with_prior.remaining_lo <= 30.0 <= with_prior.remaining_hi
    with pytest.raises(PredictionError, match="run_shifts"):
        Predictor(run_shifts=[math.nan])
    assert run_shifts(pd.DataFrame({"task": ["a"], "instance": ["r0"], "duration_s": [1.0]})) is None


def test_names_answered_by_one_similar_family_share_its_run_effect() -> None:
    predictor = Predictor().fit(_history(SHIFTING, big_runs=[3]))
    rows = pd.DataFrame({"task": ["big_1", "big_2", "big_3"], "input_bytes": 1.0})
    draws = predictor.sample(rows, n=300, seed=0)
    logs = np.log(draws)
    # one shared effect: the three columns move together (their correlation is high)
    assert np.corrcoef(logs.T)[0, 1] > 0.8 and np.corrcoef(logs.T)[1, 2] > 0.8
