"""What a Dask run teaches the predictor: each call's own compute seconds.

The engine's clock around a Dask call also counts the wait for a worker and for the news
of the end, and completions reach the notebook in bursts: measured that way, a chain's
tasks submitted ahead were recorded at a fraction of a millisecond or at twice their time,
and the forecast, the ETA and the plan learned from those.  The worker's own timing comes
with each completion and is what the run records.  (Only lower bounds are checked: a task
that sleeps ``s`` seconds computed for at least ``s``.)  Its ETA simulates the cluster's
threads.
"""

from __future__ import annotations

import time

import pytest

import nbflow as nf
from nbflow.predict.inflight import snapshot

pytest.importorskip("distributed")

from dask_clusters import own_client

SLEEP = {"make": 0.2, "step": 0.3}


@nf.task
def make(i: int) -> list[int]:
    time.sleep(SLEEP["make"])
    return [i] * 1000


@nf.task
def step(xs: list[int]) -> list[int]:
    time.sleep(SLEEP["step"])
    return [x + 1 for x in xs]


def test_a_dask_runs_history_has_each_calls_compute_seconds_and_its_eta_the_clusters_threads(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    with nf.Workflow("dask-seconds") as wf:
        for i in range(4):  # four chains on two workers: most links submitted ahead, unheld
            step(step(make(i)))
    with own_client() as client:
        run = wf.run(backend=client, cache=False)
    # the ETA simulates the cluster's two threads, not the notebook's thread pool
    assert run.workers is None and snapshot(run).workers == 2
    t = run.tasks
    assert (t["executor"] == "dask").all() and len(t) == 12
    floor = t["task"].map(SLEEP)
    assert (t["duration_s"] >= floor).all(), t[["key", "duration_s"]]
    hist = nf.history().set_index("key")
    assert (hist.loc[t["key"], "duration_s"].to_numpy() >= floor.to_numpy()).all()
