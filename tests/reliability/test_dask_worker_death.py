"""A Dask worker that dies in the middle of a run.

* A batched map chunk running on a worker that dies is retried on another worker by Dask
  (nbflow's chunk is one Dask task); the run completes, and the items of earlier chunks
  keep their results (Dask recomputes any of them that lived on the dead worker from the
  chunk that made it: nbflow holds the items' futures, so their lineage is known).
* A chunk that kills every worker it lands on fails its items with ``nf.WorkerLost``
  naming the items and the last worker; the other chunks complete and the run ends.
* A task hinted to a worker (placement) that dies when no other worker is running (here:
  a one-worker cluster) runs on the worker that replaces it; Dask alone would keep it
  waiting for the dead worker's address forever.
* A task sent with a hint naming a worker that had already left, while no worker runs,
  runs on the next worker that joins (the scheduler plugin strikes the departed worker as
  the task starts waiting; Dask wakes a waiting task only for a worker its hint names).
  Driven on an in-process scheduler: each step waits for the scheduler's state, not a time.
* A task sent with a hint naming a worker that is paused (memory pressure), while no worker
  runs, runs on the next worker that joins, or on another paused one that resumes, without
  waiting for the paused one to resume (the plugin strikes a worker that is not running
  from the hint as the task starts waiting; Dask wakes it only for a worker its hint
  names).  In-process too, the pause set on the worker as its memory monitor would.  (With
  a worker running, Dask itself sends such a task there: also tested.)
* A single task whose remote input lived on the dead worker: Dask recomputes the input
  (nbflow submitted it and still holds its future) and runs the task again elsewhere.

Each run is started in the background and waited for with a deadline, so a hang fails
the test instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dask_clusters import own_client

import nbflow as nf

distributed = pytest.importorskip("distributed")

KB = 1024
DEADLINE = 180  # seconds: far above what these runs take; reaching it means a hang


@pytest.fixture
def fragile():
    """A cluster of its own (workers die here), tolerating one death per task."""
    with own_client(processes=True, allowed_failures=1) as c:
        yield c


def finish(run: nf.Run) -> nf.Run:
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status not in ("running", "pending"), "the run hung after a worker died"
    return run


def note(folder: str, what: str) -> None:
    """Record a call (one file per call: the test counts them)."""
    from distributed import get_worker

    Path(folder, f"{what}@{os.getpid()}@{os.urandom(3).hex()}").write_text(get_worker().address)


def calls(folder: Path, what: str) -> list[str]:
    """The worker of each recorded call of ``what``."""
    return [p.read_text() for p in folder.iterdir() if p.name.split("@")[0] == what]


@nf.task
def item(i: int, folder: str, victim: int):
    note(folder, f"item{i}")
    if i == victim and not Path(folder, "died").exists():
        Path(folder, "died").write_text("x")
        os._exit(1)  # the worker process dies in the middle of the chunk
    return np.full(128 * KB // 8, float(i))  # large: stays on the worker as its own result


@nf.task
def killer(i: int, folder: str, victim: int):
    if i == victim:
        os._exit(1)  # every attempt: the chunk kills each worker it lands on
    return i


@nf.task
def total(parts) -> float:
    return float(sum(float(np.sum(p)) for p in parts))


def test_a_chunk_whose_worker_dies_is_retried_and_earlier_chunks_keep_their_results(
        fragile, tmp_path):
    folder = tmp_path / "calls"
    folder.mkdir()
    n, victim = 24, 17  # chunks of 4: the victim's chunk runs after earlier ones finished
    with nf.Workflow("chunk-death") as wf:
        parts = item.map(list(range(n)), folder=str(folder), victim=victim, batch=4)
        s = total(parts)
    run = finish(wf.start(backend=fragile, cache=False))
    assert run.status == "completed", run.errors()
    assert (folder / "died").exists()  # it really died
    assert run[s] == float(sum(i * (128 * KB // 8) for i in range(n)))
    tasks = run.tasks.set_index("key")
    keys = [f"item-{i}" for i in range(n)]
    assert (tasks.loc[keys, "state"] == "completed").all()
    assert (tasks.loc[keys, "attempts"] == 1).all()  # nbflow did not re-run finished items
    assert [float(v[0]) for v in run[parts]] == [float(i) for i in range(n)]
    # the victim's chunk ran again (Dask retried it on a live worker)
    assert len(calls(folder, f"item{victim}")) == 2


def test_a_chunk_that_kills_every_worker_fails_its_items_clearly(fragile, tmp_path):
    folder = tmp_path / "calls"
    folder.mkdir()
    n, victim = 12, 9
    with nf.Workflow("chunk-deaths") as wf:
        out = killer.map(list(range(n)), folder=str(folder), victim=victim, batch=4,
                         on_error="skip")
    run = finish(wf.start(backend=fragile, cache=False))
    errors = run.errors()
    chunk = [f"killer-{i}" for i in range(8, 12)]  # the victim's chunk: items 8..11
    assert sorted(errors) == sorted(chunk)
    for key in chunk:
        err = errors[key]
        assert isinstance(err, nf.WorkerLost)
        text = str(err)
        assert "chunk of 4 map items from 'killer-8'" in text  # the items of the chunk
        assert "tcp://127.0.0.1" in text  # the last worker it killed
        assert "allowed-failures" in text
    assert run[out] == list(range(8))  # earlier chunks kept their results


@nf.task
def produce(folder: str):
    note(folder, "produce")
    return np.full(1_000_000 // 8, 2.0)


@nf.task
def consume(a, folder: str):
    note(folder, "consume")
    if not Path(folder, "died").exists():
        from distributed import get_worker

        Path(folder, "died").write_text(get_worker().address)
        os._exit(1)  # dies where its input lives (placement): the input is lost with it
    return float(a.sum())


def test_a_task_whose_remote_input_died_with_its_worker(fragile, tmp_path):
    folder = tmp_path / "calls"
    folder.mkdir()
    with nf.Workflow("input-death") as wf:
        a = produce(str(folder))
        out = consume(a, str(folder))
    run = finish(wf.start(backend=fragile, cache=False))
    assert run.status == "completed", run.errors()
    assert run[out] == 250_000.0
    assert len(calls(folder, "consume")) == 2  # died once, then ran elsewhere
    produced = calls(folder, "produce")
    died_on = (folder / "died").read_text()
    if died_on in produced:
        # The consumer ran next to its input (placement), so the input died with it and
        # Dask recomputed it from the producer's task, which nbflow's future keeps known.
        assert len(produced) == 2 and len(set(produced)) == 2
    else:  # (Dask stole the consumer to the other worker: the input survived)
        assert len(produced) == 1
    assert float(run[a][0]) == 2.0


def die_once(marker: str) -> int:
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)
    return 1


def test_a_hinted_task_outlives_the_only_worker(tmp_path):
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        try:
            with distributed.Client(cluster, set_as_default=False) as c:
                with nf.Workflow("only-worker") as wf:
                    out = nf.task(die_once)(str(tmp_path / "marker"))
                run = finish(wf.start(backend=c, cache=False))
                assert run.status == "completed", run.errors()
                assert run[out] == 1
                assert (tmp_path / "marker").exists()
        finally:
            cluster.close()


def inc(x: int) -> int:
    return x + 1


async def until(check, what: str, deadline: float = 60.0) -> None:
    """Wait (polling the in-process scheduler's state) until ``check()`` holds."""
    import asyncio
    import time

    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"the scheduler never reached: {what}"
        await asyncio.sleep(0.01)


def test_a_task_hinted_at_a_worker_that_already_left_runs_on_the_next_one():
    import asyncio

    from nbflow.engine.backends.dask_plugin import LooseRestrictions
    from nbflow.engine.backends.dask_recovery import NAME

    async def scenario() -> None:
        async with (distributed.Scheduler(port=0, dashboard_address=":0", validate=True) as s,
                    distributed.Client(s.address, asynchronous=True) as c):
            await c.register_plugin(LooseRestrictions(), name=NAME)
            async with distributed.Worker(s.address, nthreads=1) as gone:
                departed = gone.address
            await until(lambda: departed not in s.workers, "the worker's departure")
            # the hint is made after the worker left (as nbflow's placement may be)
            fut = c.submit(inc, 1, key="inc-stalehint-0", workers=[departed],
                           allow_other_workers=True)
            await until(lambda: fut.key in s.tasks and s.tasks[fut.key].state == "no-worker",
                        "the task waiting for a worker")
            async with distributed.Worker(s.address, nthreads=1) as joined:
                # the scheduler wakes what the worker can run as it counts it running (one
                # handler, one turn of its loop): a task still waiting then waits forever
                await until(lambda: s.workers.get(joined.address) in s.running,
                            "the new worker running")
                assert s.tasks[fut.key].state != "no-worker", s.tasks[fut.key].worker_restrictions
                assert await asyncio.wait_for(fut, DEADLINE) == 2

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def paused_worker(address: str, s: Any) -> AsyncIterator[Any]:
    """A worker of the in-process scheduler at ``address``, paused (as its memory monitor
    pauses one under memory pressure), once the scheduler counts it paused.  Without a
    memory limit it has no monitor that would resume it: it stays paused until told."""
    from distributed.core import Status

    async with distributed.Worker(address, nthreads=1, memory_limit=0) as w:
        w.status = Status.paused  # (tells the scheduler, as the monitor's pause does)
        await until(lambda: getattr(s.workers.get(w.address), "status", None) == Status.paused,
                    "the worker paused")
        yield w


def test_a_task_hinted_at_a_paused_worker_runs_on_a_worker_that_joins():
    import asyncio

    from distributed.core import Status

    from nbflow.engine.backends.dask_plugin import LooseRestrictions
    from nbflow.engine.backends.dask_recovery import NAME

    async def scenario() -> None:
        async with (distributed.Scheduler(port=0, dashboard_address=":0", validate=True) as s,
                    distributed.Client(s.address, asynchronous=True) as c):
            await c.register_plugin(LooseRestrictions(), name=NAME)
            async with paused_worker(s.address, s) as paused:
                fut = c.submit(inc, 1, key="inc-pausehnt-0", workers=[paused.address],
                               allow_other_workers=True)
                await until(lambda: fut.key in s.tasks and s.tasks[fut.key].state == "no-worker",
                            "the task waiting for a worker")
                async with distributed.Worker(s.address, nthreads=1, memory_limit=0) as joined:
                    # woken as the scheduler counts the new worker running (one handler)
                    await until(lambda: s.workers.get(joined.address) in s.running,
                                "the new worker running")
                    assert s.tasks[fut.key].state != "no-worker", s.tasks[fut.key].worker_restrictions
                    assert await asyncio.wait_for(fut, DEADLINE) == 2
                    assert {ws.address for ws in s.tasks[fut.key].who_has} == {joined.address}
                assert s.workers[paused.address].status == Status.paused  # (it never resumed)

    asyncio.run(scenario())


def test_a_task_hinted_at_a_paused_worker_runs_on_another_that_resumes():
    import asyncio

    from distributed.core import Status

    from nbflow.engine.backends.dask_plugin import LooseRestrictions
    from nbflow.engine.backends.dask_recovery import NAME

    async def scenario() -> None:
        async with (distributed.Scheduler(port=0, dashboard_address=":0", validate=True) as s,
                    distributed.Client(s.address, asynchronous=True) as c):
            await c.register_plugin(LooseRestrictions(), name=NAME)
            async with paused_worker(s.address, s) as hinted, paused_worker(s.address, s) as other:
                fut = c.submit(inc, 1, key="inc-pausehnt-1", workers=[hinted.address],
                               allow_other_workers=True)
                await until(lambda: fut.key in s.tasks and s.tasks[fut.key].state == "no-worker",
                            "the task waiting for a worker")
                other.status = Status.running  # the other one resumes; the hinted one does not
                await until(lambda: s.workers[other.address] in s.running,
                            "the other worker running again")
                assert s.tasks[fut.key].state != "no-worker", s.tasks[fut.key].worker_restrictions
                assert await asyncio.wait_for(fut, DEADLINE) == 2
                assert {ws.address for ws in s.tasks[fut.key].who_has} == {other.address}
                assert s.workers[hinted.address].status == Status.paused

    asyncio.run(scenario())


def test_dask_itself_sends_a_task_hinted_at_a_paused_worker_to_a_running_one():
    """What the plugin leaves to Dask: with a worker running, a task loosely hinted at a
    paused one never waits (``decide_worker`` falls back to any running worker for
    ``loose_restrictions``); no plugin is registered here."""
    import asyncio

    async def scenario() -> None:
        async with (distributed.Scheduler(port=0, dashboard_address=":0", validate=True) as s,
                    distributed.Client(s.address, asynchronous=True) as c,
                    paused_worker(s.address, s) as paused,
                    distributed.Worker(s.address, nthreads=1, memory_limit=0) as running):
            await until(lambda: s.workers.get(running.address) in s.running,
                        "the other worker running")
            fut = c.submit(inc, 1, key="inc-pausehnt-2", workers=[paused.address],
                           allow_other_workers=True)
            assert await asyncio.wait_for(fut, DEADLINE) == 2
            assert {ws.address for ws in s.tasks[fut.key].who_has} == {running.address}

    asyncio.run(scenario())


def test_only_workers_that_cannot_run_leave_a_loose_hint_and_a_strict_one_is_kept():
    from types import SimpleNamespace

    from nbflow.engine.backends.dask_plugin import LooseRestrictions

    def task(*hint: str, loose: bool = True) -> SimpleNamespace:
        return SimpleNamespace(worker_restrictions=set(hint), loose_restrictions=loose)

    here, paused = object(), object()  # (worker states: "paused" is connected, not running)
    tasks = {"loose": task("tcp://here", "tcp://gone", "tcp://paused"),
             "gone": task("tcp://gone"), "paused": task("tcp://paused"),
             "strict": task("tcp://gone", "tcp://paused", loose=False)}
    plugin = LooseRestrictions()
    plugin.scheduler = SimpleNamespace(workers={"tcp://here": here, "tcp://paused": paused},
                                       running={here}, tasks=tasks)
    for key in tasks:
        plugin.transition(key, "waiting", "no-worker", stimulus_id="test")
    assert tasks["loose"].worker_restrictions == {"tcp://here"} and tasks["loose"].loose_restrictions
    for key in ("gone", "paused"):
        assert tasks[key].worker_restrictions is None and not tasks[key].loose_restrictions
    assert tasks["strict"].worker_restrictions == {"tcp://gone", "tcp://paused"}
    assert not tasks["strict"].loose_restrictions
