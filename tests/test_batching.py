"""Map batching: chunks of items in one backend call, with results, keys, cache and failures
still per item; the chunk-size controller tested as a pure function."""

from __future__ import annotations

import os
import threading

import pytest

import nbflow as nf
from nbflow.engine import batching
from nbflow.engine.backends.local import ThreadBackend
from nbflow.engine.backends.process import ProcessBackend
from nbflow.engine.batching import MIN_ITEMS, ChunkSizer, plan


@nf.task
def double(x: int) -> int:
    return 2 * x


@nf.task
def picky(x: int) -> int:
    if x % 7 == 3:
        raise ValueError(f"item {x} is bad")
    return 10 * x


@nf.task
def numbers(n: int) -> list[int]:
    return list(range(n))


@nf.task
def total(xs: list[int]) -> int:
    return sum(xs)


@nf.task(timeout=30)
def limited(x: int) -> int:
    return x


@nf.task
async def adouble(x: int) -> int:
    return 2 * x


@nf.task
def where(x: int) -> tuple[int, int]:
    return os.getpid(), x


@pytest.fixture
def calls(monkeypatch):
    """Counts backend calls (a chunk is one call) per backend class."""
    counts: dict[str, int] = {}

    def counting(cls):
        original = cls.call

        async def call(self, key, fn, args, kwargs):
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
            return await original(self, key, fn, args, kwargs)

        monkeypatch.setattr(cls, "call", call)

    counting(ThreadBackend)
    counting(ProcessBackend)
    try:
        from nbflow.engine.backends.dask import DaskBackend

        counting(DaskBackend)
    except ImportError:  # pragma: no cover - the dask extra is not installed
        pass
    return counts


# -- the controller, with fake measurements ----------------------------------------------------


def test_adaptive_sizer_starts_with_one_item_and_grows_at_most_fourfold() -> None:
    s = ChunkSizer(target=0.03)
    assert s.size(left=100_000, parallel=4) == 1  # nothing measured yet
    sizes = []
    for _ in range(8):
        n = s.size(left=100_000, parallel=4)
        sizes.append(n)
        s.observe(n, n * 20e-6)  # every item takes 20 µs
    assert sizes[:6] == [1, 4, 16, 64, 256, 1024]
    assert sizes[6:] == [1500, 1500]  # 0.03 s / 20 µs, and it stays there


def test_adaptive_sizer_shrinks_at_once_when_items_get_slow() -> None:
    s = ChunkSizer(target=0.03)
    s.per_item, s.last = 20e-6, 1500
    s.observe(1500, 1500 * 0.1)  # suddenly 100 ms per item
    assert s.size(left=10_000, parallel=2) == 1
    s.observe(1, 0.1)
    assert s.size(left=10_000, parallel=2) == 1


def test_adaptive_sizer_smooths_one_odd_measurement() -> None:
    s = ChunkSizer(target=0.03)
    s.per_item, s.last = 20e-6, 1500
    s.observe(1500, 1500 * 60e-6)  # one chunk three times slower (another process, say)
    assert s.per_item == pytest.approx(40e-6)  # half way, not all the way
    assert s.size(left=100_000, parallel=2) == 750


def test_adaptive_chunks_leave_work_for_every_slot() -> None:
    s = ChunkSizer(target=0.03)
    s.per_item, s.last = 1e-6, 10_000
    assert s.size(left=300, parallel=4) == 75  # a fair share, not all 300 in one chunk
    assert s.size(left=3, parallel=4) == 1


def test_fixed_size_ignores_measurements() -> None:
    s = ChunkSizer(fixed=50)
    s.observe(50, 50.0)
    assert s.size(left=1000, parallel=8) == 50


def test_when_batching_is_on_by_default() -> None:
    spec = double.spec
    assert plan(spec, None, MIN_ITEMS) == 0  # adaptive
    assert plan(spec, None, MIN_ITEMS - 1) is None  # a short map: one call per item
    assert plan(spec, False, 10_000) is None
    assert plan(spec, True, 3) == 0 and plan(spec, 25, 3) == 25
    assert plan(limited.spec, None, 10_000) is None  # a timeout is per item
    assert plan(adouble.spec, None, 10_000) is None  # coroutines have no hand-off to save


