"""A live run and the same run read back from the store read alike (``RunRecord``).

``nf.Run`` and ``nf.load_run(id)`` are checked member by member against the one reading
protocol, then compared value by value for the same run: tasks (columns and rows), graph,
counts, errors, printed output, and ``explain`` naming the same reason (a file that changed,
the code of a task that changed).
"""

from __future__ import annotations

import importlib.util
import inspect
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import nbflow as nf
from nbflow.core.counting import TaskCounts, count_tasks
from nbflow.core.protocols import RunRecord
from nbflow.store.history import StoredRun

SOURCE = '''
import nbflow as nf

@nf.task
def items(n):
    return list(range(n))

@nf.task
def work(x):
    print(f"working on {x}")
    if x == 3:
        raise ValueError("no 3")
    return x * VERSION

@nf.task
def total(xs):
    return sum(xs)

@nf.task
def read(path):
    return open(path).read()
'''


def tasks_module(version: int, where: Path) -> dict[str, Any]:
    """The tasks above, imported from a file, with ``work``'s code differing between versions."""
    folder = where / f"v{version}"
    folder.mkdir(exist_ok=True)
    path = folder / "mix_tasks.py"
    path.write_text(textwrap.dedent(SOURCE.replace("VERSION", str(version))))
    spec = importlib.util.spec_from_file_location("mix_tasks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)


def run_mix(ns: dict[str, Any], path: Path) -> nf.Run:
    """A run with a file input, a map over a Ref (grows at run time), a failure and skips."""
    with nf.Workflow("mix") as wf:
        ns["read"](nf.File(str(path)))
        ns["total"](ns["work"].map(ns["items"](5)))
    return wf.run(raise_on_error=False)


def protocol_members() -> list[str]:
    own = [m for m in vars(RunRecord) if not m.startswith("_") or m == "__getitem__"]
    return sorted({*RunRecord.__annotations__, *own} - {"__annotations__"})


def test_both_kinds_of_run_have_every_member_of_the_protocol(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("a")
    run = run_mix(tasks_module(2, tmp_path), data)
    stored = nf.load_run(run.id)
    assert type(stored) is StoredRun
    members = protocol_members()
    assert {"id", "name", "status", "tasks", "graph", "counts", "task_counts", "errors", "logs",
            "explain", "__getitem__"} <= set(members)
    for m in members:
        proto = getattr(RunRecord, m, None)
        for r in (run, stored):
            assert hasattr(r, m), f"{type(r).__name__} has no {m}"
            if callable(proto) and not isinstance(proto, property):
                assert callable(getattr(r, m)), (type(r).__name__, m)
                # the same parameters as the protocol says (self aside)
                want = list(inspect.signature(proto).parameters)[1:]
                got = list(inspect.signature(getattr(r, m)).parameters)
                assert len(got) == len(want), (type(r).__name__, m, got, want)
    assert isinstance(run, RunRecord) and isinstance(stored, RunRecord)
    assert isinstance(run.task_counts, TaskCounts) and isinstance(stored.task_counts, TaskCounts)


def test_the_same_run_live_and_stored_reads_the_same(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("a")
    ns = tasks_module(2, tmp_path)
    run = run_mix(ns, data)
    stored = nf.load_run(run.id)
    assert (stored.id, stored.name, stored.status) == (run.id, run.name, run.status) == (
        run.id, "mix", "failed")
    live_t, stored_t = run.tasks, stored.tasks
    assert list(live_t.columns) == list(stored_t.columns)
    # 4 traced nodes + 5 items the map added while running
    assert len(live_t) == len(stored_t) == 9
    pd.testing.assert_frame_equal(live_t, stored_t, check_dtype=False)  # every column, every row
    assert sorted(run.graph.edges) == sorted(stored.graph.edges)
    assert run.counts == stored.counts == {"completed": 6, "failed": 1, "skipped": 2}
    assert run.task_counts == stored.task_counts
    assert run.task_counts.as_row() == {"tasks": 9, "completed": 6, "cached": 0, "failed": 1,
                                        "skipped": 2, "cancelled": 0}
    live_err, stored_err = run.errors(), stored.errors()
    assert list(live_err) == list(stored_err) == ["work.map-0[3]"]  # failed tasks only, not skips
    assert "ValueError: no 3" in str(stored_err["work.map-0[3]"])
    assert str(live_err["work.map-0[3]"]) == "no 3"
    for key in ("work.map-0[1]", "work.map-0[3]"):
        assert run.logs(key) == stored.logs(key) == f"working on {key[-2]}\n"
    assert run["work.map-0[4]"] == stored["work.map-0[4]"] == 8


def test_stored_explain_names_the_same_reason_as_the_live_run(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("a")
    run_mix(tasks_module(2, tmp_path), data)
    data.write_text("changed")  # the file changes ...
    second = run_mix(tasks_module(3, tmp_path), data)  # ... and so does work's code
    stored = nf.load_run(second.id)
    for target in ("read-0", "work.map-0[1]"):
        live, back = second.explain(target), stored.explain(target)
        assert (back.key, back.task, back.cached) == (live.key, live.task, live.cached)
        assert back.reason == live.reason
        assert back.text.splitlines()[0] == live.text.splitlines()[0]
    assert "d.txt" in stored.explain("read-0").reason and "changed" in stored.explain("read-0").reason
    assert stored.explain("work.map-0[1]").reason.startswith("code of work changed")
    # a third run with nothing changed: served from the cache, and both say so
    third = run_mix(tasks_module(3, tmp_path), data)
    pd.testing.assert_frame_equal(third.tasks, nf.load_run(third.id).tasks, check_dtype=False)
    assert third.task_counts == nf.load_run(third.id).task_counts and third.task_counts.cached == 6
    back = nf.load_run(third.id).explain("read-0")
    assert back.cached and back.reason == third.explain("read-0").reason == "code and inputs unchanged"
    # a task name matching several tasks gives one explanation each, as live
    assert len(nf.load_run(third.id).explain("work")) == len(third.explain("work")) == 5
    with pytest.raises(KeyError, match="no task or task key 'nope'"):
        stored.explain("nope")


def test_count_tasks_rules() -> None:
    rows = [("completed", True, "task"), ("completed", False, "task"), ("running", False, "collect"),
            ("running", False, "task"), ("failed", False, "task"), ("skipped", False, "task")]
    c = count_tasks(rows)
    assert c.total == 6 and c.cached == 1 and c.done == 4
    # the collector waiting for its items is pending, not running
    assert c.by_state == {"pending": 1, "running": 1, "completed": 2, "failed": 1, "skipped": 1}
    assert count_tasks([("completed", True, "task", 3), ("pending", False, "map", 2)]).as_row() == {
        "tasks": 5, "completed": 3, "cached": 3, "failed": 0, "skipped": 0, "cancelled": 0}
