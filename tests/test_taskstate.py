"""The task state machine, driven directly: no threads, no event loop, no clock.

Each test builds a :class:`TaskStates` over a few stand-in nodes, feeds it events by hand
(with made-up times) and checks the records, the open count and the events it emitted.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from nbflow.core import events as ev
from nbflow.core.errors import NbflowError, TransitionError
from nbflow.core.states import (
    ALL,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    READY,
    RETRYING,
    RUNNING,
    SKIPPED,
    TERMINAL,
    TRANSITIONS,
)
from nbflow.engine import taskstate
from nbflow.engine.taskstate import TaskStates

ENGINE = Path(taskstate.__file__).parent


class Node:
    """Stands in for a traced Ref: the state machine reads only ``index`` and ``key``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.key = f"t-{index}"


ERROR = ValueError("boom")


def event(state: str, i: int, t: float = 100.0, attempt: int = 1) -> ev.TaskEvent:
    """The event that announces a move of node ``i`` into ``state``."""
    key = f"t-{i}"
    return {
        READY: lambda: ev.TaskReady(t, i, key),
        RUNNING: lambda: ev.TaskStarted(t, i, key, attempt, "async"),
        RETRYING: lambda: ev.TaskRetrying(t, i, key, attempt, 0.5, ERROR),
        COMPLETED: lambda: ev.TaskCompleted(t, i, key, attempt, 0.25, 8),
        FAILED: lambda: ev.TaskFailed(t, i, key, attempt, 0.75, ERROR),
        SKIPPED: lambda: ev.TaskSkipped(t, i, key, "upstream task 't-9' failed"),
        CANCELLED: lambda: ev.TaskCancelled(t, i, key, attempt),
    }[state]()


def table(n: int = 1) -> tuple[TaskStates, list[ev.Event]]:
    seen: list[ev.Event] = []
    return TaskStates([Node(i) for i in range(n)], seen.append), seen


def path_to(state: str) -> list[str]:
    """A shortest sequence of allowed moves from pending to ``state``."""
    prev: dict[str, str | None] = {PENDING: None}
    todo = deque([PENDING])
    while todo:
        s = todo.popleft()
        for nxt in sorted(TRANSITIONS[s]):
            if nxt not in prev:
                prev[nxt] = s
                todo.append(nxt)
    out: list[str] = []
    s: str | None = state
    while s is not None and s != PENDING:
        out.append(s)
        s = prev[s]
    return out[::-1]


@pytest.fixture(autouse=True)
def _checking_on():
    old = taskstate.check_transitions(True)
    yield
    taskstate.check_transitions(old)


ALLOWED = [(old, new) for old in ALL for new in sorted(TRANSITIONS[old])]
# No event declares "pending" (checked below), so no move back to it can even be asked for.
REFUSED = [(old, new) for old in ALL for new in ALL if new not in TRANSITIONS[old] and new != PENDING]


def test_every_state_is_reachable_and_the_table_covers_every_state():
    assert set(TRANSITIONS) == set(ALL)
    for s in ALL:
        assert s == PENDING or path_to(s), f"{s} cannot be reached from pending"
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()


def test_each_state_but_pending_is_declared_by_exactly_one_event_class():
    declared = [c.state for c in vars(ev).values()
                if isinstance(c, type) and issubclass(c, ev.TaskEvent) and c.state is not None]
    assert sorted(declared) == sorted(s for s in ALL if s != PENDING)


