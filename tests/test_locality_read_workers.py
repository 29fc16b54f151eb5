"""The end-of-run read asks only the workers a run's tasks were sent to, when the scheduler
runs in this process and can tell which (nbflow's scheduler plugin notes them, Dask's
stealing events name the thieves), through the scheduler's own broadcast; everything else
asks every worker, as before.  What it reads equals what Dask's own logs say."""

from __future__ import annotations

import asyncio
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")

from dask_clusters import own_client  # noqa: E402

from nbflow.engine.backends import dask_plugin  # noqa: E402
from nbflow.engine.backends.dask_recovery import NAME  # noqa: E402
from nbflow.locality import agent as agent_module  # noqa: E402

pytestmark = pytest.mark.timeout(300)
TAG = "0a1b2c3d"


class _Worker:
    def __init__(self, address: str) -> None:
        self.address = address


class _Task:
    def __init__(self, worker: str | None) -> None:
        self.processing_on = _Worker(worker) if worker else None
        self.who_wants: set[str] = set()


class _Scheduler:
    """What the plugin and :func:`dask_plugin.workers_sent` read of Dask's scheduler."""

    def __init__(self, steals: list[tuple[float, Any]] = (), maxlen: int = 1000) -> None:
        self.tasks: dict[str, _Task] = {}
        self.plugins: dict[str, Any] = {}
        self.workers = {w: None for w in ("tcp://a", "tcp://b", "tcp://c", "tcp://old")}
        self.steals = deque(steals, maxlen=maxlen)
        # (Dask's event broker keeps each topic's events in a bounded deque)
        self._broker = SimpleNamespace(_topics={"stealing": SimpleNamespace(events=self.steals)})

    def get_events(self, topic: str) -> tuple[tuple[float, Any], ...]:
        assert topic == "stealing"
        return tuple(self.steals)

    def log_event(self, topic: str, msg: Any) -> None:
        pass


def _plugin_on(sched: _Scheduler, since: float = 0.0) -> dask_plugin.LooseRestrictions:
    plugin = dask_plugin.LooseRestrictions()
    asyncio.run(plugin.start(sched))
    plugin.since = since
    sched.plugins[NAME] = plugin
    return plugin


def _sent(plugin: Any, sched: _Scheduler, key: str, worker: str) -> None:
    sched.tasks[key] = _Task(worker)
    plugin.transition(key, "waiting", "processing", stimulus_id="s")


def test_the_plugin_notes_the_workers_a_runs_tasks_were_sent_to_and_the_read_takes_them_once():
    sched = _Scheduler()
    plugin = _plugin_on(sched)
    _sent(plugin, sched, f"make-0-{TAG}-0", "tcp://a")
    _sent(plugin, sched, f"inc-0-{TAG}-1", "tcp://b")
    _sent(plugin, sched, f"inc-1-{TAG}-2", "tcp://a")
    _sent(plugin, sched, "make-0-ffffeeee-0", "tcp://c")  # another run's
    _sent(plugin, sched, "inc-delayed-9f8e7d6c5b4a39281706f5e4d3c2b1a0", "tcp://d")  # dask's own
    keys = [f"make-0-{TAG}-0", f"inc-0-{TAG}-1", f"inc-1-{TAG}-2"]
    assert dask_plugin.workers_sent(sched, keys, since=10.0) == {"tcp://a", "tcp://b"}
    assert dask_plugin.workers_sent(sched, keys, since=10.0) == set()  # (read once: dropped)
    assert plugin.sent_to == {"ffffeeee": {"tcp://c"}}


def test_a_worker_that_left_is_not_asked():
    sched = _Scheduler()
    plugin = _plugin_on(sched)
    _sent(plugin, sched, f"make-0-{TAG}-0", "tcp://a")
    _sent(plugin, sched, f"make-0-{TAG}-0", "tcp://gone")  # (sent again: the first one died)
    assert dask_plugin.workers_sent(sched, [f"make-0-{TAG}-0"], since=10.0) == {"tcp://a"}


