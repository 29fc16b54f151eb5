"""A Dask run's first graph goes to Dask's client in the loop turn that starts its first task.

Until the first graph is in Dask's client the cluster has nothing to do.  The backend
used to send it at the end of the run's loop turn (``_flush_soon``: every task the engine
starts in a turn goes in one message), one more turn of the loop, whose ``select`` lets go
of the GIL.  When the first submission took every ready task of the backend with it
(``Ahead.every_ready_sent``), nothing else can join that message, and it is sent at once;
otherwise it still waits for the turn's end.  What is checked is the order of things and
the messages sent, never how long anything took.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.engine.backends.dask import DaskBackend
from nbflow.workflow import prepare, run_options

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _watch(monkeypatch: pytest.MonkeyPatch, client: Any, run: Any, order: list[str]) -> None:
    """Append "call" as the run's Dask backend is first called, "turn" at each turn of the
    run's own loop from then on, and "graph" as a graph is handed to Dask's client."""
    backend = run.backends["dask"]
    call, queue = DaskBackend.call, type(client)._send_to_scheduler
    run_once = asyncio.BaseEventLoop._run_once  # type: ignore[attr-defined]
    mine: list[int] = []

    async def called(self: Any, *a: Any, **k: Any) -> Any:
        if self is backend and not mine:
            mine.append(threading.get_ident())
            order.append("call")
        return await call(self, *a, **k)

    def turn(self: Any) -> None:
        if mine and threading.get_ident() == mine[0]:
            order.append("turn")
        run_once(self)

    def queued(self: Any, msg: Any) -> Any:
        if isinstance(msg, dict) and msg.get("op") == "update-graph":
            order.append("graph")
        return queue(self, msg)

    monkeypatch.setattr(DaskBackend, "call", called)
    monkeypatch.setattr(asyncio.BaseEventLoop, "_run_once", turn)
    monkeypatch.setattr(type(client), "_send_to_scheduler", queued)


def test_the_first_graph_goes_in_the_turn_that_starts_the_first_task(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with nf.Workflow("first-graph-at-once") as wf:
        root = make(80_000)
        end = total(*[inc(root) for _ in range(4)])
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _watch(monkeypatch, client, run, order)
    run.start_in_thread()
    run.wait()
    assert run[end] == 4 * (80_000 // 8) * 2
    batch = run.backends["dask"].batch
    assert batch is not None and batch.messages == 1 and batch.tasks == len(wf.nodes)
    assert "call" in order and "graph" in order, order
    first = order[order.index("call"):order.index("graph")]
    assert "turn" not in first, f"the run's loop turned before its first graph went: {order[:8]}"
    assert run.backends["dask"].ahead.every_ready_sent


def test_switched_off_the_first_graph_waits_for_the_end_of_the_turn(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """(What the test above would see before the change; the switch benchmarks use.)"""
    monkeypatch.setattr(DaskBackend, "first_graph_at_once", False)
    with nf.Workflow("first-graph-at-turns-end") as wf:
        end = total(inc(make(80_000)))
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _watch(monkeypatch, client, run, order)
    run.start_in_thread()
    run.wait()
    assert run[end] == 80_000 // 8 * 2
    assert "turn" in order[order.index("call"):order.index("graph")], order


def test_a_ready_task_that_cannot_go_ahead_still_shares_the_first_message(client: Any) -> None:
    """Declared resources keep a task from going ahead (the engine admits it): ready at the
    start, it is started in the turn after the first task's, and joins the first graph,
    which waits for that turn's end: one message, not two (Dask's client writes a second
    no sooner than 10 ms after the first)."""
    hungry = nf.task(resources={"memory": 1e6})(_ones)
    with nf.Workflow("first-graph-waits-for-the-turn") as wf:
        a = inc(inc(make(800)))  # (the longer path: started first)
        b = hungry(800)
    run = wf.run(backend=client, cache=False, resources={"memory": 1e9})
    assert run[a][0] == 3.0 and run[b][0] == 1.0
    backend = run.backends["dask"]
    assert backend.ahead is not None and not backend.ahead.every_ready_sent
    assert backend.batch is not None
    assert (backend.batch.messages, backend.batch.tasks) == (1, len(wf.nodes))


def _ones(n: int) -> Any:
    import numpy as np

    return np.ones(n // 8)