@pytest.mark.parametrize("bad", [0, -3, 1.5, "10", 10**9])
def test_a_bad_batch_value_is_refused_while_tracing(bad) -> None:
    with nf.Workflow("bad-batch"), pytest.raises(nf.WorkflowDefinitionError, match=r"batch=.*must be"):
        double.map(range(10), batch=bad)


def test_batching_where_it_cannot_apply_is_refused() -> None:
    with nf.Workflow("no-batch"):
        with pytest.raises(nf.WorkflowDefinitionError, match=r"timeout=30.*drop batch="):
            limited.map(range(10), batch=5)
        with pytest.raises(nf.WorkflowDefinitionError, match="async def"):
            adouble.map(range(10), batch=True)


# -- per-item results, keys, rows ---------------------------------------------------------------


def test_an_adaptive_map_keeps_results_keys_and_rows_per_item(calls) -> None:
    with nf.Workflow("adaptive") as wf:
        out = double.map(range(300))
        s = total(out)
    run = wf.run(cache=False)
    assert run[out] == [2 * i for i in range(300)]
    assert run[s] == 2 * sum(range(300))
    rows = run.tasks[run.tasks.task == "double"]
    assert rows.key.tolist() == [f"double-{i}" for i in range(300)]
    assert set(rows.state) == {"completed"} and set(rows.attempts) == {1}
    assert (rows.duration_s >= 0).all()
    assert calls["ThreadBackend"] < 300 - 1  # chunks: fewer calls than items (+ total)


def test_fixed_chunks_make_one_call_per_chunk(calls) -> None:
    with nf.Workflow("fixed") as wf:
        out = double.map(range(100), batch=10)
    run = wf.run(cache=False, workers=1)
    assert run[out] == [2 * i for i in range(100)]
    assert calls["ThreadBackend"] == 10


def test_batch_false_makes_one_call_per_item(calls) -> None:
    with nf.Workflow("unbatched") as wf:
        out = double.map(range(100), batch=False)
    run = wf.run(cache=False, workers=1)
    assert run[out] == [2 * i for i in range(100)]
    assert calls["ThreadBackend"] == 100


def test_a_task_with_a_timeout_is_not_batched_by_default(calls) -> None:
    with nf.Workflow("timeout") as wf:
        out = limited.map(range(80))
    run = wf.run(cache=False)
    assert run[out] == list(range(80))
    assert calls["ThreadBackend"] == 80


def test_a_failing_item_fails_only_that_item(calls) -> None:
    with nf.Workflow("one-bad") as wf:
        out = picky.map(range(20), batch=20)
        s = total(out)
    run = wf.run(cache=False, workers=1, raise_on_error=False)
    assert calls["ThreadBackend"] == 1  # all twenty in one call
    assert run.status == "failed"
    states = dict(zip(run.tasks.key, run.tasks.state, strict=True))
    assert [k for k, v in states.items() if v == "failed"] == ["picky-3", "picky-10", "picky-17"]
    assert states["picky-4"] == "completed" and states[s.key] == "skipped"
    assert str(run.errors()["picky-10"]) == "item 10 is bad"


def test_skip_over_a_batched_map_gives_the_good_items_in_order() -> None:
    with nf.Workflow("skip") as wf:
        out = picky.map(range(100), on_error="skip")
    run = wf.run(cache=False)
    assert run.status == "completed"
    assert run[out] == [10 * x for x in range(100) if x % 7 != 3]
    assert sorted(run.errors()) == sorted(f"picky-{x}" for x in range(100) if x % 7 == 3)


_tries: dict[int, int] = {}
_tries_lock = threading.Lock()


@nf.task(retries=2)
def flaky(x: int) -> int:
    with _tries_lock:
        _tries[x] = _tries.get(x, 0) + 1
        n = _tries[x]
    if x == 5 and n == 1:
        raise RuntimeError("first try of item 5 fails")
    return x


def test_a_failed_item_is_retried_alone() -> None:
    _tries.clear()
    with nf.Workflow("retry") as wf:
        out = flaky.map(range(40), batch=40)
    run = wf.run(cache=False)
    assert run[out] == list(range(40))
    rows = run.tasks[run.tasks.task == "flaky"]
    attempts = dict(zip(rows.key, rows.attempts, strict=True))
    assert attempts == {f"flaky-{i}": 2 if i == 5 else 1 for i in range(40)}
    assert _tries[5] == 2 and all(_tries[i] == 1 for i in range(40) if i != 5)


