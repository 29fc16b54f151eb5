"""Intermediates sent to Dask without a future of the notebook's process.

A result that would be handed over to Dask's scheduler as soon as it completes (nobody
names it, every task taking it is already on the cluster, no cache, no retries) is sent
without a future this process holds, as an intermediate of ``dask.delayed`` is: the
scheduler never reports it here and frees it after its last consumer.  The engine learns
its completion, worker, size and seconds from its worker's announcement, and a failure
from the note of nbflow's scheduler plugin.  These tests check what the scheduler holds
while such a task runs, that failures surface on the right task, and that a run whose
other branch fails still completes the task (no timings are checked).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import nbflow as nf

distributed = pytest.importorskip("distributed")

import test_locality_ahead as _ahead  # noqa: E402
from dask_clusters import own_client  # noqa: E402

client, make, inc, total = _ahead.client, _ahead.make, _ahead.inc, _ahead.total

_SCHEDULER: list = []  # the in-process cluster's scheduler, read by the tasks below
DEADLINE = 120  # seconds: far above what these runs take; reaching it means a hang


@pytest.fixture
def scheduler(client):
    _SCHEDULER[:] = [client.cluster.scheduler]
    yield _SCHEDULER[0]
    _SCHEDULER.clear()


def _wanted_while_running() -> bool:
    """On the worker: does any client want the running task's own key right now?"""
    from distributed import get_worker

    return bool(_SCHEDULER[0].tasks[get_worker().get_current_task()].who_wants)


@nf.task
def make_and_look(n: int):
    return _wanted_while_running(), np.full(n, 1.0)


@nf.task
def second(pair):
    return float(pair[1].sum()) + (1000.0 if pair[0] else 0.0)


def _chain(name: str) -> tuple[nf.Workflow, nf.Ref]:
    with nf.Workflow(name) as wf:
        out = inc(second(make_and_look(100)))
    return wf, out


def test_an_intermediate_nobody_names_is_never_wanted_by_the_client(client, scheduler):
    wf, out = _chain("unheld")
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    # make_and_look-0 saw no client want its key while it ran, and its consumer got it.
    assert run[out] == 101.0
    assert backend.unheld == 2  # make_and_look-0 and second-0; inc-0 (the end) is held
    assert backend.handed_over == 0 and backend.asked_scheduler == 0
    assert set(backend.released_keys) == {"make_and_look-0", "second-0"}
    with pytest.raises(nf.ResultReleased, match="keep='all'"):
        run["second-0"]
    tasks = run.tasks.set_index("key")
    assert list(tasks["state"]) == ["completed"] * 3
    # what the announcement said reached the engine: size and worker of each result
    assert tasks.loc["make_and_look-0", "output_bytes"] > 0
    agent = run.locality.agent
    assert agent.worker_of["make_and_look-0"] in client.scheduler_info()["workers"]


def test_holding_every_future_is_what_the_switch_restores(client, scheduler, monkeypatch):
    monkeypatch.setenv("NBFLOW_DASK_HOLD_ALL", "1")
    wf, out = _chain("held")
    run = wf.run(backend=client, cache=False)
    backend = run.backends["dask"]
    assert run[out] == 1101.0  # (make_and_look-0 was wanted by the client while it ran)
    assert backend.unheld == 0 and backend.handed_over == 2


@nf.task
def explode(a):
    raise ValueError(f"bad input of size {len(a)}")


def test_a_failing_intermediate_fails_its_own_task_with_its_traceback(client, scheduler):
    with nf.Workflow("unheld-fails") as wf:
        inc(explode(make(10)))
    run = wf.start(backend=client, cache=False)
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "failed"
    errors = run.errors()
    assert list(errors) == ["explode-0"]  # the task that failed, not the one that took it
    err = errors["explode-0"]
    assert isinstance(err, ValueError) and "bad input of size 10" in str(err)
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "explode" in frames  # the worker's traceback came with it
    states = dict(zip(run.tasks["key"], run.tasks["state"], strict=True))
    assert states == {"make-0": "completed", "explode-0": "failed", "inc-0": "skipped"}
    assert run.backends["dask"].unheld >= 1  # explode-0 really ran unheld


