"""Results handed over to Dask's scheduler as soon as every consumer is on the cluster.

With the default ``keep="reachable"``, a result nobody names is released once every task
taking it has run.  When all those tasks were already submitted (ahead) as the result
completes, nbflow drops its own hold at once, and Dask frees the result when the last
consumer has run, as ``dask.delayed`` does (``DaskBackend._hand_over``).  What is checked
is what the scheduler holds while a consumer runs, and which results are handed over, not
timings.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")

import test_locality_ahead as _ahead  # noqa: E402

client, make, inc = _ahead.client, _ahead.make, _ahead.inc

_SCHEDULER: list = []  # the in-process cluster's scheduler, read by the consumer below


def _inputs_wanted_by_a_client(limit: float) -> bool:
    """On the worker, for the running task: do its inputs stay wanted by a client for
    ``limit`` seconds (False as soon as no client wants any of them)?"""
    from distributed import get_worker

    me = get_worker().get_current_task()
    ts = _SCHEDULER[0].tasks[me]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        deps = list(ts.dependencies)
        if deps and not any(d.who_wants for d in deps):
            return False
        time.sleep(0.02)
    return True


@nf.task
def watch(a, limit: float = 30.0):
    return _inputs_wanted_by_a_client(limit), float(np.asarray(a).sum())


@nf.task(retries=1)
def watch_retried(a, limit: float = 0.5):
    return _inputs_wanted_by_a_client(limit), float(np.asarray(a).sum())


@pytest.fixture
def scheduler(client):
    _SCHEDULER[:] = [client.cluster.scheduler]
    yield _SCHEDULER[0]
    _SCHEDULER.clear()


def test_a_consumed_result_is_left_to_dask_while_its_consumer_still_runs(client, scheduler,
                                                                        monkeypatch):
    # (by default such results are not even held while they run: tests/test_dask_unheld.py;
    # the hand-over is what is left when every future is held)
    monkeypatch.setenv("NBFLOW_DASK_HOLD_ALL", "1")
    with nf.Workflow("handover") as wf:
        out = watch(inc(make(1000, 1.0)))  # make-0 and inc-0: nobody names them
    run = wf.run(backend=client, cache=False)
    wanted, total = run[out]
    backend = run.backends["dask"]
    # The consumer saw its input still in the cluster's memory but wanted by no client:
    # nbflow let go as soon as inc-0 completed, not after watch-0 completed.
    assert wanted is False and total == 2000.0
    assert backend.handed_over == 2  # make-0 (taken by inc-0) and inc-0 (taken by watch-0)
    assert set(backend.released_keys) == {"make-0", "inc-0"}
    with pytest.raises(nf.ResultReleased, match="keep='all'"):
        run["inc-0"]
    assert list(run.tasks["state"]) == ["completed"] * 3


def test_a_consumer_that_may_be_retried_keeps_its_input_held_until_it_ran(client, scheduler):
    with nf.Workflow("handover-retry") as wf:
        out = watch_retried(make(1000, 1.0))  # a retry would submit it again with make-0's
    run = wf.run(backend=client, cache=False)
    wanted, total = run[out]
    backend = run.backends["dask"]
    assert wanted is True and total == 1000.0  # (held by nbflow while the consumer ran)
    assert backend.handed_over == 0
    assert set(backend.released_keys) == {"make-0"}  # released once the consumer ran


def test_a_result_the_notebook_names_is_never_handed_over(client, scheduler):
    with nf.Workflow("handover-named") as wf:
        x = make(1000, 1.0)
        out = watch(x, 0.5)
    run = wf.run(backend=client, cache=False)
    wanted, _ = run[out]
    assert wanted is True and run.backends["dask"].handed_over == 0
    assert float(run[x].sum()) == 1000.0


# -- the end-of-run read brings back only the run's own part of what the workers kept ----


def test_the_end_of_run_read_brings_back_only_the_runs_own_transfers(client):
    from nbflow import locality

    def build(name):
        with nf.Workflow(name) as wf:
            total = _ahead.total(*[make(10_000, float(k)) for k in range(4)])
        return wf, total

    with locality.placement("round-robin"):  # (inputs on both workers: some must move)
        wf1, out1 = build("end-read-1")
        first = wf1.run(backend=client, cache=False)
        wf2, out2 = build("end-read-2")
        second = wf2.run(backend=client, cache=False)
    assert first[out1] == second[out2] == 10_000 * (0 + 1 + 2 + 3)
    first_keys = set(first.locality.agent.node_of)
    everything = client.run(lambda dask_worker: [k for e in dask_worker.transfer_incoming_log
                                                 for k in e["keys"]])
    assert first_keys & {k for ks in everything.values() for k in ks}  # the workers keep both
    shipped = {k for entries in second.locality.agent.logs.values() for e in entries
               for k in e["keys"]}
    assert shipped and shipped <= set(second.locality.agent.node_of)  # the second read: its own
    assert int(second.transfers["bytes"].sum()) > 0


class _Monitor:
    def __init__(self, times, memory):
        from collections import deque

        self.quantities = {"time": deque(times), "memory": deque(memory)}


def test_the_memory_peak_is_the_runs_not_the_workers_since_it_started():
    from nbflow.locality.memory import _peak_since

    # 900 MB long before the run (t=10), 300 and 400 MB during it (from t=100)
    monitor = _Monitor([10.0, 50.0, 99.5, 100.5, 101.0], [900e6, 100e6, 300e6, 400e6, 200e6])
    assert _peak_since(monitor, 100.0) == 400e6  # (one sampling interval of margin: 99.5 counts)
    assert _peak_since(monitor, 0.0) == 900e6
    assert _peak_since(monitor, 500.0) == 200e6  # no sample in the window yet: the latest
    assert _peak_since(_Monitor([], []), 100.0) == 0
