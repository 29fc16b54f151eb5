"""A finished run's results are freed by reference counting once the user drops the run.

Each test runs with the cyclic garbage collector off (``gc.disable()``), keeps
``weakref.ref``s to result arrays (numpy arrays take weak references), drops its own
references (run, workflow, Refs) and checks the arrays are gone.  Before the fix, run,
scheduler, workflow, the event subscribers, the result cache and the failed tasks'
tracebacks were one reference cycle: the results waited for a full collection, which large
arrays (few objects) rarely trigger, so a notebook cell run again grew by a whole run's
results each time.

``nf.last_run()`` keeps the latest run of the process on purpose (a later cell reads it:
``nf.last_run().tasks``), as IPython's ``_`` keeps the last output; starting another run
lets it go.  So each test starts one more small run, as a notebook cell run again does,
before it checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
import pytest
from gc_control import no_cyclic_gc

import nbflow as nf
from nbflow.core.errors import RefUsageError
from nbflow.workflow import prepare, run_options


@nf.task
def make(n: int) -> np.ndarray:
    return np.ones(n)


@nf.task
def inc(a: np.ndarray) -> np.ndarray:
    return a + 1


@nf.task(cache=False)
def boom(a: np.ndarray) -> np.ndarray:
    raise ValueError(f"boom on {len(a)} values")


@nf.task
def tiny() -> int:
    return 1


_started = threading.Event()


@nf.task(cache=False)
async def wait_forever(a: np.ndarray) -> int:
    _started.set()
    await anyio.sleep(3600)  # (cancelled by the test)
    return 0


def another_run() -> None:
    """Start a small run of another workflow, so ``nf.last_run()`` holds that one."""
    with nf.Workflow("memory-other") as wf:
        tiny()
    wf.run(cache=False)


def results_of(build: Callable[[], list[Any]], **options: Any) -> list[weakref.ref[Any]]:
    """Run the workflow ``build`` traces; weak references to its array results."""
    with nf.Workflow("memory") as wf:
        refs = build()
    run = wf.run(raise_on_error=False, **options)
    out = [weakref.ref(run[r]) for r in refs if run.tasks.set_index("key").loc[r.key, "state"] == "completed"]
    assert out, "the run produced no array to watch"
    return out  # (run, wf and refs go with this frame)


def chains(n: int = 3) -> list[Any]:
    return [inc(inc(make(1000 + i))) for i in range(n)]


def assert_freed(watched: list[weakref.ref[Any]]) -> None:
    another_run()
    alive = [w() for w in watched if w() is not None]
    assert alive == [], f"{len(alive)} of {len(watched)} results outlived their run"


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_a_local_run_is_freed_when_dropped(cache: bool) -> None:
    with no_cyclic_gc():
        assert_freed(results_of(chains, cache=cache, workers=1))


def test_a_thread_run_with_several_workers_is_freed_when_dropped() -> None:
    with no_cyclic_gc():
        assert_freed(results_of(lambda: chains(6), cache=False, workers=4))


def test_a_failed_run_is_freed_when_dropped() -> None:
    """The failed task's traceback held the engine's frames, and they the scheduler."""
    def build() -> list[Any]:
        refs = chains()
        boom(refs[0])
        return refs

    with no_cyclic_gc():
        assert_freed(results_of(build, cache=False, workers=2))


_flaky_calls: list[int] = []


@nf.task(cache=False, retries=1, retry_delay=0)
def flaky(a: np.ndarray) -> np.ndarray:
    _flaky_calls.append(1)
    if len(_flaky_calls) == 1:
        raise ConnectionError("the first attempt fails")
    return a + 1


def test_a_failed_run_that_raised_is_freed_once_the_error_is_dropped() -> None:
    def go() -> list[weakref.ref[Any]]:
        with nf.Workflow("memory-raised") as wf:
            refs = chains()
            boom(refs[0])
        try:  # (not pytest.raises: its ExceptionInfo and this frame would be a cycle)
            wf.run(cache=False, workers=2)
        except nf.WorkflowFailed as e:
            run = e.run
        else:
            raise AssertionError("the run did not raise WorkflowFailed")
        done = run.tasks.set_index("key")["state"]
        return [weakref.ref(run[r]) for r in refs if done[r.key] == "completed"]

    with no_cyclic_gc():
        watched = go()
        assert watched
        assert_freed(watched)


def test_a_run_with_a_retried_task_is_freed_when_dropped() -> None:
    """The failed attempt's error is kept in the run's events (TaskRetrying)."""
    _flaky_calls.clear()

    def build() -> list[Any]:
        refs = chains()
        return [*refs, flaky(refs[0])]

    with no_cyclic_gc():
        watched = results_of(build, cache=False, workers=2)
        assert len(_flaky_calls) == 2 and len(watched) == 4
        assert_freed(watched)


def test_a_continue_on_error_run_is_freed_when_dropped() -> None:
    def build() -> list[Any]:
        refs = chains()
        inc(boom(refs[1]))  # (skipped after the failure)
        return refs

    with no_cyclic_gc():
        assert_freed(results_of(build, cache=False, workers=2, continue_on_error=True))


def test_a_process_run_is_freed_when_dropped() -> None:
    with no_cyclic_gc():
        assert_freed(results_of(chains, cache=False, workers=2, backend="process"))


@pytest.mark.timeout(300)
def test_a_dask_run_is_freed_when_dropped(dask_cluster: Any) -> None:
    with no_cyclic_gc():
        assert_freed(results_of(chains, cache=False, backend=dask_cluster.scheduler_address))


def test_an_async_run_on_the_callers_loop_is_freed_when_dropped() -> None:
    async def go() -> list[weakref.ref[Any]]:
        with nf.Workflow("memory-arun") as wf:
            refs = chains()
            parts = inc.map(refs)  # (a map: items added at run time)
        run = await wf.arun(cache=False, workers=2)
        return [weakref.ref(v) for v in [*(run[r] for r in refs), *run[parts]]]  # (the map's items too)

    with no_cyclic_gc():
        assert_freed(anyio.run(go))


def _cancelled_run() -> list[weakref.ref[Any]]:
    _started.clear()
    with nf.Workflow("memory-cancel") as wf:
        a = inc(make(1000))
        wait_forever(a)
    run = wf.start(cache=False)
    assert _started.wait(60), "the task to cancel never started"
    watched = [weakref.ref(run[a])]
    run.cancel()
    run.wait(timeout=60, raise_on_error=False)
    assert run.status == "cancelled"
    return watched


def test_a_cancelled_run_is_freed_when_dropped() -> None:
    with no_cyclic_gc():
        assert_freed(_cancelled_run())


_chunk_started = threading.Event()
_chunk_release = threading.Event()


@nf.task(cache=False)
def held(a: np.ndarray) -> int:
    _chunk_started.set()
    _chunk_release.wait(60)  # (a thread cannot be interrupted: the test lets it go)
    return len(a)


def _cancelled_chunk() -> list[weakref.ref[Any]]:
    _chunk_started.clear()
    _chunk_release.clear()
    with nf.Workflow("memory-chunk") as wf:
        a = inc(make(1000))
        held.map([a, a, a, a], batch=4)  # (one chunk of four items)
    run = wf.start(cache=False, workers=2)
    try:
        assert _chunk_started.wait(60), "the chunk never started"
        watched = [weakref.ref(run[a])]
        run.cancel()
    finally:
        _chunk_release.set()
    run.wait(timeout=60, raise_on_error=False)
    assert run.status == "cancelled"
    return watched


def test_a_run_cancelled_in_a_batched_map_is_freed_when_dropped() -> None:
    with no_cyclic_gc():
        assert_freed(_cancelled_chunk())


def test_nf_last_run_keeps_the_latest_run_until_another_starts() -> None:
    """The one run the process keeps by design, and only until the next run starts."""
    with no_cyclic_gc():
        watched = results_of(chains, cache=False)
        latest = nf.last_run()
        assert latest is not None and latest.name == "memory"
        assert all(w() is not None for w in watched)
        del latest
        assert_freed(watched)
        last = nf.last_run()
        assert last is not None and last.name == "memory-other"


def test_post_run_features_work_while_the_run_is_held() -> None:
    with nf.Workflow("memory-features") as wf:
        refs = chains(2)
        failed = boom(refs[0])
    run = wf.run(raise_on_error=False, workers=2)
    another_run()  # (nf.last_run() no longer holds it: only `run` does)
    assert wf.last_run is run
    assert np.array_equal(run[refs[1]], np.ones(1001) + 2)
    assert np.array_equal(refs[0].result(), np.ones(1000) + 2)
    assert run.status == "failed"
    tasks = run.tasks.set_index("key")
    assert tasks.loc[failed.key, "state"] == "failed"
    assert {"RunStarted", "RunFinished"} <= {type(e).__name__ for e in run.events}
    assert run.explain(refs[0]).key == refs[0].key
    assert run.locality_report() is not None
    assert run.prediction_report() is not None
    assert run.eta() is not None
    assert run.graph.number_of_nodes() == len(wf.nodes)
    # The failed task's error keeps its own frame (its line), not the engine's in front.
    err = run.errors()[failed.key]
    assert isinstance(err, ValueError) and err.__traceback__ is not None
    assert err.__traceback__.tb_frame.f_code.co_name == "boom"
    again = wf.run(raise_on_error=False, workers=2)  # a re-run of the same workflow
    assert wf.last_run is again and again.status == "failed"


def test_a_ref_of_a_dropped_run_says_so() -> None:
    with nf.Workflow("memory-dropped") as wf:
        r = inc(make(10))
    with no_cyclic_gc():
        wf.run(cache=False)
        assert r.result()[0] == 2  # (nf.last_run() holds it)
        another_run()
        assert wf.last_run is None
        with pytest.raises(RefUsageError, match="nothing holds the latest run"):
            r.result()


def test_a_background_run_is_held_while_it_runs() -> None:
    """A run nobody else holds goes on to its end: its thread holds it."""
    _started.clear()
    with nf.Workflow("memory-background") as wf:
        a = inc(make(10))
        wait_forever(a)
    watched = weakref.ref(wf.start(cache=False))
    another_run()
    assert _started.wait(60)
    run = watched()
    assert run is not None and not run.done
    run.cancel()
    run.wait(timeout=60, raise_on_error=False)
    assert run.status == "cancelled"


MAGIC = r'''
import gc, json, weakref
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
shell.run_cell("import numpy as np, nbflow as nf")
shell.run_cell("@nf.task\ndef make(n):\n    return np.ones(n)\n")
shell.run_cell("@nf.task\ndef inc(a):\n    return a + 1\n")
gc.collect()
gc.disable()
r = shell.run_cell("%%workflow memory-magic --quiet --no-cache\nx = inc(make(1000))\ny = [inc(x), inc(x)]\n")
ns = shell.user_ns
out = {"ok": r.success, "bound": type(ns["x"]).__name__}
watched = [weakref.ref(ns["x"]), weakref.ref(ns["y"][0])]
del ns["x"], ns["y"]
shell.run_cell("%%workflow memory-other --quiet --no-cache\nz = make(3)\n")  # the cell run again
out["alive"] = sum(w() is not None for w in watched)
print(json.dumps(out))
'''


def test_a_workflow_cell_run_is_freed_when_its_names_are_dropped() -> None:
    """A %%workflow cell binds its names to the results; once they are rebound or deleted
    nothing else (the live view, the binding, the run) keeps them."""
    res = subprocess.run([sys.executable, "-c", MAGIC], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"ok": True, "bound": "ndarray", "alive": 0}


def test_a_subscriber_is_let_go_when_the_run_ends() -> None:
    """Subscribers serve a live run (journal, views); the run lets go of them at its end."""
    seen: list[str] = []

    class Listener:
        def __call__(self, event: Any) -> None:
            seen.append(type(event).__name__)

    with nf.Workflow("memory-subscriber") as wf:
        tiny()
    with no_cyclic_gc():
        run = prepare(wf, run_options(wf, cache=False))
        listener = Listener()
        watched = weakref.ref(listener)
        run.subscribe(listener)  # (before the first event)
        del listener
        run.start_in_thread()
        run.wait()
        assert seen[0] == "RunStarted" and seen[-1] == "RunFinished"
        assert watched() is None
    assert type(run.events[-1]).__name__ == "RunFinished"  # (the run's own log stays)