def slow_make(seconds: float):
    import time

    time.sleep(seconds)
    return np.ones(10)


def fail_now(a=None):
    raise RuntimeError("the other branch failed")


def test_a_task_whose_consumer_fails_for_another_input_still_completes(client, scheduler):
    # total-0 takes inc-0 and fail_now-0; inc-0 waits for slow_make-0.  Both inc-0 and
    # slow_make-0 go unheld.  Dask drops inc-0 unrun once total-0 failed for fail_now-0's
    # sake; the engine, which starts inc-0 once slow_make-0 completed, would wait for an
    # announcement that never comes: the scheduler plugin notes the drop and inc-0 is
    # sent again, held (Dask recomputes slow_make-0, which it freed meanwhile).
    slow = nf.task(slow_make)
    bad = nf.task(fail_now)
    with nf.Workflow("unheld-sibling") as wf:
        a = slow(2.0)
        s = inc(a)
        out = total(s, bad())
        del a, s
    run = wf.start(backend=client, cache=False)
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "failed", "the run hung"
    states = dict(zip(run.tasks["key"], run.tasks["state"], strict=True))
    assert states["slow_make-0"] == "completed" and states["inc-0"] == "completed"
    assert states["fail_now-0"] == "failed" and states["total-0"] == "skipped"
    assert out.key == "total-0"
    backend = run.backends["dask"]
    # slow_make-0, inc-0 and fail_now-0 were sent unheld; inc-0 (maybe slow_make-0) came back
    assert backend.resent >= 1 and backend.batch.unheld == 3


@pytest.fixture
def fragile():
    with own_client(processes=True, allowed_failures=1) as c:
        yield c


def always_die(a):
    os._exit(1)


def test_an_intermediate_that_kills_every_worker_fails_clearly(fragile):
    with nf.Workflow("unheld-deaths") as wf:
        inc(nf.task(always_die)(make(80)))
    run = wf.start(backend=fragile, cache=False)
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "failed", "the run hung"
    err = run.errors()["always_die-0"]
    assert isinstance(err, nf.WorkerLost)
    assert "died" in str(err) and "allowed-failures" in str(err)
    assert run.backends["dask"].unheld >= 1  # make-0 at least went unheld


def die_once(marker: str, a):
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("died")
        os._exit(1)  # the worker process dies with the task
    return a + 1


def test_an_intermediate_whose_worker_dies_once_is_rerun_by_dask_not_resent(fragile, tmp_path):
    # Dask takes the task up again on another worker (released, then waiting again in one
    # round of transitions): that is no drop, and the announcement of the rerun ends it.
    with nf.Workflow("unheld-death") as wf:
        out = inc(nf.task(die_once)(str(tmp_path / "marker"), make(80)))
    run = wf.start(backend=fragile, cache=False)
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "completed", run.errors()
    assert (tmp_path / "marker").exists()  # it really died once
    assert run[out][0] == 3.0
    backend = run.backends["dask"]
    assert backend.unheld == 2 and backend.resent == 0  # make-0 and die_once-0


_flaky = {"left": 0}


def fail_once(a):
    if _flaky["left"] > 0:
        _flaky["left"] -= 1
        raise RuntimeError("transient")
    return a + 1


def test_a_result_whose_consumer_waits_for_a_retried_ancestor_stays_held(client, scheduler):
    # total-0 takes make-0 and inc-0, and inc-0 waits for fail_once-0, which fails once and
    # is retried: total-0 is then submitted afresh, with every input sent again from here.
    # So make-0 must not go unheld (nor be handed over) before total-0 ran.
    _flaky["left"] = 1
    flaky = nf.task(retries=2, retry_delay=0.01)(fail_once)
    with nf.Workflow("unheld-retried-ancestor") as wf:
        out = total(make(10, 2.0), inc(flaky(make(10))))
    run = wf.start(backend=client, cache=False)
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "completed", run.errors()
    assert run[out] == 10 * 2.0 + 10 * 3.0
    attempts = dict(zip(run.tasks["key"], run.tasks["attempts"], strict=True))
    assert attempts["fail_once-0"] == 2  # (it really was retried)


