"""Cache hits finish in a lookup's time: the ETA must not read them as the run's pace."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import nbflow as nf
from nbflow.predict import Predictor
from nbflow.predict.eta import RunSnapshot, eta_of, snapshot


def _fitted(sec: float) -> Predictor:
    rng = np.random.default_rng(0)
    rows = [{"instance": f"r{r}", "task": "step", "duration_s": sec * np.exp(rng.normal(0, 0.02)),
             "start_s": float(i), "end_s": float(i) + sec}
            for r in range(3) for i in range(10)]
    return Predictor().fit(pd.DataFrame(rows))


def _chain(cached: list[bool] | None) -> RunSnapshot:
    n = 20
    # 10 calls served from the cache in 1 ms each, 10 still to run; history says 1 s a call
    return RunSnapshot(
        keys=[f"step-{i}" for i in range(n)], names=["step"] * n, kinds=["task"] * n,
        deps=[[] for _ in range(n)], states=["completed"] * 10 + ["pending"] * 10,
        elapsed=[math.nan] * n, durations=[0.001] * 10 + [math.nan] * 10,
        input_bytes=[math.nan] * n, priorities=[0] * n, workers=1, taken_at=0.0,
        run_elapsed_s=0.01, cached=cached,
    )


def test_cache_hits_do_not_set_the_pace_of_the_rest() -> None:
    p = _fitted(1.0)
    honest = eta_of(_chain([True] * 10 + [False] * 10), p)
    assert 8.0 < honest.remaining_s < 12.5  # ten 1 s calls left on one worker
    # the same snapshot read as if the 1 ms calls had run: the pace says "nearly done"
    fooled = eta_of(_chain(None), p)
    assert fooled.remaining_s < honest.remaining_s / 2


@nf.task
def _double(x: int) -> int:
    return 2 * x


def test_a_live_runs_state_says_which_tasks_came_from_the_cache() -> None:
    with nf.Workflow("eta-cache-hits") as wf:
        for i in range(4):
            _double(i)
    first = wf.run()
    assert first.state_now()["cached"] == [False] * 4
    second = wf.run()
    assert second.tasks["cached"].tolist() == [True] * 4
    assert second.state_now()["cached"] == [True] * 4
    assert snapshot(second).cached == [True] * 4
