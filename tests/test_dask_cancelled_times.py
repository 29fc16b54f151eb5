"""A cancelled Dask attempt is timed where it ran, or not at all.

The engine's own start of a Dask task is when it sent the task to the cluster, not when the
task ran: a completed or failed attempt records its worker's start and end instead
(``test_dask_attempt_times``).  A cancelled one kept the engine's times: a start when it
was sent, an end and a duration up to the cancel, though the cluster may never have run
it.  Now a cancelled Dask attempt has a start, an end and a duration from its worker
when the cluster told the run that it ran, and no start and no duration when it did not.
Here the cluster's only threads are held, so the task cannot start: no timing.
"""

from __future__ import annotations

import threading
import time

import anyio
import pandas as pd
import pytest
from test_dask_attempt_times import Held, _journal, _running

import nbflow as nf

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@nf.task
def quick(x: int) -> int:
    return x


def test_a_dask_task_cancelled_before_its_worker_ran_it_has_no_start(client):
    held = Held(client)
    with nf.Workflow("cancelled-unrun") as wf:
        r = quick(1)
    run = wf.start(backend=client, cache=False)
    try:
        assert _running(run, [r.key])  # the engine sent it: the cluster cannot start it
        run.cancel()
        run.wait(raise_on_error=False)
    finally:
        held.release()
    assert run.status == "cancelled"
    row = run.tasks.set_index("key").loc[r.key]
    assert row["state"] == "cancelled" and row["attempts"] == 1
    assert pd.isna(row["start"]), row  # it never ran: no start, no duration
    assert pd.isna(row["duration_s"]), row
    assert pd.notna(row["end"])  # (the attempt ended as it was cancelled)
    (stored,) = _journal(run).loc[lambda h: h["key"] == r.key].itertuples()
    assert stored.state == "cancelled" and stored.attempt == 1
    assert pd.isna(stored.start) and pd.isna(stored.duration_s), stored


GATE_IN = threading.Event()  # lets hold_loop block the run's event loop
BLOCKING = threading.Event()  # hold_loop is blocking it
GATE_OUT = threading.Event()  # lets it go


@nf.task
async def hold_loop() -> int:
    """An async task (on the run's own event loop) that blocks that loop, on purpose, from
    the moment the test lets it until the test lets it go: what is handed to the loop
    meanwhile (a cancel, then a completion) is taken in that order once it is free."""
    await anyio.to_thread.run_sync(GATE_IN.wait, 120)
    BLOCKING.set()
    GATE_OUT.wait(120)
    return 0


def _on_scheduler(client) -> set[str]:
    """The keys of the tasks on the cluster's scheduler."""
    def keys(dask_scheduler) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks]

    return set(client.run_on_scheduler(keys))


def _poll(check, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_dask_task_cancelled_after_its_worker_ran_it_has_its_workers_times(client):
    """The run is cancelled after its task ran on the cluster and the cluster said so, but
    before the engine took the completion in: the attempt is cancelled, and recorded with
    the times its worker ran it, as a finished attempt is.  The run's loop is held (by a
    task of the run itself) while the cancel, then the completion, are handed to it, so
    it takes them in that order."""
    for gate in (GATE_IN, BLOCKING, GATE_OUT):
        gate.clear()
    held = Held(client)
    with nf.Workflow("cancelled-after-it-ran") as wf:
        r = quick(2)
        hold_loop()
    before = _on_scheduler(client)  # (an earlier run's task of the same name is not this one)
    run = wf.start(backend=client, cache=False)
    try:
        # sent (held: it cannot start), before the run's loop is blocked
        assert _poll(lambda: any(k.startswith(f"{r.key}-") for k in _on_scheduler(client) - before))
        GATE_IN.set()
        assert BLOCKING.wait(120)  # the run's loop takes in nothing from here
        run.cancel()  # (handed to the loop: first in line)
        released = held.release()  # the task runs now, after this moment
        told = run.backends["dask"]._located
        assert _poll(lambda: any(k.startswith(f"{r.key}-") for k in list(told)))  # and the cluster said so
    finally:
        GATE_IN.set()
        GATE_OUT.set()
        distributed.Event(held.name, client=client).set()
    run.wait(raise_on_error=False)
    assert run.status == "cancelled"
    row = run.tasks.set_index("key").loc[r.key]
    assert row["state"] == "cancelled" and row["attempts"] == 1
    assert row["start"].timestamp() >= released, row  # when its worker ran it
    assert row["end"] >= row["start"]
    assert row["duration_s"] == pytest.approx((row["end"] - row["start"]).total_seconds(), abs=1e-6)
    (stored,) = _journal(run).loc[lambda h: h["key"] == r.key].itertuples()
    assert stored.state == "cancelled"
    assert stored.start.timestamp() >= released, stored
    assert stored.duration_s == pytest.approx((stored.end - stored.start).total_seconds(), abs=1e-3)
