"""Runs back to back: a Dask run's deferred end-of-run read waits while another run is
under way (prepared, its graph not yet at Dask: no task of it ended), and reads at once
when its outcome is needed (nbflow.locality.under_way).

No case depends on time: the read is seen waiting through a spy on the wait itself, and the
bound on the wait is made longer than any test runs."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.locality import agent as agent_module
from nbflow.locality import under_way
from nbflow.locality.agent import LocalityAgent
from nbflow.workflow import prepare, run_options

pytestmark = pytest.mark.timeout(300)


class FakeClient:
    """A client of a cluster with no worker (the read asks, and gets nothing)."""

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def run_on_scheduler(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}


@pytest.fixture(autouse=True)
def own_ways(monkeypatch) -> None:
    """This test's runs under way only (a run another test prepared and left unstarted
    ends its way whenever it is collected)."""
    monkeypatch.setattr(under_way, "_open", set())


@pytest.fixture
def seen(monkeypatch) -> dict[str, Any]:
    """What the read saw: how many runs were under way when it read; ``reached`` is set
    once the read waits for them or reads."""
    out: dict[str, Any] = {"reached": threading.Event(), "under_way_at_read": []}
    wait, read = under_way.wait_quiet, LocalityAgent._read

    def waiting(timeout: float, now: threading.Event | None = None) -> bool:
        out["reached"].set()
        return wait(timeout, now)

    def reading(self: LocalityAgent, client: Any, keys: list[str]) -> None:
        out["under_way_at_read"].append(under_way.under_way())
        out["reached"].set()
        read(self, client, keys)

    monkeypatch.setattr(under_way, "wait_quiet", waiting)
    monkeypatch.setattr(LocalityAgent, "_read", reading)
    monkeypatch.setattr(agent_module, "QUIET_WAIT_S", 3600.0)  # (no test reaches the bound)
    return out


def test_the_read_waits_while_a_run_is_under_way_and_reads_once_it_is_not(seen) -> None:
    way = under_way.Way()
    try:
        agent = LocalityAgent("none")
        agent.closing(FakeClient(), stays_open=True)
        assert seen["reached"].wait(60)
        assert seen["under_way_at_read"] == []  # waiting: not read while the run is under way
    finally:
        way.end()
    agent.settle()
    assert seen["under_way_at_read"] == [0]
    assert agent.rows == []


def test_a_read_whose_outcome_is_needed_does_not_wait(seen) -> None:
    way = under_way.Way()
    try:
        agent = LocalityAgent("none")
        agent.closing(FakeClient(), stays_open=True)
        settling = threading.Thread(target=agent.settle)
        settling.start()
        settling.join(60)
        assert not settling.is_alive()  # (settle reads now: it does not wait for the run)
        assert seen["under_way_at_read"] == [1]
    finally:
        way.end()


def test_waits_for_the_next_run_off_reads_at_once(seen, monkeypatch) -> None:
    monkeypatch.setattr(LocalityAgent, "waits_for_next", False)
    way = under_way.Way()
    try:
        agent = LocalityAgent("none")
        agent.closing(FakeClient(), stays_open=True)
        agent.settle()
        assert seen["under_way_at_read"] == [1]
    finally:
        way.end()


def test_a_way_ends_at_its_runs_first_ended_task_or_its_end() -> None:
    base = under_way.under_way()
    ended = [ev.TaskCompleted(0.0, 0, "k", 1, 0.1, None),
             ev.TaskFailed(0.0, 0, "k", 1, 0.1, ValueError("x")),
             ev.TaskSkipped(0.0, 0, "k", "why"),
             ev.TaskCancelled(0.0, 0, "k"),
             ev.TaskBatch(0.0, ev.TaskCompleted, [0], ["k"]),
             ev.RunFinished(0.0, "r", "failed", 0.1),
             ev.RunPaused(0.0, "r")]
    for event in ended:
        way = under_way.Way()
        assert under_way.under_way() == base + 1
        way(ev.TaskStarted(0.0, 0, "k", 1, "dask"))  # (started, on its way: still under way)
        way(ev.TaskBatch(0.0, ev.TaskStarted, [0], ["k"]))
        assert under_way.under_way() == base + 1
        way(event)
        assert under_way.under_way() == base, event
        way(event)
        way.end()  # (once only)
        assert under_way.under_way() == base


def test_a_run_dropped_unstarted_is_no_longer_under_way() -> None:
    class Stub:
        def subscribe(self, fn: Any) -> None:
            self.fn = fn

    base = under_way.under_way()
    run = Stub()
    under_way.begun(run)
    assert under_way.under_way() == base + 1
    del run
    gc.collect()
    assert under_way.under_way() == base


def test_a_preparation_that_fails_is_no_longer_under_way() -> None:
    class Stub:
        def __init__(self) -> None:
            self.backends = {"dask": object()}

        def subscribe(self, fn: Any) -> None:
            self.fn = fn

    run = Stub()
    with pytest.raises(RuntimeError), under_way.preparing(run):
        assert under_way.under_way() == 1
        raise RuntimeError("the store broke")
    assert under_way.under_way() == 0 and run.fn.over
    with under_way.preparing(run):
        pass
    assert under_way.under_way() == 1  # (prepared: under way until its first task ends)


def test_a_dask_preparation_is_under_way_until_its_first_task_ends(dask_cluster) -> None:
    import distributed

    @nf.task
    def one() -> int:
        return 1

    with nf.Workflow("under-way") as wf:
        one()
    base = under_way.under_way()
    on_threads = prepare(wf, run_options(wf, cache=False))
    assert under_way.under_way() == base  # (a run on threads has no read to wait for it)
    assert not [s for s in on_threads.stream.subscribers if isinstance(s, under_way.Way)]
    on_threads.start_in_thread()
    on_threads.wait()
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        run = prepare(wf, run_options(wf, backend=client, cache=False))
        [way] = [s for s in run.stream.subscribers if isinstance(s, under_way.Way)]
        assert not way.over and under_way.under_way() == base + 1
        run.start_in_thread()
        run.wait()
        assert run.status == "completed" and way.over and under_way.under_way() == base
        run.locality.agent.settle()
