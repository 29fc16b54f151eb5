"""Scheduling behaviour: parallelism, order, limits, retries, timeouts, failure, control."""

from __future__ import annotations

import signal
import threading
import time

import anyio
import pytest
from conftest import nbflow_threads, nbflow_threads_left

import nbflow as nf
from nbflow.core import events as ev
from nbflow.core.states import TRANSITIONS


def _intervals(run, keys=None):
    df = run.tasks
    if keys is not None:
        df = df[df["key"].isin(keys)]
    return [(r.start.timestamp(), r.end.timestamp()) for r in df.itertuples()]


def test_two_sleeping_tasks_overlap_in_threads():
    both = threading.Barrier(2, timeout=60)  # each waits inside its task for the other

    @nf.task
    def nap(i):
        both.wait()  # (raises BrokenBarrierError unless the two run at the same time)
        return i

    with nf.Workflow("overlap") as wf:
        a, b = nap(1), nap(2)
    run = wf.run()
    (s1, e1), (s2, e2) = _intervals(run, [a.key, b.key])
    assert max(s1, s2) < min(e1, e2), "the two tasks did not run at the same time"


def test_two_async_tasks_overlap_on_the_loop():
    arrived: list[int] = []
    both: list[anyio.Event] = []

    @nf.task
    async def anap(i):
        # each waits inside its task for the other (a deadline, not a bet on timing)
        if not both:
            both.append(anyio.Event())
        arrived.append(i)
        if len(arrived) == 2:
            both[0].set()
        with anyio.fail_after(60):
            await both[0].wait()
        return i

    with nf.Workflow("aoverlap") as wf:
        a, b = anap(1), anap(2)
    run = wf.run()
    (s1, e1), (s2, e2) = _intervals(run, [a.key, b.key])
    assert max(s1, s2) < min(e1, e2)
    assert set(run.tasks["executor"]) == {"async"}


def test_workers_limit_is_never_exceeded():
    live = 0
    peak = 0
    lock = threading.Lock()

    @nf.task
    def busy(i):
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        time.sleep(0.02)
        with lock:
            live -= 1
        return i

    with nf.Workflow("limit") as wf:
        for i in range(12):
            busy(i)
    wf.run(workers=3)
    assert peak == 3


def test_longest_remaining_path_is_dispatched_first():
    order = []

    @nf.task
    def step(name, *deps):
        order.append(name)

    with nf.Workflow("prio") as wf:
        # three lone tasks created first, then the head of a chain of four
        for i in range(3):
            step(f"lone{i}")
        r = step("chain0")
        for i in range(1, 4):
            r = step(f"chain{i}", r)
    wf.run(workers=1)
    assert order[0] == "chain0"


def test_user_priority_breaks_ties():
    order = []

    @nf.task
    def low(name):
        order.append(name)

    high = low.with_options(priority=5)
    with nf.Workflow("tie") as wf:
        low("a")
        low("b")
        high("urgent")
    wf.run(workers=1)
    assert order[0] == "urgent"


def test_resource_capacity_bounds_concurrent_demand():
    live = 0.0
    peak = 0.0
    lock = threading.Lock()

    def make(mem):
        @nf.task(name=f"mem{mem}", resources={"memory": f"{mem}GiB"})
        def use(i):
            nonlocal live, peak
            with lock:
                live += mem
                peak = max(peak, live)
            time.sleep(0.02)
            with lock:
                live -= mem

        return use

    big, small = make(3), make(1)
    with nf.Workflow("mem") as wf:
        for i in range(4):
            big(i)
            small(i)
    run = wf.run(workers=8, resources={"memory": "4GiB"})
    assert run.status == "completed"
    assert 0 < peak <= 4


def test_a_task_that_can_never_fit_is_refused_before_running():
    ran = []

    @nf.task(resources={"gpu": 2})
    def train():
        ran.append(1)

    with nf.Workflow("nofit") as wf:
        train()
    with pytest.raises(nf.WorkflowDefinitionError, match=r"no capacity for .gpu."):
        wf.run()
    with pytest.raises(nf.WorkflowDefinitionError, match="could never start"):
        wf.run(resources={"gpu": 1})
    assert ran == []
    assert wf.run(resources={"gpu": 2}).status == "completed"


