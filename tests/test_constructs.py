"""Branches, joins, bounded loops, sagas and approvals: constructs that compile to the DAG."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbflow as nf
from nbflow.engine.constructs import set_interactive_approvals

calls: list[str] = []


@nf.task
def value(x):
    calls.append(f"value:{x}")
    return x


@nf.task
def double(x):
    calls.append(f"double:{x}")
    return 2 * x


@nf.task
def negate(x):
    calls.append(f"negate:{x}")
    return -x


@nf.task
def boom(x=None):
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def _reset_calls():
    calls.clear()
    yield


def states(run):
    return run.tasks.set_index("key")["state"].to_dict()


@pytest.mark.parametrize("flag, expected", [(True, 10), (False, -5)])
def test_branch_takes_one_side_and_skips_the_other_with_a_reason(flag, expected):
    with nf.Workflow("br") as wf:
        x = value(5)
        cond = value(flag)
        out = nf.branch(cond, then=lambda: double(x), otherwise=lambda: negate(x))
        consumer = value(out)
    run = wf.run()
    assert run[out] == expected and run[consumer] == expected
    assert calls.count(f"value:{expected}") == 1  # the consumer ran exactly once
    untaken = "negate-0" if flag else "double-0"
    assert states(run)[untaken] == "skipped"
    reason = run.tasks.set_index("key").loc[untaken, "error"]
    assert "branch not taken" in reason and cond.key in reason
    assert ("negate:5" in calls) != flag and ("double:5" in calls) == flag


def test_branches_nest():
    def inner(flag):
        return nf.branch(flag, then=lambda: value("inner-then"), otherwise=lambda: value("inner-else"))

    with nf.Workflow("nest") as wf:
        out = nf.branch(value(True), then=lambda: inner(value(False)), otherwise=lambda: value("outer-else"))
    run = wf.run()
    assert run[out] == "inner-else"
    assert calls.count("value:inner-else") == 1
    assert "value:inner-then" not in calls and "value:outer-else" not in calls


def test_branch_side_may_return_a_plain_value_and_condition_may_be_a_value():
    with nf.Workflow("plain") as wf:
        out = nf.branch(False, then=lambda: double(1), otherwise=lambda: "fallback")
    run = wf.run()
    assert run[out] == "fallback" and calls == []


def test_a_task_consuming_a_skipped_value_is_skipped():
    with nf.Workflow("skipchain") as wf:
        side = {}

        def then():
            side["r"] = double(3)
            return side["r"]

        nf.branch(False, then=then, otherwise=lambda: 0)
        after = value(side["r"])  # takes the untaken side's value directly, not via the branch
    run = wf.run()
    assert states(run)[after.key] == "skipped"
    assert run.status == "completed"  # skipping is not failing


@settings(max_examples=25, deadline=None)
@given(st.integers(-50, 50), st.integers(0, 3))
def test_branch_true_behaves_as_its_then_side(n, depth):
    def chain(x):
        for _ in range(depth):
            x = double(x)
        return x

    with nf.Workflow("a") as wf_a:
        plain = chain(value(n))
    with nf.Workflow("b") as wf_b:
        via_branch = nf.branch(True, then=lambda: chain(value(n)), otherwise=lambda: negate(n))
    assert wf_a.run()[plain] == wf_b.run()[via_branch]


def test_first_takes_the_first_input_that_was_not_skipped():
    with nf.Workflow("first") as wf:
        skipped = nf.branch(False, then=lambda: value("a"), otherwise=lambda: None)
        side = {}

        def then():
            side["r"] = value("x")
            return side["r"]

        nf.branch(False, then=then)
        f = nf.first(side["r"], value("b"), value("c"))
    run = wf.run()
    assert run[f] == "b"
    assert run[skipped] is None


def test_first_is_skipped_when_an_input_failed():
    with nf.Workflow("first-fail") as wf:
        f = nf.first(boom(), value(1))
        after = value(f)
    run = wf.run(raise_on_error=False)
    assert states(run)[f.key] == "skipped" and states(run)[after.key] == "skipped"


def test_gather_all_of_any_of_and_k_of_n():
    with nf.Workflow("gather") as wf:
        ok1, ok2, bad = value(1), value(2), boom()
        any_of = nf.gather(bad, ok1, ok2, min_success=1)
        two = nf.gather(ok1, bad, ok2, min_success=2)
    run = wf.run()
    assert run[any_of] == [1, 2] and run[two] == [1, 2]
    # the failure was absorbed by gathers that completed: the run succeeds
    assert run.status == "completed" and states(run)[bad.key] == "failed"


def test_gather_fails_with_too_few_successes_and_says_which():
    with nf.Workflow("gather-fail") as wf:
        g = nf.gather(value(1), boom(), boom(), min_success=2)
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    err = info.value.run.errors()[g.key]
    assert isinstance(err, nf.GatherError)
    assert "needed 2 of 3" in str(err) and "boom-0" in str(err) and "boom-1" in str(err)


def test_gather_default_is_all_of():
    with nf.Workflow("all") as wf:
        g = nf.gather(value(1), boom())
    run = wf.run(raise_on_error=False)
    assert states(run)[g.key] == "failed"


@nf.task
def step(x):
    return x + 1


def test_loop_runs_until_the_predicate_holds_each_iteration_visible():
    with nf.Workflow("loop") as wf:
        out = nf.loop(step, 0, until=lambda v: v >= 4, max_iter=10)
    run = wf.run()
    assert run[out] == 4
    keys = [k for k in run.tasks["key"] if k.startswith(f"{out.key}[")]
    assert keys == [f"{out.key}[{i}]" for i in range(4)]


def test_loop_tests_until_after_each_iteration_so_a_true_predicate_still_runs_once():
    with nf.Workflow("once") as wf:
        out = nf.loop(step, 0, until=lambda v: True, max_iter=5)
    run = wf.run()
    assert run[out] == 1
    assert sum(k.startswith(f"{out.key}[") for k in run.tasks["key"]) == 1


def test_loop_reaching_max_iter_exactly_succeeds_and_one_short_fails():
    with nf.Workflow("exact") as wf:
        out = nf.loop(step, 0, until=lambda v: v == 3, max_iter=3)
    assert wf.run()[out] == 3
    with nf.Workflow("short") as wf:
        out = nf.loop(step, 0, until=lambda v: v == 3, max_iter=2)
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    err = info.value.__cause__
    assert isinstance(err, nf.LoopLimitError) and "max_iter=2" in str(err)


def test_loop_input_may_be_a_ref_and_feeds_consumers():
    with nf.Workflow("loop-ref") as wf:
        out = nf.loop(step, value(10), until=lambda v: v > 11, max_iter=5)
        after = double(out)
    run = wf.run()
    assert run[after] == 24


def test_loop_arguments_are_checked():
    with nf.Workflow("bad-loop"):
        with pytest.raises(nf.WorkflowDefinitionError, match=r"max_iter"):
            nf.loop(step, 0, until=lambda v: True, max_iter=0)
        with pytest.raises(nf.WorkflowDefinitionError, match=r"@nf\.task"):
            nf.loop(lambda x: x, 0, until=lambda v: True, max_iter=3)


def test_constructs_outside_a_workflow_are_a_clear_error():
    with pytest.raises(nf.WorkflowDefinitionError, match=r"inside `with nf\.Workflow"):
        nf.branch(True, then=lambda: 1)


undone: list[tuple[str, object]] = []


def _undo(name):
    def undo(output):
        undone.append((name, output))
        if name == "broken":
            raise OSError("undo failed")
    return undo


@nf.task(compensate=_undo("reserve"))
def reserve(x):
    return f"reservation-{x}"


@nf.task(compensate=_undo("charge"))
def charge(x):
    return f"charge-{x}"


@nf.task(compensate=_undo("broken"))
def fragile_step(x):
    return f"fragile-{x}"


@nf.task
def ship(x):
    raise RuntimeError("carrier down")


def test_saga_compensates_completed_tasks_in_reverse_order():
    undone.clear()
    with nf.Workflow("saga") as wf, nf.saga("order"):
        r = reserve(1)
        c = charge(r)
        s = ship(c)
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    run = info.value.run
    assert undone == [("charge", "charge-reservation-1"), ("reserve", "reservation-1")]
    assert run.status == "failed"
    [rb] = run.rollbacks
    assert rb["failed_task"] == s.key and rb["compensated"] == [c.key, r.key]
    assert "rolled back" in str(info.value)
    assert states(run)[f"{c.key}.undo"] == "completed"


def test_a_failing_undo_is_recorded_and_the_rollback_goes_on():
    undone.clear()
    with nf.Workflow("saga2") as wf, nf.saga():
        r = reserve(2)
        f = fragile_step(r)
        c = charge(f)
        ship(c)
    run = wf.run(raise_on_error=False)
    assert [name for name, _ in undone] == ["charge", "broken", "reserve"]
    [rb] = run.rollbacks
    assert rb["compensation_failed"] == [f.key] and rb["compensated"] == [c.key, r.key]


def test_saga_members_not_yet_started_are_skipped():
    undone.clear()
    with nf.Workflow("saga3") as wf, nf.saga():
        first_step = reserve(3)
        ship(first_step)
        later = charge(4)
        later.after(first_step)
        late2 = charge(later)
    run = wf.run(workers=1, raise_on_error=False)
    st_ = states(run)
    assert st_[late2.key] == "skipped"
    assert ("reserve", "reservation-3") in undone


def test_approval_headless_uses_on_timeout():
    with nf.Workflow("approve") as wf:
        yes = nf.approval("Ship it?", on_timeout="approve")
        no = nf.approval("Pay it?", on_timeout="reject")
        gated = nf.branch(no, then=lambda: value("paid"), otherwise=lambda: value("held"))
    run = wf.run()
    assert run[yes] is True and run[no] is False and run[gated] == "held"
    with nf.Workflow("approve-fail") as wf:
        nf.approval("Really?", on_timeout="fail")
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    assert isinstance(info.value.__cause__, nf.ApprovalTimeout)


def test_approval_answered_by_a_person_in_a_background_run():
    set_interactive_approvals(True)
    try:
        with nf.Workflow("human") as wf:
            answer = nf.approval("Deploy?", timeout=30, on_timeout="reject")
            after = value(answer)
        run = wf.start()
        deadline = time.monotonic() + 10
        while not run.pending_approvals and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.pending_approvals == [answer.key]
        threading.Thread(target=run.approve, args=(answer, True)).start()
        run.wait()
        assert run[answer] is True and run[after] is True
        asked = [e for e in run.events if type(e).__name__ == "ApprovalRequested"]
        assert asked[0].prompt == "Deploy?"
    finally:
        set_interactive_approvals(False)


def test_approval_with_no_answer_times_out_to_on_timeout():
    set_interactive_approvals(True)
    try:
        with nf.Workflow("nobody") as wf:
            answer = nf.approval("Anyone?", timeout=0.1, on_timeout="reject")
        assert wf.run()[answer] is False
    finally:
        set_interactive_approvals(False)


def test_joins_on_an_untaken_side_are_skipped_not_resolved():
    with nf.Workflow("join-side") as wf:
        g = nf.branch(False, then=lambda: nf.gather(value(1), value(2)), otherwise=lambda: "no")
        f = nf.branch(False, then=lambda: nf.first(value(1), "fallback"), otherwise=lambda: "no")
    run = wf.run()
    assert run[g] == "no" and run[f] == "no"
    assert run.status == "completed"


def test_a_side_returning_a_ref_made_before_the_branch_still_obeys_the_condition():
    with nf.Workflow("outer-ref") as wf:
        x = value("x")
        out = nf.branch(False, then=lambda: x, otherwise=lambda: "otherwise")
        out2 = nf.branch(True, then=lambda: x, otherwise=lambda: "otherwise")
    run = wf.run()
    assert run[out] == "otherwise" and run[out2] == "x"


def test_approvals_can_be_made_interactive_for_scripts_through_on_run():
    off = nf.on_run(lambda run: setattr(run, "interactive_approvals", True))
    try:
        with nf.Workflow("script-approval") as wf:
            answer = nf.approval("Go?", timeout=30, on_timeout="reject")
        run = wf.start()
        deadline = time.monotonic() + 10
        while not run.pending_approvals and time.monotonic() < deadline:
            time.sleep(0.01)
        run.approve(answer, True)
        run.wait()
    finally:
        off()
    assert run[answer] is True


def test_a_compensable_task_is_not_cached_so_a_rollback_never_undoes_a_cached_effect(tmp_path):
    effects = []

    @nf.task(compensate=lambda out: effects.append(("undo", out)))
    def book(x):
        effects.append(("book", x))
        return x

    assert book.spec.cache is False
    for _ in range(2):
        with nf.Workflow("twice") as wf, nf.saga():
            ship(book(1))
        wf.run(raise_on_error=False)
    assert effects == [("book", 1), ("undo", 1)] * 2  # booked for real each time it is undone
