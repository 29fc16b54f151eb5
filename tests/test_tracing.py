"""Tracing: Refs, nesting, map, after, and the errors for misusing them."""

from __future__ import annotations

import pytest

import nbflow as nf


@nf.task
def inc(x):
    return x + 1


@nf.task
def total(xs):
    return sum(xs)


@nf.task
def merge(d):
    return {k: v for k, v in d.items()}


@nf.task
def listing(n):
    return list(range(n))


def test_task_calls_return_refs_and_build_edges():
    with nf.Workflow("t") as wf:
        a = inc(1)
        b = inc(a)
    assert isinstance(a, nf.Ref) and isinstance(b, nf.Ref)
    assert (a.key, b.key) == ("inc-0", "inc-1")
    assert list(wf.graph.edges) == [("inc-0", "inc-1")]
    run = wf.run()
    assert run[b] == 3 and b.result() == 3 and run["inc-1"] == 3


def test_refs_nested_in_lists_tuples_dicts_and_kwargs():
    with nf.Workflow("nest") as wf:
        a, b = inc(1), inc(10)
        s = total([a, b, 100])
        t = total(xs=[a, b])
        d = merge({"a": a, "deep": {"b": [b]}})
    run = wf.run()
    assert run[s] == 2 + 11 + 100
    assert run[t] == 13
    assert run[d] == {"a": 2, "deep": {"b": [11]}}
    assert set(wf.graph.predecessors(d.key)) == {a.key, b.key}


def test_map_over_a_list_returns_one_ref_to_the_list():
    with nf.Workflow("m") as wf:
        out = inc.map([1, 2, 3])
        s = total(out)
    run = wf.run()
    assert run[out] == [2, 3, 4] and run[s] == 9
    assert inc.map([1, 2]) == [2, 3]  # outside a workflow: plain list


def test_map_over_a_ref_expands_at_run_time():
    with nf.Workflow("dyn") as wf:
        xs = listing(4)
        ys = inc.map(xs)
        s = total(ys)
    assert len(wf) == 3  # the graph grows only when the run knows the list
    run = wf.run()
    assert run[ys] == [1, 2, 3, 4] and run[s] == 10
    keys = set(run.tasks["key"])
    assert {f"{ys.key}[{i}]" for i in range(4)} <= keys
    added = [e for e in run.events if type(e).__name__ == "TasksAdded"]
    assert len(added) == 1 and len(added[0].keys) == 4
    assert len(wf) == 3  # the workflow itself is unchanged: it can run again
    assert wf.run()[s] == 10


def test_map_over_an_empty_ref_gives_an_empty_list():
    with nf.Workflow("empty") as wf:
        ys = inc.map(listing(0))
    assert wf.run()[ys] == []


def test_map_shares_keyword_arguments_including_refs():
    @nf.task
    def scale(x, factor):
        return x * factor

    with nf.Workflow("kw") as wf:
        f = inc(1)
        ys = scale.map(listing(3), factor=f)
        zs = scale.map([5], factor=3)
    run = wf.run()
    assert run[ys] == [0, 2, 4] and run[zs] == [15]


def test_after_adds_an_ordering_edge():
    order = []

    @nf.task
    def note(name):
        order.append(name)

    with nf.Workflow("after") as wf:
        late = note("late")
        early = note("early")
        late.after(early)
    wf.run(workers=4)
    assert order == ["early", "late"]
    assert ("note-1", "note-0") in wf.graph.edges


def test_cycle_is_rejected_with_its_tasks_named():
    with nf.Workflow("cyc") as wf:
        a = inc(1)
        b = inc(a)
        c = inc(b)
        a.after(c)
    with pytest.raises(nf.CycleError) as info:
        wf.run()
    assert set(info.value.cycle) == {"inc-0", "inc-1", "inc-2"}
    assert "cycle" in str(info.value) and "inc-0" in str(info.value)


def test_using_a_ref_as_a_value_while_tracing_is_a_clear_error():
    with nf.Workflow("misuse"):
        r = listing(3)
        with pytest.raises(nf.RefUsageError, match="as a condition"):
            if r:
                pass
        with pytest.raises(nf.RefUsageError, match=r"task\.map"):
            for _ in r:
                pass
        with pytest.raises(nf.RefUsageError, match="len"):
            len(r)


def test_result_before_the_run_is_a_clear_error():
    with nf.Workflow("early") as wf:
        r = inc(1)
    with pytest.raises(nf.RefUsageError, match="has not run"):
        r.result()
    wf.run()
    assert r.result() == 2


def test_ref_from_another_workflow_is_rejected():
    with nf.Workflow("one"):
        r = inc(1)
    with nf.Workflow("two"), pytest.raises(nf.RefUsageError, match="belongs to workflow 'one'"):
        inc(r)
    with nf.Workflow("three"), pytest.raises(nf.RefUsageError, match="cannot cross"):
        total([r])


def test_nested_workflows_are_rejected():
    with nf.Workflow("outer"), pytest.raises(nf.WorkflowDefinitionError, match="nesting"), \
            nf.Workflow("inner"):
        pass


def test_after_rejects_non_refs_and_self():
    with nf.Workflow("a"):
        r = inc(1)
        with pytest.raises(nf.RefUsageError):
            r.after(5)
        with pytest.raises(nf.WorkflowDefinitionError, match="itself"):
            r.after(r)


def test_bad_workflow_name():
    with pytest.raises(nf.WorkflowDefinitionError):
        nf.Workflow("")


def test_map_over_a_ref_that_is_not_a_list_fails_clearly():
    @nf.task
    def number():
        return 5

    with nf.Workflow("bad-map") as wf:
        ys = inc.map(number())
        after = total(ys)
    run = wf.run(raise_on_error=False)
    err = run.errors()[ys.key]
    assert isinstance(err, TypeError) and "needs a list" in str(err) and "int" in str(err)
    assert run.tasks.set_index("key").loc[after.key, "state"] == "skipped"