# -- the cache, per item ------------------------------------------------------------------------


def test_the_cache_hits_per_item_and_cached_items_make_no_call(calls) -> None:
    with nf.Workflow("cached") as wf:
        out = double.map(range(100), batch=25)
    first = wf.run(workers=1)
    assert first[out] == [2 * i for i in range(100)] and calls["ThreadBackend"] == 4
    calls.clear()
    second = wf.run(workers=1)
    assert second[out] == first[out]
    rows = second.tasks[second.tasks.task == "double"]
    assert rows.cached.all() and len(rows) == 100
    assert calls.get("ThreadBackend", 0) == 0

    with nf.Workflow("cached") as wf:  # one item changed: only it runs
        out = double.map([*range(99), 1000], batch=25)
    third = wf.run(workers=1)
    assert third[out][-1] == 2000
    rows = third.tasks[third.tasks.task == "double"]
    assert rows.cached.sum() == 99
    assert rows.loc[~rows.cached, "key"].tolist() == ["double-99"]
    assert calls["ThreadBackend"] == 1


# -- maps over a Ref (expanded at run time) -----------------------------------------------------


def test_a_dynamic_map_runs_in_chunks(calls) -> None:
    with nf.Workflow("dynamic") as wf:
        out = double.map(numbers(120), batch=30)
    run = wf.run(cache=False, workers=1)
    assert run[out] == [2 * i for i in range(120)]
    keys = run.tasks.key.tolist()
    assert [f"double.map-0[{j}]" for j in range(120)] == [k for k in keys if k.startswith("double.map-0[")]
    assert calls["ThreadBackend"] == 1 + 4  # numbers(), then four chunks


def test_a_dynamic_map_is_adaptive_by_default_when_long(calls) -> None:
    with nf.Workflow("dynamic-adaptive") as wf:
        out = double.map(numbers(500))
    run = wf.run(cache=False)
    assert run[out] == [2 * i for i in range(500)]
    assert calls["ThreadBackend"] < 1 + 500


# -- other backends: the items of a chunk run in one worker call ----------------------------------


def test_chunks_on_the_process_backend(calls) -> None:
    with nf.Workflow("process") as wf:
        out = where.map(range(60), batch=20)
    run = wf.run(cache=False, backend="process", workers=1)
    values = run[out]
    assert [x for _, x in values] == list(range(60))
    assert calls["ProcessBackend"] == 3
    pids = [pid for pid, _ in values]
    assert os.getpid() not in pids
    rows = run.tasks[run.tasks.task == "where"]
    # Each item has its share of its chunk's CPU time and the worker's peak memory.
    assert rows.cpu_s.notna().all() and (rows.cpu_s >= 0).all()
    assert rows.peak_rss.notna().all() and (rows.peak_rss > 0).all()
    for c in range(3):  # one call: one worker process ran the whole chunk
        assert len(set(pids[20 * c:20 * c + 20])) == 1


def test_a_failing_item_in_a_process_chunk(calls) -> None:
    with nf.Workflow("process-skip") as wf:
        out = picky.map(range(30), batch=30, on_error="skip")
    run = wf.run(cache=False, backend="process")
    assert run[out] == [10 * x for x in range(30) if x % 7 != 3]
    assert sorted(run.errors()) == ["picky-10", "picky-17", "picky-24", "picky-3"]
    assert isinstance(run.errors()["picky-3"], ValueError)
    assert calls["ProcessBackend"] == 1


def test_chunks_on_the_dask_backend(calls) -> None:
    pytest.importorskip("distributed")
    with nf.Workflow("dask") as wf:
        out = picky.map(range(40), batch=20, on_error="skip")
    run = wf.run(cache=False, backend="dask", workers=1)
    assert run[out] == [10 * x for x in range(40) if x % 7 != 3]
    assert sorted(run.errors()) == ["picky-10", "picky-17", "picky-24", "picky-3", "picky-31", "picky-38"]
    assert calls["DaskBackend"] == 2
    assert (run.tasks[run.tasks.task == "picky"].executor == "dask").all()


