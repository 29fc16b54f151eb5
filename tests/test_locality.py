"""The locality room on a real Dask cluster (two worker processes).

Results stay on the workers until asked for; the cache keeps working without bringing them
home; placement hints are sent and honoured; ``run.transfers`` equals what Dask's own
transfer logs say; the report; a worker that dies mid-run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dask_clusters import own_client

import nbflow as nf
from nbflow import locality

distributed = pytest.importorskip("distributed")

MB = 1_000_000


@nf.task
def make(n: int, fill: float = 1.0):
    return np.full(n // 8, fill)


@nf.task
def inc(a):
    return a + 1


@nf.task
def total(*arrays):
    return float(sum(float(a.sum()) for a in arrays))


@nf.task(executor="thread")
def here(a):
    return float(a.sum())  # runs in the notebook process: needs the value itself


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def chain(name: str, n: int = 4, size: int = 2 * MB) -> tuple[nf.Workflow, list[nf.Ref]]:
    with nf.Workflow(name) as wf:
        refs = [make(size)]
        for _ in range(n - 1):
            refs.append(inc(refs[-1]))
    return wf, refs


def run_keys(run: nf.Run) -> set[str]:
    return set(run.locality.agent.node_of)


def outgoing_to_outside(client, keys: set[str]) -> int:
    """Bytes of ``keys`` that workers sent to anything that is not a worker (the client,
    or the scheduler gathering for it), from Dask's own outgoing logs."""
    def log(dask_worker):
        return [(e["who"], dict(e["keys"])) for e in dask_worker.transfer_outgoing_log]

    workers = set(client.scheduler_info()["workers"])
    out = 0
    for entries in client.run(log).values():
        for who, ks in entries:
            if who not in workers:
                out += sum(v for k, v in ks.items() if k in keys)
    return out


def incoming(client, keys: set[str]) -> list[tuple[str, str, str, int]]:
    """(key, from, to, bytes) of every worker-to-worker fetch of ``keys``, from Dask."""
    def log(dask_worker):
        return [(e["who"], dict(e["keys"])) for e in dask_worker.transfer_incoming_log]

    rows = []
    for to, entries in client.run(log).items():
        for who, ks in entries:
            rows += [(k, who, to, v) for k, v in ks.items() if k in keys]
    return sorted(rows)


# -- results stay remote ---------------------------------------------------------------


