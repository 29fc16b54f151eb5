"""The live run widget (plain ipywidgets: no front-end extension needed).

Layout: the progress line (status, counts by state, elapsed time, and while running the
ETA and the throughput in tasks/s over the last 30 s; a Stop button next to it for
background runs) above the tabs: the graph (an SVG drawn here, node colour by state,
tooltips with duration, attempts, cache hit, output size and error, edges thicker with the
bytes they carry), the tasks table (sortable, with what each task printed, folded), the
failed tasks' original tracebacks, the timeline and the locality report.

Updates are coalesced.  Events only touch the :class:`RunModel`; :meth:`RunWidget.tick` is
called every ``interval`` seconds (by the cell's own thread while a cell blocks, or by a
helper thread for a background run) and sends **at most one** comm message, taking the
stale elements in turn: progress line, graph, tasks table and errors (those two at most
every 2 s).  Every send, including the final refresh, also goes through a sliding-window
limit of :data:`MAX_PER_SECOND` messages in any second, so the front end never gets more
however many tasks finish.

What a view costs is bounded, because with a thread-backed run every millisecond the
widget's thread spends rendering is a millisecond the tasks wait for the GIL:

- **a frame budget**: rendering (CPU time of the ticking thread) may take at most
  :data:`FRAME_BUDGET` of the time since the view opened; a tick over budget sends
  nothing (the first frame of each element, and the final refresh, always go);
- **hidden tabs are not drawn**: the tasks table and the timeline are rendered only while
  their tab is selected, and when it gets selected (also after the run);
- the ETA in the progress line is re-simulated only when enough changed
  (:class:`nbflow.predict.eta.LiveEta`), and the predictor is fitted in a separate
  process for a large history.

When the run ends every element is refreshed once and the caller updates the display to
carry a static HTML copy as well (``text/html`` next to the widget view), so a saved
notebook shows the finished graph without a kernel (nbconvert, nbviewer and GitHub use the
HTML when no widget state was saved).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

from . import render
from .graphview import GraphView
from .model import RunModel

if TYPE_CHECKING:
    from ..engine.run import Run

INTERVAL = 0.15  # seconds between ticks (one message at most per tick)
MAX_PER_SECOND = 10  # front-end messages in any one-second window, final refresh included
SLOW_EVERY = 2.0  # seconds between refreshes of the tasks table / errors list
CLOCK_EVERY = 1.0  # the elapsed time is refreshed at least this often while running
FRAME_BUDGET = 0.03  # rendering may take at most this share of the time since the view opened
LAZY_TABS = {"table": 1, "timeline": 3}  # channels drawn only while their tab (index) is selected


class RunWidget:
    """The live view of one run.  ``root`` is the ipywidget to display."""

    def __init__(self, model: RunModel, run: Run | None = None, *, background: bool = False,
                 interval: float = INTERVAL, graph: GraphView | None = None) -> None:
        import ipywidgets as w

        self.model = model
        self.run = run
        self.background = background
        self.interval = interval
        self.graph = graph or GraphView(model)
        self._lock = threading.RLock()
        self._stamps: collections.deque[float] = collections.deque()
        self.messages = 0  # comm messages this view has sent with updates
        self._turn = 0
        self.final_sent = False
        self.hint = ("running in the background: Stop cancels it" if background
                     else "interrupt the kernel (■) to cancel")
        self.progress = w.HTML(self._progress_html())
        self.graph_html = w.HTML("")
        self.sort = w.Dropdown(options=list(render.SORTS), value="order", description="sort by",
                               layout=w.Layout(width="320px"))
        self.sort.observe(lambda _c: self._push("table", time.monotonic(), force=True), names="value")
        self.table = w.HTML("")
        self.errors = w.HTML("")
        self.timeline = w.HTML("")  # predicted vs actual bars (nbflow.predict.timeline)
        self.locality = w.HTML("")  # filled when the run ends (what moved is known then)
        self.tabs = w.Tab(children=[self.graph_html, w.VBox([self.sort, self.table]), self.errors,
                                    self.timeline, self.locality],
                          titles=("Graph", "Tasks", "Errors", "Timeline", "Locality"))
        top: list[Any] = [self.progress]
        self.stop_button: Any = None
        if background and run is not None:
            self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                        tooltip="Cancel this run", layout=w.Layout(width="120px"))
            self.stop_button.on_click(lambda _b: self.stop())
            top = [w.HBox([self.progress, self.stop_button])]
        self.notice = w.HTML("")  # a note about the view itself (its updates failing: live.py)
        # Approve/Reject buttons for nf.approval() requests of this run (background runs only)
        self.approvals = w.VBox([])
        self._asked: list[Any] = []
        self._shown: set[str] = set()
        if background and run is not None:
            run.subscribe(self._on_event)
            for e in list(run.events):  # requests made before this view existed
                self._on_event(e)
        self.root = w.VBox([*top, self.notice, self.approvals, self.tabs])
        self.root.add_class("nbflow-widget")
        # channel -> (widget, render function, what makes it stale, minimum seconds between sends)
        self._channels: dict[str, tuple[Any, Any, Any, float]] = {
            "progress": (self.progress, self._progress_html, lambda: self.model.version, 0.0),
            "graph": (self.graph_html, self._graph_html, lambda: self.model.version, 0.0),
            "table": (self.table, lambda: render.tasks_html(self.model, self.sort.value),
                      lambda: self.model.version, SLOW_EVERY),
            "errors": (self.errors, lambda: render.errors_html(self.model),
                       lambda: len(self.model.errors), SLOW_EVERY),
            "timeline": (self.timeline, self._timeline_html, lambda: self.model.version, SLOW_EVERY),
            "locality": (self.locality, self._locality_html, lambda: self.model.status, 0.0),
        }
        self._order = list(self._channels)
        self._sent = {k: ch[0].value for k, ch in self._channels.items()}
        self._seen: dict[str, Any] = {"progress": model.version}  # the rest is rendered on demand
        self._last = dict.fromkeys(self._channels, -1e9)
        self.render_s = 0.0  # CPU seconds spent rendering (the frame budget's account)
        self._opened = time.monotonic()
        self.tabs.observe(self._on_tab, names="selected_index")

    def _visible(self, name: str) -> bool:
        """Is the element of channel ``name`` shown now?  (Hidden lazy tabs are not drawn.)"""
        tab = LAZY_TABS.get(name)
        return tab is None or self.tabs.selected_index == tab

    def _on_tab(self, change: Any) -> None:
        """A tab was selected (in the front end): draw its element now if it is a lazy one."""
        for name, tab in LAZY_TABS.items():
            if change["new"] == tab:
                self._push(name, time.monotonic(), force=True)

    # -- rendering ---------------------------------------------------------------------

    def _progress_html(self) -> str:
        running = self.model.status in ("pending", "running")
        text = render.progress_html(self.model, hint=self.hint if running else None)
        if running and self.run is not None:  # the ETA, once there is history
            from ..predict.timeline import eta_html

            text += eta_html(self.run)
        if running:  # tasks/s over the recent window, next to the ETA
            text += render.throughput_html(self.model)
        return text

    def _timeline_html(self) -> str:
        from ..predict.timeline import timeline_html

        try:
            return timeline_html(self.run)
        except Exception:  # the timeline must never break the live view
            return ""

    def _graph_html(self) -> str:
        svg = self.graph.svg()
        note = self.graph.note
        note_html = (f'<div class="nbflow-note" style="color:#8d6e63;font-size:12px">{render.esc(note)}</div>'
                     if note else "")
        return f'{note_html}<div class="nbflow-graph-box" style="overflow:auto;max-height:640px">{svg}</div>'

    def _locality_html(self) -> str:
        """The run's locality report (``run.locality_report()``) once the run has ended."""
        run = self.run
        if self.model.status in ("pending", "running"):
            return "<div>shown when the run ends</div>"
        if run is None:  # a run read back from the store: its transfers draw the graph's edges
            return "<div>no locality report for a run read back from the store</div>"
        try:
            return run.locality_report().html()
        except Exception as e:  # a broken report must not break the view
            return f"<div>no locality report ({render.esc(type(e).__name__)}: {render.esc(str(e))})</div>"

    def _budget(self, now: float) -> bool:
        """May a message go now?  (At most MAX_PER_SECOND in any one-second window.)"""
        stamps = self._stamps
        while stamps and now - stamps[0] >= 1.0:
            stamps.popleft()
        return len(stamps) < MAX_PER_SECOND

    def _push(self, name: str, now: float, force: bool = False) -> bool:
        widget, make, stale, every = self._channels[name]
        with self._lock:
            seen = stale()
            clock = (name == "progress" and self.model.status == "running"
                     and now - self._last[name] >= CLOCK_EVERY)
            unchanged = name in self._seen and seen == self._seen[name]
            if not force and not clock and (unchanged or now - self._last[name] < every):
                return False
            if not force and not self._budget(now):
                return False
            if not force and name in self._seen and self.render_s > FRAME_BUDGET * (now - self._opened):
                return False  # over the frame budget: this element waits (its first frame never does)
            t0 = time.thread_time()
            value = make()
            self.render_s += time.thread_time() - t0
            self._seen[name] = seen
            self._last[name] = now
            if value == self._sent[name]:
                return False
            if force:
                while not self._budget(time.monotonic()):
                    time.sleep(0.02)
            widget.value = value
            self._sent[name] = value
            self._stamps.append(time.monotonic())
            self.messages += 1
            return True

    def tick(self) -> int:
        """Send at most one update to the front end; returns how many were sent (0 or 1)."""
        now = time.monotonic()
        if self._asked and len(self._shown) < len(self._asked):
            return self.show_approvals()
        n = len(self._order)
        for k in range(n):
            name = self._order[(self._turn + k) % n]
            if self._visible(name) and self._push(name, now):
                self._turn = (self._turn + k + 1) % n
                return 1
        return 0

    def final(self) -> None:
        """Show the final state: every element that changed is refreshed once (a hidden lazy
        tab when it gets selected)."""
        now = time.monotonic()
        for name in self._order:
            if self._visible(name):
                self._push(name, now, force=True)
        if self.stop_button is not None:
            with self.stop_button.hold_sync():
                self.stop_button.disabled = True
                self.stop_button.description = self.model.status
        self.final_sent = True

    def say(self, text: str, *, alarm: bool) -> None:
        """Show ``text`` (plain text; empty: nothing) above the tabs, red when ``alarm``."""
        colour = "#b71c1c" if alarm else "#8d6e63"
        value = (f'<div class="nbflow-notice" style="color:{colour};font-size:12px">{render.esc(text)}</div>'
                 if text else "")
        if value != self.notice.value:
            self.notice.value = value

    def static_html(self) -> str:
        return render.static_html(self.model, self.graph.svg(), self.graph.note)

    def mimebundle(self) -> dict[str, Any]:
        """The widget view plus its static HTML and text copies (for saved notebooks)."""
        bundle = dict(self.root._repr_mimebundle_())
        bundle["text/html"] = self.static_html()
        bundle["text/plain"] = render.summary_text(self.model)
        return bundle

    # -- approvals -----------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        """Run-loop thread: remember approval requests; tick() shows them."""
        # Only where a person can answer: a headless run's approvals are decided at once.
        if type(event).__name__ == "ApprovalRequested" and getattr(self.run, "interactive_approvals", False):
            with self._lock:
                self._asked.append(event)

    _on_event.accepts_batches = True  # type: ignore[attr-defined]  # (approvals never come batched)

    def show_approvals(self) -> int:
        """Add a prompt with Approve/Reject buttons per new request; returns how many."""
        import ipywidgets as w

        with self._lock:
            new = [e for e in self._asked if e.key not in self._shown]
            self._shown.update(e.key for e in new)
        for e in new:
            label = w.HTML(f"<b>{render.esc(e.key)}</b>: {render.esc(e.prompt)}")
            yes = w.Button(description="Approve", button_style="success", layout=w.Layout(width="110px"))
            no = w.Button(description="Reject", button_style="warning", layout=w.Layout(width="110px"))

            def answer(approved: bool, key: str = e.key, yes: Any = yes, no: Any = no) -> None:
                if self.run is not None:
                    self.run.approve(key, approved)
                for b in (yes, no):
                    b.disabled = True
                (yes if approved else no).description = "Approved" if approved else "Rejected"

            yes.on_click(lambda _b, answer=answer: answer(True))
            no.on_click(lambda _b, answer=answer: answer(False))
            row = w.HBox([label, yes, no])
            row.add_class("nbflow-approval")
            self.approvals.children = (*self.approvals.children, row)
        return len(new)

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """What the Stop button does: cancel the run."""
        if self.run is not None and not self.run.done:
            self.run.cancel()
            if self.stop_button is not None:
                with self.stop_button.hold_sync():
                    self.stop_button.description = "Stopping…"
                    self.stop_button.disabled = True
