"""Completions told by nbflow's scheduler plugin, one event per turn of the scheduler's loop.

With the plugin registered (the default on a scheduler that can import nbflow), the
workers do not announce each result: the plugin collects, as tasks of nbflow's move to
``memory``, the worker, Dask's size and the compute seconds of the ``task-finished``
message, and sends the completions of one turn in one event.  Without it (a scheduler
that cannot import nbflow, or one whose nbflow sends no completions) the workers announce
as before.  A finished held future whose completion's facts never come is handed over
after a while, and the backend asks the scheduler.  No timings are checked.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")

import test_locality_ahead as _ahead  # noqa: E402
from dask_clusters import own_client  # noqa: E402

from nbflow.engine.backends import dask as dask_backend  # noqa: E402
from nbflow.engine.backends import dask_plugin, dask_watch  # noqa: E402

client, make, inc, total = _ahead.client, _ahead.make, _ahead.inc, _ahead.total
DEADLINE = 120  # seconds: far above what these runs take; reaching it means a hang


class _Scheduler:
    """What the plugin uses of Dask's scheduler: its tasks and its log_event."""

    def __init__(self) -> None:
        self.tasks: dict = {}
        self.logged: list = []

    def log_event(self, topic, msg) -> None:
        self.logged.append((topic, msg))


def _finished(plugin, key, worker="tcp://w:1", nbytes=800, start=10.0, stop=10.5,
              metadata=None) -> None:
    plugin.transition(key, "processing", "memory", stimulus_id="s", worker=worker,
                      nbytes=nbytes, type=b"", typename="ndarray", metadata=metadata or {},
                      startstops=[{"action": "compute", "start": start, "stop": stop}])


def test_the_completions_of_one_turn_go_to_the_clients_as_one_event() -> None:
    async def scenario():
        plugin = dask_plugin.LooseRestrictions()
        sched = _Scheduler()
        await plugin.start(sched)
        # one turn of the loop: three of nbflow's tasks finish, and other transitions happen
        _finished(plugin, "make-0-0a1b2c3d-0", nbytes=800)
        plugin.transition("make-0-0a1b2c3d-1", "waiting", "processing", stimulus_id="s")
        _finished(plugin, "inc-delayed-9f8e7d6c5b4a39281706f5e4d3c2b1a0", nbytes=8)  # dask's own
        _finished(plugin, ("tuple-key", 0), nbytes=8)
        _finished(plugin, "inc-0-0a1b2c3d-1", worker="tcp://w:2", nbytes=8, start=1.0, stop=1.25,
                  metadata={"nbflow": (0.2, 4096)})  # (what its worker measured: see below)
        _finished(plugin, "total-0+3-0a1b2c3d-2", nbytes=16)  # a batched chunk's key
        assert sched.logged == []  # (sent once the turn is over)
        await asyncio.sleep(0)
        assert len(sched.logged) == 1
        topic, msg = sched.logged[0]
        assert topic == dask_backend.TOPIC
        # (each with when it ran on its worker: start and stop, the scheduler's clock)
        assert msg == {"done": [["make-0-0a1b2c3d-0", "tcp://w:1", 800, 0.5, None, 10.0, 10.5],
                                ["inc-0-0a1b2c3d-1", "tcp://w:2", 8, 0.25, (0.2, 4096), 1.0, 1.25],
                                ["total-0+3-0a1b2c3d-2", "tcp://w:1", 16, 0.5, None, 10.0, 10.5]]}
        # the next turn's completion is an event of its own
        _finished(plugin, "inc-1-0a1b2c3d-4")
        await asyncio.sleep(0)
        assert [len(m["done"]) for _, m in sched.logged] == [3, 1]
        assert (plugin.events, plugin.completions) == (2, 4)
        # switched off (a benchmark's variant): nothing is sent
        assert dask_plugin.set_reporting(type("S", (), {"plugins": {plugin.name: plugin}})(), False)
        _finished(plugin, "inc-2-0a1b2c3d-5")
        await asyncio.sleep(0)
        assert len(sched.logged) == 2

    asyncio.run(scenario())


