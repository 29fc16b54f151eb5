"""Re-runs on a real Dask cluster hit the cache: every task, from the second run on.

On Dask a task's result stays on its worker and the cache hashes it there; on a re-run the
same results come from the cache as values in this process.  A task taking a map's whole
list (tolerant or not, batched or not), Refs in a container, a task's list result or a
``first`` must get the same key either way, and the same on the threaded backend, or the
first re-run where nothing changed misses ("input parts changed") and runs the task again.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(600)

KB = 1024


@nf.task
def block(i: int):
    if i % 7 == 3:
        raise ValueError(f"item {i} is bad")
    # odd items are large (they stay on their worker), even ones small (a chunk sends them
    # back with its outline): a chunk's list mixes remote results and values
    return np.full((256 if i % 2 else 1) * KB // 8, float(i))


@nf.task
def total(parts) -> float:
    if isinstance(parts, dict):
        parts = list(parts.values())
    return float(sum(float(np.sum(p)) for p in parts))


@nf.task
def pieces(n: int) -> list:
    return [np.full(128 * KB // 8, float(k)) for k in range(n)]


@nf.task
def again(x):
    return x


@nf.task
def scalar(i: int) -> int:
    return i * 3


@nf.task
def count(s) -> int:
    return len(s)


def build(name: str) -> tuple[Any, dict[str, Any]]:
    """Every form in which one task's input is assembled from other results."""
    with nf.Workflow(name) as wf:
        outs = {
            "tolerant batched map": total(block.map(range(14), batch=4, on_error="skip")),
            "tolerant map": total(block.map(range(20, 28), batch=False, on_error="skip")),
            "map": total(block.map([1, 2, 4, 5])),
            "gather": total(nf.gather(block(9), block(3), block(8), min_success=1)),
            "list result": total(pieces(3)),
            "map of a map": total(again.map(block.map([11, 12, 13]))),
            "refs in a tuple": total((block(15), block(16))),
            "refs in a dict": total({"a": block(18), "b": block(19)}),
            "refs in a set": count({scalar(1), scalar(2), scalar(3)}),
            "first": total([nf.first(block(29), block(30))]),
        }
    return wf, outs


def run_once(name: str, backend: Any) -> Any:
    wf, outs = build(name)
    with warnings.catch_warnings():  # no input may be "cannot be hashed"
        warnings.simplefilter("error", nf.NbflowStoreWarning)
        run = wf.run(backend=backend, raise_on_error=False)
    assert run.status == "completed", run.errors()
    return run, outs


def misses(run: Any) -> list[str]:
    """Tasks that computed (rather than being served from the cache), with the reason;
    items that fail every time have no result to serve and are left out."""
    t = run.tasks
    done = t[(t["state"] == "completed") & t["reason"].notna()]
    return [f"{k}: {r}" for k, c, r in zip(done["key"], done["cached"], done["reason"], strict=True)
            if not c]


def assert_all_hits(run: Any, outs: dict[str, Any]) -> None:
    assert misses(run) == []
    stored = nf.load_run(run.id)  # what `nbflow explain RUN TASK` prints
    for what, ref in outs.items():
        live = run.explain(ref)
        assert live.cached and "cache hit" in live.text, (what, live.text)
        told = stored.explain(ref.key)
        assert told.cached and "cache hit" in told.text, (what, told.text)


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def test_three_runs_on_dask_hit_from_the_second(client):
    first, outs = run_once("dask-thrice", client)
    assert len(misses(first)) > 0  # (it computed everything)
    values = {k: first[r] for k, r in outs.items()}
    for _ in range(2):
        run, outs = run_once("dask-thrice", client)
        assert_all_hits(run, outs)
        assert {k: run[r] for k, r in outs.items()} == values


@pytest.mark.parametrize("order", ["threads, then dask", "dask, then threads"])
def test_keys_are_the_same_on_the_threaded_backend_and_on_dask(client, order):
    backends = ["local", client] if order.startswith("threads") else [client, "local"]
    first, outs = run_once("across", backends[0])
    values = {k: first[r] for k, r in outs.items()}
    for _ in range(2):
        run, outs = run_once("across", backends[1])
        assert_all_hits(run, outs)
        assert {k: run[r] for k, r in outs.items()} == values
