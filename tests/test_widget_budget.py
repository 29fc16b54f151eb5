"""What the live widget sends, and what it spends drawing, while a run goes.

Events are fed straight into a :class:`RunModel` (as the run's loop thread would), so the
test decides exactly how many state changes happen between two ticks; the widget's comm is
replaced by one that counts messages.  Checked: many quick state changes make one message
per tick, not one per change; the tasks table and the timeline are not drawn while their
tabs are hidden (and are drawn when selected, also after the run); and over the frame
budget a tick sends nothing, except an element's first frame and the final refresh.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import comm
import pytest
from comm.base_comm import BaseComm

import nbflow as nf
from nbflow.core import events as ev
from nbflow.notebook import widget as widget_mod
from nbflow.notebook.model import RunModel
from nbflow.notebook.widget import RunWidget


class CountingComm(BaseComm):
    sent: ClassVar[list[str]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                    **keys: Any) -> None:
        if msg_type == "comm_msg":
            CountingComm.sent.append(str((data or {}).get("state", {}).keys()))


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingComm]:
    CountingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", CountingComm)
    return CountingComm


@nf.task
def item(i: int) -> int:
    return i


def _model(n: int) -> RunModel:
    with nf.Workflow("budget") as wf:
        for i in range(n):
            item(i)
    model = RunModel(wf)
    model(ev.RunStarted(time.time(), "r1", "budget", n, "local", 2))
    return model


def _finish(model: RunModel, ids: range) -> None:
    for i in ids:
        key = model.keys[i]
        model(ev.TaskStarted(time.time(), i, key, 1, "thread"))
        model(ev.TaskCompleted(time.time(), i, key, 1, 0.001, 8))


def test_many_quick_state_changes_make_one_message_per_tick(counting: type[CountingComm]) -> None:
    model = _model(400)
    w = RunWidget(model)
    opened = len(counting.sent)
    _finish(model, range(0, 200))  # 400 events between two ticks
    assert w.tick() == 1
    assert len(counting.sent) - opened == 1 == w.messages
    _finish(model, range(200, 400))
    sent = sum(w.tick() for _ in range(3))  # at most one message per tick, however many changed
    assert sent <= 3 and len(counting.sent) - opened == 1 + sent
    model(ev.RunFinished(time.time(), "r1", "completed", 0.1))
    w.final()
    assert 'data-status="completed"' in w.progress.value
    assert len(counting.sent) - opened == w.messages <= 1 + 3 + len(w._channels)


def test_hidden_tabs_are_drawn_only_when_selected(counting: type[CountingComm]) -> None:
    with nf.Workflow("hidden-tabs") as wf:
        for i in range(20):
            item(i)
    model = RunModel(wf)
    unregister = nf.on_run(lambda run: model if run.workflow is wf else None)
    try:
        run = wf.run(cache=False)
    finally:
        unregister()
    model.run = run
    w = RunWidget(model, run)
    for _ in range(12):
        w._last = dict.fromkeys(w._last, -1e9)  # every element due, as after a long wait
        w._stamps.clear()
        w.tick()
    assert w.graph_html.value and w.table.value == "" and w.timeline.value == ""
    w.tabs.selected_index = 1  # the user opens the Tasks tab
    assert 'data-key="item-0"' in w.table.value
    w.final()
    assert w.timeline.value == ""  # still hidden after the run: not drawn
    w.tabs.selected_index = 3  # opened after the run: drawn then
    assert 'class="nbflow-timeline"' in w.timeline.value and 'data-tasks="20"' in w.timeline.value


def test_over_the_frame_budget_only_first_frames_and_the_final_refresh_go(
        counting: type[CountingComm], monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(30)
    w = RunWidget(model)
    w.render_s = 1e6  # as if drawing had used far more than FRAME_BUDGET of the time
    first = 0
    while w.tick():  # every element's first frame goes all the same
        first += 1
        w._stamps.clear()
    assert first >= 1 and "<svg" in w.graph_html.value
    _finish(model, range(30))
    w._last = dict.fromkeys(w._last, -1e9)
    w._stamps.clear()
    assert [w.tick() for _ in range(5)] == [0] * 5  # changed, but over budget: nothing sent
    w.render_s = 0.0
    assert w.tick() == 1  # back within budget: the change goes out
    w.render_s = 1e6
    model(ev.RunFinished(time.time(), "r1", "completed", 0.1))
    w.final()  # the final state is always shown
    assert 'data-status="completed"' in w.progress.value
    assert widget_mod.FRAME_BUDGET < 0.1