def _events_of(scheduler, tag: str) -> tuple[list, list]:
    """The worker announcements and the plugin's completions of one run on nbflow's topic."""
    announced, completed = [], []
    for _, msg in scheduler.get_events(dask_backend.TOPIC):
        if "done" in msg:
            completed += [d for d in msg["done"] if f"-{tag}-" in d[0]]
        elif f"-{tag}-" in str(msg.get("key", "")) and "worker" in msg:
            announced.append(msg)
    return announced, completed


def test_workers_announce_nothing_when_the_plugin_tells_completions(client):
    scheduler = client.cluster.scheduler
    wf, out = _ahead.chains("plugin-told", n_chains=2, length=3)
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    assert run[out] == 1000 * (0 + 2) + 1000 * (1 + 2)
    assert backend._announce is None  # tasks were sent with no topic to announce on
    n = len(run.tasks)
    announced, completed = _events_of(scheduler, backend._tag)
    assert announced == []  # no per-task log_event from the workers
    assert sorted(d[0].rsplit("-", 2)[0] for d in completed) == sorted(run.tasks["key"])
    # every task's worker, size and seconds came from the scheduler: nothing was asked
    assert backend.told_by_worker == n and backend.asked_scheduler == 0
    assert backend._watcher.late == 0
    workers = set(client.scheduler_info()["workers"])
    agent = run.locality.agent
    for key in run.tasks["key"]:
        assert agent.worker_of[key] in workers
        assert agent.seconds_of[key] is not None and agent.seconds_of[key] >= 0
    # the sizes the scheduler told are what the journal keeps for each task
    stored = nf.load_run(run.id).tasks.set_index("key")
    for key, nbytes in zip(run.tasks["key"], run.tasks["output_bytes"], strict=True):
        assert nbytes > 0 and stored.loc[key, "output_bytes"] == nbytes
    assert stored.loc[out.key, "output_bytes"] == run.tasks.set_index("key").loc[out.key, "output_bytes"]
    # the CPU time and peak memory each worker measured came with the completions, for the
    # results that stayed on the workers too (no envelope could carry them)
    assert backend.unheld > 0
    _assert_measured(run)


def _assert_measured(run) -> None:
    """Every task of a Dask run has the CPU seconds and peak RSS its worker measured, in
    ``run.tasks`` and in the journal."""
    tasks = run.tasks.set_index("key")
    stored = nf.load_run(run.id).tasks.set_index("key")
    for key in tasks.index:
        assert tasks.loc[key, "cpu_s"] >= 0 and tasks.loc[key, "peak_rss"] > 0, tasks.loc[key]
        assert stored.loc[key, "cpu_s"] == tasks.loc[key, "cpu_s"]
        assert stored.loc[key, "peak_rss"] == tasks.loc[key, "peak_rss"]
    # the edges the workers logged are named by task (the plugin's completions map each
    # Dask key to its task), in run.transfers and in the journal alike
    from nbflow.store.hooks import stored_transfers

    edges = run.transfers
    assert set(edges["producer"]) <= set(run.tasks["key"])
    assert len(stored_transfers(run.id)) == len(edges)


@pytest.fixture
def fresh():
    """A cluster of its own: what the plugin does there is this test's business."""
    with own_client() as c:
        yield c


def _check_announced_run(c) -> None:
    wf, out = _ahead.chains("no-plugin", n_chains=2, length=3)
    run = wf.start(backend=c, cache=False)
    run.wait(timeout=DEADLINE)
    assert run.status == "completed"
    assert run[out] == 1000 * (0 + 2) + 1000 * (1 + 2)
    backend = run.backends["dask"]
    assert backend._announce == dask_backend.TOPIC  # the workers announced
    announced, completed = _events_of(c.cluster.scheduler, backend._tag)
    assert completed == []
    assert len(announced) == len(run.tasks)
    assert (run.tasks["output_bytes"] > 0).all()
    _assert_measured(run)  # (the announcements carry the metrics)


