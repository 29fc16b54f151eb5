"""Which Dask results stay on the cluster after a run: the default ``keep="reachable"``.

A result whose Ref the notebook no longer names (the ``x`` of ``x = step(x)`` rebound) is
released once every task taking it has run; a Ref still held by a variable or a list, the
workflow's sinks and (in a kernel) a ``%%workflow`` binding stay readable.  What is checked
is what the scheduler holds and what ``run[...]`` gives, not timings.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import nbflow as nf
from nbflow import locality
from nbflow.engine.backends.dask import DaskBackend
from nbflow.locality.reachable import held_outside

distributed = pytest.importorskip("distributed")

# The module's two-worker cluster and its three tasks are those of the submit-ahead tests.
import test_locality_ahead as _ahead  # noqa: E402

client, make, inc, total = _ahead.client, _ahead.make, _ahead.inc, _ahead.total


@nf.task
def combine(parts):
    return float(sum(float(p.sum()) for p in parts))


def _in_memory(dask_scheduler=None):
    return {k: sorted(ws.address for ws in ts.who_has) for k, ts in dask_scheduler.tasks.items()
            if ts.state == "memory"}


def _dask_keys(run, task_keys):
    return {d for d, k in run.locality.agent.node_of.items() if k in task_keys}


def _wait_released(client, keys):
    deadline = time.monotonic() + 30  # (the release reaches the scheduler as a message)
    while keys & set(client.run_on_scheduler(_in_memory)):
        assert time.monotonic() < deadline, "a worker still holds a released result"
        time.sleep(0.05)


def test_the_graphs_own_references_do_not_count_as_the_users():
    with nf.Workflow("held") as wf:
        x = make(10)
        kept = inc(x)
        for _ in range(3):
            x = inc(x)
        parts = [inc(x) for _ in range(2)]  # the user's list is also combine's argument
        both = combine(parts)
        named = {"y": inc(both)}
        z = inc(named["y"])
    keys = [r.key for r in wf.nodes]
    held = {keys[i] for i in held_outside(wf.nodes, [wf.nodes])}
    assert held == {kept.key, x.key, *(p.key for p in parts), both.key, named["y"].key, z.key}
    assert {"make-0", "inc-1", "inc-2"}.isdisjoint(held)  # rebound: nobody names them
    # a name bound later (e.g. taken back from wf.nodes) is someone's reference too
    again = wf.nodes[0]
    assert "make-0" in {keys[i] for i in held_outside(wf.nodes, [wf.nodes])}
    del again


def test_by_default_what_nobody_names_is_released_and_the_rest_stays(client):
    with nf.Workflow("keep-default") as wf:
        x = make(1000, 1.0)
        for _ in range(3):
            x = inc(x)  # make-0, inc-0, inc-1: rebound, released once consumed
        mid = inc(x)  # held by a variable, consumed by out: stays
        out = inc(mid)  # a sink: stays
        side = total(x)  # a second sink
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    assert set(backend.released_keys) == {"make-0", "inc-0", "inc-1"}
    assert run.locality.agent.kept >= {x.key, mid.key, out.key, side.key}
    assert float(run[x].sum()) == 4000.0 and float(run[mid].sum()) == 5000.0
    assert float(run[out].sum()) == 6000.0 and run[side] == 4000.0
    gone = _dask_keys(run, {"make-0", "inc-0", "inc-1"})
    assert len(gone) == 3
    _wait_released(client, gone)
    held = _dask_keys(run, {x.key, mid.key, out.key})
    assert held <= set(client.run_on_scheduler(_in_memory))
    # a released result, reached by key or through the workflow's records, says why and
    # which option keeps it
    for handle in ("inc-0", wf.nodes[0]):
        with pytest.raises(nf.ResultReleased, match="keep='all'") as e:
            run[handle]
        assert "keep='reachable'" in str(e.value)
    assert list(run.tasks["state"]) == ["completed"] * 7  # (released is not failed)


def test_keep_all_holds_every_result(client):
    with nf.Workflow("keep-all") as wf:
        x = make(100, 1.0)
        for _ in range(3):
            x = inc(x)
    with locality.placement(keep="all"):
        run = wf.run(backend=client, cache=False)
    assert not run.backends["dask"].released_keys and run.locality.agent.kept is None
    assert float(run["make-0"].sum()) == 100.0


def test_a_held_list_keeps_its_refs_and_a_ref_taken_from_the_graph_before_the_run_too(client):
    with nf.Workflow("keep-list") as wf:
        parts = [inc(make(100, float(k))) for k in range(3)]  # make-k: nobody names them
        s = combine(parts)
    first = wf.nodes[0]  # make-0, named before the run starts
    run = wf.run(backend=client, cache=False)
    released = set(run.backends["dask"].released_keys)
    assert released == {"make-1", "make-2"}  # inc-k stay: the list is the user's
    assert [float(run[p].sum()) for p in parts] == [100.0, 200.0, 300.0]
    assert run[s] == 600.0 and float(run[first].sum()) == 0.0


def test_released_results_were_stored_by_the_cache_and_hit_next_time(client, tmp_path, monkeypatch):
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path))

    def build():
        with nf.Workflow("keep-cached") as wf:
            x = make(1000, 2.0)
            for _ in range(2):
                x = inc(x)
            out = total(x)
        return wf, out

    wf, out = build()
    run = wf.run(backend=client)
    # (x was build()'s local: only out is named once it returns)
    assert set(run.backends["dask"].released_keys) == {"make-0", "inc-0", "inc-1"}
    assert not any(run.tasks["cached"]) and run[out] == 4000.0
    wf2, out2 = build()
    again = wf2.run(backend=client)
    assert all(again.tasks["cached"]) and again[out2] == 4000.0
    assert float(again["make-0"].sum()) == 2000.0  # the stored value, read back here


@pytest.mark.timeout(240)
def test_in_a_kernel_workflow_bindings_stay_and_rebound_names_are_released(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "notebooks"))
    import nbharness as h

    nb = h.notebook([
        "import numpy as np\nimport distributed\nimport nbflow as nf\n"
        "cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,"
        " dashboard_address=None)\naddress = cluster.scheduler_address\n"
        "@nf.task\ndef make(n):\n    return np.ones(n)\n"
        "@nf.task\ndef inc(a):\n    return a + 1\n",
        "%%workflow chain --backend {address} --no-cache\n"
        "x = make(100)\nfor _ in range(3):\n    x = inc(x)\nmid = inc(x)\nout = inc(mid)",
        "run = nf.last_run()\n"
        "print('bound', float(x.sum()), float(mid.sum()), float(out.sum()))\n"
        "print('released', sorted(run.backends['dask'].released_keys))\n"
        "try:\n    run['inc-0']\nexcept nf.ResultReleased as e:\n    print('said', e)\n"
        "print('readable', float(run[run.nodes[3]].sum()))",
        "cluster.close()",
    ])
    nb = h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    out = h.stream(nb.cells[2])
    assert "bound 400.0 500.0 600.0" in out
    assert "released ['inc-0', 'inc-1', 'make-0']" in out
    assert "said the result of 'inc-0' was released" in out and "keep='all'" in out
    assert "readable 400.0" in out  # inc-2: bound to x


# -- submissions sent together ---------------------------------------------------------------


def _restrictions(keys, dask_scheduler=None):
    out = {}
    for k in keys:
        ts = dask_scheduler.tasks.get(k)
        if ts is not None:
            out[k] = (sorted(ts.worker_restrictions or ()), bool(ts.loose_restrictions))
    return out


def test_a_chain_goes_in_one_message_with_each_tasks_own_worker_hint(client, monkeypatch):
    # (the watcher's count below: a graph sent before the run's thread started could have
    # its root done before the engine watches it, which would then depend on timing)
    monkeypatch.setattr(DaskBackend, "send_before_start", False)
    with nf.Workflow("batched-rr") as wf:
        refs = [make(1000, 1.0)]
        for _ in range(3):
            refs.append(inc(refs[-1]))
    with locality.placement("round-robin"):
        run = wf.run(backend=client, cache=False)
    batch = run.backends["dask"].batch
    assert batch is not None and (batch.messages, batch.tasks) == (1, 4)  # root + 3 ahead
    agent = run.locality.agent
    hints = dict(agent.hint_of)
    assert len(set(hints.values())) == 2  # alternating workers, in one submission
    got = client.run_on_scheduler(_restrictions, list(hints))
    assert got == {d: ([w], True) for d, w in hints.items()}  # each key its own hint
    # ...and Dask honoured them: each task ran where it was hinted
    assert all(agent.worker_of[agent.node_of[d]] == w for d, w in hints.items())
    assert float(run[refs[-1]].sum()) == 4000.0
    # the completions came back through one watcher on Dask's client loop, none twice
    watcher = run.backends["dask"]._watcher
    assert watcher.completions == 4 and 1 <= watcher.wakeups <= 4


def test_without_batching_each_task_is_its_own_submission(client, monkeypatch):
    monkeypatch.setenv("NBFLOW_DASK_BATCH", "0")
    with nf.Workflow("unbatched") as wf:
        x = inc(make(100, 1.0))
    run = wf.run(backend=client, cache=False)
    assert run.backends["dask"].batch is None and float(run[x].sum()) == 200.0


def test_a_batch_that_cannot_be_sent_fails_its_tasks_instead_of_waiting(client, monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("the scheduler refused the graph")

    monkeypatch.setattr(client, "_graph_to_futures", refuse)
    with nf.Workflow("unsendable") as wf:
        inc(make(100, 1.0))
    run = wf.run(backend=client, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert "the scheduler refused the graph" in str(next(iter(run.errors().values())))


def _undo_sum(out):
    return float(out.sum())


@nf.task(compensate=_undo_sum)
def reserve(n: int):
    return np.full(n, 3.0)


@nf.task
def boom(a):
    raise RuntimeError("boom")


def test_a_saga_members_result_stays_for_its_undo_even_when_nobody_names_it(client):
    with nf.Workflow("keep-saga") as wf, nf.saga("order"):
        x = reserve(10)
        x = inc(x)  # consumes reserve-0 and completes: reserve-0 would be released...
        boom(x)
    run = wf.run(backend=client, cache=False, raise_on_error=False)
    assert run.status == "failed" and "reserve-0" not in run.backends["dask"].released_keys
    [rb] = run.rollbacks
    assert "reserve-0" in rb["compensated"]
    assert run["reserve-0.undo"] == 30.0  # ...but its undo took it


def test_a_tasks_error_on_the_cluster_reaches_the_run(client, monkeypatch):
    monkeypatch.setattr(DaskBackend, "send_before_start", False)  # (the watcher's count: above)
    with nf.Workflow("watched-error") as wf:
        boom(make(10, 1.0))
    run = wf.run(backend=client, cache=False, raise_on_error=False)
    err = run.errors()["boom-0"]
    assert isinstance(err, RuntimeError) and str(err) == "boom"
    assert run.backends["dask"]._watcher.completions == 2


def _priorities(keys, dask_scheduler=None):
    return {k: dask_scheduler.tasks[k].priority for k in keys if k in dask_scheduler.tasks}


def test_the_scheduler_orders_a_batch_as_it_orders_any_graph(client):
    # Two chains: sent in submission order they would interleave (the second root goes
    # with the first); Dask's own ordering runs one chain to its end, then the other.
    with nf.Workflow("batched-order") as wf:
        a = [make(100, 1.0)]
        b = [make(100, 2.0)]
        for _ in range(3):
            a.append(inc(a[-1]))
            b.append(inc(b[-1]))
    run = wf.run(backend=client, cache=False)
    assert run.backends["dask"].batch.messages == 1
    dask_key = {k: d for d, k in run.locality.agent.node_of.items()}
    prio = client.run_on_scheduler(_priorities, list(dask_key.values()))
    chain_a = [prio[dask_key[r.key]] for r in a]
    chain_b = [prio[dask_key[r.key]] for r in b]
    assert chain_a == sorted(chain_a) and chain_b == sorted(chain_b)
    assert max(chain_a) < min(chain_b) or max(chain_b) < min(chain_a)


def test_batching_is_used_only_with_the_expression_based_client_call():
    from nbflow.engine.backends import dask_batch

    class Old:  # an older distributed took a graph, not an expression
        def _graph_to_futures(self, dsk, keys, workers=None, allow_other_workers=None,
                              internal_priority=None, user_priority=0, resources=None):
            raise AssertionError("never called")

    class New:
        def _graph_to_futures(self, expr, keys, span_metadata, workers=None,
                              internal_priority=None):
            return {}

    assert not dask_batch.available(Old()) and not dask_batch.available(object())
    assert dask_batch.available(New())
