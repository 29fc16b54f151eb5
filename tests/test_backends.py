"""The four backends behind one protocol: same results, clear pickling errors, clean exits."""

from __future__ import annotations

import random
import threading
import time

import pytest
from conftest import child_pids, children_left, nbflow_threads_left

import nbflow as nf


@nf.task
def combine(seed, *parts):
    # deterministic in its inputs, so every backend must give the same value
    rng = random.Random(seed)
    return rng.randint(0, 1000) + sum(parts) % 9973


@nf.task
async def acombine(seed, *parts):
    return (seed * 31 + sum(parts)) % 10007


def random_workflow(seed: int, n: int = 40) -> tuple[nf.Workflow, list[nf.Ref]]:
    rng = random.Random(seed)
    with nf.Workflow(f"random-{seed}") as wf:
        refs: list[nf.Ref] = []
        for i in range(n):
            parents = rng.sample(refs, k=min(len(refs), rng.randint(0, 3)))
            task = acombine if rng.random() < 0.25 else combine
            refs.append(task(i, *parents))
        mapped = combine.map([1, 2, 3], )
        refs.append(mapped)
    return wf, refs


def results_of(backend) -> list:
    wf, refs = random_workflow(7)
    run = wf.run(backend=backend)
    assert run.status == "completed"
    return [run[r] for r in refs]


def test_local_and_process_backends_agree():
    assert results_of("local") == results_of("process")


def test_process_backend_runs_sync_tasks_in_other_processes():
    import os

    @nf.task
    def pid():
        return os.getpid()

    with nf.Workflow("pids") as wf:
        r = pid()
    run = wf.run(backend="process")
    assert run[r] != os.getpid()
    assert run.tasks["executor"].tolist() == ["process"]
    assert run.tasks["output_bytes"].iloc[0] > 0  # the pickled size is known


def test_dask_backend_with_a_temporary_local_cluster():
    pytest.importorskip("distributed")
    before = child_pids()
    assert results_of("dask") == results_of("local")
    assert children_left(before) == [], "the temporary cluster left processes behind"


def test_dask_backend_by_address_and_by_client(dask_cluster):
    from distributed import Client

    expected = results_of("local")
    assert results_of(dask_cluster.scheduler_address) == expected
    with Client(dask_cluster) as client:
        assert results_of(client) == expected
        assert client.status == "running"  # a client we were given is left open


def test_executor_option_overrides_the_backend_default():
    @nf.task(executor="process")
    def in_process():
        import os

        return os.getpid()

    @nf.task
    def in_thread():
        return threading.current_thread().name

    with nf.Workflow("mixed") as wf:
        p, t = in_process(), in_thread()
    run = wf.run()
    import os

    assert run[p] != os.getpid()
    assert run[t].startswith("nbflow-task")


def test_unpicklable_argument_names_the_task_and_type():
    @nf.task
    def make_lock():
        return 1

    @nf.task(executor="process")
    def use(lock, n):
        return n

    with nf.Workflow("pickle-arg") as wf:
        r = use(threading.Lock(), make_lock())
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    err = info.value.__cause__
    assert isinstance(err, nf.PicklingError)
    msg = str(err)
    assert r.key in msg and "argument 0" in msg and "lock" in msg.lower() and "executor='thread'" in msg


def test_unpicklable_result_names_the_task_and_type():
    @nf.task(executor="process")
    def make_lock():
        return threading.Lock()

    with nf.Workflow("pickle-result") as wf:
        r = make_lock()
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    msg = str(info.value.__cause__)
    assert r.key in msg and "result of type" in msg and "lock" in msg.lower()


def test_task_exception_in_a_process_keeps_its_type():
    @nf.task(executor="process")
    def bad():
        raise KeyError("missing column")

    with nf.Workflow("remote-error") as wf:
        bad()
    with pytest.raises(nf.WorkflowFailed) as info:
        wf.run()
    assert isinstance(info.value.__cause__, KeyError)


def test_cancelling_process_tasks_kills_the_workers():
    gate = threading.Event()

    @nf.task
    def mark():
        gate.set()

    @nf.task(executor="process")
    def long_sleep(i):
        time.sleep(60)

    before = child_pids()
    with nf.Workflow("kill") as wf:
        m = mark()
        for i in range(2):
            long_sleep(i).after(m)
    run = wf.start()
    gate.wait(10)
    deadline = time.monotonic() + 20
    while run.count("running") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.perf_counter()
    run.cancel()
    run.wait(raise_on_error=False)
    assert time.perf_counter() - t0 < 30  # not the 60 s the tasks would sleep
    assert run.status == "cancelled"
    workers = children_left(before, ignore="forkserver")
    assert workers == [], f"worker processes still alive: {workers}"
    assert nbflow_threads_left() == []


def test_unknown_backend_is_a_clear_error():
    with nf.Workflow("nob") as wf:
        combine(1)
    with pytest.raises(nf.WorkflowDefinitionError, match="unknown backend 'gpu-cloud'"):
        wf.run(backend="gpu-cloud")


def test_dask_executor_needs_a_dask_backend():
    @nf.task(executor="dask")
    def remote():
        return 1

    with nf.Workflow("needs-dask") as wf:
        remote()
    with pytest.raises(nf.WorkflowDefinitionError, match="backend='dask'"):
        wf.run()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_worker_counts(bad):
    with nf.Workflow("w") as wf:
        combine(1)
    with pytest.raises(nf.WorkflowDefinitionError, match="workers must be"):
        wf.run(workers=bad)
