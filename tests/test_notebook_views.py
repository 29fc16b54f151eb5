"""The notebook views without a kernel: model, grouping, layout, SVG, text progress, widget.

Runs here are real nbflow runs; the widget's comm is replaced by one that records what
would be sent to the front end, so message counts are the real ones.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import comm
import pytest
from comm.base_comm import BaseComm

import nbflow as nf
from nbflow.notebook import binding, frontend, render
from nbflow.notebook.graphview import GraphView
from nbflow.notebook.grouping import group
from nbflow.notebook.layout import NO_DOT_NOTE, find_dot, layered, layout
from nbflow.notebook.model import RunModel
from nbflow.notebook.plan import plan_bundle
from nbflow.notebook.progress import TextProgress
from nbflow.notebook.tracebacks import format_error

# -- helpers ---------------------------------------------------------------------------------


def watch(wf: nf.Workflow, **opts: Any) -> tuple[RunModel, nf.Run]:
    """Run ``wf`` with a RunModel subscribed from the first event."""
    model, run = start(wf, **opts)
    run.wait(raise_on_error=False)
    return model, run


def start(wf: nf.Workflow, interactive: bool = False, **opts: Any) -> tuple[RunModel, nf.Run]:
    """Start ``wf`` the way a %%workflow cell does (the model sees every event)."""
    from nbflow.notebook.magics import launch

    model = RunModel(wf)
    run = launch(wf, {"cache": False, **opts}, [model], interactive=interactive)
    model.run = run
    return model, run


@nf.task
def ident(x: Any) -> Any:
    return x


@nf.task
def total(xs: list[int]) -> int:
    return sum(xs)


@nf.task
def items(n: int) -> list[int]:
    return list(range(n))


@nf.task
async def anoop(x: int) -> int:
    return x


@nf.task
def picky(x: int) -> int:
    if x == 3:
        raise ValueError(f"no {x}s here")
    return x


def nodes(svg: str, state: str | None = None) -> int:
    pat = r'<g class="nbflow-node"[^>]*data-state="' + (state or r"[a-z]+") + '"'
    return len(re.findall(pat, svg))


# -- the model -------------------------------------------------------------------------------


def test_model_follows_a_run_with_growth_failures_and_skips() -> None:
    with nf.Workflow("m") as wf:
        grown = picky.map(items(5))  # a map over a Ref: 5 items appear at run time
        total(grown)
        total(ident.map([1, 2]))
    model, run = watch(wf)
    assert run.status == "failed"
    assert len(model) == len(run.tasks) == 12
    assert model.count_items() == run.counts
    assert model.state == list(run.tasks["state"])
    assert model.keys == list(run.tasks["key"])
    failed = model.keys.index("picky.map-0[3]")
    assert isinstance(model.errors[failed], ValueError)
    assert model.parent[failed] == model.keys.index("picky.map-0")
    assert model.status == "failed" and model.finished.is_set()


def test_model_can_be_rebuilt_from_a_finished_runs_events() -> None:
    from nbflow.notebook import view_run

    with nf.Workflow("replay") as wf:
        total(ident.map(items(4)))
    run = wf.run(cache=False)
    model = view_run(run)
    assert model.count_items() == run.counts == {"completed": len(run.tasks)}


# -- grouping --------------------------------------------------------------------------------


def test_small_graphs_draw_every_task() -> None:
    with nf.Workflow("small") as wf:
        total([ident(i) for i in range(5)])
    g = group(RunModel(wf))
    assert g.level == "tasks" and len(g.groups) == 6 and len(g.edges) == 5


def test_a_10k_task_run_draws_at_most_200_nodes_with_counts() -> None:
    with nf.Workflow("big") as wf:
        xs = anoop.map(list(range(5000)))
        ys = [anoop(anoop(i)) for i in range(2500)]
        total(xs)
        total(ys)
    model, run = watch(wf)
    assert run.status == "completed" and len(model) == 10003
    view = GraphView(model)
    svg = view.svg()
    assert view.grouping is not None and len(view.grouping.groups) <= 200
    assert view.grouping.level == "siblings"
    assert "anoop ×5000" in svg and "anoop ×2500" in svg
    assert "5000 ✓" in svg  # the group node counts its tasks by state
    assert nodes(svg) == len(view.grouping.groups) and nodes(svg, "completed") == nodes(svg)


def test_grouping_falls_back_to_functions_then_layers() -> None:
    with nf.Workflow("chain") as wf:
        x = ident(0)
        for i in range(300):  # a chain: every call has different inputs, so siblings cannot fold it
            x = total([x]) if i % 2 else ident(x)
    model = RunModel(wf)
    g = group(model)
    assert g.level == "functions" and [grp.label for grp in g.groups] == ["ident ×151", "total ×150"]
    assert g.edges == [(0, 1), (1, 0)]  # folding may create cycles; the layouts cope
    tight = group(model, max_nodes=1)
    assert tight.level == "layers" and len(tight.groups) == 1


# -- layout and drawing ----------------------------------------------------------------------


@pytest.mark.skipif(find_dot() is None, reason="Graphviz `dot` is not installed")
def test_dot_layout() -> None:
    out = layout([(80, 28)] * 3, [(0, 1), (1, 2)])
    assert out.engine == "dot" and out.note is None
    xs = [x for x, _, _, _ in out.nodes]
    assert xs[0] < xs[1] < xs[2]  # left to right
    assert len(out.edges) == 2 and all(d.startswith("M") for _, _, d, _ in out.edges)


def test_without_dot_the_graph_is_still_drawn_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_DOT", "")
    with nf.Workflow("nodot") as wf:
        total([ident(1), ident(2)])
    model, _ = watch(wf)
    view = GraphView(model)
    svg = view.svg()
    assert view.layout is not None and view.layout.engine == "layered"
    assert view.note == NO_DOT_NOTE and "Graphviz" in NO_DOT_NOTE and "install" in NO_DOT_NOTE
    assert 'data-layout="layered"' in svg and nodes(svg, "completed") == 3
    html = render.static_html(model, svg, view.note)
    assert "apt install graphviz" in html


def test_layered_layout_handles_cycles_between_groups() -> None:
    out = layered([(50, 20)] * 3, [(0, 1), (1, 0), (1, 2)])
    assert out.engine == "layered" and len(out.edges) == 3
    assert out.nodes[2][0] > out.nodes[0][0]


def test_svg_states_and_tooltips() -> None:
    with nf.Workflow("tips") as wf:
        ok = ident("x" * 1000)
        total(picky.map([1, 3]))
        del ok
    model, _ = watch(wf)
    svg = GraphView(model).svg()
    assert nodes(svg, "failed") == 1 and nodes(svg, "skipped") == 2 and nodes(svg, "completed") == 2
    tip = re.search(r'data-key="ident-0"[^>]*><title>([^<]*)</title>', svg).group(1)
    assert "state: completed" in tip and "duration:" in tip and "attempts: 1" in tip
    assert "cache hit: no" in tip and "output size: 1.0 kB" in tip
    failed = re.search(r'data-key="picky-1"[^>]*><title>([^<]*)</title>', svg).group(1)
    assert "error: ValueError: no 3s here" in failed


def test_task_tracebacks_start_in_user_code() -> None:
    with nf.Workflow("tb") as wf:
        picky(3)
    _, run = watch(wf)
    text = format_error(run.errors()["picky-0"])
    first_frame = text.splitlines()[1].strip()
    assert first_frame.startswith('File "') and "test_notebook_views.py" in first_frame
    assert "scheduler.py" not in text and "ValueError: no 3s here" in text


# -- headless progress -----------------------------------------------------------------------


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, s: str) -> None:
        self.lines += [x for x in s.split("\n") if x]

    def flush(self) -> None:
        pass


def test_text_progress_prints_a_bounded_number_of_lines() -> None:
    with nf.Workflow("lines") as wf:
        total(anoop.map(list(range(3000))))
        [picky(i) for i in (3, 3, 3, 3, 3)]
    model, run = start(wf)
    out = _Lines()
    printer = TextProgress(model, out)
    printer.start()
    while not model.finished.wait(0.001) and not run.done:
        printer.tick()
    run.wait(raise_on_error=False)
    printer.final()
    # start + at most 9 progress lines + 3 failures + 1 "further failures" + final
    assert len(out.lines) <= 15, out.lines
    assert out.lines[0] == "[nbflow] lines: running 3007 tasks"
    assert out.lines[-1].startswith("[nbflow] failed: lines: 3002/3007 completed, 5 failed in ")
    assert sum("✗ picky" in line for line in out.lines) == 3
    assert any("further failures" in line for line in out.lines)


def test_a_heartbeat_line_carries_the_eta_like_the_progress_lines() -> None:
    gate = threading.Event()

    @nf.task
    def long_step() -> int:
        gate.wait(60)
        return 1

    with nf.Workflow("beat") as wf:
        long_step()
    model, run = start(wf)
    out = _Lines()
    printer = TextProgress(model, out, heartbeat=0.0, eta=lambda: "ETA 4.0 s (80%: 3.0 s–5.0 s)")
    try:
        deadline = time.monotonic() + 60
        while not out.lines and time.monotonic() < deadline:  # the task starting is news
            printer.tick()
            time.sleep(0.01)
    finally:
        gate.set()
        run.wait()
    assert out.lines and "0/1 completed" in out.lines[0], out.lines
    assert out.lines[0].endswith(", ETA 4.0 s (80%: 3.0 s–5.0 s)"), out.lines


# -- the widget ------------------------------------------------------------------------------


class CountingComm(BaseComm):
    sent: ClassVar[list[tuple[float, str]]] = []
    clock: ClassVar[Callable[[], float]] = time.monotonic  # what stamps each message

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                    **keys: Any) -> None:
        CountingComm.sent.append((CountingComm.clock(), msg_type))


@pytest.fixture
def counting_comm(monkeypatch: pytest.MonkeyPatch) -> type[CountingComm]:
    CountingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", CountingComm)
    return CountingComm


class WidgetClock:
    """The widget's clock in a test: it moves only when the test says (one tick's interval)
    and when the widget itself waits, so what the widget sends in a second does not depend on
    how fast the machine runs the ticks.  Rendering costs no time on it (the frame budget,
    which would hold messages back on a slow machine, never does)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def thread_time(self) -> float:
        return 0.0


