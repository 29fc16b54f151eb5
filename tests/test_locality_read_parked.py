"""A Dask run's end-of-run read runs in a thread started while the run computes (as its
first task ends) and parked until the run closes: closing lets it go with an event instead
of starting a thread on the run's way to its end.  Counted, never timed."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest

from nbflow.locality import agent as agent_module
from nbflow.locality.agent import READ_THREAD, LocalityAgent


class _Client:
    """Stands in for a distributed.Client: logs each question."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(threading.current_thread().name)
        return {}

    def run_on_scheduler(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        return {}


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads started from now on, in order."""
    started: list[str] = []
    real = threading.Thread.start

    def counted(self: threading.Thread) -> None:
        started.append(self.name)
        real(self)

    monkeypatch.setattr(threading.Thread, "start", counted)
    return started


def _finish_one(agent: LocalityAgent) -> None:
    agent.finished("make-0", "make-0-0a1b2c3d-0", "tcp://w", 8, 0.1)


def test_the_read_thread_starts_as_the_first_task_ends_and_closing_starts_none(starts):
    agent, client = LocalityAgent(), _Client()
    _finish_one(agent)
    _finish_one(agent)  # (a second completion starts nothing more)
    assert starts == [READ_THREAD]
    parked = agent._parking
    assert parked is not None and parked.is_alive() and parked.daemon
    agent.closing(client, stays_open=True)
    assert starts == [READ_THREAD]  # the run's end starts no thread: it lets the parked one go
    agent.settle()
    assert client.calls == [READ_THREAD] and agent.rows == []  # read there, once
    parked.join(60)
    assert not parked.is_alive()


def test_switched_off_the_thread_starts_as_the_run_closes(starts, monkeypatch):
    monkeypatch.setattr(LocalityAgent, "parks", False)
    agent, client = LocalityAgent(), _Client()
    _finish_one(agent)
    assert starts == []
    agent.closing(client, stays_open=True)
    assert starts == [READ_THREAD]
    agent.settle()
    assert client.calls == [READ_THREAD]


def test_a_client_that_closes_with_the_run_is_read_at_once_and_the_parked_thread_ends(starts):
    agent, client = LocalityAgent(), _Client()
    _finish_one(agent)
    parked = agent._parking
    assert parked is not None
    agent.closing(client, stays_open=False)
    assert client.calls == [threading.current_thread().name]  # (read here, as before)
    parked.join(60)
    assert not parked.is_alive() and client.calls == [threading.current_thread().name]


def test_a_run_dropped_before_it_closed_leaves_no_thread(starts, monkeypatch):
    monkeypatch.setattr(agent_module, "PARKED_CHECK_S", 0.01)
    agent = LocalityAgent()
    _finish_one(agent)
    parked = agent._parking
    assert parked is not None and parked.is_alive()
    del agent
    gc.collect()
    parked.join(60)
    assert not parked.is_alive()


def test_a_read_handed_to_the_parked_thread_is_waited_for_at_exit():
    agent, client = LocalityAgent(), _Client()
    _finish_one(agent)
    agent.closing(client, stays_open=True)  # (a stand-in client: no close of its own to wrap)
    assert agent in agent_module._handed
    agent_module._finish_reads_at_exit()  # what interpreter exit runs
    assert client.calls == [READ_THREAD] and agent not in agent_module._handed


def test_a_dask_runs_read_thread_is_parked_once_its_first_graph_is_sent(starts):
    from nbflow import locality

    class _Run:  # (what attach reads of a run)
        name, nodes, backend_kind = "parked", (), "dask"

        def __init__(self) -> None:
            self.backends: dict[str, Any] = {"dask": type("Backend", (), {})()}
            self.deferred: list[Any] = []

        def defer_until_started(self, fn: Any) -> None:
            self.deferred.append(fn)

    run = _Run()
    with locality.placement("locality", keep="all"):  # (nothing the notebook names to count)
        agent = locality.attach(run)
    assert agent is not None and starts == [] and len(run.deferred) == 1
    run.deferred[0]()  # (the run's first graph is in Dask's client)
    assert starts == [READ_THREAD] and agent._parking is not None and agent._parking.is_alive()
    _finish_one(agent)  # (its first task ends: nothing more)
    assert starts == [READ_THREAD]
    client = _Client()
    agent.closing(client, stays_open=True)
    agent.settle()
    assert starts == [READ_THREAD] and client.calls == [READ_THREAD]


def test_a_run_that_closed_before_its_graph_went_parks_nothing(starts):
    agent, client = LocalityAgent(), _Client()
    agent.closing(client, stays_open=True)
    agent.park()  # (what waited for the graph runs as the run ends)
    agent.settle()
    assert starts == [READ_THREAD] and client.calls == [READ_THREAD]