def test_without_the_plugin_the_workers_announce_and_the_run_completes(fresh, monkeypatch):
    def refuse(self, plugin, name=None, idempotent=None):
        raise RuntimeError("this scheduler cannot import nbflow")

    monkeypatch.setattr(distributed.Client, "register_plugin", refuse)
    _check_announced_run(fresh)
    assert nf.engine.backends.dask_recovery.active(fresh) is False
    assert fresh.cluster.scheduler.plugins.get(dask_plugin.NAME) is None


def test_a_plugin_that_sends_no_completions_leaves_the_announcements_on(fresh, monkeypatch):
    # an older nbflow on the scheduler: its plugin loosens restrictions and notes failures,
    # but sends no completions; the client learns so when it registers the plugin
    monkeypatch.delattr(dask_plugin.LooseRestrictions, "REPORTS_COMPLETIONS")
    monkeypatch.setattr(dask_plugin.LooseRestrictions, "_completed", lambda self, key, facts: None)
    _check_announced_run(fresh)
    assert nf.engine.backends.dask_recovery.active(fresh) is True


def test_a_finished_future_whose_completion_is_never_told_is_not_waited_for(fresh, monkeypatch):
    # the client counts on the plugin, which then says nothing: each finished (held) future
    # is handed over after LATE seconds and the backend asks the scheduler where it is
    monkeypatch.setenv("NBFLOW_DASK_HOLD_ALL", "1")  # (an unheld task needs its completion told)
    monkeypatch.setattr(dask_watch, "LATE", 0.2)
    wf, out = _ahead.chains("never-told", n_chains=1, length=2)
    run = wf.run(backend=fresh, cache=False)  # registers the plugin
    assert run.backends["dask"]._announce is None
    fresh.run_on_scheduler(dask_plugin.set_reporting, on=False)
    wf, out = _ahead.chains("never-told", n_chains=1, length=2)
    run = wf.start(backend=fresh, cache=False)
    run.wait(timeout=DEADLINE)
    assert run.status == "completed" and run[out] == 1000.0
    backend = run.backends["dask"]
    n = len(run.tasks)
    assert backend._watcher.late == n and backend.asked_scheduler == n
    assert (run.tasks["output_bytes"] > 0).all()


def test_a_value_the_plugin_sized_is_the_one_dask_holds(client):
    # the size the scheduler told is Dask's own measure of the value on its worker
    with nf.Workflow("plugin-sizes") as wf:
        big = make(50_000)
        out = inc(big)
    run = wf.run(backend=client, cache=False)
    sizes = dict(zip(run.tasks["key"], run.tasks["output_bytes"], strict=True))
    assert sizes[out.key] >= np.zeros(50_000).nbytes
    assert run[out].shape == (50_000,)


def test_a_window_gathers_completions_and_a_held_one_sends_them_at_once() -> None:
    async def scenario():
        plugin = dask_plugin.LooseRestrictions(window=30.0)  # (never reached in this test)
        sched = _Scheduler()
        await plugin.start(sched)
        _finished(plugin, "make-0-0a1b2c3d-0")
        await asyncio.sleep(0)
        _finished(plugin, "inc-0-0a1b2c3d-1")  # a later turn: still gathered
        await asyncio.sleep(0)
        assert sched.logged == []
        # a completion a client holds a future for: sent with everything before it
        sched.tasks["total-0-0a1b2c3d-2"] = type("TS", (), {"who_wants": {"client"}})()
        _finished(plugin, "total-0-0a1b2c3d-2")
        await asyncio.sleep(0)
        assert [[d[0] for d in m["done"]] for _, m in sched.logged] == [
            ["make-0-0a1b2c3d-0", "inc-0-0a1b2c3d-1", "total-0-0a1b2c3d-2"]]
        assert plugin._timer is None

    asyncio.run(scenario())


