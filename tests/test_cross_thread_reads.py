"""A run's readers on another thread while the run's own thread changes what they read.

``run.pending_approvals``, ``run.errors()``, ``run.tasks``, ``run.graph``,
``run.state_now()`` (what an ETA reads), the headless progress printer and the widget's
errors tab are read from a thread other than the run's: a notebook cell, the widget's
ticking thread, a test polling.  The run's thread adds to the dicts they read (an approval
asking, a task failing) and grows the lists (a map's items).  A Python loop over a live
dict then fails with "dictionary changed size during iteration", and lists read between
two steps of a node's growth differ in length by one (a ``run.tasks`` frame then cannot
be built).  Readers copy first: a list by a slice, a dict by ``dict.copy`` (one C call the
GIL keeps whole), every list cut to one length (``TaskStates.records``).

The moment a thread switch would fall is made deterministic with stand-ins: a dict whose
``items()``/``keys()``/``values()`` add a key after the first item (what the run's thread
does if it gets the GIL there), and a record list whose ``append`` calls the reader (a
reader that runs between two steps of a node's growth).  ``dict.copy`` uses none of those
methods, as it uses no Python code at all.  The last test does it for real: one run that
grows, fails and asks, every reader read from this thread while it goes, a bounded number
of times, with no assertion on timing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import nbflow as nf
from nbflow.core.kinds import COLLECT, TASK
from nbflow.core.ref import Ref
from nbflow.core.states import RUNNING
from nbflow.engine.taskstate import TaskStates
from nbflow.notebook import render
from nbflow.notebook.model import RunModel
from nbflow.notebook.progress import TextProgress
from nbflow.predict.inflight import snapshot
from nbflow.workflow import prepare, run_options

DEADLINE = 120.0  # seconds: far above what these runs take; reaching it means a hang


class AddsWhileLooped(dict):
    """A dict the run's thread adds ``extra`` to while a reader loops over it in Python:
    after the first item of ``items()``, ``keys()`` or ``values()`` (what a thread switch
    there lets the run's thread do).  Looping further then raises, as it would."""

    def __init__(self, items: dict[Any, Any], extra: tuple[Any, Any]) -> None:
        super().__init__(items)
        self.extra = extra

    def _looped(self, view: Iterable[Any]) -> Iterator[Any]:
        for k, x in enumerate(view):
            yield x
            if k == 0:
                self.setdefault(*self.extra)

    def items(self) -> Any:
        return self._looped(super().items())

    def keys(self) -> Any:
        return self._looped(super().keys())

    def values(self) -> Any:
        return self._looped(super().values())


class ReadsOnAppend(list):
    """One of the run's record lists, whose ``append`` first calls ``read``: a reader on
    another thread that runs between two steps of a node's growth (the lists before this
    one in ``TaskStates.append`` are one longer already, this one and those after not)."""

    def __init__(self, items: list[Any], read: Callable[[], None]) -> None:
        super().__init__(items)
        self.read = read

    def append(self, x: Any) -> None:
        self.read()
        super().append(x)


@nf.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@nf.task
def shout(x: int) -> int:
    print(f"item {x}")
    return x


@nf.task
def picky(x: int) -> int:
    if x % 3 == 0:
        raise ValueError(f"no {x}")
    return x


def prepared(wf: nf.Workflow, **options: Any) -> nf.Run:
    return prepare(wf, run_options(wf, cache=False, **options))


# -- dicts the run's thread adds to -----------------------------------------------------


def test_pending_approvals_are_read_from_a_copy_of_the_answers():
    with nf.Workflow("asks") as wf:
        first = nf.approval("One?", timeout=600)
        second = nf.approval("Two?", timeout=600)
    run = prepared(wf)
    s = run._sched
    # The first approval waits for its answer (running, its wait's event kept); the run's
    # thread puts the second's there as it asks.
    s.state[first.index] = RUNNING
    s.answers = AddsWhileLooped({first.index: object()}, extra=(second.index, object()))
    assert run.pending_approvals == [first.key]


def test_run_errors_are_read_from_a_copy():
    with nf.Workflow("fails") as wf:
        a, b = picky(0), picky(3)
    run = prepared(wf)
    s = run._sched
    boom = ValueError("no 0")
    s.errors = s.tasks.errors = AddsWhileLooped({a.index: boom}, extra=(b.index, ValueError("no 3")))
    assert run.errors() == {a.key: boom}


def test_run_tasks_reads_errors_and_reasons_from_copies():
    with nf.Workflow("fails-and-skips") as wf:
        a, b, c, d = picky(0), picky(3), picky(6), picky(9)
    run = prepared(wf)
    s = run._sched
    s.errors = s.tasks.errors = AddsWhileLooped({a.index: ValueError("no 0")},
                                                extra=(b.index, ValueError("no 3")))
    s.reasons = s.tasks.reasons = AddsWhileLooped({c.index: "upstream failed"},
                                                  extra=(d.index, "upstream failed too"))
    errors = run.tasks.set_index("key")["error"]
    assert errors[a.key] == "ValueError: no 0" and errors[c.key] == "upstream failed"


def test_the_progress_printer_and_the_errors_tab_read_copies_of_the_models_errors():
    with nf.Workflow("viewed") as wf:
        a, b = picky(0), picky(3)
    model = RunModel(wf)
    model.errors = AddsWhileLooped({a.index: ValueError("no 0")}, extra=(b.index, ValueError("no 3")))
    model.retry_errors = AddsWhileLooped({a.index: ValueError("not yet")},
                                         extra=(b.index, ValueError("not yet either")))

    class Lines:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    out = Lines()
    TextProgress(model, out).tick()  # type: ignore[arg-type]
    assert f"✗ {a.key} failed: ValueError: no 0" in out.text
    assert f"↻ {a.key} will retry: ValueError: not yet" in out.text
    assert f'data-key="{a.key}"' in render.errors_html(model)


# -- lists the run's thread grows -------------------------------------------------------


def test_reads_between_two_steps_of_a_nodes_growth_see_the_nodes_before_it_whole():
    with nf.Workflow("grows") as wf:
        out = shout.map(numbers(2))
    run = prepared(wf)
    s = run._sched
    before = len(s.nodes)
    seen: dict[str, Any] = {}

    def read() -> None:
        seen["tasks"] = run.tasks
        seen["state_now"] = run.state_now()
        seen["graph"] = run.graph
        seen["snapshot"] = snapshot(run)

    # (a list halfway through TaskStates.append: nodes, state, ... are one longer already)
    s.output_bytes = s.tasks.output_bytes = ReadsOnAppend(s.output_bytes, read)
    mapped = s.nodes[out.index]
    s._append_node(mapped, mapped.task, (0,), None, [], f"{mapped.key}[0]", [out.index], TASK)

    assert len(seen["tasks"]) == before
    assert {k: len(v) for k, v in seen["state_now"].items()} == dict.fromkeys(seen["state_now"], before)
    assert sorted(seen["graph"].nodes) == sorted(r.key for r in s.nodes[:before])
    snap = seen["snapshot"]
    assert len(snap.states) == len(snap.durations) == len(snap.levels) == len(snap.keys) == before
    # once the growth is done, the new node is read like any other
    assert len(run.tasks) == before + 1 and len(run.state_now()["level"]) == before + 1


def test_the_graph_leaves_out_what_a_map_added_after_its_rows_were_read(monkeypatch):
    with nf.Workflow("grows-while-drawn") as wf:
        out = shout.map(numbers(2))
    run = prepared(wf)
    s = run._sched
    before = len(s.nodes)
    rows = run._rows

    def rows_then_the_map_expands() -> dict[str, list[Any]]:
        got = rows()
        # the run's thread, before the graph's edges are read: the map adds its items, and
        # its node then collects them (as resolvers.expand_map does)
        mapped = s.nodes[out.index]
        for j in range(2):
            s._append_node(mapped, mapped.task, (j,), None, [], f"{mapped.key}[{j}]", [out.index], TASK)
        s.nodes[out.index] = Ref(mapped.wf, out.index, None, tuple(s.nodes[before:]), None,
                                 [before, before + 1], mapped.key, 1, COLLECT)
        # and a node that waits for one of those read (as a saga's undo waits for the one
        # before it)
        s._append_node(mapped, mapped.task, (0,), None, [0], "late", [], TASK)
        return got

    monkeypatch.setattr(run, "_rows", rows_then_the_map_expands)
    g = run.graph
    assert sorted(g.nodes) == sorted(r.key for r in s.nodes[:before])
    assert all("state" in attrs for _, attrs in g.nodes(data=True))


def test_records_hold_no_error_or_reason_of_a_node_added_after_the_lists_were_copied():
    class Node:
        def __init__(self, index: int) -> None:
            self.index = index
            self.key = f"t-{index}"

    table = TaskStates([Node(0), Node(1)], lambda e: None)

    class GrowsWhenCopied(dict):
        """The run's thread, between the copies of the lists and of this dict: a node is
        added and ends (failed, or skipped)."""

        def copy(self) -> dict[Any, Any]:
            k = len(table.state)
            table.append(Node(k))
            self[k] = f"ended {k}"
            return super().copy()

    table.errors = GrowsWhenCopied({0: ValueError("no 0")})  # type: ignore[assignment]
    table.reasons = GrowsWhenCopied({1: "skipped"})
    rec = table.records()
    assert len(rec["state"]) == len(rec["nodes"]) == len(rec["executor"]) == 2
    assert list(rec["errors"]) == [0] and rec["reasons"] == {1: "skipped"}


def test_a_task_key_a_map_added_is_found_after_an_earlier_lookup_by_key():
    # A lookup by key made the run's index of keys before the map added its items; the
    # items were then "no task" for good (the widget's tasks table asks run.logs(key) for
    # every row, and showed nothing printed by any item of a map over a Ref).
    with nf.Workflow("grown") as wf:
        items = numbers(2)
        shout.map(items)
    run = prepared(wf)
    with pytest.raises(nf.TaskNotFinished):
        run[items.key]
    run.start_in_thread()
    run.wait(timeout=DEADLINE)
    last = run.nodes[-1].key
    assert last.endswith("[1]"), "the map's items are the run's last nodes"
    assert run[last] == 1
    assert run.logs(last) == "item 1\n"
    assert RunModel(wf, run).output_of(last) == "item 1\n"
    with pytest.raises(KeyError, match="no task 'nothing-here'"):
        run["nothing-here"]


# -- for real: one run, every reader read while it goes ----------------------------------

def one_length(columns: dict[str, list[Any]]) -> None:
    lengths = {k: len(v) for k, v in columns.items()}
    assert len(set(lengths.values())) == 1, f"the lists differ in length: {lengths}"


READERS: dict[str, Callable[[nf.Run], Any]] = {
    "pending_approvals": lambda r: r.pending_approvals,
    "errors": lambda r: r.errors(),
    # (run.tasks is a DataFrame of these columns, and slow to build: the rows are read
    # many more times while the run goes, so a race is met more often)
    "tasks' columns": lambda r: one_length(r._rows()),
    "state_now": lambda r: one_length(r.state_now()),
    "graph": lambda r: r.graph,
}
RUNS = 4  # per reader (until one fails)


@pytest.mark.parametrize("reader", list(READERS))
def test_a_reader_read_again_and_again_while_the_run_grows_fails_and_asks(reader):
    """Up to RUNS runs, ``reader`` read until each ends (a bounded number of reads: the
    run's own work is bounded); nothing here depends on how long anything takes.  Before
    the readers copied, of 10 of these tests per reader (on a loaded 2-core machine)
    these failed: pending_approvals 10, errors 10, the columns 10, state_now 7, graph 5."""
    with nf.Workflow("busy") as wf:
        for k in range(60):
            nf.approval(f"q{k}?", timeout=0, on_timeout="approve")
        picky.map(numbers(300), on_error="skip")
    read = READERS[reader]
    failure = None
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch far more often: a race shows sooner)
    try:
        for _ in range(RUNS):
            run = prepared(wf, workers=4)
            run.interactive_approvals = True
            run.start_in_thread()
            while not run.done and failure is None:
                try:
                    read(run)
                except Exception as e:
                    failure = f"{type(e).__name__}: {e}"
            run.wait(timeout=DEADLINE, raise_on_error=False)
            assert run.status == "completed", run.error
            if failure is not None:
                break
    finally:
        sys.setswitchinterval(old)
    assert failure is None, f"{reader} failed while the run went on: {failure}"
