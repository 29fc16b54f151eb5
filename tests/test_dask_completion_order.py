"""A completion some client holds is sent by nbflow's scheduler plugin from within its
transition, before the scheduler reports the key to that client: both then leave in one
batch of the scheduler's stream to the client (sent at the end of the turn, it could miss
that batch and wait the stream's 2 ms for the next).  Counted on a stand-in scheduler,
never timed."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("distributed")

from test_dask_completions import _Scheduler

from nbflow.engine.backends import dask_plugin

HELD = type("TS", (), {"who_wants": {"client"}})
UNHELD = type("TS", (), {"who_wants": set()})


def _finished(plugin, key) -> None:
    plugin.transition(key, "processing", "memory", stimulus_id="s", worker="tcp://w:1",
                      nbytes=8, metadata={},
                      startstops=[{"action": "compute", "start": 1.0, "stop": 1.5}])


def _done(sched) -> list[list[str]]:
    return [[d[0] for d in msg["done"]] for _, msg in sched.logged]


@pytest.mark.parametrize("window", [0.0, 30.0])  # (30 s: never reached here)
def test_a_held_completion_is_sent_within_its_transition(window):
    async def scenario():
        plugin = dask_plugin.LooseRestrictions(window=window)
        sched = _Scheduler()
        await plugin.start(sched)
        sched.tasks.update({"make-0-0a1b2c3d-0": UNHELD(), "total-0-0a1b2c3d-1": HELD()})
        _finished(plugin, "make-0-0a1b2c3d-0")
        assert sched.logged == []  # (nobody holds it: it waits)
        _finished(plugin, "total-0-0a1b2c3d-1")
        # sent before the transition returned, with what waited: no turn of the loop
        assert _done(sched) == [["make-0-0a1b2c3d-0", "total-0-0a1b2c3d-1"]]
        assert plugin._timer is None
        await asyncio.sleep(0)
        assert len(sched.logged) == 1  # (and nothing again at the end of the turn)

    asyncio.run(scenario())


def test_switched_off_a_held_completion_goes_at_the_end_of_the_turn(monkeypatch):
    monkeypatch.setattr(dask_plugin.LooseRestrictions, "held_now", False)

    async def scenario():
        plugin = dask_plugin.LooseRestrictions(window=30.0)
        sched = _Scheduler()
        await plugin.start(sched)
        sched.tasks["total-0-0a1b2c3d-1"] = HELD()
        _finished(plugin, "total-0-0a1b2c3d-1")
        assert sched.logged == []
        await asyncio.sleep(0)
        assert _done(sched) == [["total-0-0a1b2c3d-1"]]

    asyncio.run(scenario())
