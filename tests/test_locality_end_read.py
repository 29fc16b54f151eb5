"""A Dask run's end-of-run read asks a scheduler that runs in this process (a
``LocalCluster``'s) for the restarted tasks directly, without a message, and gets what the
message gets; a scheduler elsewhere is asked as before."""

from __future__ import annotations

from typing import Any

import pytest

from nbflow.locality import agent as agent_module
from nbflow.locality import memory
from nbflow.locality.agent import LocalityAgent

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(300)


def _bump(key: str, times: int, dask_scheduler: Any = None) -> int:
    """(On the scheduler) mark ``key``'s task as running on ``times`` workers that died."""
    dask_scheduler.tasks[key].suspicious = times
    return times


def test_a_scheduler_in_this_process_is_read_directly_with_the_same_answer(dask_cluster, monkeypatch):
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        held = client.submit(sum, [1, 2], key="end-read-restarted")
        assert held.result() == 3
        client.run_on_scheduler(_bump, held.key, 2)
        asked: list[Any] = []
        real = client.run_on_scheduler

        def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
            asked.append(fn)
            return real(fn, *args, **kwargs)

        monkeypatch.setattr(client, "run_on_scheduler", counting)
        keys = [held.key, "end-read-unknown"]
        got, restarted = LocalityAgent("none")._ask(client, keys)
        assert asked == []  # no message to the scheduler
        assert restarted == {held.key: 2} == real(memory.suspicious, keys)
        assert set(got) == set(client.scheduler_info()["workers"])
        assert all(set(g) == {"log", "memory"} for g in got.values())


def test_a_scheduler_elsewhere_is_asked(dask_cluster):
    with distributed.Client(dask_cluster.scheduler_address, set_as_default=False) as client:
        assert agent_module._scheduler_here(client) is None
    with distributed.Client(dask_cluster, set_as_default=False) as client:
        assert agent_module._scheduler_here(client) is dask_cluster.scheduler