def test_run_chunk_keeps_each_items_outcome() -> None:
    out, cpu_s, peak = batching.run_chunk(picky.fn, [((2,), None), ((3,), None), ((4,), None)])
    assert cpu_s is not None and cpu_s >= 0 and peak is None  # (thread clock: no peak RSS)
    assert [ok for ok, _, _ in out] == [True, False, True]
    assert out[0][1] == 20 and isinstance(out[1][1], ValueError) and out[2][1] == 40
    assert all(seconds >= 0 for _, _, seconds in out)


# -- tracing a map in one go gives the nodes one call per item would ---------------------------


@nf.task
def pair(x, scale=1):
    return x


def test_map_items_are_traced_like_single_calls() -> None:
    import collections

    with nf.Workflow("shape") as wf:
        a, b = numbers(1), numbers(2)
        out = pair.map([1, a, [b, 3], {"k": a}, "s"], scale=b)
    items = wf.nodes[2:7]
    assert [r.key for r in items] == [f"pair-{i}" for i in range(5)]
    assert [r.deps for r in items] == [[b.index], [a.index, b.index], [b.index], [a.index, b.index],
                                       [b.index]]
    assert [r.nested for r in items] == [1, 1, 2, 2, 1]
    assert out.deps == [r.index for r in items]
    run = wf.run(cache=False)
    assert run[out] == [1, [0], [[0, 1], 3], {"k": [0]}, "s"]

    Point = collections.namedtuple("Point", "x y")
    with nf.Workflow("hidden"):
        a = numbers(1)
        with pytest.raises(nf.RefUsageError, match=r"inside a .*Point"):
            pair.map([1, Point(a, 2)])
        with pytest.raises(nf.TaskCallError, match="unexpected keyword"):
            pair.map([1, 2], nope=3)


def test_map_items_inside_a_branch_wait_for_its_gate() -> None:
    with nf.Workflow("gated") as wf:
        cond = numbers(1)
        res = nf.branch(cond, lambda: double.map(range(3)), lambda: double.map(range(2)))
    run = wf.run(cache=False)
    assert run[res] == [0, 2, 4]
    skipped = run.tasks[run.tasks.state == "skipped"].key.tolist()
    assert {"double-3", "double-4"} <= set(skipped)


@nf.task
def chatty(x: int) -> int:
    print(f"item {x} says hi")
    return x


def test_what_items_of_a_thread_chunk_print_is_kept_per_item(capsys) -> None:
    with nf.Workflow("chatty") as wf:
        out = chatty.map(range(10), batch=10)
    run = wf.run(cache=False, workers=1)
    assert run[out] == list(range(10))
    assert run.logs("chatty-3") == "item 3 says hi\n"
    assert "[chatty-7] item 7 says hi" in capsys.readouterr().out


@nf.task
def big(x: int):
    import numpy as np

    return np.full(20_000, x, dtype="float64")  # 160 kB: stored as a file


def test_a_damaged_stored_item_with_strict_ends_the_run() -> None:
    import sqlite3

    from nbflow.store import StoreIntegrityError, get_store

    with nf.Workflow("strict") as wf:
        big.map(range(8), batch=8)
    wf.run(workers=1)
    db = sqlite3.connect(get_store().journal.path)
    try:
        (blob,) = db.execute("SELECT blob FROM task_runs WHERE key = 'big-5' ORDER BY end DESC LIMIT 1"
                             ).fetchone()
    finally:
        db.close()
    path = get_store().blobs.path(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreIntegrityError, match=r"big-5.*failed its checksum"):
        wf.run(strict=True, workers=1)
    run = nf.last_run()
    assert run.status == "failed"
    assert "big-5" not in set(run.tasks.loc[run.tasks["state"] == "completed", "key"])


# -- where ready items wait, and what each item of a chunk records ------------------------------


def test_ready_items_of_a_batched_map_wait_in_their_group_not_on_the_heap() -> None:
    from nbflow.workflow import prepare, run_options

    with nf.Workflow("queue") as wf:
        double.map(range(1000))
    run = prepare(wf, run_options(wf, workers=3, cache=False))
    s = run._sched
    items = list(range(1000))
    s._make_ready_many(items)
    g = s.batches.of(0)
    assert list(g.ready) == items  # queued in order
    assert sum(len(c.heap) for c in s.classes.values()) == g.queued == 3  # a token per slot
    first = s._pop()
    assert first == 0 and g.queued == 2
    members = batching.take(s, first, g)
    assert members == [0]  # adaptive: one item before anything is measured
    # Tokens are topped up to one per slot while items wait.
    assert g.queued == 3 and sum(len(c.heap) for c in s.classes.values()) == 3
    s.state[1] = "skipped"  # (as a saga's rollback would) a skipped item is passed over
    assert s._pop() == 2


