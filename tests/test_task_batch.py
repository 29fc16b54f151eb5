"""A batched chunk's items announced as one ``TaskBatch`` event: every listener sees what
the per-item events said, the per-item view ``run.events`` is the same, every move is still
checked, and a listener that does not read batches gets the per-item events as before."""

from __future__ import annotations

import math
from typing import Any

import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.core.errors import TransitionError
from nbflow.engine import taskstate
from nbflow.engine.taskstate import TaskStates


@nf.task
def tenfold(x: int) -> int:
    if x % 50 == 7:
        raise ValueError(f"item {x} is bad")
    return 10 * x


@nf.task
def chatty(x: int) -> int:
    print(f"item {x} here")
    return x


def _view(events: list[ev.Event]) -> list[tuple[Any, ...]]:
    """What an event says, without its clock readings (two runs never share those)."""
    out = []
    for e in events:
        row: list[Any] = [type(e).__name__, getattr(e, "index", None), getattr(e, "key", None)]
        for name in ("attempt", "executor", "cached", "reason", "output_bytes", "output", "cache_key"):
            row.append(getattr(e, name, None))
        row.append(getattr(e, "metrics", None) is not None)
        row.append(type(getattr(e, "error", None)).__name__)
        out.append(tuple(row))
    return out


def _run_map(n: int, *, legacy_listener: bool, task: Any = tenfold) -> tuple[Any, list[ev.Event]]:
    seen: list[ev.Event] = []
    with nf.Workflow("batched-events") as wf:
        ref = task.map(list(range(n)), batch=25)
    if legacy_listener:
        unsubscribe = nf.on_run(lambda run: seen.append)  # a plain function: reads no batches
    try:
        run = wf.run(workers=1, cache=False, raise_on_error=False)  # (one chunk at a time: one order)
    finally:
        if legacy_listener:
            unsubscribe()
    assert run.done and ref is not None
    return run, seen


def test_a_batched_maps_events_read_the_same_with_and_without_batches() -> None:
    fast, _ = _run_map(200, legacy_listener=False)
    slow, seen = _run_map(200, legacy_listener=True)
    # The run whose only listener is its own log got batches; the other, none.
    assert any(type(e) is ev.TaskBatch for e in fast._log.raw)
    assert not any(type(e) is ev.TaskBatch for e in slow._log.raw)
    assert not any(type(e) is ev.TaskBatch for e in seen)
    # ... and both show the same per-item events (failures included, in the same order).
    assert _view(fast.events) == _view(slow.events) == _view(seen)
    assert sum(type(e) is ev.TaskCompleted for e in fast.events) == 196
    assert sum(type(e) is ev.TaskFailed for e in fast.events) == 4
    pd_fast, pd_slow = fast.tasks, slow.tasks
    assert list(pd_fast.state) == list(pd_slow.state)
    assert list(pd_fast.key) == list(pd_slow.key)
    assert fast[fast.nodes[12]] == 120


def test_run_events_expands_a_batch_once_and_keeps_growing() -> None:
    log = ev.EventLog()
    stream = ev.EventStream([log])
    stream.emit(ev.RunStarted(1.0, "r", "w", 3, "local", None))
    stream.emit(ev.TaskBatch(2.0, ev.TaskReady, [0, 1], ["a", "b"]))
    first = list(log.events())
    assert [type(e).__name__ for e in first] == ["RunStarted", "TaskReady", "TaskReady"]
    stream.emit(ev.TaskBatch(3.0, ev.TaskStarted, [0, 1], ["a", "b"], {"attempt": [1, 2]},
                             {"executor": "thread"}))
    again = log.events()
    assert all(a is b for a, b in zip(again[:3], first, strict=True))  # (expanded once)
    assert [(e.index, e.attempt, e.executor, e.time) for e in again[3:]] == [
        (0, 1, "thread", 3.0), (1, 2, "thread", 3.0)]


def test_a_batch_column_reads_per_item_common_and_default_fields() -> None:
    b = ev.TaskBatch(1.0, ev.TaskCompleted, [4, 5], ["x", "y"],
                     {"attempt": [1, 1], "duration_s": [0.1, 0.2], "output_bytes": [None, 8]},
                     {"cached": False})
    assert b.column("duration_s") == [0.1, 0.2]
    assert b.column("cached") == [False, False]
    assert b.column("blob") == [None, None]
    assert len(b) == 2
    assert [e.output_bytes for e in b.expand()] == [None, 8]


def test_the_stream_batches_only_while_every_subscriber_reads_them() -> None:
    log = ev.EventLog()
    stream = ev.EventStream([log])
    assert stream.batches
    drop = stream.subscribe(lambda e: None)
    assert not stream.batches
    drop()
    assert stream.batches

    def broken(e: ev.Event) -> None:
        raise RuntimeError("a listener that breaks")

    stream.subscribe(broken)
    assert not stream.batches
    stream.emit(ev.RunPaused(1.0, "r"))  # (removed with a warning)
    assert stream.batches