def test_retries_count_attempts_and_succeed():
    calls = []

    @nf.task(retries=3, retry_delay=0.01)
    def flaky():
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    with nf.Workflow("retry") as wf:
        r = flaky()
    run = wf.run()
    assert run[r] == "ok"
    row = run.tasks.set_index("key").loc[r.key]
    assert row.attempts == 3 and row.state == "completed"
    kinds = [type(e).__name__ for e in run.events if getattr(e, "key", None) == r.key]
    assert kinds.count("TaskRetrying") == 2 and kinds.count("TaskStarted") == 3


def test_retries_exhausted_fail_with_the_last_error():
    @nf.task(retries=1, retry_delay=0)
    def always():
        raise ValueError("nope")

    with nf.Workflow("exhaust") as wf:
        r = always()
    run = wf.run(raise_on_error=False)
    assert run.status == "failed"
    row = run.tasks.set_index("key").loc[r.key]
    assert row.attempts == 2 and "ValueError: nope" in row.error


def test_a_hanging_thread_task_times_out_quickly():
    release = threading.Event()

    @nf.task(timeout=0.2)
    def hang():
        release.wait(30)
        return "late"

    with nf.Workflow("hang") as wf:
        r = hang()
    t0 = time.perf_counter()
    run = wf.run(raise_on_error=False)
    took = time.perf_counter() - t0
    release.set()
    assert run.status == "failed"
    assert isinstance(run.errors()[r.key], nf.TaskTimeout)
    assert "timed out after 0.2 s" in str(run.errors()[r.key])
    assert took < 20  # far below the 30 s the thread would have hung


def test_an_async_task_times_out_and_can_be_retried():
    tries = []

    @nf.task(timeout=0.1, retries=1, retry_delay=0)
    async def slow_then_fast():
        tries.append(1)
        if len(tries) == 1:
            await anyio.sleep(10)
        return "fast"

    with nf.Workflow("atime") as wf:
        r = slow_then_fast()
    run = wf.run()
    assert run[r] == "fast" and len(tries) == 2


def test_failure_skips_descendants_and_independent_branches_finish():
    @nf.task
    def boom(x):
        raise RuntimeError("broken input")

    @nf.task
    def ok(x):
        return x

    with nf.Workflow("branches") as wf:
        bad = boom(1)
        child = ok(bad)
        grandchild = ok(child)
        side = ok(2)
        after_side = ok(side)
    run = wf.run(raise_on_error=False)
    states = run.tasks.set_index("key")["state"].to_dict()
    assert states[bad.key] == "failed"
    assert states[child.key] == states[grandchild.key] == "skipped"
    assert states[side.key] == states[after_side.key] == "completed"
    assert "boom-0" in run.tasks.set_index("key").loc[grandchild.key, "error"]
    assert run.status == "failed"
    with pytest.raises(nf.TaskNotFinished, match="skipped"):
        run[grandchild]


def test_workflow_failed_carries_the_original_exception():
    @nf.task
    def divide(a, b):
        return a / b

    with nf.Workflow("zero") as wf:
        divide(1, 0)
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.run.status == "failed"
    assert "divide-0" in str(info.value) and "ZeroDivisionError" in str(info.value)
    tb = info.value.__cause__.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "divide" in frames  # the task's own frame is in the traceback


def test_continue_on_error_false_stops_at_the_first_failure():
    started = []

    @nf.task
    def fail_fast():
        raise ValueError("x")

    @nf.task
    def later(x):
        started.append(x)

    with nf.Workflow("ff") as wf:
        f = fail_fast()
        r = later(1)
        r.after(f)
        later(2).after(r)
    run = wf.run(raise_on_error=False, continue_on_error=False, workers=1)
    assert run.status == "failed" and started == []
    assert set(run.tasks["state"]) == {"failed", "cancelled"}


