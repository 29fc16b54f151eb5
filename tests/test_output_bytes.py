"""``output_bytes`` is one measure on every path: a result's size in memory as Dask counts it.

On Dask a computed result's size is Dask's ``sizeof`` of the value on its worker; a cache
hit's was the stored (serialised) blob's size, and an item of a batched chunk that came back
inside its chunk's outline had the cache's serialised size or none, so ``run.tasks``, the
journal and the history that predicts sizes for placement and ``nf.plan`` mixed two
measures (416 B and 73 B for one small list).  Here a hit, a computed result and a batched
item of the same value carry the same figure, on Dask and off it (``nbflow.core.sizes``).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import nbflow as nf

KB = 1024


@nf.task
def small_list(n: int) -> list[int]:
    return list(range(n))


@nf.task
def big_array(n: int) -> np.ndarray:
    return np.zeros(n // 8)  # (float64: n bytes)


@nf.task
def payload(n: int) -> bytes:
    return b"x" * n


@nf.task
def number(n: int) -> int:
    return n * 1000


def _sizes(run) -> dict[str, object]:
    t = run.tasks.set_index("key")
    return {k: (None if pd.isna(v) else int(v)) for k, v in t["output_bytes"].items()}


def _cached(run) -> set[str]:
    t = run.tasks
    return set(t.loc[t["cached"], "key"])


@pytest.fixture(scope="module")
def client(dask_cluster):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _dask_workflow():
    with nf.Workflow("output-bytes-dask") as wf:
        one = small_list(5)
        items = small_list.map([3, 4, 6], batch=3)  # (small items: back with the outline)
        big = big_array.map([256 * KB, 512 * KB], batch=2)  # (large items: left remote)
        single_big = big_array(128 * KB)
    return wf, one, items, big, single_big


def test_on_dask_a_cache_hit_a_computed_result_and_batched_items_share_one_measure(client):
    from dask.sizeof import sizeof

    wf, one, _, _, single_big = _dask_workflow()
    first = wf.run(backend=client)
    computed = _sizes(first)
    assert not _cached(first)
    # the measure is Dask's own sizeof of the value, whichever way the result came
    assert computed[one.key] == sizeof(list(range(5)))
    for n, key in zip([3, 4, 6], ["small_list-1", "small_list-2", "small_list-3"], strict=True):
        assert computed[key] == sizeof(list(range(n))), key  # (the map's items)
    assert computed[single_big.key] == sizeof(np.zeros(128 * KB // 8))

    wf, *_ = _dask_workflow()
    second = wf.run(backend=client)
    hits = _sizes(second)
    tasks = sorted(_cached(second))
    assert len(tasks) == 7, second.tasks  # every task hit (the maps' lists are collected)
    for key in tasks:  # a hit's output_bytes is Dask's sizeof of the value, as computed:
        if key.startswith("big_array"):
            assert hits[key] == computed[key], key  # exactly, for an array
        else:  # a list loaded from the store keeps the spare capacity its unpickling left,
            # which Dask's sizeof counts (its stored size was a fraction of the figure)
            assert computed[key] <= hits[key] <= 1.25 * computed[key], (key, hits, computed)
    # and what the journal keeps for each attempt is what the run said
    stored = nf.history()
    for run, want in ((first, computed), (second, hits)):
        rows = stored[stored["run_id"] == run.id].set_index("key")["output_bytes"]
        for key in tasks:
            assert int(rows[key]) == want[key], (run.id, key)


@pytest.mark.parametrize("backend", ["local", "process"])
def test_off_dask_a_hit_and_a_computed_result_agree_and_no_serialised_size_is_given(backend):
    def build():
        with nf.Workflow(f"output-bytes-{backend}") as wf:
            raw = payload(1000)
            arr = big_array(64 * KB)
            lst = small_list(5)
            num = number(7)
            payload.map([10, 20], batch=2)  # (its items: payload-1, payload-2)
        return wf, raw, arr, lst, num

    wf, raw, arr, lst, num = build()
    first = wf.run(backend=backend)
    computed = _sizes(first)
    # Dask's own figures, without Dask: the bytes' length (not their pickle's), the array's
    # nbytes, the int's sys.getsizeof (what Dask's sizeof gives for them)
    assert computed[raw.key] == 1000
    assert computed[arr.key] == 64 * KB
    assert computed[num.key] == sys.getsizeof(7000)
    # a list by Dask's rule for it (test_output_bytes_collections), not a pickled size: of
    # the list the run holds (from a process, as unpickled here: its spare capacity counts)
    assert computed[lst.key] == pytest.importorskip("dask.sizeof").sizeof(first[lst])
    assert [computed["payload-1"], computed["payload-2"]] == [10, 20]  # (the map's items)
    wf, raw, arr, lst, num = build()
    second = wf.run(backend=backend)
    assert {raw.key, arr.key, lst.key, num.key, "payload-1", "payload-2"} <= _cached(second)
    hits = _sizes(second)
    # a list loaded from the store keeps the spare capacity its unpickling left, which
    # Dask's rule counts (as on Dask, above); everything else exactly
    assert computed[lst.key] <= hits.pop(lst.key) <= 1.25 * computed.pop(lst.key)
    assert hits == computed
