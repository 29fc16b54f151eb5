"""On Dask the task itself hashes and stores its result for the cache, on its worker.

Asking a worker to hash a finished result is one more Dask task and one more round trip
per task, on the path of every lookup downstream.  So a cached run's tasks are submitted
with the cache's work attached (``engine/backends/dask_cache.py``): the worker hashes the
value, writes its blob when it sees the store's disk, and the facts come back with the
result.  These tests count the round trips the cache still makes (none), check that what
was stored is what a hit serves, that ``cache=False`` results still never reach the disk,
and that a worker that does not see the store's directory leaves the storing to the old
path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nbflow as nf
from nbflow.engine.backends.dask import DaskResult
from nbflow.store.cache import RunCache

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(600)

KB = 1024


@nf.task
def root(seed: float):
    return np.full(64 * KB // 8, seed)  # 64 KiB: above the inline size, a blob file


@nf.task
def step(a):
    return a + 1.0


@nf.task(cache=False)
def secret(a):
    return a * 7.0  # never stored: its blob must not appear on disk


@nf.task
def small(a) -> float:
    return float(a[0])


def build(seed: float, with_secret: bool = False) -> tuple[Any, Any]:
    with nf.Workflow("in-task") as wf:
        x = root(seed)
        for _ in range(4):
            x = step(x)
        if with_secret:
            x = step(secret(x))
        out = small(x)
    return wf, out


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def round_trips(monkeypatch):
    """Counts the cache's calls on a result's worker after its task ended."""
    calls: list[str] = []
    on_worker = DaskResult.on_worker

    def counted(self: DaskResult, fn: Any, *args: Any) -> Any:
        calls.append(self.key)
        return on_worker(self, fn, *args)

    monkeypatch.setattr(DaskResult, "on_worker", counted)
    return calls


def blob_files() -> list[Path]:
    home = Path(os.environ["NBFLOW_HOME"])
    return sorted(p for p in (home / "blobs").rglob("*") if p.is_file())


def test_no_round_trip_to_the_worker_and_every_result_is_stored(client, round_trips):
    wf, out = build(1.0)
    run = wf.run(backend=client)
    assert run[out] == 5.0
    assert round_trips == []  # hashed and written by the tasks themselves
    assert run.backends["dask"].in_task.wrapped == 6
    stored = blob_files()
    assert len(stored) == 5  # the five arrays (the float is inline in the journal)
    wf, out = build(1.0)
    again = wf.run(backend=client)
    assert again.tasks["cached"].all() and again[out] == 5.0  # served from those blobs
    wf, out = build(1.5)  # a new root value: every task runs, still without a round trip
    third = wf.run(backend=client)
    assert not third.tasks["cached"].any() and third[out] == 5.5
    assert round_trips == []


def test_switched_off_the_cache_asks_each_worker(client, round_trips, monkeypatch):
    monkeypatch.setenv("NBFLOW_DASK_IN_TASK", "0")
    wf, out = build(3.0)
    run = wf.run(backend=client)
    assert run[out] == 7.0
    assert run.backends["dask"].in_task is None
    assert len(round_trips) == 6  # one per task: what the in-task work saves


def test_uncached_results_never_reach_the_disk(client, round_trips):
    wf, out = build(4.0, with_secret=True)
    run = wf.run(backend=client)
    assert run[out] == float((4.0 + 4) * 7.0 + 1)
    sizes = {p.stat().st_size for p in blob_files()}
    assert len(blob_files()) == 6  # root, 4 steps, the step after secret; not secret's
    secret_value = np.full(64 * KB // 8, (4.0 + 4) * 7.0)
    for p in blob_files():  # (no stored blob holds secret's value)
        assert secret_value.tobytes() not in p.read_bytes()
    assert sizes
    assert round_trips == []


def test_a_worker_that_does_not_see_the_store_leaves_storing_to_the_cache(client, round_trips,
                                                                           monkeypatch):
    # The workers compare the blob directory they see with the one named: make them differ.
    monkeypatch.setattr(RunCache, "_root_ident", lambda self: (0, 0))
    wf, out = build(5.0)
    run = wf.run(backend=client)
    assert run[out] == 9.0
    assert len(round_trips) == 6  # stored the old way, after each task
    wf, out = build(5.0)
    again = wf.run(backend=client)
    assert again.tasks["cached"].all()


@nf.task
def item(i: int):
    return np.full(128 * KB // 8, float(i))  # 128 KiB: each item's result stays on its worker


@nf.task
def first_values(parts) -> list:
    return [float(p[0]) for p in parts]


@pytest.mark.parametrize("in_task", ["1", "0"])
def test_batched_items_are_hashed_and_stored_next_to_their_chunk(client, round_trips, monkeypatch,
                                                                  in_task):
    monkeypatch.setenv("NBFLOW_DASK_IN_TASK", in_task)

    def build_map() -> tuple[Any, Any]:
        with nf.Workflow("in-task-chunks") as wf:
            out = first_values(item.map(range(12), batch=4))
        return wf, out

    wf, out = build_map()
    run = wf.run(backend=client)
    assert run[out] == [float(i) for i in range(12)]
    items = [k for k in round_trips if k.startswith("item-")]
    assert len(items) == (0 if in_task == "1" else 12)  # one round trip per item, or none
    assert len(blob_files()) == 12
    wf, out = build_map()
    again = wf.run(backend=client)
    tasks = again.tasks[again.tasks["reason"].notna()]  # (the map's collecting node is no task)
    assert len(tasks) == 13 and tasks["cached"].all()
    assert again[out] == [float(i) for i in range(12)]