def slow_step(a, seconds: float):
    import time

    time.sleep(seconds)
    return a + 1


def test_cancelling_a_run_lets_dask_forget_what_went_unheld(client, scheduler):
    import time

    with nf.Workflow("unheld-cancel") as wf:
        inc(nf.task(slow_step)(make(10), 5.0))
    run = wf.start(backend=client, cache=False)
    deadline = time.monotonic() + DEADLINE
    while not any(k.startswith("slow_step-0") and ts.state == "processing"
                  for k, ts in list(scheduler.tasks.items())):
        assert time.monotonic() < deadline, "slow_step-0 never started"
        time.sleep(0.05)
    run.cancel()
    run.wait(timeout=DEADLINE, raise_on_error=False)
    assert run.status == "cancelled"
    assert run.backends["dask"].batch.unheld >= 2  # make-0 and slow_step-0 went unheld
    # Cancelling the held end (inc-0) released what it waited for: the scheduler keeps
    # nothing of the run, although no future of this process held slow_step-0.
    tag = f"-{run.backends['dask']._tag}-"  # (this run's keys; earlier runs' stay theirs)
    while any(tag in str(k) for k in list(scheduler.tasks)):
        assert time.monotonic() < deadline, "the cluster kept the run's tasks"
        time.sleep(0.05)


def test_a_batch_asks_once_per_input_whether_it_may_be_redone(client, monkeypatch):
    """Deciding which results go unheld asks, for every consumer, whether each of its other
    inputs may come back under a new key; in one batch the engine's states do not move, so
    each input is worked out once (a wide join asked about the same inputs per producer)."""
    from nbflow.engine.backends.dask import DaskBackend

    asked: list[int] = []
    # (the walk of the graph behind one answer; before the memo it was _may_be_redone itself)
    walk = "_may_be_redone_now" if hasattr(DaskBackend, "_may_be_redone_now") else "_may_be_redone"
    real = getattr(DaskBackend, walk)

    def counting(self, d, limit=256):
        asked.append(d)
        return real(self, d, limit)

    monkeypatch.setattr(DaskBackend, walk, counting)
    with nf.Workflow("wide-join") as wf:
        out = inc(total(*[make(10 + k) for k in range(8)]))
    run = wf.run(backend=client, cache=False)
    assert run[out] == sum(10 + k for k in range(8)) + 1
    assert run.backends["dask"].unheld >= 8  # the producers went unheld
    assert asked and len(asked) == len(set(asked)), asked  # each input worked out once


def test_a_batch_reads_each_consumers_inputs_once_not_once_per_producer(client, monkeypatch):
    """Deciding which results go unheld reads, for each producer, its consumer's inputs and
    their latest Dask keys; in one batch they do not change, so a consumer's are read once
    (a join of 8 producers read its 8 inputs 8 times over, on the path to the first graph)."""
    from nbflow.engine.backends.dask import DaskBackend

    reads: list[int] = []
    flushing: list[bool] = []
    real_flush, real_key = DaskBackend._flush, DaskBackend._current_key

    def flush(self):
        flushing.append(True)
        try:
            return real_flush(self)
        finally:
            flushing.pop()

    def key(self, d, i, result):
        if flushing:
            reads.append(d)
        return real_key(self, d, i, result)

    monkeypatch.setattr(DaskBackend, "_flush", flush)
    monkeypatch.setattr(DaskBackend, "_current_key", key)
    if hasattr(DaskBackend, "_latest_key"):
        real_latest = DaskBackend._latest_key

        def latest(self, d):
            if flushing:
                reads.append(d)
            return real_latest(self, d)

        monkeypatch.setattr(DaskBackend, "_latest_key", latest)
    with nf.Workflow("wide-join-keys") as wf:
        out = inc(total(*[make(10 + k) for k in range(8)]))
    run = wf.run(backend=client, cache=False)
    assert run[out] == sum(10 + k for k in range(8)) + 1
    assert run.backends["dask"].unheld >= 8  # the producers went unheld
    # (total's 8 inputs once, inc's one input once)
    assert 0 < len(reads) <= 9, reads
