"""``run.approve`` before the approval asks: the answer is kept and taken when it asks.

An answer given while the task before the approval still runs (the approval not ready
yet), or before the run has started at all (no event loop to hand it to yet), used to be
dropped: the approval then waited for an answer already given (or, headless, took its
``on_timeout``).  Driven with the real :class:`nbflow.Run`: the task before the approval
is held on an event until the answer is in, so nothing races; each wait has a generous
deadline, reached only when something hangs.  An approval that waits for an answer shows
in ``run.pending_approvals``; one given its answer early never does.

``run.approve`` on a task that is not an approval is refused (it has nothing to answer),
and a key that names no task still raises ``KeyError``.
"""

from __future__ import annotations

import threading
import time

import pytest

import nbflow as nf
from nbflow.workflow import prepare, run_options

DEADLINE = 60.0  # seconds: far above what these runs take; reaching it means a hang
GATES: dict[str, tuple[threading.Event, threading.Event]] = {}  # name -> (started, go on)


@nf.task
def gated(name: str) -> str:
    started, go_on = GATES[name]
    started.set()
    assert go_on.wait(DEADLINE), "the test never let the task go on"
    return name


def gate(name: str) -> tuple[threading.Event, threading.Event]:
    GATES[name] = (threading.Event(), threading.Event())
    return GATES[name]


def ended_or_waiting_for_an_answer(run: nf.Run) -> None:
    """Wait until the run ends or one of its approvals waits for an answer."""
    end = time.monotonic() + DEADLINE
    while not run.done and not run.pending_approvals:
        assert time.monotonic() < end, "the run neither ended nor asked"
        time.sleep(0.01)


def finish(run: nf.Run) -> None:
    """Make sure the run ends (cancelled if it still waits), whatever the test found."""
    if not run.done:
        run.cancel()
    run.wait(timeout=DEADLINE, raise_on_error=False)


@pytest.mark.parametrize("interactive", [True, False], ids=["interactive", "headless"])
def test_an_answer_given_while_the_task_before_the_approval_runs_is_taken(interactive):
    started, go_on = gate(f"before-{interactive}")
    with nf.Workflow("early-answer") as wf:
        before = gated(f"before-{interactive}")
        # (without the answer: a long wait, then the opposite of the answer given)
        ok = nf.approval("Deploy?", timeout=600, on_timeout="approve", after=(before,))
    run = prepare(wf, run_options(wf, cache=False))
    run.interactive_approvals = interactive
    run.start_in_thread()
    try:
        assert started.wait(DEADLINE), "the task before the approval never started"
        assert run.status == "running" and run.pending_approvals == []
        run.approve(ok, False)  # the approval is not ready: the task before it runs
        go_on.set()
        ended_or_waiting_for_an_answer(run)
        assert run.pending_approvals == [], "the approval waits for the answer already given"
        run.wait(timeout=DEADLINE)
        assert run.status == "completed"
        assert run[ok] is False
    finally:
        go_on.set()
        finish(run)


@pytest.mark.parametrize("interactive", [True, False], ids=["interactive", "headless"])
def test_an_answer_given_before_the_run_starts_is_taken_and_the_first_answer_stands(interactive):
    with nf.Workflow("answered-before-start") as wf:
        ok = nf.approval("Ship it?", timeout=600, on_timeout="approve")
    run = prepare(wf, run_options(wf, cache=False))
    run.interactive_approvals = interactive
    run.approve(ok, False)  # no loop yet to hand it to
    run.approve(ok.key, True)  # (a second answer changes nothing, as while it waits)
    run.start_in_thread()
    try:
        ended_or_waiting_for_an_answer(run)
        assert run.pending_approvals == [], "the approval waits for the answer already given"
        run.wait(timeout=DEADLINE)
        assert run[ok] is False
    finally:
        finish(run)


def test_an_answer_after_the_approval_ended_changes_nothing():
    with nf.Workflow("answered-late") as wf:
        ok = nf.approval("Ship it?", on_timeout="reject")  # headless: decided at once
    run = wf.run(cache=False)
    run.approve(ok, True)
    assert run[ok] is False


def test_approve_refuses_what_is_not_an_approval_of_the_run():
    _started, go_on = gate("not-an-approval")
    with nf.Workflow("not-an-approval") as wf:
        task = gated("not-an-approval")
        ok = nf.approval("Go?", on_timeout="reject", after=(task,))
    run = wf.start(cache=False)
    try:
        with pytest.raises(nf.RefUsageError, match=r"not an nf\.approval"):
            run.approve(task, True)
        with pytest.raises(KeyError, match="no task 'nope'"):
            run.approve("nope", True)
        go_on.set()
        run.wait(timeout=DEADLINE)
        assert run[task] == "not-an-approval" and run[ok] is False  # (nothing was answered)
    finally:
        go_on.set()
        finish(run)


def test_an_answer_kept_just_as_the_wait_begins_is_taken_not_overwritten():
    """``run.approve`` from another thread before the run's loop exists keeps its answer
    (``approvals.keep``) while the loop may already be starting the approval's wait: an
    answer that lands between the wait's look for one and its setting up an event to wait
    on is taken, not overwritten by that event (nobody would then set it).  Driven with a
    stand-in scheduler whose answers dict takes the answer at exactly that moment."""
    from types import SimpleNamespace

    import anyio

    from nbflow.core.states import READY
    from nbflow.engine import approvals

    class LandsAfterTheLook(dict):
        def get(self, key, default=None):  # the wait's look finds nothing; then the answer lands
            found = super().get(key, default)
            approvals.keep(s, key, False)
            return found

    done: dict[int, object] = {}
    node = SimpleNamespace(key="approval-0", args=("Go?",),
                           kwargs={"timeout": 0, "on_timeout": "approve"})
    s = SimpleNamespace(
        nodes=[node], state=[READY], answers=LandsAfterTheLook(), timers=1,
        interactive=lambda: True, enter=lambda e: None, emit=lambda e: None,
        _complete=lambda i, value, t, _: done.setdefault(i, value),
        _fail=lambda i, err, t: done.setdefault(i, err), _fill=lambda: None,
        _check_progress=lambda: None)
    anyio.run(approvals.wait_for_answer, s, 0)
    # (overwritten, the wait would find no answer by its timeout: on_timeout's True)
    assert done == {0: False}
    assert s.timers == 0
