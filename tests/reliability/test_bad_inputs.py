"""A catalogue of malformed calls: each is refused up front with a clear NbflowError.

Every row is one bad input: the call, the exception type expected (always an
``nf.NbflowError`` subclass) and a word its message must contain (the option, or what is
wrong).  Nothing in a row may start a task: the ones that trace or run use a task that
records every call, and the test checks it was never called.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import types

import pytest

import nbflow as nf
from nbflow.core.errors import InvalidOptionError

CALLS: list[object] = []


@nf.task
def rec(*a, **k):
    CALLS.append((a, k))
    return 1


def deco(**options):
    def f(x):
        return x

    return lambda: nf.task(**options)(f)


def run_with(**options):
    def go():
        with nf.Workflow("bad-run") as wf:
            rec(1)
        wf.run(**options)

    return go


def trace(make):
    def go():
        with nf.Workflow("bad-trace") as wf:
            r = rec(0)
            make(r)
        wf.run()

    return go


def env_run(var, value):
    def go():
        import os

        old = os.environ.get(var)
        os.environ[var] = value
        try:
            run_with()()
        finally:
            if old is None:
                del os.environ[var]
            else:
                os.environ[var] = old

    return go


def gen():
    yield 1


async def agen():
    yield 1


class Holder:
    def method(self, x):
        return x


P = collections.namedtuple("P", "a b")


@dataclasses.dataclass
class D:
    x: object


class MyList(list):
    pass


class MyDict(dict):
    pass


NAN, INF = math.nan, math.inf
WDE, IOE, RUE = nf.WorkflowDefinitionError, InvalidOptionError, nf.RefUsageError

CATALOGUE = [
    # -- task options, at decoration --------------------------------------------------------
    ("timeout-nan", deco(timeout=NAN), IOE, "timeout"),
    ("timeout-inf", deco(timeout=INF), IOE, "timeout"),
    ("timeout-neg-inf", deco(timeout=-INF), IOE, "timeout"),
    ("timeout-negative", deco(timeout=-1), IOE, "timeout"),
    ("timeout-zero", deco(timeout=0), IOE, "> 0"),
    ("timeout-str", deco(timeout="5"), IOE, "timeout"),
    ("timeout-bool", deco(timeout=True), IOE, "timeout"),
    ("timeout-list", deco(timeout=[1]), IOE, "timeout"),
    ("retry_delay-nan", deco(retry_delay=NAN), IOE, "retry_delay"),
    ("retry_delay-neg", deco(retry_delay=-1), IOE, "retry_delay"),
    ("retry_delay-inf", deco(retry_delay=INF), IOE, "retry_delay"),
    ("retry_delay-str", deco(retry_delay="x"), IOE, "retry_delay"),
    ("retry_max_delay-nan", deco(retry_max_delay=NAN), IOE, "retry_max_delay"),
    ("retry_max_delay-neg", deco(retry_max_delay=-2), IOE, "retry_max_delay"),
    ("retry_jitter-nan", deco(retry_jitter=NAN), IOE, "retry_jitter"),
    ("retry_jitter-neg", deco(retry_jitter=-0.1), IOE, "retry_jitter"),
    ("retries-neg", deco(retries=-1), WDE, "retries"),
    ("retries-float", deco(retries=1.5), WDE, "retries"),
    ("retries-str", deco(retries="2"), WDE, "retries"),
    ("retries-bool", deco(retries=True), WDE, "retries"),
    ("cache-no", deco(cache="no"), IOE, "cache"),
    ("cache-yes", deco(cache="yes"), IOE, "cache"),
    ("cache-int", deco(cache=1), IOE, "cache"),
    ("cache-zero", deco(cache=0), IOE, "cache"),
    ("cache-none", deco(cache=None), IOE, "cache"),
    ("resources-nan", deco(resources={"memory": NAN}), IOE, "memory"),
    ("resources-inf", deco(resources={"memory": INF}), IOE, "memory"),
    ("resources-negative", deco(resources={"gpu": -1}), IOE, "gpu"),
    ("resources-unparseable", deco(resources={"memory": "lots"}), WDE, "lots"),
    ("resources-negative-size", deco(resources={"memory": "-2GiB"}), WDE, "memory"),
    ("resources-bool", deco(resources={"gpu": True}), IOE, "gpu"),
    ("resources-none", deco(resources={"gpu": None}), IOE, "gpu"),
    ("resources-list", deco(resources=["memory"]), IOE, "mapping"),
    ("resources-str", deco(resources="2GiB"), IOE, "mapping"),
    ("resources-int-key", deco(resources={1: 2}), IOE, "resource names"),
    ("resources-empty-key", deco(resources={"": 2}), IOE, "resource names"),
    ("name-empty", deco(name=""), IOE, "name"),
    ("name-blank", deco(name="   "), IOE, "name"),
    ("name-int", deco(name=123), IOE, "name"),
    ("name-surrogate", deco(name="bad\ud800"), IOE, "surrogate"),
    ("tags-int", deco(tags=123), IOE, "tags"),
    ("tags-int-items", deco(tags=[1]), IOE, "tags"),
    ("tags-bytes", deco(tags=b"x"), IOE, "tags"),
    ("tags-dict", deco(tags={"a": 1}), IOE, "tags"),
    ("reads-int", deco(reads=5), IOE, "reads"),
    ("reads-none-item", deco(reads=[None]), IOE, "reads"),
    ("writes-float", deco(writes=3.5), IOE, "writes"),
    ("executor-gpu", deco(executor="gpu"), WDE, "executor"),
    ("executor-int", deco(executor=1), WDE, "executor"),
    ("executor-async-on-sync", deco(executor="async"), WDE, "async"),
    ("priority-str", deco(priority="high"), WDE, "priority"),
    ("priority-float", deco(priority=1.5), WDE, "priority"),
    ("compensate-int", deco(compensate=5), WDE, "compensate"),
    ("compensate-str", deco(compensate="undo"), WDE, "compensate"),
    ("unknown-option", deco(colour="red"), WDE, "unknown option"),
    ("generator", lambda: nf.task(gen), IOE, "generator"),
    ("async-generator", lambda: nf.task(agen), IOE, "async generator"),
    ("method-in-class", lambda: nf.task(Holder.method), IOE, "method"),
    ("bound-method", lambda: nf.task(Holder().method), IOE, "bound method"),
    ("not-callable", lambda: nf.task(5), WDE, "function"),
    ("both-forms", lambda: nf.task(gen, retries=1), WDE, "not both"),
    ("with_options-nan", lambda: rec.with_options(timeout=NAN), IOE, "timeout"),
    ("with_options-cache-str", lambda: rec.with_options(cache="false"), IOE, "cache"),
    # -- run options, before anything runs -------------------------------------------------
    ("workers-zero", run_with(workers=0), WDE, "workers"),
    ("workers-negative", run_with(workers=-1), WDE, "workers"),
    ("workers-float", run_with(workers=1.5), WDE, "workers"),
    ("workers-str", run_with(workers="4"), WDE, "workers"),
    ("workers-bool", run_with(workers=True), WDE, "workers"),
    ("run-cache-no", run_with(cache="no"), IOE, "cache"),
    ("run-cache-int", run_with(cache=1), IOE, "cache"),
    ("raise_on_error-no", run_with(raise_on_error="no"), IOE, "raise_on_error"),
    ("raise_on_error-int", run_with(raise_on_error=0), IOE, "raise_on_error"),
    ("continue_on_error-str", run_with(continue_on_error="yes"), IOE, "continue_on_error"),
    ("strict-str", run_with(strict="x"), IOE, "strict"),
    ("rerun-int", run_with(rerun=123), IOE, "rerun"),
    ("rerun-int-items", run_with(rerun=[1]), IOE, "rerun"),
    ("rerun-float", run_with(rerun=4.5), IOE, "rerun"),
    ("rerun-dict", run_with(rerun={"rec": 1}), IOE, "rerun"),
    ("rerun-bytes", run_with(rerun=b"rec"), IOE, "rerun"),
    ("rerun-unknown-task", run_with(rerun=["nope"]), WDE, "nope"),
    ("run-resources-nan", run_with(resources={"memory": NAN}), IOE, "memory"),
    ("run-resources-negative", run_with(resources={"cpu": -1}), IOE, "cpu"),
    ("run-resources-str", run_with(resources="8GiB"), IOE, "mapping"),
    ("run-resources-unparseable", run_with(resources={"memory": "lots"}), WDE, "lots"),
    ("on_conflict-ignore", run_with(on_conflict="ignore"), IOE, "on_conflict"),
    ("on_conflict-none", run_with(on_conflict=None), IOE, "on_conflict"),
    ("backend-gpu", run_with(backend="gpu"), WDE, "backend"),
    ("backend-int", run_with(backend=123), WDE, "backend"),
    ("env-commit-window", env_run("NBFLOW_COMMIT_WINDOW", "abc"), WDE, "NBFLOW_COMMIT_WINDOW"),
    ("env-commit-window-neg", env_run("NBFLOW_COMMIT_WINDOW", "-1"), WDE, "NBFLOW_COMMIT_WINDOW"),
    ("env-lock-timeout", env_run("NBFLOW_LOCK_TIMEOUT", "nan"), WDE, "NBFLOW_LOCK_TIMEOUT"),
    ("env-lock-notice", env_run("NBFLOW_LOCK_NOTICE", "soon"), WDE, "NBFLOW_LOCK_NOTICE"),
    # -- workflow names ----------------------------------------------------------------------
    ("workflow-name-surrogate", lambda: _surrogate_run(), IOE, "surrogate"),
    ("workflow-name-empty", lambda: nf.Workflow(""), WDE, "name"),
    ("workflow-name-int", lambda: nf.Workflow(5), WDE, "name"),
    # -- refs while tracing ------------------------------------------------------------------
    ("ref-in-namedtuple", trace(lambda r: rec(P(r, 1))), RUE, "P"),
    ("ref-in-dataclass", trace(lambda r: rec(D(r))), RUE, "D"),
    ("ref-in-namespace", trace(lambda r: rec(types.SimpleNamespace(v=r))), RUE, "SimpleNamespace"),
    ("ref-in-list-subclass", trace(lambda r: rec(MyList([r]))), RUE, "MyList"),
    ("ref-in-dict-subclass", trace(lambda r: rec(MyDict(a=r))), RUE, "MyDict"),
    ("ref-in-ordereddict", trace(lambda r: rec(collections.OrderedDict(a=r))), RUE, "OrderedDict"),
    ("ref-in-namedtuple-in-list", trace(lambda r: rec([1, (P(2, [r]),)])), RUE, "P"),
    ("ref-in-dataclass-kwarg", trace(lambda r: rec(x=D([r]))), RUE, "argument 'x'"),
    ("ref-in-map-kwarg", trace(lambda r: rec.map([1, 2], cfg=D(r))), RUE, "D"),
    ("ref-as-dict-key", trace(lambda r: rec({r: 1})), RUE, "dict key"),
    ("ref-as-bool", trace(lambda r: bool(r)), RUE, "Ref"),
    ("ref-len", trace(lambda r: len(r)), RUE, "Ref"),
    ("ref-iter", trace(lambda r: list(r)), RUE, "Ref"),
    ("ref-result-before-run", trace(lambda r: r.result()), RUE, "run"),
    ("map-over-int", trace(lambda r: rec.map(5)), WDE, "map"),
    # -- gc ----------------------------------------------------------------------------------
    ("gc-keep-last-negative", lambda: nf.gc(keep_last=-1), WDE, "keep_last"),
    ("gc-keep-last-str", lambda: nf.gc(keep_last="3"), WDE, "keep_last"),
    ("gc-keep-last-float", lambda: nf.gc(keep_last=1.5), WDE, "keep_last"),
    ("gc-keep-last-bool", lambda: nf.gc(keep_last=True), WDE, "keep_last"),
    ("gc-max-age-word", lambda: nf.gc(max_age="forever"), WDE, "forever"),
    ("gc-max-age-nan", lambda: nf.gc(max_age=NAN), WDE, "max_age"),
    ("gc-max-age-negative", lambda: nf.gc(max_age=-5), WDE, "max_age"),
    ("gc-max-bytes-word", lambda: nf.gc(max_bytes="lots"), WDE, "lots"),
    ("gc-max-bytes-negative", lambda: nf.gc(max_bytes=-5), WDE, "negative"),
    ("gc-max-bytes-nan", lambda: nf.gc(max_bytes=NAN), WDE, "max_bytes"),
    ("gc-max-bytes-inf", lambda: nf.gc(max_bytes=INF), WDE, "max_bytes"),
]


def _surrogate_run():
    with nf.Workflow("wf\udcff") as wf:
        rec(1)
    wf.run()


def test_the_catalogue_is_big_enough():
    assert len(CATALOGUE) >= 80
    assert len({row[0] for row in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("name,call,error,word", CATALOGUE, ids=[row[0] for row in CATALOGUE])
def test_bad_input_is_refused(name, call, error, word):
    CALLS.clear()
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, nf.NbflowError)
    assert word.lower() in str(info.value).lower(), str(info.value)
    assert not CALLS, f"{name}: a task ran although the input was refused"
