"""Batched map items on Dask keep their results on the workers.

A chunk of map items is one Dask task; its items' large results must stay on the worker
as results of their own (each item a future the next task is sent), come to this process
only when asked for, and each item's result, failure and cache entry must be what it is
without batching.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbflow as nf
from nbflow.engine.backends import dask_chunks

distributed = pytest.importorskip("distributed")

KB = 1024
ITEMS = 24


@nf.task
def block(i: int):
    if i % 7 == 3:
        raise ValueError(f"item {i} is bad")
    return np.full(256 * KB // 8, float(i))  # 256 KiB: stays on its worker


@nf.task
def small(i: int) -> int:
    return i * 10


@nf.task
def total(parts) -> float:
    return float(sum(float(p[0]) for p in parts))


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
    """Bytes of ``keys`` that workers sent to anything but a worker (the client, or the
    scheduler gathering for it), from Dask's own outgoing logs."""
    def log(dask_worker):
        return [(e["who"], dict(e["keys"])) for e in dask_worker.transfer_outgoing_log]

    workers = set(client.scheduler_info()["workers"])
    return sum(v for entries in client.run(log).values() for who, ks in entries
               if who not in workers for k, v in ks.items() if k in keys)


def held_by_workers(client) -> set[str]:
    return {k for keys in client.run(lambda dask_worker: list(dask_worker.data)).values()
            for k in keys}


def item_keys(run) -> dict[str, str]:
    """Task key -> Dask key of every item result the run holds remotely."""
    return {task: dk for dk, task in run.locality.agent.node_of.items()
            if task.startswith("block-") and "+" not in task}


def test_chunk_items_stay_on_the_workers_and_downstream_gets_futures(client, monkeypatch):
    calls = []
    split = dask_chunks.split

    async def counting(backend, chunk, keys):
        calls.append(len(keys))
        return await split(backend, chunk, keys)

    monkeypatch.setattr(dask_chunks, "split", counting)
    with nf.Workflow("chunks-remote") as wf:
        parts = block.map(range(ITEMS), batch=6, on_error="skip")
        s = total(parts)
    run = wf.run(backend=client, cache=False)
    good = [i for i in range(ITEMS) if i % 7 != 3]
    assert calls and sum(calls) == ITEMS  # every item went through a chunk
    assert max(calls) > 1
    remote = item_keys(run)
    assert len(remote) == len(good)  # each good item: a result of its own on a worker
    held = held_by_workers(client)
    assert set(remote.values()) <= held  # Dask's workers hold them
    report = run.locality_report()
    assert report.bytes_to_client == 0  # nothing came here: the sum ran on the cluster
    assert sent_outside(client, set(run.locality.agent.node_of)) == 0
    assert run[s] == float(sum(good))
    assert sorted(run.errors()) == sorted(f"block-{i}" for i in range(ITEMS) if i % 7 == 3)
    assert isinstance(run.errors()["block-3"], ValueError)
    assert run.tasks.set_index("key").loc[f"block-{good[0]}", "output_bytes"] >= 256 * KB

    values = run[parts]  # asked for: now they come here
    assert [float(v[0]) for v in values] == [float(i) for i in good]
    assert run.locality_report().bytes_to_client >= len(good) * 256 * KB


def test_small_chunk_items_come_back_with_the_outline(client):
    with nf.Workflow("chunks-small") as wf:
        out = small.map(range(30), batch=10)
    run = wf.run(backend=client, cache=False)
    assert run[out] == [i * 10 for i in range(30)]
    assert not [t for t in run.locality.agent.node_of.values() if t.startswith("small-")
                and "+" not in t]  # no future per small item


def test_chunk_items_are_cached_each(client):
    def build():
        with nf.Workflow("chunks-cache") as wf:
            parts = block.map(range(12), batch=4, on_error="skip")
            s = total(parts)
        return wf, parts, s

    wf, parts, s = build()
    with warnings.catch_warnings():  # the map's list of remote results is hashed by its parts
        warnings.simplefilter("error", nf.NbflowStoreWarning)
        first = wf.run(backend=client)
    good = [i for i in range(12) if i % 7 != 3]
    assert first[s] == float(sum(good))
    wf, parts, s = build()
    second = wf.run(backend=client)
    tasks = second.tasks.set_index("key")
    assert tasks.loc[[f"block-{i}" for i in good], "cached"].all()
    # The task taking the map's whole list was keyed on the first run from its items'
    # hashes, taken on the workers; on this run its items came from the cache as values
    # here, and the list hashes the same (it once did not, and ran once more).
    assert tasks.loc[s.key, "cached"], second.explain(s)
    wf3, _, s3 = build()
    third = wf3.run(backend=client)
    assert third.tasks.set_index("key").loc[s3.key, "cached"]
    assert second[s] == float(sum(good))
    assert [float(v[0]) for v in second[parts]] == [float(i) for i in good]
