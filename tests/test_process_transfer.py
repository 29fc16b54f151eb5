"""The process backend moves large buffers through shared memory and counts every byte.

Values must arrive equal whatever they are; large buffers must really travel out of band
(mapped from /dev/shm on the other side, not copied through the pipe); small ones must not;
a task that changes its input must not change the producer's value; no segment may be
left in /dev/shm after a run that succeeded, failed or lost a worker; and the bytes of
every edge must be in ``run.transfers``, the locality report and the journal.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.engine.backends import shm, wire
from nbflow.engine.backends.process import ProcessBackend
from nbflow.store import hooks as store_hooks

pytestmark = pytest.mark.skipif(not shm.available(), reason="needs /dev/shm")

MB = 1 << 20


def ours() -> list[str]:
    """Segments of this test process still in /dev/shm."""
    return shm.names(f"{shm.PREFIX}{os.getpid()}-")


def backing_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process (from /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return " ".join(fields[5:]) if len(fields) > 5 else None
    return None


@dataclasses.dataclass
class Point:
    x: int
    tags: list[str]


@pytest.fixture(autouse=True)
def _no_leftovers():
    yield
    assert ours() == []


def run_process(wf: nf.Workflow, **kw):
    return wf.run(backend="process", workers=2, **kw)


def test_values_arrive_equal_numpy_pandas_and_plain_objects():
    big = np.random.default_rng(0).standard_normal(300_000)  # 2.4 MB, from the notebook
    frame = pd.DataFrame({
        "a": np.arange(400_000, dtype=np.int64),  # 3.2 MB block
        "b": np.linspace(0, 1, 400_000),
        "name": [f"row{i}" for i in range(400_000)],  # object column: in band
    })
    plain = {"p": Point(3, ["a", "b"]), "n": [1, 2.5, None], "s": "text"}

    @nf.task(executor="process")
    def echo(v):
        return v

    @nf.task(executor="process")
    def make_frame(n):
        return pd.DataFrame({"v": np.arange(n, dtype=np.float64), "s": [str(i) for i in range(n)]})

    with nf.Workflow("equal") as wf:
        a = echo(big)
        b = echo(frame)
        c = echo(plain)
        d = echo(echo(make_frame(300_000)))  # process -> process -> process
        small = echo(np.arange(10))
    run = run_process(wf, cache=False)
    np.testing.assert_array_equal(run[a], big)
    pd.testing.assert_frame_equal(run[b], frame)
    assert run[c] == plain
    pd.testing.assert_frame_equal(
        run[d], pd.DataFrame({"v": np.arange(300_000, dtype=np.float64),
                              "s": [str(i) for i in range(300_000)]}))
    np.testing.assert_array_equal(run[small], np.arange(10))
    # results stay ordinary values here: they can be changed in place
    run[a][0] = 42.0
    run[d].loc[0, "v"] = -1.0
    assert run[a][0] == 42.0 and run[d].loc[0, "v"] == -1.0


def test_arrow_tables_arrive_equal():
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": np.arange(500_000), "y": [f"s{i}" for i in range(500_000)]})

    @nf.task(executor="process")
    def echo(v):
        return v

    with nf.Workflow("arrow") as wf:
        t = echo(table)
    run = run_process(wf, cache=False)
    assert run[t].equals(table)
    assert run.backends["process"].stats["oob_buffers"] > 0


def test_large_buffers_are_mapped_from_shared_memory_on_both_sides():
    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    @nf.task(executor="process")
    def where(a):  # which file backs the argument's memory in the worker
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= a.ctypes.data < hi:
                    return " ".join(fields[5:])
        return None

    with nf.Workflow("oob") as wf:
        x = make(2 * MB // 8)  # 2 MiB
        w = where(x)
    run = run_process(wf, cache=False)
    assert run[w].startswith(f"/dev/shm/{shm.PREFIX}{os.getpid()}-")
    # in this process the result is the segment itself (unlinked at the run's end)
    assert backing_file(run[x].ctypes.data).startswith(f"/dev/shm/{shm.PREFIX}{os.getpid()}-")
    stats = run.backends["process"].stats
    assert stats["oob_buffers"] == 2  # x coming back, x going out
    assert stats["shm_copied_bytes"] == 2 * MB  # written once, by the worker that made it
    assert stats["shm_shared_bytes"] == 2 * MB  # sent on by reference: no copy
    assert stats["pipe_bytes"] < 64 * 1024  # not the data


def test_small_values_and_pipe_mode_do_not_use_shared_memory(monkeypatch):
    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    @nf.task(executor="process")
    def total(a):
        return float(a.sum())

    with nf.Workflow("small") as wf:
        s = total(make(1000))  # 8 KB: below the threshold
    run = run_process(wf, cache=False)
    assert run[s] == 1000.0
    stats = run.backends["process"].stats
    assert stats["oob_buffers"] == stats["shm_copied_bytes"] == stats["shm_shared_bytes"] == 0

    monkeypatch.setenv("NBFLOW_PROCESS_TRANSFER", "pipe")
    with nf.Workflow("pipe") as wf:
        big = total(make(4 * MB // 8))
    run = run_process(wf, cache=False)
    assert run[big] == 4 * MB // 8
    stats = run.backends["process"].stats
    assert stats["oob_buffers"] == 0 and stats["pipe_bytes"] > 2 * 4 * MB  # both ways, in band


def test_a_task_that_changes_its_input_does_not_change_the_producers_value():
    @nf.task(executor="process")
    def make(n):
        return np.zeros(n)

    @nf.task(executor="process")
    def scribble(a):
        a += 7  # in place, on its (copy-on-write) view of the producer's segment
        return float(a[0])

    @nf.task(executor="process")
    def first(a):
        return float(a[0])

    local = np.zeros(MB // 4)  # a large value from the notebook, changed by a task too

    with nf.Workflow("cow") as wf:
        x = make(MB // 4)
        s = scribble(x)
        f = first(x).after(s)
        s2 = scribble(local)
    run = run_process(wf, cache=False)
    assert run[s] == 7.0 and run[s2] == 7.0
    assert run[f] == 0.0 and float(run[x].max()) == 0.0 and float(local.max()) == 0.0


def test_transfers_count_every_edge_both_ways_and_reach_the_journal():
    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    @nf.task(executor="process")
    def add(a, b):
        return a + b

    with nf.Workflow("count") as wf:
        x = make(MB // 8)
        w = make(2 * MB // 8)  # nobody's input: only its way back
        z = add(x, x)  # the same value twice: sent once
    run = run_process(wf, cache=True)
    t = run.transfers
    edges = t[t["consumer"].notna() & t["producer"].notna()]
    assert edges[["producer", "consumer"]].values.tolist() == [[x.key, z.key]]
    assert MB <= int(edges["bytes"].iloc[0]) < MB + 4096
    back = t[t["consumer"].isna()].set_index("producer")
    assert MB <= back.loc[z.key, "bytes"] < MB + 4096
    assert set(back.index) == {x.key, z.key, w.key}
    assert 2 * MB <= back.loc[w.key, "bytes"] < 2 * MB + 4096
    assert (t["seconds"] >= 0).all()
    assert set(t.loc[t["consumer"] == z.key, "from_worker"]) == {"main"}
    assert all(w.startswith("process:") for w in t.loc[t["consumer"] == z.key, "to_worker"])
    rep = run.locality_report()
    moved = rep.tasks.set_index("task")["input_bytes_moved"]
    assert moved[z.key] == int(edges["bytes"].iloc[0])
    assert rep.bytes_moved == int(edges["bytes"].sum()) and rep.transfers == 1
    assert rep.bytes_to_client == int(back["bytes"].sum())  # every result comes back here
    assert rep.bytes_from_client == int(t.loc[t["producer"].isna(), "bytes"].sum()) > 0
    stored = store_hooks.stored_transfers(run.id)
    assert sorted(r[4] for r in stored) == sorted(t["bytes"].tolist())


def test_cache_stores_and_serves_shared_memory_results():
    @nf.task(executor="process")
    def make(n):
        return np.arange(n, dtype=np.float64)

    @nf.task(executor="process")
    def total(a):
        return float(a.sum())

    def build():
        with nf.Workflow("cached") as wf:
            x = make(MB // 8)
            s = total(x)
        return wf, x, s

    wf, x, s = build()
    first = run_process(wf)
    assert not first.tasks["cached"].any()
    made, total_first = first[x], first[s]
    wf, x, s = build()
    second = run_process(wf)
    cached = second.tasks.set_index("key")["cached"].to_dict()
    assert cached[x.key] and cached[s.key]
    np.testing.assert_array_equal(second[x], made)
    assert second[s] == total_first == float(np.arange(MB // 8).sum())


def test_no_segments_left_after_a_failed_task():
    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    @nf.task(executor="process")
    def fail(a):
        raise ValueError(f"bad input of {a.nbytes} bytes")

    with nf.Workflow("fail") as wf:
        fail(make(MB // 4))
        fail(np.ones(MB // 4))
    run = run_process(wf, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert ours() == []


class KillOnPickle:
    """Pickling it (sending the result back) kills the worker, after the large array of
    the same result was already written to a segment."""

    def __reduce__(self):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def test_no_segments_left_after_a_worker_is_killed(monkeypatch):
    swept: list[int] = []
    remove_all = shm.remove_all

    def counting(prefix: str) -> int:
        swept.append(remove_all(prefix))
        return swept[-1]

    monkeypatch.setattr(shm, "remove_all", counting)
    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    @nf.task(executor="process")
    def die_with_input(a):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    @nf.task(executor="process")
    def die_sending(n):
        return np.ones(n), KillOnPickle()

    with nf.Workflow("killed-1") as wf:
        die_with_input(make(MB // 4))
    run = run_process(wf, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert ours() == []
    with nf.Workflow("killed-2") as wf:
        die_sending(MB // 4)
    run = run_process(wf, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert ours() == []
    assert swept[-1] == 1  # the dead worker's result segment existed, and the end removed it


def test_segments_of_a_dead_run_process_are_swept():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    name = f"{shm.PREFIX}{dead.stdout.strip()}-deadbeef-leftover"
    with open(os.path.join(shm.SHM_DIR, name), "wb") as f:
        f.write(b"x" * 100)

    @nf.task(executor="process")
    def one():
        return 1

    with nf.Workflow("sweep") as wf:
        o = one()
    assert run_process(wf, cache=False)[o] == 1
    assert not os.path.exists(os.path.join(shm.SHM_DIR, name))


def test_a_value_is_sent_once_however_often_it_is_passed():
    big = np.ones(MB // 8)
    out = wire.build(len, (big, big), {"k": big}, [("p", big)], None, None, None)
    parts = out.message[3]
    assert [k for k, _ in parts] == [0, 1] and out.producers == [None, "p"]
    assert out.nbytes[1] >= MB and out.nbytes[0] < 1024  # part 0 only refers to it
    assert not out.literal_args  # nothing but the producer's value
    nested = wire.build(len, ([big, big], 3), None, [("p", big)], None, None, None)
    assert nested.producers == [None, "p"] and nested.nbytes[0] < 1024
    assert nested.literal_args  # (the list and the 3 are the notebook's)
    assert not wire.eligible(0) and not wire.eligible(()) and wire.eligible(big)


@pytest.mark.parametrize("env,value", [("NBFLOW_PROCESS_TRANSFER", "carrier-pigeon"),
                                       ("NBFLOW_SHM_THRESHOLD", "lots"),
                                       ("NBFLOW_SHM_THRESHOLD", "0")])
def test_bad_transfer_settings_are_clear_errors(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(nf.NbflowError, match=env):
        ProcessBackend(1)


def test_a_full_dev_shm_falls_back_to_the_pipe(monkeypatch):
    import errno
    import pickle

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shm.os, "write", full)
    value = {"a": np.arange(MB // 4, dtype=np.int64), "b": np.ones(MB // 4)}
    packer = shm.Packer(f"{shm.PREFIX}{os.getpid()}-test-", MB)
    data, places, _ = shm.dumps(value, pickle.dumps, packer)
    packer.writer.discard()
    assert places == [] and packer.full and len(data) > 2 * MB  # in band, whole
    back = pickle.loads(data)
    np.testing.assert_array_equal(back["a"], value["a"])


def test_the_threshold_is_a_setting(monkeypatch):
    monkeypatch.setenv("NBFLOW_SHM_THRESHOLD", "4096")

    @nf.task(executor="process")
    def make(n):
        return np.ones(n)

    with nf.Workflow("threshold") as wf:
        m = make(1024)  # 8 KB: out of band with a 4 KB threshold
    run = run_process(wf, cache=False)
    np.testing.assert_array_equal(run[m], np.ones(1024))
    assert run.backends["process"].stats["shm_copied_bytes"] == 8192


@pytest.mark.timeout(240)
def test_in_a_kernel_notebook_functions_and_large_values_cross_through_shared_memory(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "notebooks"))
    import nbharness as h

    nb = h.notebook([
        "import os\nimport numpy as np\nimport nbflow as nf\n"
        "@nf.task\ndef make(n):\n    return np.arange(n, dtype=np.float64)\n"
        "@nf.task\ndef total(a):\n    a *= 2\n    return float(a.sum())",
        "%%workflow big --backend process --no-cache\nx = make(2**18)\ns = total(x)",
        "stats = nf.last_run().backends['process'].stats\n"
        "print('sum ok', s == float(np.arange(2**18).sum()) * 2)\n"
        "print('producer kept', float(x[-1]) == 2**18 - 1)\n"
        "print('shared', stats['shm_shared_bytes'], 'copied', stats['shm_copied_bytes'])\n"
        "print('leftover', [n for n in os.listdir('/dev/shm') if n.startswith(f'nbflow-{os.getpid()}-')])",
    ])
    nb = h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    out = h.stream(nb.cells[2])
    assert "sum ok True" in out and "producer kept True" in out
    assert f"shared {2**21} copied {2**21}" in out  # 2 MiB: made once, handed on by reference
    assert "leftover []" in out


def test_no_segments_left_after_a_timeout():
    @nf.task(executor="process", timeout=1.0)
    def slow(a):
        import time

        time.sleep(30)  # still running when the run ends: its worker is killed
        return a

    with nf.Workflow("timeout") as wf:
        slow(np.ones(MB // 4))
    run = run_process(wf, cache=False, raise_on_error=False)
    assert run.status == "failed"
    assert "timed out" in str(next(iter(run.errors().values())))
    assert ours() == []