def test_cancel_from_another_thread_leaves_nothing_running():
    before = set(nbflow_threads())
    gate = threading.Event()

    @nf.task
    def sleeper(i):
        gate.set()
        time.sleep(0.3)
        return i

    with nf.Workflow("cancel") as wf:
        for i in range(20):
            sleeper(i)
    run = wf.start(workers=2)
    gate.wait(10)
    run.cancel()
    with pytest.raises(nf.WorkflowCancelled):
        run.wait()
    assert run.status == "cancelled"
    states = set(run.tasks["state"])
    assert "cancelled" in states and states <= {"completed", "cancelled"}
    assert nbflow_threads_left(before) == []


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler for SIGINT, as in a terminal or a kernel, whatever this
    process inherited: started in the background by a non-interactive shell (``make test
    &``, a script's ``cmd &``), a process begins with SIGINT ignored, Python then installs
    no handler, a real SIGINT does nothing and ``wf.run()`` returns after its tasks' 60 s
    ("DID NOT RAISE", as this test once failed)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _sigint_workflow(started: threading.Event) -> nf.Workflow:
    @nf.task
    async def forever():
        started.set()
        await anyio.sleep(60)

    with nf.Workflow("sigint") as wf:
        forever()
        forever()
    return wf


def _cancelled_and_gone() -> None:
    run = nf.last_run()
    assert run.status == "cancelled" and run.done
    assert set(run.tasks["state"]) == {"cancelled"}
    assert nbflow_threads_left() == []


def test_ctrl_c_in_the_calling_thread_cancels_the_run(python_sigint_handler):
    started = threading.Event()
    wf = _sigint_workflow(started)
    main = threading.current_thread()

    def interrupt():
        started.wait(60)
        signal.pthread_kill(main.ident, signal.SIGINT)  # a real Ctrl-C, to the calling thread

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        wf.run()
    assert started.is_set()
    _cancelled_and_gone()


def test_ctrl_c_before_the_caller_waits_for_the_run_cancels_it(monkeypatch):
    # The Ctrl-C lands once the run's tasks started but before the calling thread waits for
    # the run (where a busy machine can leave it: under load the test above once saw the
    # run still "running" after wf.run() raised).  Raised right there, deterministically.
    started = threading.Event()
    wf = _sigint_workflow(started)
    start_in_thread = nf.Run.start_in_thread

    def interrupted_after_start(run):
        start_in_thread(run)
        assert started.wait(60)
        raise KeyboardInterrupt  # (what Python's SIGINT handler raises at that point)

    monkeypatch.setattr(nf.Run, "start_in_thread", interrupted_after_start)
    with pytest.raises(KeyboardInterrupt):
        wf.run()
    _cancelled_and_gone()


def test_pause_holds_dispatch_until_resume():
    first = threading.Event()
    release = threading.Event()
    started = []

    @nf.task
    def step(i):
        started.append(i)
        first.set()
        release.wait(10)
        return i

    with nf.Workflow("pause") as wf:
        for i in range(4):
            step(i)
    run = wf.start(workers=1)
    first.wait(10)
    run.pause()
    release.set()
    # the running task finishes; nothing new may start while paused
    paused = False
    for e in list(run.events):
        paused = paused or type(e).__name__ == "RunPaused"
    deadline = time.monotonic() + 10
    while run.count("completed") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started == [0]
    assert not run.done
    run.resume()
    run.wait()
    assert sorted(started) == [0, 1, 2, 3]
    kinds = [type(e).__name__ for e in run.events]
    assert kinds.index("RunPaused") < kinds.index("RunResumed")


def test_run_inside_a_running_event_loop_like_jupyter():
    @nf.task
    def inc(x):
        return x + 1

    with nf.Workflow("inloop") as wf:
        r = inc(inc(1))

    async def cell():
        # a synchronous wf.run() from code running on an event loop, as in ipykernel
        return wf.run()

    run = anyio.run(cell)
    assert run[r] == 3


def test_arun_is_the_async_twin():
    @nf.task
    async def a(x):
        return x * 2

    @nf.task
    def b(x):
        return x + 1

    with nf.Workflow("arun") as wf:
        r = b(a(4))

    async def main():
        return await wf.arun()

    run = anyio.run(main)
    assert run[r] == 9 and run.status == "completed"


def test_a_10k_task_workflow_runs():
    @nf.task
    async def noop(*deps):
        return None

    with nf.Workflow("big") as wf:
        prev = [noop() for _ in range(100)]
        for _ in range(99):
            prev = [noop(prev[i], prev[(i + 7) % 100]) for i in range(100)]
    run = wf.run()
    assert len(wf) == 10_000
    assert run.counts == {"completed": 10_000}


def test_events_follow_the_state_table_and_cover_every_task():
    @nf.task(retries=1, retry_delay=0)
    def sometimes(x, seen=[]):  # noqa: B006 - deliberate: fail on the first call only
        seen.append(x)
        if len(seen) == 1:
            raise OSError("first call fails")
        return x

    @nf.task
    def boom(x):
        raise ValueError(x)

    with nf.Workflow("events") as wf:
        a = sometimes(1)
        b = boom(a)
        sometimes(b)
        sometimes(2)
    run = wf.run(raise_on_error=False)
    to_state = {ev.TaskReady: "ready", ev.TaskStarted: "running", ev.TaskRetrying: "retrying",
                ev.TaskCompleted: "completed", ev.TaskFailed: "failed", ev.TaskSkipped: "skipped",
                ev.TaskCancelled: "cancelled"}
    state = {}
    for e in run.events:
        if isinstance(e, ev.TaskEvent):
            new = to_state[type(e)]
            old = state.get(e.key, "pending")
            assert new in TRANSITIONS[old], f"{e.key}: {old} -> {new} is not in the table"
            state[e.key] = new
    assert state == run.tasks.set_index("key")["state"].to_dict()
    assert isinstance(run.events[0], ev.RunStarted) and isinstance(run.events[-1], ev.RunFinished)
    times = [e.time for e in run.events]
    assert times == sorted(times)


def test_subscribers_see_events_and_a_broken_one_does_not_break_the_run():
    seen = []

    def factory(run):
        return seen.append

    def broken_factory(run):
        def sub(e):
            raise RuntimeError("listener bug")

        return sub

    off1, off2 = nf.on_run(factory), nf.on_run(broken_factory)
    try:
        @nf.task
        def one():
            return 1

        with nf.Workflow("subs") as wf:
            one()
        run = wf.run()
    finally:
        off1()
        off2()
    assert run.status == "completed"
    assert [type(e).__name__ for e in seen] == [type(e).__name__ for e in run.events]


def test_tasks_table_and_graph_have_the_documented_columns():
    @nf.task
    def payload(n):
        return b"x" * n

    with nf.Workflow("cols") as wf:
        a = payload(10)
        payload(20).after(a)
    run = wf.run()
    df = run.tasks
    for col in ["key", "task", "state", "attempts", "start", "end", "duration_s", "cached",
                "output_bytes", "error"]:
        assert col in df.columns
    assert list(df["output_bytes"]) == [10, 20]
    assert (df["end"] >= df["start"]).all() and (df["duration_s"] >= 0).all()
    g = run.graph
    assert list(g.edges) == [("payload-0", "payload-1")]
    assert g.nodes["payload-1"]["state"] == "completed" and g.nodes["payload-1"]["output_bytes"] == 20


def test_a_stall_ends_the_run_with_an_error_naming_the_waiting_tasks():
    @nf.task
    def one():
        return 1

    @nf.task
    def two(x):
        return x + 1

    with nf.Workflow("stall") as wf:
        two(one())
    from nbflow.engine.run import Run

    run = Run(wf, nf.RunOptions())
    run._sched.waiting[1] += 1  # as if a completion were lost: two-0 can never become ready
    run.start_in_thread()
    with pytest.raises(nf.StallError, match="two-0"):
        run.wait()
    assert run.status == "failed"
    assert run.tasks.set_index("key").loc["two-0", "state"] == "cancelled"
