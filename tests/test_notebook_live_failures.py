"""A live view whose update fails says so, logs it once, tries again, and never touches the run.

The view's tick is replaced by one that raises (once, or every time) while a real run waits
on a gate the test opens.  Nothing here depends on timing: the fake tick counts its own
calls and the test waits on events with generous timeouts; what is checked is what the
view said (the widget's note, a text line, the log) and that the run and the view's thread
end as they should.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from comm.base_comm import BaseComm

import nbflow as nf
from nbflow.notebook.live import LiveView
from nbflow.notebook.model import RunModel
from nbflow.notebook.progress import TextProgress

WAIT = 60.0  # seconds: generous, never reached by a working test


class SilentComm(BaseComm):
    """A comm that sends nothing (no front end in a test)."""

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_front_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import comm

    monkeypatch.setattr(comm, "create_comm", SilentComm)


@nf.task
def gated(i: int, gate: threading.Event) -> int:
    if not gate.wait(WAIT):
        raise TimeoutError("the test never opened the gate")
    return i * 2


def start(gate: threading.Event, name: str) -> tuple[RunModel, nf.Run]:
    """A run of two gated tasks, started the way a %%workflow cell starts it."""
    from nbflow.notebook.magics import launch

    with nf.Workflow(name) as wf:
        gated(1, gate)
        gated(2, gate)
    model = RunModel(wf)
    run = launch(wf, {"cache": False}, [model])
    model.run = run
    return model, run


def widget_view(model: RunModel, run: nf.Run) -> LiveView:
    """A background run's widget view, as ``open()`` makes it (without displaying it)."""
    from nbflow.notebook.widget import RunWidget

    view = LiveView(model, run, "widget", background=True)
    view.widget = RunWidget(model, run, background=True, graph=view.graph, interval=0.01)
    return view


def failing_tick(real: Callable[[], Any], fails: Callable[[int], bool],
                 on_call: Callable[[int], None]) -> Callable[[], Any]:
    """A tick that raises on the calls ``fails`` picks (numbered from 1), else ticks."""
    calls = [0]

    def tick() -> Any:
        calls[0] += 1
        on_call(calls[0])
        if fails(calls[0]):
            raise RuntimeError("render broke")
        return real()

    return tick


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "nbflow" and r.levelno >= logging.ERROR]


def test_a_tick_that_fails_once_is_shown_then_the_view_recovers_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    model, run = start(gate, "view-fails-once")
    view = widget_view(model, run)
    notes: dict[int, str] = {}
    third = threading.Event()

    def on_call(n: int) -> None:  # (the note as the previous tick left it)
        notes[n] = view.widget.notice.value
        if n == 3:
            third.set()

    view.widget.tick = failing_tick(view.widget.tick, lambda n: n == 1, on_call)
    with caplog.at_level(logging.ERROR, logger="nbflow"):
        view.follow_in_thread()
        assert third.wait(WAIT), "the view stopped ticking after its failed tick"
        gate.set()
        assert run.wait(timeout=WAIT).done
        assert view.thread is not None
        view.thread.join(WAIT)
    assert not view.thread.is_alive()  # the view's thread ended with the run
    assert notes[1] == ""
    assert "stopped updating: RuntimeError: render broke" in notes[2]
    assert "The run itself goes on" in notes[2]
    assert "updating again" in notes[3] and "RuntimeError: render broke" in notes[3]
    assert view.failed_ticks == 1 and view.tick_error is None
    assert run.status == "completed"
    [record] = errors_logged(caplog)
    assert run.id in record.getMessage() and record.exc_info is not None
    view.finish()  # the final state is shown: the note about the live updates goes
    assert view.widget.notice.value == ""


def test_a_tick_that_fails_every_time_says_so_once_and_the_run_completes(
        caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    model, run = start(gate, "view-fails-always")
    view = widget_view(model, run)
    said: list[str] = []
    view.widget.notice.observe(lambda change: said.append(change["new"]), names="value")

    def on_call(n: int) -> None:
        if n == 5:  # several failed ticks in: let the run end
            gate.set()

    view.widget.tick = failing_tick(view.widget.tick, lambda n: True, on_call)
    with caplog.at_level(logging.ERROR, logger="nbflow"):
        view.follow_in_thread()
        assert gate.wait(WAIT), "the view stopped ticking after its first failed tick"
        assert run.wait(timeout=WAIT).done
        assert view.thread is not None
        view.thread.join(WAIT)
    assert not view.thread.is_alive()  # nothing outlives the run
    assert run.status == "completed" and set(run.tasks["state"]) == {"completed"}
    assert view.failed_ticks >= 5
    assert len(said) == 1 and "stopped updating: RuntimeError: render broke" in said[0]
    assert len(errors_logged(caplog)) == 1  # one traceback, however many ticks failed


def test_a_blocking_cell_whose_text_view_fails_follows_the_run_to_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    model, run = start(gate, "text-view-fails")
    view = LiveView(model, run, "text")
    out = io.StringIO()
    view.text = TextProgress(model, out=out)

    def on_call(n: int) -> None:
        if n == 3:
            gate.set()

    view.text.tick = failing_tick(view.text.tick, lambda n: True, on_call)  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="nbflow"):
        view.follow()  # (returned: the failure did not escape into the cell)
    assert run.wait(timeout=WAIT).status == "completed"
    lines = [line for line in out.getvalue().splitlines() if "stopped updating" in line]
    assert len(lines) == 1 and "RuntimeError: render broke" in lines[0]
    assert len(errors_logged(caplog)) == 1


def test_a_tick_that_fails_after_the_final_output_says_nothing() -> None:
    # (a background view's last tick may still run on its thread as the run's end is shown)
    gate = threading.Event()
    gate.set()
    model, run = start(gate, "view-fails-late")
    view = widget_view(model, run)
    run.wait(timeout=WAIT)
    view.finish()
    view.widget.tick = failing_tick(view.widget.tick, lambda n: True, lambda n: None)
    view.update()
    assert view.failed_ticks == 1 and view.widget.notice.value == ""