def test_a_task_stolen_to_another_worker_adds_the_thief():
    steals = [(5.0, ("confirm", f"inc-0-{TAG}-1", "ready", "tcp://x", "tcp://old", "s0")),  # before
              (12.0, ("request", [])),
              (13.0, ("confirm", f"inc-0-{TAG}-1", "ready", "tcp://a", "tcp://c", "s1")),
              (14.0, ("confirm", "other-key", "ready", "tcp://a", "tcp://d", "s2")),
              (15.0, ("already-computing", f"inc-1-{TAG}-2", "executing", "tcp://a", "tcp://e", "s3"))]
    sched = _Scheduler(steals)
    plugin = _plugin_on(sched)
    _sent(plugin, sched, f"inc-0-{TAG}-1", "tcp://a")
    keys = [f"inc-0-{TAG}-1", f"inc-1-{TAG}-2"]
    assert dask_plugin.workers_sent(sched, keys, since=10.0) == {"tcp://a", "tcp://c"}


@pytest.mark.parametrize("why", ["no plugin", "plugin newer than the run", "a key without a tag",
                                 "stealing events dropped"])
def test_when_the_workers_cannot_be_told_for_sure_every_worker_is_asked(why):
    full = [(20.0 + i, ("request", [])) for i in range(4)]
    sched = _Scheduler(full if why == "stealing events dropped" else [], maxlen=4)
    if why != "no plugin":
        plugin = _plugin_on(sched, since=50.0 if why == "plugin newer than the run" else 0.0)
        _sent(plugin, sched, f"make-0-{TAG}-0", "tcp://a")
    keys = [f"make-0-{TAG}-0"] + (["end-read-plain"] if why == "a key without a tag" else [])
    assert dask_plugin.workers_sent(sched, keys, since=10.0) is None


@nf.task
def _one() -> float:
    return 1.0


def test_a_run_that_ran_on_one_worker_reads_that_worker_only():
    import dask

    # (no work stealing: the one task is sent to one worker and runs there)
    with dask.config.set({"distributed.scheduler.work-stealing": False}), own_client() as client:
        assert len(client.scheduler_info()["workers"]) == 2
        with nf.Workflow("read-one-worker") as wf:
            out = _one()
        run = wf.run(backend=client, cache=False)
        assert run[out] == 1.0
        agent = run.locality.agent
        ran = {w for w in agent.worker_of.values() if w}
        evidence = agent.memory  # (waits for the read)
        assert evidence is not None and len(ran) == 1
        assert set(evidence.workers) == ran  # (the other worker was not asked)
        assert len(run.transfers) == 0


def test_a_run_spread_over_the_workers_reads_each_one_that_ran_and_equals_dasks_logs():
    from nbflow import locality

    @nf.task
    def make(n: int, v: float) -> list[float]:
        return [v] * n

    @nf.task
    def add(*parts: list[float]) -> float:
        return sum(sum(p) for p in parts)

    with own_client() as client:
        with nf.Workflow("read-every-worker") as wf:
            out = add(*[make(10_000, float(k)) for k in range(4)])
        with locality.placement("round-robin"):  # (inputs on both workers: some must move)
            run = wf.run(backend=client, cache=False)
        assert run[out] == 10_000 * (0 + 1 + 2 + 3)
        agent = run.locality.agent
        ran = {w for w in agent.worker_of.values() if w}
        # (a worker Dask's stealing took a task from is asked too: it may have fetched)
        assert agent.memory is not None and ran <= set(agent.memory.workers)
        logs = client.run(lambda dask_worker: [(k, v) for e in dask_worker.transfer_incoming_log
                                               for k, v in e["keys"].items()])
        dask_says = sorted((k, v, w) for w, entries in logs.items() for k, v in entries
                           if k in agent.node_of)
        ours = sorted((r.dask_key, r.bytes, r.to_worker) for r in run.transfers.itertuples())
        assert dask_says and ours == dask_says


def test_switched_off_every_worker_is_asked_by_a_message(monkeypatch):
    monkeypatch.setattr(agent_module.LocalityAgent, "asks_here", False)
    with own_client() as client:
        with nf.Workflow("read-off") as wf:
            out = _one()
        run = wf.run(backend=client, cache=False)
        assert run[out] == 1.0
        evidence = run.locality.agent.memory
        assert evidence is not None
        assert set(evidence.workers) == set(client.scheduler_info()["workers"])
