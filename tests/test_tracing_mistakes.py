"""Mistakes caught while tracing, in words the user understands; and the small conveniences
that replace them: ``ref[key]``, ``nout=``, ``nf.fmt``, maps that tolerate failed items."""

from __future__ import annotations

import pandas as pd
import pytest

import nbflow as nf


@nf.task
def load(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": range(n), "y": [v * 2 for v in range(n)]})


@nf.task
def size(df: pd.DataFrame) -> int:
    return len(df)


@nf.task
def scale(df: pd.DataFrame, factor: float, *, offset: float = 0.0) -> pd.DataFrame:
    return df * factor + offset


@nf.task(nout=2)
def halves(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    mid = len(df) // 2
    return df.iloc[:mid], df.iloc[mid:]


@nf.task
def fragile(i: int) -> int:
    if i % 3 == 0:
        raise ValueError(f"item {i} is bad")
    return i * 10


@nf.task
def total(values: list[int]) -> int:
    return sum(values)


# -- Refs in strings -------------------------------------------------------------------------


def test_a_ref_in_an_f_string_is_refused_while_tracing_with_the_fix() -> None:
    with nf.Workflow("strings") as wf:
        n = size(load(3))
        with pytest.raises(nf.RefUsageError, match=r"nf\.fmt"):
            _ = f"/tmp/out/{n}.csv"
        with pytest.raises(nf.RefUsageError, match="in a string"):
            str(n)
        with pytest.raises(nf.RefUsageError):
            _ = format(n)
        assert repr(n) == "<Ref size-0>"  # repr stays usable (debugging, tracebacks)
    assert str(n) == "<Ref size-0>"  # outside the block a Ref prints as itself
    assert len(wf) == 2


def test_fmt_builds_the_string_when_the_workflow_runs() -> None:
    with nf.Workflow("fmt") as wf:
        n = size(load(4))
        path = nf.fmt("/tmp/out/{}-{tag}.csv", n, tag="a")
    run = wf.run(cache=False)
    assert run[path] == "/tmp/out/4-a.csv"
    assert nf.fmt("{}+{}", 1, 2) == "1+2"  # outside a workflow it is plain formatting


# -- arguments bound while tracing -------------------------------------------------------------


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda d: scale(d), "missing a required argument: 'factor'"),
        (lambda d: scale(d, 2.0, 3.0), "too many positional arguments"),
        (lambda d: scale(d, 2.0, ofset=1.0), "unexpected keyword argument 'ofset'"),
        (lambda d: scale(d, factor=2.0, df=d), "multiple values for argument 'df'"),
        (lambda d: size(), "missing a required argument: 'df'"),
    ],
)
def test_a_call_the_function_cannot_take_fails_at_the_call(call, words) -> None:
    with nf.Workflow("bind") as wf:
        d = load(3)
        with pytest.raises(nf.TaskCallError, match=words) as info:
            call(d)
        assert len(wf) == 1  # nothing was added for the bad call
    msg = str(info.value)
    assert msg.startswith(("scale(df: ", "size(df: ")) and "nothing has run" in msg
    assert isinstance(info.value, TypeError) and isinstance(info.value, nf.WorkflowDefinitionError)


def test_valid_calls_with_keywords_and_defaults_trace() -> None:
    with nf.Workflow("bind-ok") as wf:
        d = load(3)
        a = scale(d, 2.0)
        b = scale(d, factor=2.0, offset=1.0)
        c = scale(df=d, factor=0.5)
    run = wf.run(cache=False)
    assert run[a].x.tolist() == [0, 2, 4]
    assert run[b].x.tolist() == [1, 3, 5]
    assert run[c].y.tolist() == [0, 1, 2]


def test_map_checks_the_call_and_refuses_dataframes_and_dicts() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    with nf.Workflow("map-bad"):
        with pytest.raises(nf.WorkflowDefinitionError, match="column names, not its rows"):
            size.map(df)
        with pytest.raises(nf.WorkflowDefinitionError, match=r"d\.items\(\)"):
            size.map({"a": 1})
        with pytest.raises(nf.TaskCallError, match="missing a required argument: 'factor'"):
            scale.map([df, df])