def test_results_stay_on_the_workers_until_asked_for(client):
    wf, refs = chain("remote-chain", size=2 * MB)
    run = wf.run(backend=client, cache=False)
    keys = run_keys(run)
    assert len(keys) == 4
    report = run.locality_report()
    assert report.bytes_to_client == 0
    assert outgoing_to_outside(client, keys) == 0, "a result came through the client"
    assert run.tasks["output_bytes"].min() >= 2 * MB  # sizes as Dask measured them

    value = run[refs[-1]]  # asked for: now it comes here, once
    assert value.shape == (2 * MB // 8,) and value[0] == 4.0
    assert run.locality_report().bytes_to_client == run.tasks["output_bytes"].iloc[-1]
    assert outgoing_to_outside(client, keys) > 0
    run[refs[-1]]  # asked again: not fetched again
    assert run.locality_report().bytes_to_client == run.tasks["output_bytes"].iloc[-1]


def test_a_thread_task_downstream_gets_the_value(client):
    with nf.Workflow("mixed") as wf:
        a = make(80)
        b = here(inc(a))
    run = wf.run(backend=client, cache=False)
    assert run[b] == 20.0  # 10 elements of 2.0, summed in this process


def test_gather_mode_brings_every_result_home(client):
    wf, refs = chain("gather-chain", size=1 * MB)
    with locality.placement("gather"):
        run = wf.run(backend=client, cache=False)
    assert run.locality_report().bytes_to_client >= 4 * MB
    assert run[refs[-1]][0] == 4.0


def test_temporary_cluster_results_are_still_readable_after_the_run():
    wf, refs = chain("temp-cluster", n=2, size=8 * 100)
    run = wf.run(backend="dask", cache=False)
    assert run[refs[-1]][0] == 2.0  # brought home before the cluster closed


# -- the cache with remote results -------------------------------------------------------


def test_cache_hits_misses_and_early_cutoff_with_remote_results(client):
    def build(v: int) -> tuple[nf.Workflow, nf.Ref]:
        if v == 1:
            @nf.task
            def clean(a):
                return a * 2
        else:
            @nf.task
            def clean(a):  # different code, same result
                return a + a
        with nf.Workflow("cached-remote") as wf:
            out = total(clean(make(1 * MB)))
        return wf, out

    wf, out = build(1)
    first = wf.run(backend=client)
    assert first[out] == 2.0 * (MB // 8)
    assert not first.tasks["cached"].any()
    # stored without the values coming here: the workers hashed and wrote them
    # only total's float (asked for above) came here
    sizes = dict(zip(first.tasks["key"], first.tasks["output_bytes"], strict=False))
    assert first.locality_report().bytes_to_client == sizes["total-0"] < 100
    blobs = list((Path(os.environ["NBFLOW_HOME"]) / "blobs").rglob("*"))
    assert any(p.is_file() and p.stat().st_size >= MB for p in blobs)

    wf, out = build(1)
    second = wf.run(backend=client)
    assert second.tasks["cached"].all()
    assert second[out] == 2.0 * (MB // 8)

    wf, out = build(2)
    third = wf.run(backend=client)
    cached = dict(zip(third.tasks["key"], third.tasks["cached"], strict=False))
    assert cached == {"make-0": True, "clean-0": False, "total-0": True}  # early cutoff
    reasons = {e.key: e.reason for e in third.events if type(e).__name__ == "TaskCompleted"}
    assert "early cutoff" in reasons["total-0"]


def test_cached_inputs_are_scattered_once(client):
    with nf.Workflow("scatter-once") as wf:
        a = make(1 * MB)
    wf.run(backend=client)
    with nf.Workflow("scatter-once") as wf:
        a = make(1 * MB)
        outs = [inc(a) for _ in range(3)]
    run = wf.run(backend=client)
    assert run.tasks.set_index("key").loc["make-0", "cached"]
    assert run.locality.agent.backend.scattered_bytes == MB  # once, not three times
    assert [run[o][0] for o in outs] == [2.0, 2.0, 2.0]


# -- placement -----------------------------------------------------------------------------


def test_placement_keeps_a_chain_with_large_intermediates_on_one_worker(client):
    wf, _refs = chain("placed-chain", n=5, size=4 * MB)
    first = wf.run(backend=client, cache=False)
    # The chain goes to Dask in one go; on a first run the sizes of results not made yet
    # are unknown, so those tasks are left to Dask (which decides once the input exists).
    assert first.locality.agent.unplaced == 4
    run = wf.run(backend=client, cache=False)  # now history predicts every size
    agent = run.locality.agent
    assert min(agent.pred_bytes.values()) >= 4 * MB
    assert agent.hints_sent == 5 and agent.unplaced == 0  # every task got a hint
    assert agent.ahead_hints == 4  # four of them before their input existed
    workers = run.locality_report().tasks["worker"]
    assert workers.nunique() == 1  # ...and Dask honoured them: the data never moved
    assert len(run.transfers) == 0
    assert all(agent.hint_of[k] == agent.worker_of[agent.node_of[k]] for k in agent.hint_of)


def test_round_robin_hints_are_honoured_and_move_the_data(client):
    wf, _refs = chain("rr-chain", n=4, size=2 * MB)
    with locality.placement("round-robin"):
        run = wf.run(backend=client, cache=False)
    agent = run.locality.agent
    ran = [agent.worker_of[k] for k in agent.order]
    assert ran[0] != ran[1] and ran[1] != ran[2]  # alternating, as hinted
    assert [agent.hint_of[d] for d in sorted(agent.hint_of, key=lambda d: agent.order.index(
        agent.node_of[d]))] == ran
    assert len(run.transfers) == 3  # each link of the chain crossed once


def test_fan_in_goes_to_the_heaviest_input(client):
    with nf.Workflow("fan-in") as wf:
        big = make(6 * MB)
        small = make(8 * 100)
        total(big, small)
    run = wf.run(backend=client, cache=False)
    agent = run.locality.agent
    assert agent.worker_of["total-0"] == agent.worker_of["make-0"]


def test_unknown_placement_mode_is_refused():
    with pytest.raises(locality.PlacementError, match="unknown placement 'nearest'"), \
            locality.placement("nearest"):
        pass
    assert issubclass(locality.PlacementError, nf.NbflowError)


# -- transfer accounting -----------------------------------------------------------------


def test_transfers_equal_what_dask_reports(client):
    with nf.Workflow("accounting") as wf:
        a = make(3 * MB)
        b = make(1 * MB, 2.0)
        c = inc(a)
        total(c, b)
    with locality.placement("round-robin"):
        run = wf.run(backend=client, cache=False)
    t = run.transfers
    assert list(t.columns[:6]) == ["producer", "consumer", "from_worker", "to_worker", "bytes",
                                   "seconds"]
    dask_rows = incoming(client, run_keys(run))
    assert dask_rows, "round-robin should have moved something"
    ours = sorted(zip(t["dask_key"], t["from_worker"], t["to_worker"], t["bytes"], strict=False))
    assert ours == dask_rows
    assert (t["seconds"] > 0).all()
    moved = run.locality_report().tasks.set_index("task")["input_bytes_moved"]
    assert moved.sum() == t["bytes"].sum()
    for r in t.itertuples():
        assert r.consumer in ("inc-0", "total-0")
        assert run.locality.agent.worker_of[r.consumer] == r.to_worker


def test_transfers_are_journaled(client):
    from nbflow.store.hooks import stored_transfers

    wf, _ = chain("journaled", n=3, size=1 * MB)
    with locality.placement("round-robin"):
        run = wf.run(backend=client, cache=False)
    # (the client stays open, so the logs are read just after the run returned: reading
    # run.transfers waits for that, and the rows are in the journal from then on)
    t = run.transfers
    rows = stored_transfers(run.id)
    assert len(rows) == len(t) > 0
    assert sorted(r[4] for r in rows) == sorted(t["bytes"])
    # (a fetch whose task Dask then stole to another worker has no consumer: None here, NaN there)
    assert {(r[0], r[1]) for r in rows} == {(p, c if isinstance(c, str) else None)
                                           for p, c in zip(t["producer"], t["consumer"], strict=True)}


def test_a_version_1_store_gains_the_transfers_table(tmp_path):
    import sqlite3

    from nbflow.store import get_store
    from nbflow.store.journal import MIGRATIONS

    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "journal.sqlite")
    for sql in MIGRATIONS[1]:
        db.execute(sql)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    assert get_store(old) is not None
    db = sqlite3.connect(old / "journal.sqlite")
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(transfers)")]
    finally:
        db.close()
    assert cols[:6] == ["run_id", "producer", "consumer", "from_worker", "to_worker", "bytes"]


# -- the report ------------------------------------------------------------------------------


def test_locality_report_headless(client):
    wf, _refs = chain("report-chain", n=3, size=2 * MB)
    with locality.placement("round-robin"):
        run = wf.run(backend=client, cache=False)
    rep = run.locality_report()
    assert rep.bytes_moved == run.transfers["bytes"].sum() > 0
    assert rep.local_share is not None and rep.local_share < 0.5
    text = str(rep)
    assert "moved between workers" in text and "make-0 -> inc-0" in text
    fuse = [s for s in rep.suggestions if "make-0 -> inc-0" in s.what]
    assert fuse and "only consumer" in fuse[0].evidence
    assert fuse[0].saving_bytes == int(run.transfers.set_index("producer").loc["make-0", "bytes"])

    placed = chain("report-chain-2", n=3, size=2 * MB)[0].run(backend=client, cache=False)
    prep = placed.locality_report()
    assert prep.bytes_moved == 0 and prep.local_share == 1.0 and not prep.suggestions


def test_the_live_widget_has_a_locality_tab(client):
    from nbflow.notebook.magics import launch
    from nbflow.notebook.model import RunModel
    from nbflow.notebook.widget import RunWidget

    wf, _ = chain("widget-tab", n=3, size=2 * MB)
    model = RunModel(wf)
    with locality.placement("round-robin"):
        run = launch(wf, {"cache": False, "backend": client}, [model], interactive=False)
    model.run = run
    widget = RunWidget(model, run)
    assert "shown when the run ends" in widget._locality_html() or run.done
    run.wait()
    model.finished.wait(30)
    widget.final()
    assert widget.tabs.titles[-1] == "Locality"
    html = widget.locality.value
    moved = int(run.transfers["bytes"].sum())
    assert f'data-bytes-moved="{moved}"' in html and moved > 0
    assert html.count('class="nbflow-edge"') == len(run.locality_report().edges) == 2
    assert "nbflow-suggestion" in html


def test_report_names_a_big_result_fetched_for_the_notebook(client):
    with nf.Workflow("big-fetch") as wf:
        r = make(12 * MB)
    run = wf.run(backend=client, cache=False)
    run[r]
    rep = run.locality_report()
    assert any("return a summary of make-0" in s.what and "asked for" in s.evidence
               for s in rep.suggestions)


def test_report_of_a_local_run_says_nothing_moved():
    with nf.Workflow("local") as wf:
        inc(make(80))
    run = wf.run()
    assert "no data moved" in str(run.locality_report())
    assert run.transfers.empty and "bytes" in run.transfers.columns


# -- a worker dies -----------------------------------------------------------------------


@pytest.fixture
def fragile_cluster():
    with own_client(processes=True, allowed_failures=1) as c:
        yield c


def die_once(marker: str, a):
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)  # the worker process dies with the task
    return a + 1


def always_die(a):
    os._exit(1)


def test_a_worker_dying_mid_run_retries_elsewhere(fragile_cluster, tmp_path):
    task = nf.task(die_once)
    with nf.Workflow("death") as wf:
        out = inc(task(str(tmp_path / "marker"), make(80)))
    run = wf.run(backend=fragile_cluster, cache=False)
    assert run.status == "completed"
    assert run[out][0] == 3.0
    assert (tmp_path / "marker").exists()  # it really died once
    # Dask recorded that the task was running when its worker died: the report says so.
    [tip] = [s for s in run.locality_report().suggestions if "more memory" in s.what]
    assert "die_once-0" in tip.what and "died or was restarted" in tip.evidence


def test_a_task_that_keeps_killing_workers_fails_clearly(fragile_cluster):
    task = nf.task(always_die)
    with nf.Workflow("deaths") as wf:
        task(make(80))
    run = wf.run(backend=fragile_cluster, cache=False, raise_on_error=False)
    assert run.status == "failed"
    err = run.errors()["always_die-0"]
    assert isinstance(err, nf.WorkerLost)
    assert "died" in str(err) and "allowed-failures" in str(err)
