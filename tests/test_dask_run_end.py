"""The end of a Dask run: which results come with it, and what it no longer waits for.

A result the caller will take as the run ends (a ``%%workflow`` binding) and a small result
of a sink the notebook names are gathered as the run closes, their bytes counted like any
other; nothing else comes to this process (a result nobody names, a large one).  The
deferred end-of-run read waits for those gathers; closing a run whose client stays open
hands nothing to a helper thread.  What is checked is what moved and in which order, never
how long it took.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from typing import Any

import pytest
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.engine.backends import dask as dask_backend
from nbflow.engine.backends import dask_brought
from nbflow.locality import agent as agent_module
from nbflow.locality.agent import LocalityAgent
from nbflow.notebook import binding

distributed = pytest.importorskip("distributed")

MB = 1_000_000


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


def _outgoing_to_outside(client: Any, keys: set[str]) -> int:
    """Bytes of ``keys`` workers sent to anything that is not a worker (Dask's own logs)."""
    def log(dask_worker):
        return [(e["who"], dict(e["keys"])) for e in dask_worker.transfer_outgoing_log]

    workers = set(client.scheduler_info()["workers"])
    return sum(v for entries in client.run(log).values() for who, ks in entries
               if who not in workers for k, v in ks.items() if k in keys)


def _result(run: nf.Run, ref: nf.Ref) -> dask_backend.DaskResult:
    got = run._sched.results[ref.index]
    assert type(got) is dask_backend.DaskResult
    return got


def _arrived(run: nf.Run, ref: nf.Ref) -> None:
    pending = _result(run, ref).prefetch
    assert pending is not None, f"{ref.key} was not gathered with the run's end"
    futures.wait([pending], timeout=60)
    run.locality.agent.settle()


def test_a_small_named_sink_comes_with_the_end_and_its_bytes_are_counted_once(client):
    with nf.Workflow("end-sink") as wf:
        x = make(2 * MB)
        out = total(inc(x))
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    _arrived(run, out)
    nbytes = _result(run, out).nbytes
    assert nbytes is not None and 0 < nbytes <= dask_backend.PREFETCH_BYTES
    assert backend.prefetched == [(out.key, nbytes)]
    assert run.locality_report().bytes_to_client == nbytes  # counted as it came
    assert run[out] == 2 * MB // 8 * 2.0
    assert run[out] == 2 * MB // 8 * 2.0
    assert backend.fetched == [(out.key, nbytes)]  # asked for once, fetched once
    assert run.locality_report().bytes_to_client == nbytes  # not counted again
    # the intermediates (2 MB each, x still named) never came here
    keys = {d for d, k in run.locality.agent.node_of.items() if k != out.key}
    assert _outgoing_to_outside(client, keys) == 0


def test_a_large_result_or_one_nobody_names_does_not_come(client):
    with nf.Workflow("end-nothing") as wf:
        big = make(2 * MB)  # a named sink, too large to bring unasked
        y = total(make(1000))
        y = total(make(2000))  # the first total is a sink nobody names any more
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    named = _result(run, y)
    futures.wait([named.prefetch], timeout=60)
    assert backend.prefetched == [(y.key, named.nbytes)]  # the one small named sink
    assert _result(run, big).prefetch is None
    unnamed = run._sched.results[run._lookup("total-0")]
    assert getattr(unnamed, "prefetch", None) is None
    keys = {d for d, k in run.locality.agent.node_of.items() if k != y.key}
    assert _outgoing_to_outside(client, keys) == 0
    assert run.locality_report().bytes_to_client == named.nbytes
    assert run[big].shape == (2 * MB // 8,)  # asked for: it comes now


def test_a_bound_result_comes_with_the_end_whatever_its_size(client):
    with nf.Workflow("end-bound") as wf:
        big = make(2 * MB)
        pair = [inc(big), total(big)]
    binding.expect(wf, {"big": big, "pair": pair})  # (what a %%workflow cell does)
    assert wf.bound_keys == {big.key, pair[0].key, pair[1].key}
    run = wf.run(backend=client, cache=False)
    for ref in (big, *pair):
        _arrived(run, ref)
    backend = run.backends["dask"]
    assert sorted(k for k, _ in backend.prefetched) == sorted([big.key, pair[0].key, pair[1].key])
    assert binding.resolve({"big": big}, run)["big"].shape == (2 * MB // 8,)
    assert run.locality_report().bytes_to_client == sum(n or 0 for _, n in backend.prefetched)


def test_prefetching_named_results_can_be_switched_off_and_a_bad_setting_is_refused(client, monkeypatch):
    monkeypatch.setenv("NBFLOW_DASK_PREFETCH", "0")
    with nf.Workflow("end-off") as wf:
        out = total(make(1000))
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    assert run.backends["dask"].prefetched == [] and _result(run, out).prefetch is None
    assert run.locality_report().bytes_to_client == 0
    monkeypatch.setenv("NBFLOW_DASK_PREFETCH", "lots")
    with pytest.raises(nf.NbflowError, match="NBFLOW_DASK_PREFETCH='lots' is not a number of bytes"):
        wf.run(backend=client, cache=False)


def test_closing_a_run_whose_client_stays_open_hands_nothing_to_a_thread(client, monkeypatch):
    import anyio.to_thread

    handed: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):
        handed.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    with nf.Workflow("end-inline") as wf:
        out = total(inc(make(1000)))
    run = wf.run(backend=client, cache=False)
    assert "close" not in handed
    assert run[out] == 250.0
    assert run.transfers is not None  # (the deferred read still happened)


def test_the_deferred_read_waits_for_the_results_being_brought_here():
    calls: list[str] = []

    class Client:
        def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            calls.append("run")
            return {}

        def run_on_scheduler(self, *args: Any, **kwargs: Any) -> list[Any]:
            return []

    agent = LocalityAgent()
    coming: futures.Future[Any] = futures.Future()
    agent.closing(Client(), stays_open=True, after=[coming])
    reading = agent._reading
    assert reading is not None
    # still waiting for the gather: not even its thread started (not on the run's way out)
    assert not reading.is_alive() and calls == []
    coming.set_result([1.0])  # (its thread starts here, in the thread that settles it)
    assert reading.is_alive() or calls == ["run"]
    agent.settle()
    assert calls == ["run"] and agent.rows == []
    assert not [t for t in threading.enumerate() if t.name == "nbflow-locality-read"]


class _SchedulerGathers:
    """Counts the scheduler's ``gather`` requests (Dask's relay of a value from a worker to
    a client) while it is installed; the cluster's scheduler runs in this process."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler, self.calls = scheduler, 0
        self.real = scheduler.handlers["gather"]

    def __enter__(self) -> _SchedulerGathers:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await self.real(*args, **kwargs)

        self.scheduler.handlers["gather"] = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        self.scheduler.handlers["gather"] = self.real


def test_a_result_brought_with_the_end_is_asked_of_its_worker_not_relayed_by_the_scheduler(
        client, dask_cluster):
    with nf.Workflow("end-direct") as wf:
        out = total(inc(make(1000)))
    with _SchedulerGathers(dask_cluster.scheduler) as gathers:
        run = wf.run(backend=client, cache=False)
        _arrived(run, out)
    assert _result(run, out).worker in client.scheduler_info()["workers"]
    assert gathers.calls == 0  # straight from the worker that holds it
    assert run[out] == 250.0
    assert run.backends["dask"].prefetched == [(out.key, _result(run, out).nbytes)]


def test_a_result_its_named_worker_does_not_hold_is_still_brought_through_the_scheduler(
        client, dask_cluster):
    with nf.Workflow("end-moved") as wf:
        out = total(inc(make(1000)))
    run = wf.run(backend=client, cache=False)
    _arrived(run, out)
    backend, result = run.backends["dask"], _result(run, out)
    holder = result.worker
    elsewhere = [w for w in client.scheduler_info()["workers"] if w != holder]
    assert elsewhere, "the test cluster has two workers"
    # (as if the result had moved since its completion named its worker)
    result.worker, result.prefetch = elsewhere[0], None
    with _SchedulerGathers(dask_cluster.scheduler) as gathers:
        (pending,) = backend._prefetch([result])
        assert pending.result(timeout=60) == [250.0]
    assert gathers.calls == 1
    assert run[out] == 250.0


class _ReadClient:
    """Stands in for a ``distributed.Client`` that stays open: records the read's calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("run")
        return {}

    def run_on_scheduler(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.calls.append("close")


def _brought() -> futures.Future[Any]:
    done: futures.Future[Any] = futures.Future()
    done.set_result([1.0])  # (arrived: what is left is for the caller to take it)
    return done


def _in_thread(fn: Any) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(30)
    return t


def test_the_deferred_read_begins_once_the_caller_took_what_was_brought(monkeypatch):
    monkeypatch.setattr(agent_module, "TAKE_WAIT_S", 600.0)  # (never the reason here)
    client, agent = _ReadClient(), LocalityAgent()
    agent.closing(client, stays_open=True, after=[_brought()])
    reading = agent._reading
    assert reading is not None
    reading.join(0.3)
    assert reading.is_alive() and client.calls == []  # arrived, not taken yet
    agent.taken()
    reading.join(30)
    assert not reading.is_alive() and client.calls == ["run"]


@pytest.mark.parametrize("needs", ["settle", "client close"])
def test_whatever_needs_the_read_lets_it_begin_without_the_take(monkeypatch, needs):
    monkeypatch.setattr(agent_module, "TAKE_WAIT_S", 600.0)
    client, agent = _ReadClient(), LocalityAgent()
    agent.closing(client, stays_open=True, after=[_brought()])
    asked = _in_thread(agent.settle if needs == "settle" else client.close)
    assert not asked.is_alive(), f"{needs} waited for a take that never came"
    assert client.calls[:1] == ["run"] and agent.rows == []


def test_a_runs_read_waits_for_its_caller_to_take_the_result_brought_with_its_end(client, monkeypatch):
    monkeypatch.setattr(agent_module, "TAKE_WAIT_S", 600.0)
    began = threading.Event()
    read = LocalityAgent._read

    def noted(self: LocalityAgent, *args: Any) -> None:
        began.set()
        read(self, *args)

    monkeypatch.setattr(LocalityAgent, "_read", noted)
    with nf.Workflow("end-taken") as wf:
        out = total(inc(make(1000)))
    run = wf.run(backend=client, cache=False)
    pending = _result(run, out).prefetch
    assert pending is not None
    futures.wait([pending], timeout=60)  # arrived...
    assert not began.wait(1.0)  # ...and the read has not begun: nobody took it yet
    assert run[out] == 250.0  # taken: the read begins
    assert began.wait(60)
    run.locality.agent.settle()
    assert run.locality.agent.rows is not None


def test_a_brought_result_counts_as_taken_once_and_not_by_a_wait_that_timed_out():
    told: list[str] = []
    taking = dask_brought.Taking(2, lambda: told.append("all"))
    first, second = dask_brought.Brought(taking), dask_brought.Brought(taking)
    with pytest.raises(futures.TimeoutError):
        first.result(timeout=0)
    first.set_result([1])
    assert first.result() == [1] and first.result() == [1] and told == []
    second.set_exception(RuntimeError("lost"))
    with pytest.raises(RuntimeError):
        second.result()
    assert told == ["all"]


def test_the_end_of_run_read_asks_the_workers_and_the_scheduler_in_one_hand_off(client, monkeypatch):
    hand_offs: list[str] = []
    real = client.sync

    def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "nbflow-locality-read":
            hand_offs.append(getattr(fn, "__name__", repr(fn)))
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(client, "sync", counted)
    # (a scheduler in this process is asked on its own loop: a hand-off there counts alike)
    to_loop = asyncio.run_coroutine_threadsafe

    def counted_to_loop(coro: Any, loop: Any) -> Any:
        if threading.current_thread().name == "nbflow-locality-read":
            hand_offs.append(coro.__qualname__)
        return to_loop(coro, loop)

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", counted_to_loop)
    with nf.Workflow("end-one-ask") as wf:
        out = total(inc(make(1000)))
    run = wf.run(backend=client, cache=False)
    assert run[out] == 250.0
    agent = run.locality.agent
    agent.settle()
    assert len(hand_offs) == 1  # both questions went to the loop together
    evidence = agent.memory
    ran = {w for w in agent.worker_of.values() if w}
    assert evidence is not None and ran <= set(evidence.workers) <= set(client.scheduler_info()["workers"])
    assert evidence.restarted == {} and agent.rows is not None
