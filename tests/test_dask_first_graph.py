"""A Dask run's first graph goes to Dask's client before the run's thread starts, or else in
the loop turn that starts its first task.

Until the first graph is in Dask's client the cluster has nothing to do.  When the backend
can open without a round trip (a client an earlier run used) and every task with no input
can go ahead, the caller sends them and everything that goes ahead with them before it
starts the run's thread (``DaskBackend.send_first_graph``); the engine adopts them as it
starts them.  With the scheduler in this process, the engine starts once the cluster
tells of the run's first task, a bounded wait that a cancel ends (``Run._in_thread``).
Otherwise the run's thread sends it: it used to at the end of the loop's
turn (``_flush_soon``: every task the engine starts in a turn goes in one message), one
more turn of the loop, whose ``select`` lets go of the GIL.  When the first submission took
every ready task of the backend with it (``Ahead.every_ready_sent``), nothing else can
join that message, and it is sent at once; otherwise it still waits for the turn's end.
What is checked is the order of things and the messages sent, never how long anything
took.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.core import events as ev
from nbflow.engine import run as run_module
from nbflow.engine.backends.dask import DaskBackend
from nbflow.engine.run import Run
from nbflow.workflow import prepare, run_options

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _watch(monkeypatch: pytest.MonkeyPatch, client: Any, run: Any, order: list[str]) -> None:
    """Append "thread" as the run's thread begins, "engine" as its ``execute`` begins,
    "news" as the cluster first tells of one of its tasks, "call" as its Dask backend is
    first called, "turn" at each turn of the run's own loop from then on, and "graph" as a
    graph is handed to Dask's client."""
    backend = run.backends["dask"]
    call, queue = DaskBackend.call, type(client)._send_to_scheduler
    in_thread, execute = Run._in_thread, Run.execute

    class Told(threading.Event):
        def set(self) -> None:
            if not self.is_set():
                order.append("news")
            super().set()

    backend.news = Told()

    async def engine(self: Any) -> None:
        if self is run:
            order.append("engine")
        await execute(self)

    def began(self: Any, *a: Any) -> None:
        if self is run:
            order.append("thread")
        in_thread(self, *a)

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

    monkeypatch.setattr(Run, "_in_thread", began)
    monkeypatch.setattr(Run, "execute", engine)
    monkeypatch.setattr(DaskBackend, "call", called)
    monkeypatch.setattr(asyncio.BaseEventLoop, "_run_once", turn)
    monkeypatch.setattr(type(client), "_send_to_scheduler", queued)


def test_the_first_graph_goes_in_the_turn_that_starts_the_first_task(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DaskBackend, "send_before_start", False)  # (from the run's thread)
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
    monkeypatch.setattr(DaskBackend, "send_before_start", False)
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


