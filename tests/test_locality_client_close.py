"""A run on the caller's own ``distributed.Client`` reads the workers' transfer logs after it
returns (so the run does not wait for it); closing that client right after the run, as a
``with Client(...)`` block does, waits for that read instead of losing it: the run's
transfers, its journal rows and its memory evidence are all there afterwards."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nbflow as nf
from nbflow import locality
from nbflow.locality.agent import LocalityAgent

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(300)

MB = 1_000_000


@nf.task
def make(n: int):
    return np.ones(n // 8)


@nf.task
def inc(a):
    return a + 1


@pytest.fixture
def slow_read(monkeypatch):
    """The end-of-run read starts only once the test lets it: the client is closed while
    the read has not begun, the interleaving a fast script meets by chance."""
    go = threading.Event()
    read = LocalityAgent._read

    def gated(self, client, keys):
        go.wait(60)
        return read(self, client, keys)

    monkeypatch.setattr(LocalityAgent, "_read", gated)
    return go


def test_closing_the_client_right_after_the_run_waits_for_its_transfer_read(dask_cluster, slow_read):
    from nbflow.store.hooks import stored_transfers

    with nf.Workflow("closed-right-after") as wf:
        x = make(2 * MB)
        for _ in range(2):
            x = inc(x)
    client = distributed.Client(dask_cluster, set_as_default=False)
    with locality.placement("round-robin"):  # (round-robin: every link moves its input)
        run = wf.run(backend=client, cache=False)
    threading.Timer(0.2, slow_read.set).start()  # (the close below must wait for the read)
    client.close()
    t = run.transfers
    assert len(t) == 2 and (t["bytes"] >= 2 * MB).all()
    assert len(stored_transfers(run.id)) == 2
    assert run.locality.agent.memory is not None


def test_a_read_that_finished_leaves_the_clients_close_as_it_was(dask_cluster):
    client = distributed.Client(dask_cluster, set_as_default=False)
    with nf.Workflow("close-untouched") as wf:
        inc(make(1 * MB))
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    assert "close" not in vars(client)  # (the wait is taken off once the read is done)
    client.close()
    assert client.status == "closed"
