"""Remote Dask results inside container arguments.

A task that takes a map's whole output (``total(parts)``), or Refs gathered in a list, a
tuple, a dict or a set, receives remote results (values left on the workers) inside a
container.  Each must reach the worker as its value — moved worker to worker by Dask,
never through this process — whatever the container, whether the consumer is a single
task or a batched chunk of a map over those results, with the cache on or off.

Two defects were found this way: a batched chunk whose items took remote results failed
with "Could not serialize object of type LLGExpr" (the items' arguments travelled inside
the chunk's function, out of Dask's sight, so the results' handles were pickled with
their client), and remote results in a set were sent as they were (same error).  Items
of a batched map were also submitted ahead as tasks of their own and then run again in
their chunk.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import nbflow as nf
from nbflow import locality

distributed = pytest.importorskip("distributed")

KB = 1024
N = 70  # more than 64 items: the default (adaptive) batching is on


@nf.task
def load(i: int):
    return np.full(128 * KB // 8, float(i))  # 128 KiB: stays on its worker


@nf.task
def small(i: int) -> int:
    return i * 2


@nf.task
def again(x):
    return x


@nf.task
def total(parts) -> float:
    return float(sum(float(np.sum(p)) for p in parts))


@nf.task
def total_nested(groups) -> float:
    return float(sum(float(np.sum(p)) for g in groups for p in g))


@nf.task
def total_dict(d) -> float:
    return float(sum(float(np.sum(p)) for p in d["parts"]))


@nf.task
def pair_sum(s) -> int:
    return sum(s)


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_gather_at_the_end(monkeypatch):
    # (what is checked here is that the items' values never came to this process; the small
    # named sink's result gathered with the run's end is tests/test_dask_run_end.py's subject)
    monkeypatch.setenv("NBFLOW_DASK_PREFETCH", "0")


def sent_outside(client, keys: set[str]) -> int:
    """Bytes of ``keys`` workers sent to anything but a worker, from Dask's own logs."""
    def log(dask_worker):
        return [(e["who"], dict(e["keys"])) for e in dask_worker.transfer_outgoing_log]

    workers = set(client.scheduler_info()["workers"])
    return sum(v for entries in client.run(log).values() for who, ks in entries
               if who not in workers for k, v in ks.items() if k in keys)


def expected(n: int) -> float:
    return float(sum(i * (128 * KB // 8) for i in range(n)))


@pytest.mark.parametrize("batch", [None, False, 3, True])
@pytest.mark.parametrize("cache", [False, True])
def test_a_collector_over_a_map_of_a_map(client, batch, cache):
    """``total(again.map(load.map(...)))``: the inner map's items are remote results, handed
    to the outer map's chunks; the failing form of the report (batched, large values)."""
    kw = {} if batch is None else {"batch": batch}

    def build():
        with nf.Workflow(f"mapmap-{batch}-{cache}") as wf:
            out = total(again.map(load.map(list(range(N)), **kw), **kw))
        return wf, out

    for _ in range(2 if cache else 1):  # with the cache: the second run is served from it
        wf, out = build()
        with warnings.catch_warnings():  # (the items' inputs were "cannot be hashed")
            warnings.simplefilter("error", nf.NbflowStoreWarning)
            run = wf.run(backend=client, cache=cache)
        assert run.status == "completed"
        if not cache:  # the items' values never came through this process
            assert run.locality_report().bytes_to_client == 0
            assert sent_outside(client, set(run.locality.agent.node_of)) == 0
        assert run[out] == expected(N)
    if cache:  # each outer item was keyed by its input's content hash, taken on the worker
        tasks = run.tasks
        outer = tasks[tasks["key"].str.startswith("again.map-0[")]
        assert len(outer) == N and outer["cached"].all()


@pytest.mark.parametrize("form", ["list", "tuple", "dict", "nested"])
@pytest.mark.parametrize("batch", [None, 3])
def test_a_map_output_inside_a_container(client, form, batch):
    kw = {} if batch is None else {"batch": batch}
    with nf.Workflow(f"container-{form}-{batch}") as wf:
        parts = load.map(list(range(N)), **kw)
        if form == "list":
            out = total(parts)
        elif form == "tuple":
            out = total_nested((parts,))
        elif form == "dict":
            out = total_dict({"parts": parts})
        else:
            out = total_nested([parts, again.map(parts, **kw)])
    run = wf.run(backend=client, cache=False)
    assert run.locality_report().bytes_to_client == 0
    factor = 2 if form == "nested" else 1
    assert run[out] == factor * expected(N)


@pytest.mark.parametrize("cache", [False, True])
def test_remote_results_in_a_set(client, cache):
    with nf.Workflow(f"set-{cache}") as wf:
        out = pair_sum({small(1), small(2), small(3)})
    run = wf.run(backend=client, cache=cache)
    assert run[out] == 12


@pytest.mark.parametrize("batch", [None, True, 4])
def test_batched_items_taking_sets_of_remote_results(client, batch):
    kw = {} if batch is None else {"batch": batch}
    with nf.Workflow(f"setmap-{batch}") as wf:
        out = again(pair_sum.map([{small(i), small(i + 100)} for i in range(N)], **kw))
    run = wf.run(backend=client, cache=False)
    assert run[out] == [2 * i + 2 * (i + 100) for i in range(N)]


@nf.task
def noted(x: int, folder: str) -> int:
    Path(folder, f"{x}-{os.getpid()}-{os.urandom(4).hex()}").write_text("ran")
    return x + 1


@pytest.mark.parametrize("keep", ["all", "unconsumed"])
def test_each_batched_item_runs_once(client, tmp_path, keep):
    """Items of a batched map whose inputs are in flight run in their chunk only (they were
    also submitted ahead as tasks of their own, so ran twice)."""
    folder = tmp_path / "calls"
    folder.mkdir()
    with nf.Workflow(f"once-{keep}") as wf:
        out = total(noted.map([small(i) for i in range(N)], folder=str(folder), batch=True))
    with locality.placement(keep=keep):
        run = wf.run(backend=client, cache=False)
    assert run[out] == float(sum(2 * i + 1 for i in range(N)))
    ran = sorted(int(p.name.split("-")[0]) for p in folder.iterdir())
    assert ran == [2 * i for i in range(N)]
