"""The live view of a Dask run follows the cluster: a task that finished there is taken in at
once (not when an engine slot frees), and a task's start and end are when its call ran on
its worker, in this process's clock.

Slots are made busy deterministically: tasks that leave their worker's thread pool
(``distributed.secede``, so the cluster can go on) and wait on a ``distributed.Event`` the
test sets.  Nothing here measures or compares durations; the clock tests use fixed numbers.
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest

import nbflow as nf
from nbflow.core.events import TaskCompleted
from nbflow.engine.backends.dask_clock import Clock

distributed = pytest.importorskip("distributed")

from dask_clusters import own_client  # noqa: E402

from nbflow.engine.backends.dask import DaskBackend  # noqa: E402

DEADLINE = 60.0  # seconds: far above what these runs take; reaching it means the view lags


@pytest.fixture(scope="module")
def client():
    with own_client() as c:
        yield c


@nf.task
def hold(n: int, name: str) -> int:
    """Holds an engine slot until the test says so, leaving its worker's thread free."""
    distributed.secede()  # (the cluster runs other tasks meanwhile: its thread is free)
    distributed.Event(name).wait()
    return n


@nf.task
def first() -> np.ndarray:
    return np.arange(1000.0)


@nf.task
def second(a: np.ndarray) -> float:
    return float(a.sum())


@nf.task
def gather(*parts: int) -> int:
    return sum(parts)


@nf.task
def step(x: int) -> int:
    return x + 1


def _graph(name: str, gate: str) -> tuple[nf.Workflow, list[nf.Ref], nf.Ref]:
    """Two holders whose path to the end is the longest (the engine starts them first and
    they take both of its slots: the cluster has two threads) and a short chain
    first -> second that goes to the cluster ahead with the first submission."""
    with nf.Workflow(name) as wf:
        holders = [hold(k, gate) for k in range(2)]
        step(step(step(gather(*holders))))
        quick = second(first())
    return wf, holders, quick


def _states(run: nf.Run) -> dict[str, str]:
    t = run.tasks
    return dict(zip(t["key"], t["state"], strict=True))


def _wait_for(run: nf.Run, keys: list[str], state: str) -> dict[str, str]:
    """Poll ``run.tasks`` until each of ``keys`` is in ``state`` (or the deadline)."""
    end = time.monotonic() + DEADLINE
    while True:
        states = _states(run)
        if all(states.get(k) == state for k in keys) or time.monotonic() > end:
            return states
        time.sleep(0.02)


@pytest.mark.parametrize("cache", [False, True])
def test_a_task_that_finished_on_the_cluster_completes_while_every_slot_is_busy(client, cache):
    gate = f"nbflow-live-{uuid.uuid4().hex}"
    wf, _, quick = _graph(f"live-slots-{cache}", gate)
    run = wf.start(backend=client, cache=cache)
    try:
        states = _wait_for(run, ["first-0", "second-0"], "completed")
        # taken in while both slots are held by tasks that cannot end before the gate opens
        assert states["first-0"] == states["second-0"] == "completed", states
        assert states["hold-0"] == states["hold-1"] == "running", states
        done = [e.key for e in run.events if isinstance(e, TaskCompleted)]
        assert done == ["first-0", "second-0"]  # (inputs complete before what takes them)
        assert run.backends["dask"].taken_early >= 1
        # the slots are still the holders': taking the others in used none of them
        sched = run._sched
        assert sched.busy == 2 and sched.avail["executor:dask"] == 0 and not sched.slotless
    finally:
        distributed.Event(gate, client=client).set()
        run.wait()
    assert run.status == "completed"
    assert run[quick] == float(np.arange(1000.0).sum())
    done = [e.key for e in run.events if isinstance(e, TaskCompleted)]
    assert done.index("second-0") < done.index("hold-0")
    if cache:  # the taken-in tasks' results were committed before they counted as completed
        again = wf.run(backend=client, cache=True)
        t = again.tasks.set_index("key")
        assert bool(t.loc["first-0", "cached"]) and bool(t.loc["second-0", "cached"])


