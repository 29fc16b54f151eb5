"""A small result the caller takes as the run ends comes with its completion, not a gather.

The results a Dask run brings here as it ends (a ``%%workflow`` binding's, a small result of
a sink the notebook names: ``tests/test_dask_run_end.py``) used to be gathered from their
workers once the engine had seen them complete: one more round trip on the path to the
value in the caller's hand.  When such a result is small, its worker now pickles it into
the facts nbflow's scheduler plugin relays with the completion, and it arrives with the
news that the task ended.  What is checked is which results came that way, that nothing
was gathered for them, that their bytes are counted once as before, and that nothing else
comes to this process; never how long anything took.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import pytest
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.engine.backends import dask as dask_backend
from nbflow.notebook import binding

distributed = pytest.importorskip("distributed")

MB = 1_000_000


@pytest.fixture(scope="module")
def client(dask_cluster):
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def gathers(monkeypatch) -> list[str]:
    """The task keys the backend gathered as a run ended (its prefetch's gathers)."""
    seen: list[str] = []
    real = dask_backend.DaskBackend._gather_here

    async def counted(self: Any, r: dask_backend.DaskResult) -> list[Any]:
        seen.append(r.key)
        return await real(self, r)

    monkeypatch.setattr(dask_backend.DaskBackend, "_gather_here", counted)
    return seen


def _result(run: nf.Run, ref: nf.Ref) -> dask_backend.DaskResult:
    got = run._sched.results[ref.index]
    assert type(got) is dask_backend.DaskResult
    return got


def test_a_small_named_sink_comes_with_its_completion_without_a_gather(client, gathers):
    with nf.Workflow("carry-sink") as wf:
        x = make(2 * MB)
        out = total(inc(x))
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    got = _result(run, out)
    assert backend.carried == 1
    # there as soon as the engine took the task's end: a finished gather, none started
    assert got.prefetch is not None and got.prefetch.done()
    assert gathers == []
    nbytes = got.nbytes
    assert nbytes is not None and 0 < nbytes <= dask_backend.PREFETCH_BYTES
    assert backend.prefetched == [(out.key, nbytes)]  # counted as a result brought at the end
    assert run.locality_report().bytes_to_client == nbytes
    assert run[out] == 2 * MB // 8 * 2.0
    assert run[out] == 2 * MB // 8 * 2.0
    assert backend.fetched == [(out.key, nbytes)]  # asked for once, counted once
    assert run.locality_report().bytes_to_client == nbytes
    assert gathers == []


def test_a_result_too_large_to_carry_is_gathered_as_before(client, gathers):
    with nf.Workflow("carry-large") as wf:
        out = make(2000)  # a named sink of 2 kB: prefetched, but more than a completion carries
    run = wf.run(backend=client, cache=False)
    got = _result(run, out)
    assert got.prefetch is not None
    futures.wait([got.prefetch], timeout=60)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    assert backend.carried == 0 and gathers == [out.key]
    assert got.nbytes is not None and got.nbytes > dask_backend.CARRY_BYTES
    assert backend.prefetched == [(out.key, got.nbytes)]
    assert run[out].shape == (250,)


def test_only_what_the_caller_takes_at_the_end_comes_with_its_completion(client, gathers):
    with nf.Workflow("carry-nothing-else") as wf:
        small = total(make(1000))  # a sink nobody names once the name is reused
        small = total(make(2000))  # the named sink
        mid = inc(make(100))  # a small intermediate the notebook names: not a sink
        last = total(mid)
    del last  # (nothing names this sink as the run starts)
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    assert backend.carried == 1 and backend.prefetched == [(small.key, _result(run, small).nbytes)]
    assert _result(run, mid).prefetch is None  # (its value stays on its worker)
    unnamed = run._sched.results[run._lookup("total-0")]
    assert getattr(unnamed, "prefetch", None) is None
    assert run.locality_report().bytes_to_client == _result(run, small).nbytes
    assert gathers == []


def test_a_bound_result_comes_with_its_completion_when_small(client, gathers):
    with nf.Workflow("carry-bound") as wf:
        big = make(2 * MB)
        pair = [inc(make(10)), total(big)]
    binding.expect(wf, {"big": big, "pair": pair})  # (what a %%workflow cell does)
    run = wf.run(backend=client, cache=False)
    for ref in (big, *pair):
        futures.wait([_result(run, ref).prefetch], timeout=60)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    assert backend.carried == 2  # the two small bound sinks
    assert gathers == [big.key]  # the large one is gathered as before
    assert sorted(k for k, _ in backend.prefetched) == sorted([big.key, pair[0].key, pair[1].key])
    assert binding.resolve({"pair": pair}, run)["pair"][1] == 2 * MB // 8 * 1.0


def test_with_prefetching_off_a_named_sink_does_not_come(client, gathers, monkeypatch):
    monkeypatch.setenv("NBFLOW_DASK_PREFETCH", "0")
    with nf.Workflow("carry-off") as wf:
        out = total(make(1000))
    run = wf.run(backend=client, cache=False)
    run.locality.agent.settle()
    backend = run.backends["dask"]
    assert backend.carried == 0 and backend.prefetched == [] and _result(run, out).prefetch is None
    assert run.locality_report().bytes_to_client == 0
    assert run[out] == 125.0  # asked for: it comes now


def test_a_scheduler_of_an_older_nbflow_means_no_carrying(client, gathers, monkeypatch):
    # its workers' wrapper (the same installation as a rule) would refuse the extra
    # argument: the plugin's version says so, and the result is gathered as before
    from nbflow.engine.backends import dask_plugin, dask_recovery

    assert client.run_on_scheduler(dask_plugin.reports_completions) >= 2  # (this nbflow)
    with nf.Workflow("carry-older") as wf:
        out = total(make(1000))
    wf.run(backend=client, cache=False).locality.agent.settle()  # (registers the plugin)
    monkeypatch.setitem(dask_recovery._reports, client, 1)  # (a session-10 scheduler)
    run = wf.run(backend=client, cache=False)
    got = _result(run, out)
    futures.wait([got.prefetch], timeout=60)
    run.locality.agent.settle()
    assert run.backends["dask"].carried == 0 and gathers == [out.key]
    assert run[out] == 125.0


def test_a_value_is_carried_only_when_its_pickle_fits():
    assert dask_backend._carried(1.5, 1024) is not None
    assert dask_backend._carried(b"x" * 5000, 1024) is None  # (Dask's measure says too big)
    assert dask_backend._carried(lambda: 1, 1024) is not None  # (cloudpickle, as Dask would)

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise TypeError("no")

    assert dask_backend._carried(Unpicklable(), 1024) is None  # (gathered as before)
    # outside a worker the call just runs: nothing to note the value on
    assert dask_backend._apply_located(None, lambda a: a + 1, (1,), None, 1024) == 2


class _Client:
    """What the deferred end-of-run read asks of a client, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("run")
        return {}

    def run_on_scheduler(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


def test_the_deferred_read_waits_for_the_run_thread_that_closed_to_end():
    # With nothing gathered at the end (a carried result), the read would start as the
    # backend closes, in the middle of the run's last steps; it waits for them instead.
    import threading

    from nbflow.locality.agent import LocalityAgent

    client, agent = _Client(), LocalityAgent()
    closed, finish = threading.Event(), threading.Event()

    def run_thread() -> None:
        agent.closing(client, stays_open=True)
        closed.set()
        finish.wait(60)  # (the run's last steps)

    t = threading.Thread(target=run_thread, name="nbflow-run-test", daemon=True)
    t.start()
    assert closed.wait(60)
    reading = agent._reading
    assert reading is not None
    reading.join(0.3)
    assert reading.is_alive() and client.calls == []  # still waiting for the run's thread
    finish.set()
    agent.settle()
    assert client.calls == ["run"]


def test_the_deferred_read_does_not_wait_for_a_thread_that_is_not_a_run(monkeypatch):
    from nbflow.locality import agent as agent_module

    monkeypatch.setattr(agent_module, "AFTER_WAIT_S", 600.0)  # (a wrong wait would show)
    client, agent = _Client(), agent_module.LocalityAgent()
    agent.closing(client, stays_open=True)  # (from the caller's own thread)
    reading = agent._reading
    assert reading is not None
    reading.join(60)
    assert not reading.is_alive() and client.calls == ["run"]
