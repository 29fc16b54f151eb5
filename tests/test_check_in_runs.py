"""nf.check runs before every run: errors refuse it, conflicts warn, serialise or refuse."""

from __future__ import annotations

import threading
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nbflow as nf

log: list[tuple[str, str, float]] = []
lock = threading.Lock()


def writer(name: str, resource: str):
    @nf.task(name=name, writes=(resource,))
    def write(x=0):
        with lock:
            log.append((name, "start", time.perf_counter()))
        time.sleep(0.01)
        with lock:
            log.append((name, "end", time.perf_counter()))
        return x + 1

    return write


def overlapped(a: str, b: str) -> bool:
    t = {(n, k): v for n, k, v in log}
    return max(t[a, "start"], t[b, "start"]) < min(t[a, "end"], t[b, "end"])


def test_conflicting_writes_warn_by_default():
    w1, w2 = writer("w1", "file:out.csv"), writer("w2", "file:out.csv")
    with nf.Workflow("warn") as wf:
        w1(), w2()
    with pytest.warns(nf.ConflictWarning, match="on_conflict='serialize'"):
        run = wf.run()
    assert [f.code for f in run.findings if f.code == "conflict"] == ["conflict"]


def test_serialize_orders_conflicting_tasks_so_they_never_overlap():
    log.clear()
    w1, w2, w3 = (writer(f"s{i}", "db:sales") for i in range(3))
    with nf.Workflow("serial") as wf:
        w1(), w2(), w3()
    with warnings.catch_warnings():
        warnings.simplefilter("error", nf.ConflictWarning)  # serialize must not warn
        run = wf.run(on_conflict="serialize", workers=3)
    assert run.status == "completed"
    assert not any(overlapped(a, b) for a, b in [("s0", "s1"), ("s0", "s2"), ("s1", "s2")])
    assert len(run.serialized_edges) == 3
    assert all(run.graph.edges[e].get("serialized") for e in run.serialized_edges)
    assert not wf.graph.edges  # the workflow itself is unchanged


def test_on_conflict_error_refuses_to_run():
    ran = []
    w1, w2 = writer("e1", "x"), writer("e2", "x")

    @nf.task
    def mark():
        ran.append(1)

    with nf.Workflow("strict") as wf:
        w1(), w2(), mark()
    with pytest.raises(nf.WorkflowDefinitionError, match="conflict") as info:
        wf.run(on_conflict="error")
    assert not isinstance(info.value, nf.WorkflowFailed)
    assert ran == []
    with pytest.raises(nf.WorkflowDefinitionError, match="on_conflict must be"):
        wf.run(on_conflict="sometimes")


def test_an_unbounded_loop_is_refused_before_running():
    @nf.task
    def step(x):
        return x + 1

    with nf.Workflow("forever") as wf:
        nf.loop(step, 0, until=lambda v: v < 0, max_iter=None)
    with pytest.raises(nf.WorkflowDefinitionError, match="unbounded-loop"):
        wf.run()
    assert [f.code for f in nf.check(wf)] == ["unbounded-loop"]


def test_an_empty_branch_side_is_reported_as_info():
    @nf.task
    def work():
        return 1

    with nf.Workflow("empty-side") as wf:
        nf.branch(True, then=lambda: work(), otherwise=lambda: None)
    findings = nf.check(wf)
    assert [(f.code, f.severity) for f in findings] == [("empty-branch", "info")]
    assert "otherwise" in findings[0].message


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=8))
def test_serialized_runs_give_identical_results_for_any_worker_count(workers, resources):
    @nf.task(name="acc")
    def acc(state, i):
        return state * 31 + i

    tasks = {}
    with nf.Workflow("ser-prop") as wf:
        refs = []
        for i, r in enumerate(resources):
            t = tasks.setdefault(r, acc.with_options(name=f"acc_{r}", writes=(r,), reads=("shared",)))
            refs.append(t(i, i))
    baseline = wf.run(workers=1, on_conflict="serialize")
    run = wf.run(workers=workers, on_conflict="serialize")
    assert [run[r] for r in refs] == [baseline[r] for r in refs]
    assert run.serialized_edges == baseline.serialized_edges