def test_a_run_cancelled_while_slots_are_held_keeps_what_was_taken_in(client):
    gate = f"nbflow-live-{uuid.uuid4().hex}"
    wf, _, _ = _graph("live-cancel", gate)
    run = wf.start(backend=client, cache=False)
    try:
        states = _wait_for(run, ["first-0", "second-0"], "completed")
        assert states["second-0"] == "completed", states
        run.cancel()
        run.wait(raise_on_error=False)
    finally:
        distributed.Event(gate, client=client).set()
    states = _states(run)
    assert run.status == "cancelled"
    assert states["first-0"] == states["second-0"] == "completed"
    assert states["hold-0"] == states["hold-1"] == "cancelled"
    assert not run._sched.taking and not run._sched.slotless and not run._sched.to_take


def _worker_log(dask_worker) -> dict[str, tuple[float, float]]:
    """On each worker: when its state machine moved each task to executing and from
    executing to memory (its transition log, the worker's own clock)."""
    began: dict[str, float] = {}
    out = {}
    for entry in dask_worker.state.log:
        if len(entry) == 7 and isinstance(entry[0], str):
            key, start, finish, _, _, _, at = entry
            if finish == "executing":
                began[key] = at
            elif start == "executing" and finish == "memory" and key in began:
                out[key] = (began[key], at)
    return out


@pytest.fixture(scope="module")
def process_client():
    with own_client(processes=True) as c:  # (workers in processes of their own)
        yield c


@pytest.mark.parametrize("where", ["threads", "processes"])
def test_start_and_end_are_when_the_call_ran_on_its_worker(where, request):
    client = request.getfixturevalue("client" if where == "threads" else "process_client")
    learned: dict[str, float] = {}

    def note(e) -> None:  # when the run told its subscribers that the task completed
        if isinstance(e, TaskCompleted):
            learned[e.key] = time.time()

    with nf.Workflow(f"live-times-{where}") as wf:
        chain = [first()]
        chain.append(second(chain[0]))
        fan = [step(k) for k in range(4)]
        gather(*fan)
    stop = nf.on_run(lambda run: note)  # (subscribed before the run's first event)
    try:
        run = wf.run(backend=client, cache=False)
    finally:
        stop()
    assert run.status == "completed"
    backend = run.backends["dask"]
    logged: dict[str, tuple[float, float]] = {}
    for found in client.run(_worker_log).values():
        logged.update(found)
    t = run.tasks.set_index("key")
    stored = nf.load_run(run.id).tasks.set_index("key")
    for ref in wf.nodes:
        dask_key = next(r.dask_key for r in backend._results if r.key == ref.key)
        w_start, w_stop = logged[dask_key]
        start, end = t.loc[ref.key, "start"].timestamp(), t.loc[ref.key, "end"].timestamp()
        # one machine, one clock: the call's times as its worker took them, inside the
        # worker's own record of the task (to the microsecond run.tasks keeps), not when
        # the run started the task or learned of its end
        assert w_start - 1e-6 <= start <= end <= w_stop + 1e-6, (ref.key, start, end, w_start, w_stop)
        assert end <= learned[ref.key]
        assert t.loc[ref.key, "duration_s"] == pytest.approx(end - start, abs=1e-5)
        # the journal's rows say the same
        assert stored.loc[ref.key, "start"].timestamp() == pytest.approx(start, abs=1e-6)
        assert stored.loc[ref.key, "end"].timestamp() == pytest.approx(end, abs=1e-6)
    assert all(backend.clock.offset(w) == 0.0 for w in backend.clock.bounds)


def test_the_view_as_before_is_still_there_to_compare(client, monkeypatch):
    """``DaskBackend.live = False`` (what benchmarks/dask_lag.py compares against): the
    engine takes a finished task in when a slot frees, at the times it learned."""
    monkeypatch.setattr(DaskBackend, "live", False)
    gate = f"nbflow-live-{uuid.uuid4().hex}"
    wf, _, _ = _graph("live-before", gate)
    run = wf.start(backend=client, cache=False)
    try:
        # the quick chain finishes on the cluster (its own completion facts arrive) ...
        backend = None
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            backend = run.backends.get("dask")
            if backend is not None and backend.ahead is not None and any(
                    k.startswith("second-0-") for k in backend._located):
                break
            time.sleep(0.02)
        states = _states(run)
        # ... yet the engine shows it waiting: both slots are held
        assert states["second-0"] != "completed" and states["first-0"] != "completed", states
    finally:
        distributed.Event(gate, client=client).set()
        run.wait()
    assert run.status == "completed" and run.backends["dask"].taken_early == 0