def _states(n: int, *, reads_batches: bool) -> tuple[TaskStates, list[ev.Event]]:
    got: list[ev.Event] = []

    def listener(e: ev.Event) -> None:
        got.append(e)

    if reads_batches:
        listener.accepts_batches = True  # type: ignore[attr-defined]
    nodes = [type("Node", (), {"key": f"n{i}", "index": i})() for i in range(n)]
    stream = ev.EventStream([listener])
    return TaskStates(nodes, stream.emit, stream), got


@pytest.mark.parametrize("reads_batches", [True, False])
def test_enter_batch_records_what_enter_would(reads_batches: bool) -> None:
    tasks, got = _states(3, reads_batches=reads_batches)
    tasks.enter_batch(ev.TaskReady, 1.0, [0, 1, 2])
    tasks.enter_batch(ev.TaskStarted, 2.0, [0, 2], {"attempt": [1, 1]}, {"executor": "thread"})
    tasks.enter_batch(ev.TaskCompleted, 3.0, [2, 0],
                      {"attempt": [1, 1], "duration_s": [0.5, 0.25], "output_bytes": [4, None]},
                      {"cached": False}, results=["two", "zero"])
    assert tasks.state == ["completed", "ready", "completed"]
    assert tasks.results == ["zero", None, "two"]
    assert tasks.start[0] == 2.0 and tasks.end[2] == 3.0
    assert tasks.duration[0] == 0.25 and math.isnan(tasks.duration[1])
    assert tasks.output_bytes[2] == 4 and tasks.open == 1
    flat = list(ev.flatten(got))
    assert [(type(e).__name__, e.index) for e in flat] == [  # type: ignore[attr-defined]
        ("TaskReady", 0), ("TaskReady", 1), ("TaskReady", 2), ("TaskStarted", 0), ("TaskStarted", 2),
        ("TaskCompleted", 2), ("TaskCompleted", 0)]
    assert any(type(e) is ev.TaskBatch for e in got) == reads_batches


def test_enter_batch_refuses_an_illegal_move_and_stops_before_it() -> None:
    old = taskstate.check_transitions(True)
    try:
        tasks, got = _states(4, reads_batches=True)
        tasks.enter_batch(ev.TaskReady, 1.0, [0, 1, 2, 3])
        tasks.enter(ev.TaskStarted(1.5, 2, "n2", 1, "thread"))
        tasks.enter(ev.TaskCompleted(1.6, 2, "n2", 1, 0.1, None), "done")  # node 2 has ended
        with pytest.raises(TransitionError, match="node 2"):
            tasks.enter_batch(ev.TaskStarted, 2.0, [0, 1, 2, 3], {"attempt": [1, 1, 1, 1]},
                              {"executor": "thread"})
        # Nodes 0 and 1 moved and were announced; 2 was refused; 3 was never touched.
        assert tasks.state == ["running", "running", "completed", "ready"]
        last = got[-1]
        assert type(last) is ev.TaskBatch and last.indexes == [0, 1] and last.keys == ["n0", "n1"]
        assert last.column("attempt") == [1, 1]
    finally:
        taskstate.check_transitions(old)


def test_a_batched_maps_journal_rows_agree_with_its_events_and_counts() -> None:
    with nf.Workflow("batched-journal") as wf:
        tenfold.map(list(range(120)), batch=30)
    run = wf.run(cache=False, raise_on_error=False)
    assert any(type(e) is ev.TaskBatch for e in run._log.raw)  # (the journal reads batches)
    rows = nf.history(task="tenfold")
    rows = rows[rows.run_id == run.id]
    counts = run.task_counts.as_row()
    assert len(rows) == 120
    assert (rows.state == "completed").sum() == counts["completed"] == 117
    assert (rows.state == "failed").sum() == counts["failed"] == 3
    assert rows.cpu_s.notna().all()  # (each item's CPU share, from the batch's metrics column)


def test_what_items_print_stays_with_each_item_of_a_chunk() -> None:
    with nf.Workflow("batched-output") as wf:
        chatty.map(list(range(60)), batch=20)
    run = wf.run(cache=False)
    assert run.logs("chatty-0") == "item 0 here\n"
    assert run.logs("chatty-41") == "item 41 here\n"
    done = [e for e in run.events if type(e) is ev.TaskCompleted and e.index < 60]  # (not the map)
    assert len(done) == 60 and all(e.output == f"item {e.index} here\n" for e in done)


def test_the_live_views_model_counts_a_batched_map_as_the_run_does() -> None:
    from nbflow.notebook.model import RunModel
    from nbflow.notebook.render import progress_text

    with nf.Workflow("batched-model") as wf:
        tenfold.map(list(range(150)), batch=40)
    model = RunModel(wf)
    unsubscribe = nf.on_run(lambda run: model)
    try:
        run = wf.run(cache=False, raise_on_error=False)
    finally:
        unsubscribe()
    assert any(type(e) is ev.TaskBatch for e in run._log.raw)  # (the model reads batches)
    assert model.task_counts() == run.task_counts
    assert model.task_counts().as_row()["completed"] == 147
    assert "147" in progress_text(model)