# -- Refs used like values ---------------------------------------------------------------------


def test_attribute_of_a_ref_says_what_a_ref_is() -> None:
    with nf.Workflow("attr"):
        d = load(3)
        with pytest.raises(nf.RefUsageError, match=r"\.dropna"):
            d.dropna()
        assert not hasattr(d, "columns")  # also an AttributeError: hasattr() is simply False


def test_getitem_and_nout_build_derived_nodes() -> None:
    with nf.Workflow("derived") as wf:
        d = load(6)
        first, second = halves(d)
        col = d["y"]
        again = d["y"]
        n1, n2 = size(first), size(second)
    assert again is col  # one node per distinct key
    keys = [r.key for r in wf.nodes]
    assert "load-0['y']" in keys and "halves-0[0]" in keys and "halves-0[1]" in keys
    run = wf.run(cache=False)
    assert (run[n1], run[n2]) == (3, 3)
    assert run[col].tolist() == [0, 2, 4, 6, 8, 10]
    assert set(wf.graph.predecessors("load-0['y']")) == {"load-0"}


def test_unpacking_without_nout_is_refused_with_the_fix() -> None:
    with nf.Workflow("unpack"):
        d = load(3)
        with pytest.raises(nf.RefUsageError, match=r"nout=N"):
            _a, _b = d


def test_a_ref_used_after_a_failed_run_says_the_task_failed() -> None:
    with nf.Workflow("after-fail") as wf:
        bad = fragile(3)
    wf.run(raise_on_error=False, cache=False)
    with pytest.raises(nf.RefUsageError, match=r"has no value in run .*failed.*item 3 is bad"):
        len(bad)
    with pytest.raises(nf.RefUsageError, match="fix the cause"):
        bad["x"]


# -- maps that tolerate failed items -----------------------------------------------------------


def test_gather_over_a_map_gives_the_successful_items_in_order() -> None:
    with nf.Workflow("tolerant") as wf:
        good = nf.gather(fragile.map(range(8)), min_success=5)
        s = total(good)
    run = wf.run(cache=False)
    assert run.status == "completed"
    assert run[good] == [10, 20, 40, 50, 70]
    assert run[s] == 190
    assert sorted(run.errors()) == ["fragile-0", "fragile-3", "fragile-6"]


def test_gather_over_a_map_fails_below_min_success() -> None:
    with nf.Workflow("too-few") as wf:
        good = nf.gather(fragile.map(range(4)), min_success=3)
    run = wf.run(cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert isinstance(run.errors()[good.key], nf.GatherError)


def test_map_on_error_skip() -> None:
    with nf.Workflow("skip") as wf:
        vals = fragile.map([1, 2, 3, 4], on_error="skip")
        s = total(vals)
    run = wf.run(cache=False)
    assert run[vals] == [10, 20, 40]
    assert run[s] == 70
    assert list(run.errors()) == ["fragile-2"]


def test_run_options_are_written_once_and_checked() -> None:
    with nf.Workflow("opts") as wf:
        n = size(load(2))
    with pytest.raises(nf.InvalidOptionError, match=r"unknown option\(s\) \['retrys'\].*continue_on_error"):
        wf.run(retrys=2)
    with pytest.raises(nf.InvalidOptionError, match="strict"):
        wf.start(strict="yes")
    run = wf.run(cache=False, continue_on_error=False, on_conflict="error")
    assert run[n] == 2 and run.options.on_conflict == "error" and not run.options.continue_on_error


def test_gather_of_one_list_of_results_names_the_fix() -> None:
    with nf.Workflow("gather-list"), pytest.raises(nf.WorkflowDefinitionError) as err:
        nf.gather([fragile(1), fragile(2)])
    assert "nf.gather(*results)" in str(err.value) and "list of 2 results" in str(err.value)


def test_gather_of_separate_results_still_gathers() -> None:
    with nf.Workflow("gather-args") as wf:
        both = nf.gather(fragile(1), fragile(2))
    assert wf.run()[both] == [10, 20]
