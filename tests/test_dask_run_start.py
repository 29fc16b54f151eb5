"""The start of a Dask run: nothing this process sends holds its first graph back.

``nf.last_run()`` keeps the latest run; starting another lets it go, and a run whose results
are on the cluster then sends the scheduler a release.  Dask's client sends what follows a
message no sooner than its batching interval after it (10 ms), so that release, sent while
the new run prepared, held the new run's first graph back.  A Dask run now keeps a displaced
Dask run until its first tasks are sent (then the release follows the graph), or until it
ends if it sends none; any other run, and a displaced local run, is let go of at once.
What is checked is what is alive and the order of the messages, never how long anything
took.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gc_control import no_cyclic_gc
from test_locality import inc, make, total  # (the same small array tasks)

import nbflow as nf
from nbflow.workflow import prepare, run_options

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client(dask_cluster: Any) -> Iterator[Any]:
    with distributed.Client(dask_cluster, set_as_default=False) as c:
        yield c


@nf.task
async def on_the_loop(x: int) -> int:  # (an async task runs on the run's loop, not on Dask)
    return x + 1


def first_run(client: Any) -> tuple[weakref.ref[Any], set[str]]:
    """A Dask run whose sink's result stays on the cluster, dropped by the caller: a weak
    reference to it and the Dask keys its results hold there."""
    with nf.Workflow("start-first") as wf:
        end = total(inc(make(80_000)), inc(make(80_000, 2.0)))
    run = wf.run(backend=client, cache=False)
    held = {r.dask_key for r in run._sched.results if getattr(r, "future", None) is not None}
    assert held, "the first run left nothing on the cluster"
    assert run[end] == 80_000 // 8 * 2 + 80_000 // 8 * 3
    run.locality.agent.settle()  # (the end-of-run read, deferred to a thread, is over)
    return weakref.ref(run), held


@contextmanager
def messages_to_the_scheduler(client: Any) -> Iterator[list[tuple[str, set[str]]]]:
    """(op, keys) of every message the client hands its batched stream to the scheduler,
    in order (on the client's loop, where they are queued)."""
    seen: list[tuple[str, set[str]]] = []
    comm = client.scheduler_comm
    send = comm.send

    def record(*msgs: Any) -> None:
        for m in msgs:
            if isinstance(m, dict):
                seen.append((str(m.get("op")), set(map(str, m.get("keys") or ()))))
        send(*msgs)

    comm.send = record
    try:
        yield seen
    finally:
        del comm.send  # (the instance attribute goes: the method is back)


def wait_for(check: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.timeout(300)
def test_the_displaced_run_is_released_after_the_next_runs_first_graph(client: Any) -> None:
    with no_cyclic_gc():
        gone, held = first_run(client)
        with nf.Workflow("start-second") as wf:
            total(inc(make(80_000)))
        with messages_to_the_scheduler(client) as seen:
            run = prepare(wf, run_options(wf, backend=client, cache=False))
            assert nf.last_run() is run
            assert gone() is not None, "the displaced run was let go before the new run sent anything"
            run.start_in_thread()
            run.wait()
            assert gone() is None, "the displaced run outlived the new run"

            def released() -> list[int]:
                return [n for n, (op, keys) in enumerate(list(seen))
                        if op == "client-releases-keys" and keys & held]

            assert wait_for(lambda: bool(released())), f"the first run's keys were never released: {seen}"
            graphs = [n for n, (op, _) in enumerate(seen) if op == "update-graph"]
            assert graphs, f"the second run sent no graph: {seen}"
            assert graphs[0] < released()[0], f"a release went before the new run's first graph: {seen}"


@pytest.mark.timeout(300)
def test_a_run_that_is_not_on_dask_lets_the_displaced_run_go_at_once(client: Any) -> None:
    with no_cyclic_gc():
        gone, _ = first_run(client)
        with nf.Workflow("start-local") as wf:
            inc(make(800))
        run = prepare(wf, run_options(wf, cache=False))
        assert gone() is None, "a local run kept the run it displaced"
        run.start_in_thread()
        run.wait()


@pytest.mark.timeout(300)
def test_a_dask_run_that_sends_nothing_lets_the_displaced_run_go_as_it_ends(client: Any) -> None:
    with no_cyclic_gc():
        gone, _ = first_run(client)
        with nf.Workflow("start-nothing-sent") as wf:
            end = on_the_loop(on_the_loop(1))
        run = prepare(wf, run_options(wf, backend=client, cache=False))
        assert gone() is not None
        run.start_in_thread()
        run.wait()
        assert run[end] == 3
        assert run.backends["dask"].batch is None or run.backends["dask"].batch.messages == 0
        assert gone() is None, "the displaced run outlived a Dask run that sent no task"


@pytest.mark.timeout(300)
def test_a_dask_run_lets_a_displaced_local_run_go_at_once(client: Any) -> None:
    """A local run's results are in this process and freeing them sends nothing: a Dask
    run does not keep such a run (it may wait long for its first Dask task)."""
    with no_cyclic_gc():
        with nf.Workflow("start-local-first") as first:
            inc(make(800))
        gone = weakref.ref(first.run(cache=False))
        del first
        with nf.Workflow("start-dask-after") as wf:
            inc(make(800))
        run = prepare(wf, run_options(wf, backend=client, cache=False))
        assert gone() is None, "a Dask run kept a displaced local run"
        run.start_in_thread()
        run.wait()