@pytest.mark.parametrize(("old", "new"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_transition_is_taken_counted_and_announced(old, new):
    t, seen = table(2)
    for s in path_to(old):
        t.enter(event(s, 0))
    assert t.state[0] == old
    open_before, n_before = t.open, len(seen)
    e = event(new, 0, t=200.0)
    t.enter(e, result="value" if new == COMPLETED else None)
    assert t.state[0] == new
    assert seen[n_before:] == [e]  # exactly this event, once, after the earlier ones
    assert t.open == open_before - (1 if new in TERMINAL else 0)
    assert t.state[1] == PENDING  # the other node is untouched


@pytest.mark.parametrize(("old", "new"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_a_refused_transition_raises_naming_node_states_and_open_count(old, new):
    t, seen = table(3)
    for s in path_to(old):
        t.enter(event(s, 1))
    state, open_before, n_events = list(t.state), t.open, len(seen)
    with pytest.raises(TransitionError) as info:
        t.enter(event(new, 1))
    msg = str(info.value)
    assert "node 1 ('t-1')" in msg
    assert f"from {old!r} to {new!r}" in msg
    assert f"open count {open_before}" in msg
    assert isinstance(info.value, NbflowError)
    # Nothing changed and nothing was announced.
    assert t.state == state and t.open == open_before and len(seen) == n_events


def test_with_checking_off_moves_are_not_checked():
    t, seen = table(1)
    taskstate.check_transitions(False)
    t.enter(event(READY, 0))
    t.enter(event(COMPLETED, 0))
    t.enter(event(READY, 0))  # completed -> ready: refused by the table, but not checked
    assert t.state[0] == READY and len(seen) == 3
    taskstate.check_transitions(True)
    with pytest.raises(TransitionError):
        t.enter(event(COMPLETED, 0))  # ready -> completed is not in the table


def test_an_event_that_declares_no_state_is_refused_even_unchecked():
    t, seen = table(1)
    taskstate.check_transitions(False)
    with pytest.raises(TransitionError, match="declares no task state"):
        t.enter(ev.ApprovalRequested(1.0, 0, "t-0", "ok?", None, "approve"))  # type: ignore[arg-type]
    assert t.state == [PENDING] and not seen


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("", False), ("0", False)])
def test_the_environment_variable_switches_checking_at_import(value, expected):
    env = {**os.environ, "NBFLOW_CHECK_TRANSITIONS": value}
    out = subprocess.run(
        [sys.executable, "-c", "from nbflow.engine import taskstate; print(taskstate.CHECK)"],
        env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(expected)


def test_records_of_a_task_that_retries_then_completes():
    t, seen = table(1)
    t.enter(event(READY, 0, t=10.0))
    t.enter(event(RUNNING, 0, t=11.0, attempt=1))
    assert (t.start[0], t.attempts[0]) == (11.0, 1)
    t.enter(event(RETRYING, 0, t=12.0), None, 0.9)  # the failed attempt lasted 0.9 s
    assert t.duration[0] == 0.9 and math.isnan(t.end[0]) and t.open == 1
    t.enter(event(READY, 0, t=13.0))
    t.enter(event(RUNNING, 0, t=14.0, attempt=2))
    t.enter(event(COMPLETED, 0, t=15.0, attempt=2), result={"x": 1})
    assert t.results[0] == {"x": 1}
    assert (t.start[0], t.end[0], t.attempts[0]) == (14.0, 15.0, 2)
    assert (t.duration[0], t.output_bytes[0]) == (0.25, 8)  # from the event
    assert t.open == 0
    assert [type(e).__name__ for e in seen] == [
        "TaskReady", "TaskStarted", "TaskRetrying", "TaskReady", "TaskStarted", "TaskCompleted"]


def test_records_of_failed_skipped_and_cancelled_nodes():
    t, _ = table(4)
    for s in (READY, RUNNING):
        t.enter(event(s, 0, t=1.0))
    t.enter(event(FAILED, 0, t=2.0))
    assert t.errors == {0: ERROR} and (t.start[0], t.end[0], t.duration[0]) == (1.0, 2.0, 0.75)

    t.enter(event(SKIPPED, 1, t=3.0))
    assert t.reasons == {1: "upstream task 't-9' failed"}
    assert math.isnan(t.start[1]) and math.isnan(t.end[1])  # a skipped node never ran

    for s in (READY, RUNNING):
        t.enter(event(s, 2, t=4.0))
    t.enter(event(CANCELLED, 2, t=5.0), None, 0.5)  # interrupted while running
    assert (t.end[2], t.duration[2]) == (5.0, 0.5)

    t.enter(event(READY, 3, t=6.0))
    t.enter(event(CANCELLED, 3, t=7.0))  # cancelled while queued: it never ran
    assert math.isnan(t.end[3]) and math.isnan(t.duration[3])
    assert t.open == 0
    assert t.open_nodes() == []


def test_a_node_resolved_without_running_gets_its_start_and_end_at_once():
    t, _ = table(2)
    t.enter(event(COMPLETED, 0, t=3.0), result=[1, 2])  # a join: pending -> completed
    assert (t.start[0], t.end[0], t.results[0]) == (3.0, 3.0, [1, 2])
    t.enter(event(FAILED, 1, t=4.0))  # a gate whose condition has no truth value
    assert (t.start[1], t.end[1]) == (4.0, 4.0)


def test_the_open_count_reaches_zero_exactly_when_every_node_has_ended():
    n = 6
    t, _ = table(n)
    ends = [COMPLETED, FAILED, SKIPPED, CANCELLED, COMPLETED, CANCELLED]
    for i, final in enumerate(ends):
        assert t.open == n - i
        for s in path_to(final):
            t.enter(event(s, i))
    assert t.open == 0 and t.open_nodes() == []
    with pytest.raises(TransitionError):  # an ended node cannot end again
        t.enter(event(CANCELLED, 0))
    assert t.open == 0


def test_listeners_see_the_new_state_when_the_event_arrives():
    nodes = [Node(0)]
    observed: list[tuple[str, str]] = []
    t = TaskStates(nodes, lambda e: observed.append((type(e).__name__, t.state[e.index])))
    for s in (READY, RUNNING, COMPLETED):
        t.enter(event(s, 0))
    assert observed == [("TaskReady", READY), ("TaskStarted", RUNNING), ("TaskCompleted", COMPLETED)]


def test_growth_appends_a_pending_open_node_to_every_record():
    t, seen = table(1)
    t.enter(event(READY, 0))
    t.enter(event(RUNNING, 0))
    t.enter(event(COMPLETED, 0))
    assert t.open == 0
    k = t.append(Node(1))
    assert k == 1 and t.open == 1 and len(t.nodes) == 2
    lists = (t.state, t.attempts, t.results, t.start, t.end, t.duration, t.output_bytes, t.executor)
    assert all(len(xs) == 2 for xs in lists)
    assert t.state[1] == PENDING and t.attempts[1] == 0 and t.results[1] is None
    t.enter(event(READY, 1))
    assert t.state[1] == READY and len(seen) == 4
    with pytest.raises(ValueError, match="index 5, expected 2"):
        t.append(Node(5))


def test_growth_when_the_caller_already_appended_the_node():
    nodes = [Node(0)]
    t = TaskStates(nodes, lambda e: None)
    nodes.append(Node(1))  # the scheduler's node list is shared: appended once only
    t.append(nodes[1])
    assert len(nodes) == 2 and len(t.state) == 2 and t.open == 2


def _writes_outside_the_state_machine(path: Path) -> list[str]:
    """Assignments to ``<x>.state[...]`` and changes of ``<x>.open`` in one module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for tgt in targets:
            for t in ast.walk(tgt):
                if (isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute)
                        and t.value.attr == "state"):
                    out.append(f"{path.name}:{t.lineno} writes .state[...]")
                if isinstance(t, ast.Attribute) and t.attr == "open" and isinstance(node, ast.AugAssign):
                    out.append(f"{path.name}:{t.lineno} changes .open")
    return out


def test_only_the_state_machine_writes_states_and_the_open_count():
    modules = sorted(ENGINE.glob("*.py"))
    assert any(p.name == "scheduler.py" for p in modules)
    offenders = [w for p in modules if p.name != "taskstate.py" for w in _writes_outside_the_state_machine(p)]
    assert offenders == []
    # The check itself sees such writes.
    assert _writes_outside_the_state_machine(ENGINE / "taskstate.py")


# -- enter_many: a batched chunk's events in one call, the same rules -----------------------


@pytest.mark.parametrize("new", [READY, RUNNING, COMPLETED])
def test_enter_many_records_and_announces_each_event_like_enter(new):
    bulk, bulk_seen = table(3)
    one, _ = table(3)
    for s in path_to(new)[:-1]:  # both tables up to the state before `new`
        for t in (bulk, one):
            for i in range(3):
                t.enter(event(s, i))
    events = [event(new, i, t=300.0 + i) for i in range(3)]
    results = ["a", "b", "c"] if new == COMPLETED else None
    n_before = len(bulk_seen)
    bulk.enter_many(events, results)
    for k, e in enumerate(events):
        one.enter(e, results[k] if results else None)
    assert bulk_seen[n_before:] == events  # each event once, in order
    for name in ("state", "attempts", "results", "start", "end", "duration", "output_bytes"):
        got, want = getattr(bulk, name), getattr(one, name)
        assert [x for x in got if x == x] == [x for x in want if x == x], name  # (NaN-safe)
    assert bulk.open == one.open


def test_enter_many_lets_listeners_see_each_node_move_before_its_event():
    nodes = [Node(i) for i in range(3)]
    observed: list[tuple[int, str, str]] = []
    t = TaskStates(nodes, lambda e: observed.append((e.index, t.state[e.index], t.state[2])))
    t.enter_many([event(READY, i) for i in range(3)])
    # Node 2 is still pending while the events of nodes 0 and 1 are delivered.
    assert observed == [(0, READY, PENDING), (1, READY, PENDING), (2, READY, READY)]


def test_enter_many_refuses_an_illegal_move_and_stops_before_it():
    t, seen = table(3)
    for s in (READY, RUNNING, COMPLETED):  # node 2 has ended: completed -> running is refused
        t.enter(event(s, 2))
    t.enter(event(READY, 0))
    t.enter(event(READY, 1))
    with pytest.raises(TransitionError, match=r"node 2 \('t-2'\) cannot move from 'completed' to 'running'"):
        t.enter_many([event(RUNNING, i) for i in range(3)])
    assert t.state == [RUNNING, RUNNING, COMPLETED]  # the moves before it were made, not this one
    assert [type(e).__name__ for e in seen[-2:]] == ["TaskStarted", "TaskStarted"]


def test_enter_many_refuses_events_of_mixed_states():
    t, _ = table(2)
    t.enter_many([event(READY, 0), event(READY, 1)])
    with pytest.raises(TransitionError, match="must all declare the same state"):
        t.enter_many([event(RUNNING, 0), event(COMPLETED, 1)])


def test_enter_many_of_other_states_goes_through_enter():
    t, seen = table(2)
    t.enter_many([event(SKIPPED, 0), event(SKIPPED, 1)])
    assert t.state == [SKIPPED, SKIPPED] and t.open == 0 and t.reasons[1].startswith("upstream")
    assert len(seen) == 2
