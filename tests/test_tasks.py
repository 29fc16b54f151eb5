"""@nf.task: plain calls outside a workflow, options, validation, redefinition."""

from __future__ import annotations

import asyncio

import pytest

import nbflow as nf


def test_plain_call_outside_workflow_is_the_function():
    @nf.task
    def add(a, b=1):
        return a + b

    assert add(2) == 3
    assert add(2, b=5) == 7
    assert add.name == "add"
    assert add.__doc__ is None and add.__name__ == "add"


def test_async_task_outside_workflow_returns_coroutine():
    @nf.task
    async def double(x):
        return 2 * x

    assert asyncio.run(double(4)) == 8


def test_options_are_recorded():
    @nf.task(retries=2, retry_delay=0.5, timeout=30, cache=False, executor="thread",
             resources={"memory": "2GiB"}, priority=3, reads=("db:sales",),
             writes="file:out.parquet", tags=("io",), name="cleaner")
    def clean(df):
        return df

    s = clean.spec
    assert (s.name, s.retries, s.retry_delay, s.timeout, s.cache, s.executor, s.priority) == (
        "cleaner", 2, 0.5, 30, False, "thread", 3)
    assert s.resources == {"memory": 2 * 2**30}
    assert s.reads == ("db:sales",) and s.writes == ("file:out.parquet",) and s.tags == ("io",)
    assert nf.registry()["cleaner"] is clean


def test_redefining_a_task_replaces_it_in_the_registry():
    @nf.task(name="redefined")
    def v1():
        return 1

    @nf.task(name="redefined")
    def v2():
        return 2

    assert nf.registry()["redefined"] is v2
    assert nf.registry()["redefined"]() == 2


@pytest.mark.parametrize(
    "options, words",
    [
        ({"retries": -1}, "retries must be a whole number"),
        ({"retries": 1.5}, "retries must be a whole number"),
        ({"timeout": -3}, "timeout must be a number"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"executor": "gpu"}, "executor must be one of"),
        ({"resources": {"memory": "lots"}}, "cannot read 'lots'"),
        ({"resources": ["memory"]}, "resources must be a mapping"),
        ({"priority": "high"}, "priority must be an int"),
        ({"colour": "red"}, "unknown option"),
        ({"tags": [1]}, "must be strings"),
    ],
)
def test_bad_options_are_clear(options, words):
    with pytest.raises(nf.WorkflowDefinitionError, match=words):
        @nf.task(**options)
        def f():
            return None


def test_async_function_cannot_go_to_a_process():
    with pytest.raises(nf.WorkflowDefinitionError, match="needs a plain `def`"):
        @nf.task(executor="process")
        async def f():
            return None


def test_backoff_is_capped_exponential_with_bounded_jitter():
    @nf.task(retries=10, retry_delay=1.0, retry_max_delay=5.0, retry_jitter=0.1)
    def f():
        return None

    s = f.spec
    assert s.backoff(1, 0.5) == pytest.approx(1.0)
    assert s.backoff(2, 0.5) == pytest.approx(2.0)
    assert s.backoff(3, 0.5) == pytest.approx(4.0)
    assert s.backoff(4, 0.5) == pytest.approx(5.0)  # capped
    assert s.backoff(2, 0.0) == pytest.approx(1.8)  # -10 %
    assert s.backoff(2, 0.999999) == pytest.approx(2.2, rel=1e-4)  # +10 %


def test_calling_with_a_ref_outside_a_workflow_is_an_error():
    @nf.task
    def ident(x):
        return x

    with nf.Workflow("w"):
        r = ident(1)
    with pytest.raises(nf.RefUsageError, match="outside any workflow"):
        ident(r)