def test_each_item_of_a_chunk_gets_its_share_of_the_chunks_cpu_time(monkeypatch) -> None:
    import itertools
    import time

    ticks = itertools.count(0.0, 3.0)  # the CPU clock says: the chunk's call used 3 s
    monkeypatch.setattr(time, "thread_time", lambda: next(ticks))
    with nf.Workflow("cpu") as wf:
        out = double.map(range(40), batch=40)
    run = wf.run(cache=False, workers=1)
    assert run[out] == [2 * i for i in range(40)]
    rows = run.tasks[run.tasks.task == "double"]
    assert rows.cpu_s.notna().all()
    assert rows.cpu_s.sum() == pytest.approx(3.0)  # the shares add up to the chunk's
    ratio = rows.cpu_s / rows.duration_s  # shared by wall time: one CPU/wall ratio for all
    assert ratio.max() == pytest.approx(ratio.min())
    assert rows.peak_rss.isna().all()  # (a thread chunk: no peak of its own)


def test_record_chunk_shares_cpu_by_wall_time_and_keeps_input_features() -> None:
    from nbflow.engine.metrics import TaskMetrics

    m = TaskMetrics()
    m.record_chunk([4, 5, 6], [((1,), None), (([1, 2, 3],), None), ((2,), {"k": "abc"})],
                   [0.1, 0.3, 0.0], 2.0, 4096)
    assert [m.cpu_s[i] for i in (4, 5, 6)] == pytest.approx([0.5, 1.5, 0.0])
    assert [m.peak_rss[i] for i in (4, 5, 6)] == [4096] * 3
    assert m.input_items[5] == 3 and m.input_bytes[6] == 3 and 4 not in m.input_items
    assert m.row(5) == (pytest.approx(1.5), 4096, None, 3, None)
    m2 = TaskMetrics()
    m2.record_chunk([0, 1], [((1,), None), ((2,), None)], [0.0, 0.0], 1.0, None)
    assert m2.cpu_s == {0: 0.5, 1: 0.5} and m2.row(0) == (0.5, None, None, None, None)
    assert m2.peak_rss == {}


def test_chunks_running_together_give_the_sizer_their_share_of_the_time(monkeypatch) -> None:
    """Chunks of one map that run at once share the machine: the sizer sees each item's
    seconds divided by the chunks in flight, so they do not look slower than they are."""
    import anyio

    seen: list[tuple[int, float]] = []
    observe = ChunkSizer.observe

    def recording(self, n: int, seconds: float) -> None:
        seen.append((n, seconds))
        observe(self, n, seconds)

    started: list[int] = []
    four: list[anyio.Event] = []

    async def fake_call(s, i, fn, run):  # every item "took" 1 ms of wall time
        # The first four chunks wait for each other, so they are surely in flight together
        # (a sleep "long enough for the others to start" was a bet on the machine's speed).
        if not four:
            four.append(anyio.Event())
        started.append(i)
        if len(started) == 4:
            four[0].set()
        if len(started) <= 4:
            with anyio.fail_after(60):  # (fewer than four running at once: the test fails)
                await four[0].wait()
        return [(True, fn(*s.nodes[j].args), 0.001) for j in run], None  # (None: not on Dask)

    monkeypatch.setattr(ChunkSizer, "observe", recording)
    monkeypatch.setattr(batching, "_call", fake_call)
    with nf.Workflow("shares") as wf:
        ref = double.map(list(range(400)), batch=10)
    run = wf.run(workers=4, cache=False)
    assert run[ref] == [2 * x for x in range(400)]
    shares = [sec / (n * 0.001) for n, sec in seen]  # 1 / (chunks in flight with it)
    assert min(shares) == pytest.approx(0.25)  # four slots busy: a quarter each
    assert max(shares) <= 1.0 + 1e-9
