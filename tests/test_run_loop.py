"""The loop a run's thread makes: a bare asyncio loop, made and closed per run.

Not ``anyio.run`` (a runner's set-up and close per run: most of the CPU a fresh loop
costs); anyio still works on it (cancel scopes, worker threads), and closing it cancels
what a task left scheduled and leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import pytest
from conftest import nbflow_threads

import nbflow as nf
from nbflow.engine import run as run_module
from nbflow.workflow import prepare, run_options


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


class _CountingLoop(asyncio.SelectorEventLoop):
    """A run's loop that counts what it is asked to run to completion."""

    def __init__(self) -> None:
        super().__init__()
        self.driven: list[Any] = []

    def run_until_complete(self, future: Any) -> Any:
        self.driven.append(future)
        return super().run_until_complete(future)


def _counted_loops(monkeypatch: pytest.MonkeyPatch) -> list[_CountingLoop]:
    loops: list[_CountingLoop] = []

    def made() -> _CountingLoop:
        loops.append(_CountingLoop())
        return loops[-1]

    monkeypatch.setattr(run_module.asyncio, "new_event_loop", made)
    return loops


def test_the_loop_is_tidied_in_its_root_task_not_by_more_runs_of_the_loop(monkeypatch):
    # Each further run_until_complete is a task and two turns of the loop, each turn a
    # select() that lets go of the GIL on the way to wf.run returning; with nothing left to
    # tidy, the run's own root task is all the loop runs.
    loops = _counted_loops(monkeypatch)
    with nf.Workflow("tidy-once") as wf:
        a = plain(in_a_worker_thread())
    run = wf.run()
    assert run[a] == "from a thread!"
    assert len(loops) == 1 and loops[0].is_closed()
    assert len(loops[0].driven) == 1


_generators: list[Any] = []
_closed: list[str] = []


@nf.task
async def leaves_a_generator_open() -> int:
    async def gen() -> Any:
        try:
            yield 1
            yield 2
        finally:
            _closed.append("closed")

    g = gen()
    _generators.append(g)  # (held: only the loop's shutdown of async generators closes it)
    return await g.__anext__()


_executor_threads: list[threading.Thread] = []


def _in_the_executor() -> str:
    _executor_threads.append(threading.current_thread())
    return "from the executor"


@nf.task
async def uses_the_default_executor() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, _in_the_executor)


def test_closing_still_closes_async_generators_and_the_default_executor(monkeypatch):
    _generators.clear()
    _closed.clear()
    _executor_threads.clear()
    loops = _counted_loops(monkeypatch)
    shut: list[asyncio.AbstractEventLoop] = []
    real_shutdown = asyncio.BaseEventLoop.shutdown_default_executor

    async def shutdown(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> None:
        shut.append(self)
        await real_shutdown(self, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "shutdown_default_executor", shutdown)
    with nf.Workflow("tidy-what-is-left") as wf:
        g = leaves_a_generator_open()
        e = uses_the_default_executor()
    run = wf.run()
    assert run[g] == 1 and run[e] == "from the executor"
    assert _closed == ["closed"]  # (aclose()d as the loop closed, not left for the collector)
    # the run's loop shut its default executor down, which joins its thread (only this
    # run's: other tests' loops may have executor threads of their own, named alike; and
    # a loop closed without it lets the thread exit soon after, unjoined, so its being
    # gone alone would not tell)
    assert len(shut) == 1
    assert len(_executor_threads) == 1 and not _executor_threads[0].is_alive()
    assert len(loops[0].driven) == 1


def test_the_runs_loop_is_made_by_the_caller_before_its_thread_starts(monkeypatch):
    """Made in the run's thread, its system calls let the caller (woken by the thread's
    start) take the GIL while the run's thread waited to get it back, on the way to the
    engine; made by the caller, before the thread, and closed by the run's thread."""
    made_in: list[str] = []
    loops: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop

    def made() -> asyncio.AbstractEventLoop:
        made_in.append(threading.current_thread().name)
        loops.append(real())
        return loops[-1]

    monkeypatch.setattr(run_module.asyncio, "new_event_loop", made)
    with nf.Workflow("loop-made-by-caller") as wf:
        a = plain(in_a_worker_thread())
    run = wf.run()
    assert run[a] == "from a thread!"
    assert made_in == [threading.current_thread().name], made_in
    assert loops[0].is_closed()


class _RefusedThread(threading.Thread):
    """A run's thread that cannot be started (any other thread starts as usual)."""

    def start(self) -> None:
        if self.name.startswith("nbflow-run-"):
            raise RuntimeError("can't start new thread")
        super().start()


def test_a_loop_made_for_a_run_whose_thread_cannot_start_is_closed(monkeypatch):
    loops: list[asyncio.AbstractEventLoop] = []
    real = asyncio.new_event_loop

    def made() -> asyncio.AbstractEventLoop:
        loops.append(real())
        return loops[-1]

    with nf.Workflow("loop-thread-refused") as wf:
        plain("x")
    run = prepare(wf, run_options(wf, cache=False))
    monkeypatch.setattr(run_module.asyncio, "new_event_loop", made)
    monkeypatch.setattr(run_module.threading, "Thread", _RefusedThread)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run.start_in_thread()
    assert len(loops) == 1 and loops[0].is_closed(), "the loop made for the thread was left open"
