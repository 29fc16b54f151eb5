"""Dask tasks submitted ahead of their inputs (nbflow.engine.backends.dask_ahead).

An in-process LocalCluster (processes=False) keeps these cheap; what is checked is what
nbflow sends to Dask and what the run records, not timings.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from dask_clusters import own_client

import nbflow as nf
from nbflow.core.events import TaskCompleted, TaskStarted

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with own_client() as c:
        yield c


@nf.task
def make(n: int, fill: float = 1.0):
    return np.full(n, fill)


@nf.task
def inc(a):
    return a + 1


@nf.task
def total(*arrays):
    return float(sum(float(a.sum()) for a in arrays))


def chains(name: str, n_chains: int = 2, length: int = 4) -> tuple[nf.Workflow, nf.Ref]:
    with nf.Workflow(name) as wf:
        ends = []
        for c in range(n_chains):
            r = make(1000, float(c))
            for _ in range(length - 1):
                r = inc(r)
            ends.append(r)
        out = total(*ends)
    return wf, out


def test_successors_go_to_dask_ahead_and_are_adopted(client):
    wf, out = chains("ahead-chains")
    run = wf.run(backend=client, cache=False)
    ahead = run.backends["dask"].ahead
    # The engine submits the first root; the other ready root and everything after them
    # went ahead with it, in one message, and each was adopted (not submitted a second
    # time) when the engine started it.  (Sent before the run's thread started, on a
    # client an earlier run opened, the first root went ahead too.)
    assert ahead.submitted_ahead == len(wf.nodes) - 1 + run.backends["dask"].sent_early
    assert run.backends["dask"].batch.messages == 1
    assert ahead.adopted == ahead.submitted_ahead
    assert run[out] == 1000 * (0 + 3) + 1000 * (1 + 3)
    # The engine's view is unchanged: every task started once and completed once, in order.
    started = [e.key for e in run.events if isinstance(e, TaskStarted)]
    done = [e.key for e in run.events if isinstance(e, TaskCompleted)]
    assert sorted(started) == sorted(done) == sorted(r.key for r in wf.nodes)
    assert done.index("inc-0") < done.index("inc-1") < done.index("total-0")


@nf.task
def zeros_like(a):
    return np.zeros(len(a))  # the same value whatever a's contents: early cutoff below it


def submitted_before_first_result(wf: nf.Workflow, **options) -> tuple[nf.Run, int | None]:
    """Run ``wf`` on Dask; how many tasks had gone ahead when the first task completed."""
    seen: dict[str, int | None] = {"n": None}

    def factory(run):
        def sub(e):
            if isinstance(e, TaskCompleted) and seen["n"] is None:
                seen["n"] = run.backends["dask"].ahead.submitted_ahead
        return sub

    off = nf.on_run(factory)
    try:
        run = wf.run(**options)
    finally:
        off()
    return run, seen["n"]


def test_a_cache_on_run_goes_ahead_where_every_lookup_must_miss(client, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))

    def build(fill):
        with nf.Workflow("ahead-cached") as wf:
            out = total(inc(zeros_like(make(1000, fill))))
        return wf, out

    wf, out = build(1.0)
    # First run: no result of these functions was ever stored, so every lookup must miss:
    # all three successors of the root go to Dask before any result comes back.
    run, early = submitted_before_first_result(wf, backend=client)
    ahead = run.backends["dask"].ahead
    assert early == ahead.submitted_ahead == ahead.adopted == 3 + run.backends["dask"].sent_early
    assert not any(run.tasks["cached"]) and run[out] == 1000.0
    # Same inputs: every task hits, nothing is submitted at all.
    again, early = submitted_before_first_result(wf, backend=client)
    assert all(again.tasks["cached"]) and again[out] == run[out]
    assert again.backends["dask"].ahead.submitted_ahead == 0
    # A new input at the root: its successors' code has stored results, so they may hit
    # and wait for their lookups (nothing goes ahead); zeros_like re-runs and gives the
    # same value, so inc and total are served from the cache (early cutoff).
    wf2, out2 = build(2.0)
    third, early = submitted_before_first_result(wf2, backend=client)
    cached = dict(zip(third.tasks["key"], third.tasks["cached"], strict=True))
    assert cached == {"make-0": False, "zeros_like-0": False, "inc-0": True, "total-0": True}
    assert third.backends["dask"].ahead.submitted_ahead == 0
    assert third[out2] == run[out]


def test_forced_tasks_go_ahead_with_the_cache_on(client, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))
    wf, out = chains("ahead-forced", n_chains=1, length=3)
    first = wf.run(backend=client)
    # rerun= the root: it and its descendants must run, so they go ahead again
    run, early = submitted_before_first_result(wf, backend=client, rerun=["make"])
    assert early == run.backends["dask"].ahead.submitted_ahead == 3 + run.backends["dask"].sent_early
    assert not any(run.tasks["cached"]) and run[out] == first[out]


_flaky = {"left": 0}
_lock = threading.Lock()


def fail_once(a):
    with _lock:
        if _flaky["left"] > 0:
            _flaky["left"] -= 1
            raise RuntimeError("transient")
    return a + 1


def test_a_retried_producer_resubmits_what_went_ahead(client):
    _flaky["left"] = 1
    flaky = nf.task(retries=2, retry_delay=0.01)(fail_once)
    with nf.Workflow("ahead-retry") as wf:
        out = inc(inc(flaky(make(10))))
    run = wf.run(backend=client, cache=False)
    assert run.status == "completed"
    assert run[out][0] == 4.0
    ahead = run.backends["dask"].ahead
    # inc-0 went ahead on the failed attempt's future: it was cancelled and submitted again
    # with the retry's result; inc-1 (waiting on inc-0's stale future) likewise.
    assert ahead.submitted_ahead >= 2 and ahead.adopted < ahead.submitted_ahead
    assert dict(zip(run.tasks["key"], run.tasks["attempts"], strict=True))["fail_once-0"] == 2


def boom(a):
    raise ValueError("no good")


def test_a_failed_producer_skips_what_went_ahead_and_the_run_ends(client):
    bad = nf.task(boom)
    with nf.Workflow("ahead-fail") as wf:
        inc(inc(bad(make(10))))
        ok = inc(make(5))
    run = wf.run(backend=client, cache=False, raise_on_error=False)
    assert run.status == "failed"
    states = dict(zip(run.tasks["key"], run.tasks["state"], strict=True))
    assert states["boom-0"] == "failed"
    assert states["inc-0"] == states["inc-1"] == "skipped"
    assert run[ok][0] == 2.0
    assert run.backends["dask"]._futures == set()  # nothing left submitted on the cluster


def test_a_workers_limit_below_the_cluster_keeps_tasks_in_the_engine(client):
    wf, out = chains("ahead-limited", n_chains=2, length=3)
    run = wf.run(backend=client, cache=False, workers=1)
    assert run.backends["dask"].ahead.submitted_ahead == 0
    assert run[out] == 1000 * 2 + 1000 * 3


def test_declared_resources_reach_the_placement_rule(client, monkeypatch):
    from nbflow.locality.placement import Placer

    seen: list[dict[str, float]] = []
    choose = Placer.choose

    def spy(self, inputs, demand=None, seconds=None, exclude=()):
        seen.append(dict(demand or {}))
        return choose(self, inputs, demand, seconds, exclude)

    monkeypatch.setattr(Placer, "choose", spy)
    hungry = nf.task(resources={"memory": 1e6})(lambda a: a * 2)
    with nf.Workflow("ahead-resources") as wf:
        out = hungry(make(100))
    run = wf.run(backend=client, cache=False, resources={"memory": 1e9})
    assert run[out][0] == 2.0
    assert {"memory": 1e6} in seen  # the task's demand was weighed where it was placed
    # (declared resources: not ahead; its input, when sent before the run's thread started)
    assert run.backends["dask"].ahead.submitted_ahead == run.backends["dask"].sent_early


def test_workers_announce_where_results_are_and_sizes_match_dask(client):
    wf, _ = chains("ahead-located", n_chains=2, length=4)
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    assert backend.told_by_worker + backend.asked_scheduler == len(wf.nodes)
    assert backend.told_by_worker > 0  # (the rest, if any, were asked of the scheduler)
    agent = run.locality.agent

    def sizes(dask_scheduler, keys):
        return {k: int(dask_scheduler.tasks[k].nbytes) for k in keys if k in dask_scheduler.tasks}

    dask_sizes = client.run_on_scheduler(sizes, keys=list(agent.node_of))
    ours = dict(zip(run.tasks["key"], run.tasks["output_bytes"], strict=True))
    assert {agent.node_of[k]: v for k, v in dask_sizes.items()} == {
        k: int(v) for k, v in ours.items()}


def test_history_is_read_once_per_run_and_a_first_run_reads_only_whether_there_is_any(
        client, monkeypatch):
    from nbflow.predict import ahead
    from nbflow.store import get_store

    # (a worker's peak is its process's: after earlier tests it may pass the default 256 MiB
    # and memory admission would then, rightly, read the peaks per task as well)
    monkeypatch.setenv("NBFLOW_PREDICTED_MEMORY_MIN", str(2**50))
    store = get_store()
    asked: list[str] = []
    real = store.journal.query

    def counting(sql, params=()):
        if "FROM task_runs" in sql:  # the queries over a workflow's history
            if "LIMIT 1" in sql and "peak_rss" not in sql:  # is there any history (first row)
                asked.append("any")
            else:
                columns = [c for c in ("duration_s", "output_bytes", "peak_rss") if c in sql]
                asked.append("+".join(columns) or sql)
        return real(sql, params)

    store.journal.query = counting
    try:  # (the reads themselves: nothing read ahead after the first run's end)
        wf, _ = chains("history-once", n_chains=1, length=3)
        with ahead.off():
            wf.run(backend=client, cache=False)
            first, asked[:] = list(asked), []
            run = wf.run(backend=client, cache=False)
    finally:
        del store.journal.query
    assert first == ["any"]  # nothing to predict from: means, sizes, peaks not asked for
    # priorities and placement both weigh durations, placement sizes too: one query for
    # both columns, whose durations also say there is history; memory admission whether a
    # peak could be demanded (none here: the peaks are not read)
    assert sorted(asked) == ["duration_s+output_bytes", "peak_rss"]
    assert run.learned_priorities and run.locality.agent.pred_bytes


@nf.task(executor="thread")
def here(a):
    return float(a.sum())  # runs in this process: a consumer that is not a Dask task


def test_keep_unconsumed_releases_results_once_their_consumers_ran(client):
    from nbflow import locality

    with nf.Workflow("release") as wf:
        first = make(1000, 1.0)
        mid = inc(first)
        last = inc(mid)
        side = here(mid)  # mid is also taken by a thread task: it is kept
    with locality.placement(keep="unconsumed"):
        run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    assert set(backend.released_keys) == {first.key}
    assert float(run[last].sum()) == 3000.0 and run[side] == 2000.0
    assert float(run[mid].sum()) == 2000.0  # (a thread task consumed it: never released)
    with pytest.raises(nf.ResultReleased, match="keep='all'"):
        run[first]
    gone = {d for d, k in run.locality.agent.node_of.items() if k == first.key}
    assert gone

    def in_memory(dask_scheduler=None):
        return [k for k, ts in dask_scheduler.tasks.items() if ts.state == "memory"]

    deadline = time.monotonic() + 30  # (the release reaches the scheduler as a message)
    while gone & set(client.run_on_scheduler(in_memory)):
        assert time.monotonic() < deadline, "a worker still holds the released result"
        time.sleep(0.05)
    kept = {d for d, k in run.locality.agent.node_of.items() if k in (mid.key, last.key)}
    assert kept <= set(client.run_on_scheduler(in_memory))
    # the default keeps every result readable
    again = wf.run(backend=client, cache=False)
    assert float(again[first].sum()) == 1000.0 and not again.backends["dask"].released_keys


def test_an_unknown_keep_is_refused():
    from nbflow import locality

    with pytest.raises(locality.PlacementError, match="unconsumed"), locality.placement(keep="some"):
        pass
