"""The quick estimate live views use before (or instead of) the full fit: per-task means of
the workflow's recent runs, from one aggregate query, answering ``predict`` and ``sample``."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from history_edits import set_durations

import nbflow as nf
from nbflow.predict.eta import eta_of, snapshot
from nbflow.predict.quick import QuickPredictor, quick_predictor


@nf.task
def slow(i: int) -> int:
    time.sleep(0.03)
    return i


@nf.task
def quick(i: int) -> int:
    return i


def _wf() -> nf.Workflow:
    with nf.Workflow("quick-estimate") as wf:
        for i in range(6):
            slow(quick(i))
    return wf


def test_the_quick_estimate_is_each_tasks_recent_mean() -> None:
    assert quick_predictor("quick-estimate") is None  # no history yet
    _wf().run(cache=False)
    last = _wf().run(cache=False)
    # what history says the calls took (measured, a busy machine stretches a 30 ms sleep)
    set_durations({**{f"slow-{i}": 0.03 for i in range(6)}, **{f"quick-{i}": 0.001 for i in range(6)}})
    q = quick_predictor("quick-estimate", exclude_run=last.id)
    assert isinstance(q, QuickPredictor)
    assert q.names["slow"].runs == 1 and q.names["slow"].calls == 6  # the run asking is left out
    q = quick_predictor("quick-estimate")
    assert q is not None and q.names["slow"].runs == 2
    rows = pd.DataFrame({"task": ["slow", "quick", "never-ran"], "input_bytes": np.nan})
    p = q.predict(rows)
    assert 0.025 <= p["duration_s"][0] <= 0.3 and p["duration_s"][1] < p["duration_s"][0]
    assert list(p["source"]) == ["history", "history", "global prior"]
    assert (p["duration_lo"] <= p["duration_s"]).all() and (p["duration_s"] <= p["duration_hi"]).all()
    draws = q.sample(rows, n=2000, seed=0)
    assert draws.shape == (2000, 3) and (draws > 0).all()
    # draws are centred on the mean (seconds add up), not on the median
    assert abs(draws[:, 0].mean() / p["duration_s"][0] - 1) < 0.15


def test_an_eta_from_the_quick_estimate() -> None:
    _wf().run(cache=False)
    run = _wf().start(cache=False, workers=1)
    run.wait()
    q = quick_predictor("quick-estimate", exclude_run=run.id)
    snap = snapshot(run)
    # as if nothing had finished yet: six slow calls on one worker are left
    fresh = snap.__class__(**{**snap.__dict__, "states": ["pending"] * len(snap.states),
                              "durations": [float("nan")] * len(snap.states)})
    e = eta_of(fresh, q, samples=20)
    assert 6 * 0.025 <= e.remaining_s <= 6 * 0.3 and e.remaining_lo <= e.remaining_s <= e.remaining_hi
