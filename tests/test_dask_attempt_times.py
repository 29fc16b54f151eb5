"""A failed Dask attempt, and the items of a batched chunk, are timed where they ran.

A successful Dask task records when its call ran on its worker (``Remote.ran``,
``TaskCompleted.started``).  A failed attempt, retried or final, kept the engine's own
times (when it submitted the task, when it heard of the failure), and so did every item of
a batched chunk: a task queued behind others on the cluster seemed to start when it was
sent.  Here the cluster's only threads are held until a moment the test notes; whatever
then runs cannot have started before it, on the worker, in the records and in the journal.
No durations are compared: only what happened before what.
"""

from __future__ import annotations

import time
import uuid

import pandas as pd
import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _hold(name: str, k: int) -> None:
    """A plain Dask task that keeps its worker's one thread until ``name`` is set."""
    from distributed import Event

    Event(f"{name}-in-{k}").set()
    Event(name).wait(300)


class Held:
    """Both workers' threads taken by a plain Dask task each, until :meth:`release`."""

    def __init__(self, client) -> None:
        self.name = f"hold-{uuid.uuid4().hex[:8]}"
        workers = sorted(client.scheduler_info()["workers"])
        self.futures = [client.submit(_hold, self.name, k, workers=[w], pure=False)
                        for k, w in enumerate(workers)]
        for k in range(len(workers)):
            assert distributed.Event(f"{self.name}-in-{k}", client=client).wait(120)
        self.client = client

    def release(self) -> float:
        """Let the held threads go; returns the moment just before (this process's clock)."""
        t = time.time()
        distributed.Event(self.name, client=self.client).set()
        for f in self.futures:
            f.result(timeout=120)
        return t


def _running(run, keys: list[str], timeout: float = 120.0) -> bool:
    """Poll until the engine has started every one of ``keys`` (sent them to the cluster)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = run.tasks.set_index("key")
        if all(t.loc[k, "state"] != "pending" and t.loc[k, "state"] != "ready" for k in keys):
            return True
        time.sleep(0.02)
    return False


@nf.task(retries=1, retry_delay=0.01)
def flaky(n: int) -> int:
    raise ValueError(f"no {n}")


@nf.task
def item(i: int) -> int:
    if i == 2:
        raise ValueError("item 2 is bad")
    return i


def _journal(run) -> pd.DataFrame:
    h = nf.history()
    return h[h["run_id"] == run.id]


def test_a_failed_dask_attempt_is_timed_on_its_worker(client):
    held = Held(client)
    with nf.Workflow("failed-times") as wf:
        f = flaky(1)
    run = wf.start(backend=client, cache=False)
    try:
        assert _running(run, [f.key])  # the engine sent it: its own start is now
        released = held.release()  # ... and the worker could start it only after this
    finally:
        distributed.Event(held.name, client=client).set()
    run.wait(raise_on_error=False)
    rows = _journal(run)
    rows = rows[rows["key"] == f.key].sort_values("attempt")
    assert list(rows["state"]) == ["retried", "failed"]
    for r in rows.itertuples():  # each attempt, retried or final, as its worker ran it
        assert r.start.timestamp() >= released, r  # (the first was sent before: the engine's
        assert r.end >= r.start  # own start of it came before `released`)
    row = run.tasks.set_index("key").loc[f.key]
    assert row["state"] == "failed" and row["attempts"] == 2
    assert row["start"].timestamp() >= released  # the last attempt: when it ran there
    # (its duration is that span, as a successful Dask task's)
    assert row["duration_s"] == pytest.approx((row["end"] - row["start"]).total_seconds(), abs=1e-6)


def test_a_batched_chunks_items_carry_the_chunks_worker_times(client):
    held = Held(client)
    with nf.Workflow("chunk-times") as wf:
        out = item.map(range(5), batch=5, on_error="skip")
    run = wf.start(backend=client, cache=False)
    keys = [f"item-{i}" for i in range(5)]
    try:
        assert _running(run, keys)
        released = held.release()
    finally:
        distributed.Event(held.name, client=client).set()
    run.wait(raise_on_error=False)
    assert run[out] == [0, 1, 3, 4]
    t = run.tasks.set_index("key").loc[keys]
    assert list(t["state"]) == ["completed", "completed", "failed", "completed", "completed"]
    # one call ran them all: each item, failed or not, has the chunk's start and end there
    assert t["start"].nunique() == 1 and t["end"].nunique() == 1
    assert t["start"].iloc[0].timestamp() >= released
    rows = _journal(run).set_index("key").loc[keys]
    assert (rows["start"].map(lambda s: s.timestamp()) >= released).all()
    assert rows["start"].nunique() == 1 and rows["end"].nunique() == 1