def test_widget_updates_are_coalesced(counting_comm: type[CountingComm],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ticking 10x faster than the widget's interval while 1 500 tasks finish: at most one
    message a tick, at most MAX_PER_SECOND in any second, and most ticks send nothing.

    Deterministic on a busy machine: the widget runs on :class:`WidgetClock` (each tick moves
    it by a tenth of the interval), the comm stamps its messages with it, and the tasks
    finish at most ``PER_TICK`` a tick, so the run lasts at least 100 ticks however fast or
    slow they come (it used to be real time: under CPU stress a tick took longer than its
    interval and 34 ticks sent 13 updates, not under a third)."""
    from nbflow.notebook import widget as widget_mod
    from nbflow.notebook.widget import MAX_PER_SECOND, RunWidget

    clock = WidgetClock()
    monkeypatch.setattr(widget_mod, "time", clock)
    monkeypatch.setattr(CountingComm, "clock", clock.monotonic)
    per_tick, n_tasks = 15, 1500
    release = threading.Semaphore(0)

    @nf.task
    def busy(i: int) -> int:
        if not release.acquire(timeout=120):  # (never on a working test: fails the run)
            raise TimeoutError("the test's loop stopped releasing tasks")
        return i

    with nf.Workflow("coalesce") as wf:
        total(busy.map(list(range(n_tasks))))
    model, run = start(wf, workers=4)
    widget = RunWidget(model, run)
    opened = len(counting_comm.sent)
    ticks = sent = 0
    try:
        while True:  # as LiveView.follow does, but ticking 10x faster than the widget's interval
            release.release(per_tick)
            n = widget.tick()
            assert n in (0, 1)  # never more than one message per tick
            ticks += 1
            sent += n
            clock.now += widget.interval / 10
            if model.finished.wait(widget.interval / 10) or run.done:
                break
    finally:
        release.release(n_tasks)  # (a failed check above must not leave tasks waiting)
    widget.final()
    assert run.status == "completed" and ticks >= n_tasks // per_tick
    updates = [t for t, kind in counting_comm.sent[opened:] if kind == "comm_msg"]
    assert len(updates) == widget.messages >= sent > 0
    assert ticks > 3 * len(updates)  # most ticks sent nothing: updates are not per event
    for t in updates:  # the sliding window holds for every second, the final refresh included
        assert sum(1 for u in updates if t <= u < t + 1.0) <= MAX_PER_SECOND
    assert 'data-status="completed"' in widget.progress.value
    assert nodes(widget.graph_html.value, "completed") == nodes(widget.graph_html.value)
    assert "busy ×1500" in widget.graph_html.value
    before = len(counting_comm.sent)
    assert widget.tick() == 0 and len(counting_comm.sent) == before  # nothing changed: nothing sent


def test_widget_sorting_and_stop_button(counting_comm: type[CountingComm]) -> None:
    from nbflow.notebook.widget import RunWidget

    gate = threading.Event()

    @nf.task
    def wait_for_gate(i: int) -> int:
        gate.wait(5)
        return i

    with nf.Workflow("stop") as wf:
        wait_for_gate.map(list(range(20)))
    model, run = start(wf, workers=2)
    widget = RunWidget(model, run, background=True)
    # A click from the browser arrives as this custom message on the button's comm.
    widget.stop_button._handle_custom_msg({"event": "click"}, [])
    gate.set()
    run.wait(raise_on_error=False)
    assert run.status == "cancelled"
    assert widget.stop_button.disabled
    widget.final()
    assert widget.stop_button.description == "cancelled"
    widget.sort.value = "state"
    rows = re.findall(r'<tr data-key="([^"]+)">', widget.table.value)
    states = [model.state[model.keys.index(k)] for k in rows]
    assert states == sorted(states, key=lambda s: render.STATE_RANK[s])


def test_widget_bundle_carries_static_html(counting_comm: type[CountingComm]) -> None:
    from nbflow.notebook.widget import RunWidget

    with nf.Workflow("bundle") as wf:
        total([ident(1), ident(2)])
    model, run = watch(wf)
    widget = RunWidget(model, run)
    widget.final()
    bundle = widget.mimebundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert 'class="nbflow-static"' in bundle["text/html"] and nodes(bundle["text/html"], "completed") == 3
    assert "completed" in bundle["text/plain"]


# -- front-end detection, binding, options ---------------------------------------------------


class _Kernel:
    def __init__(self, msg_id: str) -> None:
        self.msg_id = msg_id

    def get_parent(self) -> dict[str, Any]:
        return {"header": {"msg_id": self.msg_id}}


class _Shell:
    def __init__(self, msg_id: str | None) -> None:
        self.kernel = _Kernel(msg_id) if msg_id is not None else None


def test_frontend_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_HEADLESS", raising=False)
    lab = "5f0c7a4e-1b9e-4d1c-9a59-3c8f4a1d2e7b"
    client = "c91691d8-8bc6998ba95e107766864d18_14364_2"
    assert frontend.frontend_mode(_Shell(lab))[0] == "widget"
    assert frontend.frontend_mode(_Shell(client))[0] == "text"
    assert frontend.frontend_mode(_Shell(None))[0] == "text"  # terminal IPython
    monkeypatch.setenv("NBFLOW_HEADLESS", "1")
    assert frontend.frontend_mode(_Shell(lab))[0] == "text"
    monkeypatch.setenv("NBFLOW_HEADLESS", "0")
    assert frontend.frontend_mode(_Shell(client))[0] == "widget"


def test_binding_replaces_refs_and_keeps_unfinished_ones() -> None:
    with nf.Workflow("bind") as wf:
        ns: dict[str, Any] = {"keep": 1, "a": ident(1), "b": [ident(2), {"c": ident(3)}], "bad": picky(3)}
    before = {"keep": 1}
    bound = binding.bound_refs(ns, before, wf)
    assert set(bound) == {"a", "b", "bad"}
    _, run = watch(wf)
    assert sorted(binding.bind(ns, bound, run)) == ["a", "b"]
    assert ns["a"] == 1 and ns["b"] == [2, {"c": 3}] and ns["keep"] == 1
    assert type(ns["bad"]) is nf.Ref


def test_rerun_option_reaches_the_run() -> None:
    from nbflow.notebook.magics import _run_options

    assert _run_options(None, "local", True, ["clean"])["rerun"] == ["clean"]
    assert "rerun" not in _run_options(2, "local", False, None)


def test_plan_shows_the_graph_and_runs_nothing() -> None:
    with nf.Workflow("plan") as wf:
        total(ident.map(items(3)))
    before = nf.last_run()
    bundle = plan_bundle(wf, check=True)
    assert nf.last_run() is before
    assert "Plan for workflow 'plan': 3 tasks (1 map(s) over a Ref" in bundle["text/plain"]
    assert "map over a Ref" in bundle["text/plain"]
    assert nodes(bundle["text/html"], "pending") == 3
    assert "Cache" in bundle["text/plain"] and "Static checks" in bundle["text/plain"]


def test_plan_reports_cache_hits_from_the_store() -> None:
    store = pytest.importorskip("nbflow.store")
    if not callable(getattr(store, "plan", None)):
        pytest.skip("this run store cannot plan yet")

    def traced() -> nf.Workflow:
        with nf.Workflow("plan-cache") as wf:
            total([ident(1), ident(2)])
        return wf

    before = plan_bundle(traced(), check=False)["text/plain"]
    assert "Cache: 2 miss, 1 maybe" in before and "never ran" in before
    traced().run()  # cached this time
    after = plan_bundle(traced(), check=False)["text/plain"]
    assert "Cache: 3 hit" in after and "code and inputs unchanged" in after
    assert "Cache disabled" in plan_bundle(traced(), check=False, cache=False)["text/plain"]


def test_background_widget_shows_approval_buttons_that_answer(counting_comm: type[CountingComm]) -> None:
    from nbflow.notebook.widget import RunWidget

    with nf.Workflow("approve") as wf:
        answer = nf.approval("Deploy to production?", timeout=30, on_timeout="reject")
        after = ident(answer)
    model, run = start(wf, interactive=True)
    widget = RunWidget(model, run, background=True)
    deadline = time.monotonic() + 10
    while not widget.approvals.children and time.monotonic() < deadline:
        widget.tick()
        time.sleep(0.01)
    assert run.interactive_approvals
    [row] = widget.approvals.children
    label, approve, reject = row.children
    assert "Deploy to production?" in label.value
    # a browser click arrives as this custom message on the button's comm
    approve._handle_custom_msg({"event": "click"}, [])
    run.wait()
    assert run[answer] is True and run[after] is True
    assert approve.description == "Approved" and approve.disabled and reject.disabled


def test_blocking_runs_decide_approvals_by_on_timeout() -> None:
    with nf.Workflow("approve-blocking") as wf:
        answer = nf.approval("Deploy?", timeout=30, on_timeout="reject")
    _model, run = start(wf)  # what a cell without --background does: nobody can click
    run.wait()
    assert not run.interactive_approvals
    assert run[answer] is False


def test_check_output_shows_real_findings() -> None:
    @nf.task(writes=("file:report.csv",))
    def write_a() -> None:
        return None

    @nf.task(writes=("file:report.csv",))
    def write_b() -> None:
        return None

    with nf.Workflow("conflicting") as wf:
        write_a()
        write_b()
    text = plan_bundle(wf, check=True)["text/plain"]
    assert "conflict" in text and "write_a-0" in text and "write_b-0" in text
    assert "file:report.csv" in text
