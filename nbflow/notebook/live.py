"""Following a run in a notebook cell: the widget or text progress, and the final output.

:class:`LiveView` picks the view for the mode (``"widget"``, ``"text"`` or ``"quiet"``),
shows it, ticks it while the run goes (:meth:`follow` in the cell's own thread for a
blocking cell, a helper thread for a background run), and emits the final output:

- widget: the widget's final state, with the display updated to also carry static HTML;
- text:   a final progress line, then the summary (``text/plain`` table and ``text/html``
          static view: graph, tasks, errors);
- quiet:  one line.

For a background run the final output is emitted by the RunFinished subscriber itself,
that is before ``run.wait()`` returns, so a cell waiting for the run sees it in order.

A view that fails to update never stops the run, nor freezes without a word: the failed
tick is caught (:meth:`LiveView.update`), the view says it stopped updating, names the
error and that the run goes on (a line above the widget's tabs, or a text line), and the
traceback is logged on the ``nbflow`` logger, once per view.  The next ticks try again; the
first one that works says the view is updating again.  A view that fails on every tick
says so once and keeps trying quietly until the run ends, and its thread ends with it.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..core import events as ev
from . import render
from .graphview import GraphView
from .model import RunModel
from .progress import PREFIX, TextProgress
from .tracebacks import short_error

if TYPE_CHECKING:
    from ..engine.run import Run

TEXT_INTERVAL = 0.25
log = logging.getLogger("nbflow")
_views: weakref.WeakValueDictionary[str, LiveView] = weakref.WeakValueDictionary()


def view_of(run: Run) -> LiveView | None:
    """The live view a ``%%workflow`` cell opened for ``run`` (while it is alive)."""
    return _views.get(run.id)


class LiveView:
    def __init__(self, model: RunModel, run: Run, mode: str, *, background: bool = False) -> None:
        self.model = model
        self.run = run
        self.mode = mode
        self.background = background
        self.graph = GraphView(model)
        self.widget: Any = None
        self.text: TextProgress | None = None
        self.handle: Any = None
        self._final_lock = threading.Lock()
        self._finalised = False
        self._note_lock = threading.Lock()  # a note, and the final output clearing it, one at a time
        self.thread: threading.Thread | None = None
        self.failed_ticks = 0  # ticks that raised, over the view's life
        self.tick_error: str | None = None  # while ticks fail: the last one's error, in short
        _views[run.id] = self

    @property
    def interval(self) -> float:
        return self.widget.interval if self.widget is not None else TEXT_INTERVAL

    def open(self) -> None:
        from IPython.display import display

        if self.mode == "widget":
            from .widget import RunWidget

            self.widget = RunWidget(self.model, self.run, background=self.background, graph=self.graph)
            self.handle = display(self.widget.root, display_id=True)
        elif self.mode == "text":
            from ..predict.entry import eta_text

            # (the run, not this view: a closure over the view would make the two a cycle)
            self.text = TextProgress(self.model, eta=functools.partial(eta_text, self.run))
            extra = (" in the background; nf.last_run().wait() waits for it"
                     if self.background else "")
            self.text.start(extra)

    def tick(self) -> None:
        if self.widget is not None:
            self.widget.tick()
        elif self.text is not None and not self.background:
            self.text.tick()

    def update(self) -> None:
        """One tick that cannot fail: a view's error is shown and logged, never raised (the
        run does not depend on its view; KeyboardInterrupt still passes through)."""
        try:
            self.tick()
        except Exception as e:
            self._tick_failed(e)
            return
        if self.tick_error is not None:
            self._tick_recovered()

    def _tick_failed(self, err: Exception) -> None:
        self.failed_ticks += 1
        if self.failed_ticks == 1:  # the traceback once: a view failing every tick must not flood
            log.error("nbflow: the live view of run %s failed to update (the run goes on)",
                      self.run.id, exc_info=err)
        streak = self.tick_error is not None
        self.tick_error = short_error(err)
        if not streak:  # said once per streak of failures, not at every tick
            self._say(f"⚠ the live view stopped updating: {self.tick_error}. The run itself goes on, "
                      "unaffected; the view tries again at each tick and shows the final state when "
                      "the run ends (the traceback is logged on the 'nbflow' logger).", alarm=True)

    def _tick_recovered(self) -> None:
        self._say(f"the live view is updating again (an update failed: {self.tick_error})", alarm=False)
        self.tick_error = None

    def _say(self, text: str, *, alarm: bool) -> None:
        """Show a note about the view itself: above the widget's tabs, or as a text line.
        Not once the final output is on its way (the run has ended: the note is moot, and
        the last tick of a background view may still be going on its own thread)."""
        with self._note_lock:
            if self._finalised:
                return
            try:
                if self.widget is not None:
                    self.widget.say(text, alarm=alarm)
                elif self.text is not None:
                    self.text.line(f"{PREFIX}   {text}")
            except Exception:  # (a view too broken to say so: the log has said it)
                pass

    def follow(self) -> None:
        """Tick until the run finishes (KeyboardInterrupt passes through to the caller)."""
        while True:
            self.update()  # at once: the first frame (and the layout) while the run is young
            if self.model.finished.wait(self.interval) or self.run.done:
                return

    def on_event(self, event: ev.Event) -> None:
        """Subscriber for background runs: emits the final output when the run ends."""
        if type(event) is ev.RunFinished:
            self.finish()

    def follow_in_thread(self) -> None:
        if self.widget is None:
            return  # text mode in the background: only the final output, nothing periodic

        self.thread = threading.Thread(target=self.follow, name=f"nbflow-view-{self.run.id}", daemon=True)
        self.thread.start()

    def finish(self) -> None:
        """Emit the final output (once)."""
        from IPython.display import display

        with self._final_lock:
            if self._finalised:
                return
            self._finalised = True
        from . import _with_transfers

        _with_transfers(self.model, self.run)  # (Dask runs: edges as thick as what moved)
        if self.widget is not None:
            self.widget.final()
            with self._note_lock:  # (the final state is shown: a note on the live updates is moot)
                self.widget.say("", alarm=False)
            if self.handle is not None:
                self.handle.update(self.widget.mimebundle(), raw=True)
        elif self.text is not None:
            self.text.final()
            display({"text/plain": render.summary_frame(self.model).to_string(),
                     "text/html": render.static_html(self.model, self.graph.svg(), self.graph.note)},
                    raw=True)
        else:
            print(f"{PREFIX} {self.model.status}: {render.progress_text(self.model)}", flush=True)
