"""A large value of the run's own process is copied into shared memory once per run.

A notebook value (or a cached input loaded here, or a thread task's result) sent to many
process tasks must reach every worker from one segment, counted in bytes the same way as
before; each task may change its copy without changing the others' or the notebook's;
a value changed here between two calls is not sent stale; and nothing stays in /dev/shm
after a run that succeeded, failed, was cancelled or lost a worker.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.engine.backends import shm

pytestmark = pytest.mark.skipif(not shm.available(), reason="needs /dev/shm")

MB = 1 << 20
N = 5


def ours() -> list[str]:
    return shm.names(f"{shm.PREFIX}{os.getpid()}-")


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    assert ours() == []


def _backing(address: int) -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return " ".join(fields[5:])
    return ""


@nf.task(executor="process")
def where(a, k: int) -> tuple[str, float]:
    """Which file backs the argument's memory in the worker, and its sum."""
    arr = a if isinstance(a, np.ndarray) else a["a"].to_numpy()
    return _backing(arr.ctypes.data), float(arr.sum())


def test_a_notebook_array_sent_to_many_tasks_is_one_segment():
    big = np.ones(2 * MB // 8)
    with nf.Workflow("kept-numpy") as wf:
        outs = [where(big, k) for k in range(N)]
    run = wf.run(backend="process", workers=2, cache=False)
    files = {run[o][0] for o in outs}
    assert len(files) == 1  # every worker mapped the same segment
    assert next(iter(files)).startswith(f"/dev/shm/{shm.PREFIX}{os.getpid()}-")
    assert all(run[o][1] == 2 * MB // 8 for o in outs)
    stats = run.backends["process"].stats
    assert stats["shm_copied_bytes"] == 2 * MB  # copied once ...
    assert stats["shm_shared_bytes"] == (N - 1) * 2 * MB  # ... and sent by reference after
    assert run.backends["process"].kept.made == 1
    # bytes are counted as before: every call's literal argument carries the value
    t = run.transfers
    literal = t[t["producer"].isna() & t["consumer"].notna()]
    assert len(literal) == N and (literal["bytes"] >= 2 * MB).all()


def test_a_notebook_dataframe_sent_to_many_tasks_is_copied_once():
    frame = pd.DataFrame({"a": np.ones(MB // 4), "b": np.arange(MB // 4, dtype=np.float64)})
    with nf.Workflow("kept-pandas") as wf:
        outs = [where(frame, k) for k in range(N)]
    run = wf.run(backend="process", workers=2, cache=False)
    assert len({run[o][0] for o in outs}) == 1
    assert all(run[o][1] == MB // 4 for o in outs)
    stats = run.backends["process"].stats
    copied = stats["shm_copied_bytes"]
    assert 4 * MB <= copied < 5 * MB  # the frame's float block (2 columns x 2 MiB), once
    assert stats["shm_shared_bytes"] == (N - 1) * copied


@nf.task(executor="thread")
def make_here(n: int):
    return np.full(n, 3.0)


def test_a_value_made_here_or_loaded_from_the_cache_is_copied_once():
    with nf.Workflow("kept-made") as wf:
        x = make_here(2 * MB // 8)  # a thread task's result: made in this process
        outs = [where(x, k) for k in range(N)]
    first = wf.run(backend="process", workers=2)
    assert len({first[o][0] for o in outs}) == 1
    assert first.backends["process"].stats["shm_copied_bytes"] == 2 * MB
    with nf.Workflow("kept-loaded") as wf:
        x = make_here(2 * MB // 8)  # now a cache hit, loaded here from the store
        outs = [where(x, k) for k in range(N, 2 * N)]  # new consumers: they run
    run = wf.run(backend="process", workers=2)
    assert run.tasks.set_index("key").loc[x.key, "cached"]
    assert len({run[o][0] for o in outs}) == 1
    stats = run.backends["process"].stats
    assert stats["shm_copied_bytes"] == 2 * MB and stats["shm_shared_bytes"] == (N - 1) * 2 * MB


@nf.task(executor="process")
def scribble(a, k: int) -> float:
    a += k  # in place, on this worker's copy-on-write view of the one segment
    time.sleep(0.05)  # (the others run meanwhile)
    return float(a.max())


def test_each_task_changes_only_its_own_copy():
    local = np.zeros(MB // 4)
    with nf.Workflow("kept-cow") as wf:
        outs = [scribble(local, k) for k in range(1, N + 1)]
    run = wf.run(backend="process", workers=2, cache=False)
    assert [run[o] for o in outs] == [float(k) for k in range(1, N + 1)]
    assert float(local.max()) == 0.0
    assert run.backends["process"].kept.made == 1


@nf.task(executor="process")
def peek(a, _after: object = None) -> float:
    return float(a[len(a) // 2])


@nf.task(executor="thread")
def bump(a, _after: object = None) -> None:
    a += 1.0  # in place, in this process, between two process tasks that read it


def test_a_value_changed_here_between_calls_is_sent_again():
    local = np.zeros(MB // 4)
    with nf.Workflow("kept-changed") as wf:
        before = peek(local)
        changed = bump(local, before)
        after = peek(local, changed)
    run = wf.run(backend="process", workers=1, cache=False)
    assert run[before] == 0.0 and run[after] == 1.0
    assert run.backends["process"].kept.made == 2


def test_kept_copies_stay_within_their_budget_and_pinned_ones_stay():
    prefix = f"{shm.PREFIX}{os.getpid()}-kepttest-"
    kept = shm.Kept(prefix, budget=3 * MB)
    values = [np.full(MB // 8, float(i)) for i in range(4)]
    try:
        places = [kept.get(v.ctypes.data, memoryview(v).cast("B"))[0] for v in values]
        assert len(set(places)) == 4  # all pinned: none may go yet
        assert len(shm.names(prefix)) == 4
        kept.release([p[0] for p in places[:2]])  # two calls ended
        assert kept.total <= 3 * MB
        left = set(shm.names(prefix))
        assert places[0][0] not in left  # the least recently sent goes first
        assert {p[0] for p in places[2:]} <= left
        again, made = kept.get(values[3].ctypes.data, memoryview(values[3]).cast("B"))
        assert again == places[3] and not made
    finally:
        kept.clear()
    assert shm.names(prefix) == []


@nf.task(executor="process")
def fail_with(a, k: int) -> float:
    raise ValueError(f"bad input {k}")


def test_no_copies_left_after_failures():
    big = np.ones(MB // 4)
    with nf.Workflow("kept-fail") as wf:
        for k in range(3):
            fail_with(big, k)
    run = wf.run(backend="process", workers=2, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert run.backends["process"].kept.made == 1
    assert ours() == []


@nf.task(executor="process")
def die(a, k: int) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_no_copies_left_after_a_worker_is_killed():
    big = np.ones(MB // 4)
    with nf.Workflow("kept-killed") as wf:
        for k in range(3):
            die(big, k)
    run = wf.run(backend="process", workers=2, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert ours() == []


@nf.task(executor="process")
def nap(a, k: int) -> None:
    time.sleep(60)


def test_no_copies_left_after_a_cancel():
    big = np.ones(MB // 4)
    gate = threading.Event()

    @nf.task(executor="thread")
    def mark():
        gate.set()

    with nf.Workflow("kept-cancel") as wf:
        m = mark()
        for k in range(2):
            nap(big, k).after(m)
    run = wf.start(backend="process", workers=2, cache=False)
    gate.wait(10)
    deadline = time.monotonic() + 20
    while run.count("running") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ours()) >= 1  # the copy exists while the tasks run
    run.cancel()
    run.wait(raise_on_error=False)
    assert run.status == "cancelled"
    assert ours() == []


@pytest.mark.timeout(240)
def test_in_a_kernel_a_notebook_variable_sent_to_many_tasks_is_copied_once(tmp_path):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "notebooks"))
    import nbharness as h

    nb = h.notebook([
        "import os\nimport numpy as np\nimport nbflow as nf\n"
        "table = np.arange(2**18, dtype=np.float64)  # 2 MiB, a notebook variable\n"
        "@nf.task\ndef share(a, k):\n    a[:] = k  # in place: this task's copy only\n"
        "    return float(a.sum())",
        "%%workflow fan --backend process --no-cache\n"
        "outs = [share(table, k) for k in range(6)]",
        "stats = nf.last_run().backends['process'].stats\n"
        "print('sums', outs == [float(k * 2**18) for k in range(6)])\n"
        "print('notebook kept', float(table[-1]) == 2**18 - 1)\n"
        "print('copied', stats['shm_copied_bytes'], 'shared', stats['shm_shared_bytes'])\n"
        "print('leftover', [n for n in os.listdir('/dev/shm') if n.startswith(f'nbflow-{os.getpid()}-')])",
    ])
    nb = h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    out = h.stream(nb.cells[2])
    assert "sums True" in out and "notebook kept True" in out
    assert f"copied {2**21} shared {5 * 2**21}" in out  # one copy, sent 5 more times
    assert "leftover []" in out
