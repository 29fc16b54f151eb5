"""The loop a run's thread makes: a bare asyncio loop, made and closed per run.

Not ``anyio.run`` (a runner's set-up and close per run: most of the CPU a fresh loop
costs); anyio still works on it (cancel scopes, worker threads), and closing it cancels
what a task left scheduled and leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest
from conftest import nbflow_threads

import nbflow as nf
from nbflow.engine import run as run_module


@nf.task
async def nap(s: float) -> float:
    await anyio.sleep(s)
    return s


@nf.task
async def in_a_worker_thread() -> str:
    return await anyio.to_thread.run_sync(lambda: "from a thread")


@nf.task
def plain(x: str) -> str:
    return x + "!"


_left: list[asyncio.Task[None]] = []


@nf.task
async def leaves_a_task() -> int:
    async def forever() -> None:
        await asyncio.sleep(3600)

    _left.append(asyncio.get_running_loop().create_task(forever()))
    return 1


def test_a_run_does_not_go_through_anyio_run_and_anyio_works_on_its_loop(monkeypatch):
    def refused(*a, **k):
        raise AssertionError("anyio.run was called")

    monkeypatch.setattr(anyio, "run", refused)
    loops: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop

    def made() -> asyncio.AbstractEventLoop:
        loops.append(real())
        return loops[-1]

    monkeypatch.setattr(run_module.asyncio, "new_event_loop", made)
    with nf.Workflow("bare-loop") as wf:
        a = plain(in_a_worker_thread())
        b = nap(0.01)
    run = wf.run()
    assert run[a] == "from a thread!" and run[b] == 0.01
    assert len(loops) == 1 and loops[0].is_closed()
    assert [n for n in nbflow_threads() if not n.startswith("nbflow-lease")] == []


def test_cancelling_still_works_on_the_bare_loop():
    with nf.Workflow("bare-cancel") as wf:
        nap(30)
    run = wf.start()
    deadline = time.monotonic() + 30
    while run.count("running") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    run.cancel()
    run.wait(timeout=30, raise_on_error=False)
    assert run.status == "cancelled"
    assert [n for n in nbflow_threads() if not n.startswith("nbflow-lease")] == []


def test_what_a_task_left_scheduled_is_cancelled_as_the_loop_closes():
    _left.clear()
    with nf.Workflow("bare-left") as wf:
        x = leaves_a_task()
    run = wf.run()
    assert run[x] == 1 and len(_left) == 1 and _left[0].cancelled()


@pytest.mark.timeout(60)
def test_an_error_of_the_run_itself_still_reaches_the_caller(monkeypatch):
    async def broken(self):  # (the engine failing outside any task)
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(run_module.Run, "execute", broken)
    # no store: what a run's start registers with it (the journal's writer, the cache's
    # leases and their watcher thread) is let go by the engine's own end, which this
    # broken engine never reaches; it would outlive the test and be counted by later ones
    monkeypatch.setenv("NBFLOW_STORE", "0")
    with nf.Workflow("bare-broken") as wf:
        plain("x")
    with pytest.raises(RuntimeError, match="the engine broke"):
        wf.run()