# -- the clocks (no cluster: fixed numbers) ---------------------------------------------


def test_one_clock_is_not_shifted():
    c = Clock()
    c.submitting(1000.0)
    assert c.span("w1", 1000.1, 1000.4, received=1000.402) == (1000.1, 1000.4)
    assert c.offset("w1") == 0.0


def test_a_worker_clock_ahead_is_read_back_so_nothing_ends_after_it_was_known():
    c = Clock()
    c.submitting(1000.0)
    # the worker's clock is 10 s ahead: by it, the task stopped after its news arrived here
    start, stop = c.span("w1", 1010.1, 1010.4, received=1000.402)
    assert stop <= 1000.402  # never after the run learned of it
    assert (start, stop) == pytest.approx((1000.102, 1000.402), abs=1e-9)
    assert c.offset("w2") == 0.0  # (another worker's clock is its own)


def test_a_worker_clock_behind_is_read_forward_so_nothing_starts_before_it_was_sent():
    c = Clock()
    c.submitting(1000.0)
    start, stop = c.span("w1", 990.1, 990.4, received=1000.502)  # "before" the first submission
    assert start >= 1000.0 and stop <= 1000.502
    assert c.offset("w1") == pytest.approx(9.9)


def test_bounds_that_contradict_each_other_keep_the_end_before_the_news():
    c = Clock()
    c.submitting(1000.0)
    _, stop = c.span("w1", 999.0, 1000.6, received=1000.5)  # (neither bound holds 0)
    assert stop <= 1000.5


def test_without_bounds_the_times_stand():
    c = Clock()
    assert c.offset("w") == 0.0 and c.span("w", 5.0, 6.0, received=math.inf) == (5.0, 6.0)


# -- the news of a task that finished early (no cluster) ---------------------------------


def test_news_of_a_task_finished_early_rides_with_the_next_hand_off_or_goes_alone():
    import asyncio

    from nbflow.engine.backends import dask_watch

    class _Future:
        def __init__(self, key: str) -> None:
            self.key, self.status = key, None  # (unheld: waits for its announcement)

    async def until(cond) -> None:
        end = time.monotonic() + DEADLINE
        while not cond() and time.monotonic() < end:
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        told: set[str] = set()
        early: list[str] = []
        watcher = dask_watch.Watcher(None, loop, told=told.__contains__, located=True,
                                     early=early.append, early_keys={"x-0a1b2c3d-1", "y-0a1b2c3d-2"})
        got: list[str] = []
        watcher.watch(_Future("a-0a1b2c3d-0"), lambda f: got.append(f.key))
        await until(lambda: watcher.filed == 1)
        # a task sent ahead finishes, then a watched one, in the same turn of the client loop
        told.update({"x-0a1b2c3d-1", "a-0a1b2c3d-0"})
        watcher.announced("x-0a1b2c3d-1")
        watcher.announced("a-0a1b2c3d-0")
        await until(lambda: got and early)
        assert got == ["a-0a1b2c3d-0"] and early == ["x-0a1b2c3d-1"]
        assert watcher.wakeups == 1  # one wake-up of the run's loop for both
        await asyncio.sleep(dask_watch.EARLY_WAIT * 4)  # (its timer finds nothing left)
        assert watcher.wakeups == 1 and early == ["x-0a1b2c3d-1"]
        # alone, it goes by itself
        told.add("y-0a1b2c3d-2")
        watcher.announced("y-0a1b2c3d-2")
        await until(lambda: len(early) == 2)
        assert early == ["x-0a1b2c3d-1", "y-0a1b2c3d-2"] and watcher.wakeups == 2
        watcher.announced("z-0a1b2c3d-3")  # (not sent ahead: nobody is told)
        await asyncio.sleep(dask_watch.EARLY_WAIT * 4)
        assert watcher.wakeups == 2

    asyncio.run(scenario())