def test_a_ready_task_that_cannot_go_ahead_still_shares_the_first_message(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declared resources keep a task from going ahead (the engine admits it): ready at the
    start, it is started in the turn after the first task's, and joins the first graph,
    which waits for that turn's end: one message, not two (Dask's client writes a second
    no sooner than 10 ms after the first)."""
    sent_early: list[bool] = []
    real = DaskBackend.send_first_graph

    def spy(self: Any) -> bool:
        sent_early.append(real(self))
        return sent_early[-1]

    monkeypatch.setattr(DaskBackend, "send_first_graph", spy)
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
    assert sent_early == [False]  # (not before the thread either: that would be two messages)


def _ones(n: int) -> Any:
    import numpy as np

    return np.ones(n // 8)


# -- before the run's thread starts ------------------------------------------------------


def _fan(name: str) -> tuple[Any, Any]:
    with nf.Workflow(name) as wf:
        root = make(80_000)
        end = total(*[inc(root) for _ in range(4)])
    return wf, end


def test_the_first_graph_goes_before_the_runs_thread_starts(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wf, end = _fan("first-graph-before-the-thread")
    wf.run(backend=client, cache=False)  # (a client an earlier run opened: no round trip)
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _watch(monkeypatch, client, run, order)
    events: list[Any] = []
    run.subscribe(events.append)
    run.start_in_thread()
    run.wait()
    assert run[end] == 4 * (80_000 // 8) * 2
    assert order[:2] == ["graph", "thread"], order
    backend = run.backends["dask"]
    assert (backend.batch.messages, backend.batch.tasks) == (1, len(wf.nodes))
    # every task went ahead and was adopted by the engine as it started it: one attempt each
    assert backend.ahead.submitted_ahead == backend.ahead.adopted == len(wf.nodes)
    assert list(run.tasks["attempts"]) == [1] * len(wf.nodes)
    assert [type(e) for e in events if type(e) in (ev.RunStarted, ev.RunFinished)] == [
        ev.RunStarted, ev.RunFinished]
    assert next(e for e in events if type(e) is ev.RunStarted).time == run.started_at


def test_a_client_no_run_opened_yet_gets_the_first_graph_from_the_runs_thread(
        dask_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening it needs round trips (its workers, the topic, the plugin): on the run's loop."""
    wf, end = _fan("first-graph-new-client")
    with distributed.Client(dask_cluster, set_as_default=False) as fresh:
        run = prepare(wf, run_options(wf, backend=fresh, cache=False))
        order: list[str] = []
        _watch(monkeypatch, fresh, run, order)
        run.start_in_thread()
        run.wait()
        assert run[end] == 4 * (80_000 // 8) * 2
        assert order.index("thread") < order.index("graph"), order
        assert run.backends["dask"].batch.messages == 1


def test_a_run_cancelled_before_it_began_sends_nothing(client: Any) -> None:
    wf, _ = _fan("first-graph-cancelled")
    wf.run(backend=client, cache=False)
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    run.cancel()
    run.start_in_thread()
    run.wait(raise_on_error=False)
    assert run.status == "cancelled"
    backend = run.backends["dask"]
    assert backend.batch is None or backend.batch.messages == 0


def test_with_the_scheduler_here_the_engine_starts_once_the_cluster_told_of_a_task(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "FIRST_NEWS_WAIT_S", 3600.0)  # (the news, never the bound)
    wf, end = _fan("first-graph-engine-after-news")
    wf.run(backend=client, cache=False)
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _watch(monkeypatch, client, run, order)
    run.start_in_thread()
    run.wait()
    assert run[end] == 4 * (80_000 // 8) * 2
    assert order.index("graph") < order.index("thread") < order.index("news") < order.index("engine"), order


def _gated(name: str) -> Any:
    """A root task that returns 80 once the test opens the gate (bounded)."""
    def wait_for_gate() -> int:
        distributed.Event(name).wait(120)
        return 80

    return nf.task(wait_for_gate)()


def _gated_run(client: Any, monkeypatch: pytest.MonkeyPatch,
               name: str) -> tuple[Any, str, Any, list[str]]:
    """A prepared run of ``inc(make(gated root))`` on a client an earlier run of the same
    workflow opened (gate open), its gate shut again and its steps watched: the run, the
    gate's name, its final Ref and the watched order.  The test opens the gate."""
    gate = f"nbflow-first-graph-{uuid.uuid4().hex}"
    with nf.Workflow(name) as wf:
        out = inc(make(_gated(gate)))
    distributed.Event(gate, client=client).set()
    wf.run(backend=client, cache=False)  # (a client an earlier run opened)
    distributed.Event(gate, client=client).clear()
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    order: list[str] = []
    _watch(monkeypatch, client, run, order)
    return run, gate, out, order


@pytest.mark.timeout(300)
def test_a_cancel_does_not_wait_for_the_clusters_news(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine waits for the news at most an hour here: only the cancel can wake it."""
    monkeypatch.setattr(run_module, "FIRST_NEWS_WAIT_S", 3600.0)
    run, gate, _, order = _gated_run(client, monkeypatch, "first-graph-cancelled-while-waiting")
    try:
        run.start_in_thread()
        run.cancel()  # (no task can end before the gate opens)
        run.wait(raise_on_error=False)
    finally:
        distributed.Event(gate, client=client).set()
    assert run.status == "cancelled"
    assert order[0] == "graph", order  # (sent before the thread started, then cancelled)


@pytest.mark.timeout(300)
def test_without_news_the_engine_starts_after_the_bound(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "FIRST_NEWS_WAIT_S", 0.0)
    run, gate, out, order = _gated_run(client, monkeypatch, "first-graph-engine-after-the-bound")
    try:
        run.start_in_thread()
        deadline = time.monotonic() + 120
        while "call" not in order and not run.done and time.monotonic() < deadline:
            run.wait(timeout=0.05, raise_on_error=False)  # (until the engine called Dask)
        assert "call" in order and "news" not in order, order  # (the gate is shut: no news)
    finally:
        distributed.Event(gate, client=client).set()
    run.wait()
    assert order[0] == "graph" and order.index("engine") < order.index("news"), order
    assert float(run[out].sum()) == 80 // 8 * 2.0


def test_sent_before_the_thread_the_tasks_are_placed_in_the_engines_order(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Placement weighs each task against those queued before it: the graph sent by the
    caller takes the tasks in the order the engine's first submission does (the task the
    engine starts first, then the other ready ones by index, then what follows them)."""
    from nbflow import locality

    # Unit weights: with learned priorities the engine's first task follows the durations
    # the earlier runs of this workflow measured, which vary (make-0 came first in 2 of 5).
    monkeypatch.setenv("NBFLOW_LEARNED_PRIORITY", "0")

    def placed(before_start: bool) -> tuple[bool, list[str], dict[str, Any]]:
        monkeypatch.setattr(DaskBackend, "send_before_start", before_start)
        with nf.Workflow("first-graph-order") as wf:
            short = inc(make(800))
            long_ = inc(inc(inc(make(800, 2.0))))  # (the longer path: the engine's first)
            total(short, long_)
        with locality.placement("round-robin"):
            wf.run(backend=client, cache=False)  # (a client an earlier run opened)
            run = wf.run(backend=client, cache=False)
        agent = run.locality.agent
        hints = {agent.node_of[d]: w for d, w in agent.hint_of.items()}
        return run.backends["dask"].sent_early, list(agent.order), hints

    early, order, hints = placed(True)
    late, order_late, hints_late = placed(False)
    assert (early, late) == (True, False)
    assert order == order_late and order[0] == "make-1", order
    assert hints == hints_late


def test_the_watcher_is_there_before_the_first_graph_goes_from_the_thread(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the cluster tells of the graph's tasks while it is sent (the send may let go of
    the GIL, e.g. starting the journal's writer) reaches the engine through the watcher,
    as it did when the graph went at the end of the turn, after the first task's watch."""
    monkeypatch.setattr(DaskBackend, "send_before_start", False)
    wf, end = _fan("first-graph-watcher-first")
    run = prepare(wf, run_options(wf, backend=client, cache=False))
    backend = run.backends["dask"]
    seen: list[bool] = []
    sent = backend.on_first_send

    def first_send() -> None:
        seen.append(backend._watcher is not None)
        sent()

    backend.on_first_send = first_send
    run.start_in_thread()
    run.wait()
    assert run[end] == 4 * (80_000 // 8) * 2
    assert seen == [True]