def test_what_waits_is_sent_when_a_held_task_starts() -> None:
    # the run will need the completions before a task it holds once that task ends: they
    # go as it starts on a worker, so the client takes them while it runs
    async def scenario():
        plugin = dask_plugin.LooseRestrictions(window=30.0)  # (never reached in this test)
        sched = _Scheduler()
        await plugin.start(sched)
        held = type("TS", (), {"who_wants": {"client"}})()
        unheld = type("TS", (), {"who_wants": set()})()
        sched.tasks.update({"inc-0-0a1b2c3d-1": unheld, "total-0-0a1b2c3d-2": held})
        _finished(plugin, "make-0-0a1b2c3d-0")
        plugin.transition("inc-0-0a1b2c3d-1", "waiting", "processing", stimulus_id="s")
        await asyncio.sleep(0)
        assert sched.logged == []  # (a task nobody holds started: nothing is sent)
        plugin.transition("total-0-0a1b2c3d-2", "waiting", "processing", stimulus_id="s")
        await asyncio.sleep(0)
        assert [[d[0] for d in m["done"]] for _, m in sched.logged] == [["make-0-0a1b2c3d-0"]]
        assert plugin._timer is None
        # nothing waiting: a held task starting sends nothing
        plugin.transition("total-0-0a1b2c3d-2", "waiting", "processing", stimulus_id="s")
        await asyncio.sleep(0)
        assert len(sched.logged) == 1

    asyncio.run(scenario())


@nf.task
def nap(a, seconds: float):
    time.sleep(seconds)
    return a + 1


def test_unheld_completions_wait_for_a_held_one_and_durations_are_the_workers(fresh, monkeypatch):
    # A window far longer than the run: the completions of the chain's intermediates (no
    # future of this process holds them: their consumers are already on the cluster) wait
    # on the scheduler until a task the run holds starts or ends; then all go in one event.
    # The engine learns of the intermediates only then, yet records the seconds each call
    # took on its worker, not the moment it learnt of it.
    monkeypatch.setenv("NBFLOW_DASK_COMPLETIONS_WINDOW", "3600")
    with nf.Workflow("windowed") as wf:
        r = make(1000, 1.0)
        for _ in range(3):
            r = nap(r, 0.3)
        out = total(r)
    run = wf.start(backend=fresh, cache=False)
    run.wait(timeout=DEADLINE)
    assert run.status == "completed" and run[out] == 1000 * 4.0
    plugin = fresh.cluster.scheduler.plugins[dask_plugin.NAME]
    assert plugin.window == 3600.0 and plugin._timer is None
    backend = run.backends["dask"]
    assert backend.unheld >= 3  # (the three naps at least)
    events = [[d[0].rsplit("-", 2)[0] for d in msg["done"] if f"-{backend._tag}-" in d[0]]
              for _, msg in fresh.cluster.scheduler.get_events(dask_backend.TOPIC) if "done" in msg]
    # (the first two finished 0.3 s apart, each in a turn of its own: only the window put
    # them in one event, sent when a task the run holds (the last nap: ``r`` names it)
    # started)
    naps = {k for k in run.tasks["key"] if k.startswith("nap")}
    assert len(naps) == 3 and any({"nap-0", "nap-1"} <= set(e) for e in events), events
    durations = run.tasks.set_index("key")["duration_s"]
    assert all(durations[k] >= 0.3 for k in naps), durations


def test_the_completions_window_is_read_and_checked(monkeypatch) -> None:
    from nbflow.core.errors import InvalidOptionError
    from nbflow.engine.backends import dask_recovery

    monkeypatch.delenv("NBFLOW_DASK_COMPLETIONS_WINDOW", raising=False)
    assert dask_recovery.completions_window() == dask_recovery.WINDOW == 0.1
    monkeypatch.setenv("NBFLOW_DASK_COMPLETIONS_WINDOW", "0")
    assert dask_recovery.completions_window() == 0.0
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("NBFLOW_DASK_COMPLETIONS_WINDOW", bad)
        with pytest.raises(InvalidOptionError, match="NBFLOW_DASK_COMPLETIONS_WINDOW"):
            dask_recovery.completions_window()
