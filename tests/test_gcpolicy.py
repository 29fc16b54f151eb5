"""The GC policy is process-wide: runs starting and stopping in two threads at once must
freeze and raise the threshold once, and restore both once, after the last run."""

from __future__ import annotations

import gc
import threading
import time

import pytest

import nbflow as nf
from nbflow.engine import gcpolicy


class RecordingGC:
    """Stands in for the ``gc`` module: records calls, and dawdles inside them so that two
    threads without a lock would interleave their check-then-act steps."""

    def __init__(self) -> None:
        self.threshold = (700, 10, 10)
        self.frozen = False
        self.calls: list[str] = []
        self.double_freeze = 0

    def _dawdle(self) -> None:
        time.sleep(0.0002)

    def freeze(self) -> None:
        self._dawdle()
        if self.frozen:
            self.double_freeze += 1
        self.frozen = True
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self._dawdle()
        self.frozen = False
        self.calls.append("unfreeze")

    def get_threshold(self) -> tuple[int, ...]:
        self._dawdle()
        return self.threshold

    def set_threshold(self, *t: int) -> None:
        self._dawdle()
        self.threshold = tuple(t)
        self.calls.append(f"set{t}")


@pytest.fixture
def fake_gc(monkeypatch):
    fake = RecordingGC()
    monkeypatch.setattr(gcpolicy, "gc", fake)
    assert gcpolicy.active_runs() == 0
    return fake


def _hammer(rounds: int, errors: list[BaseException], barrier: threading.Barrier) -> None:
    try:
        barrier.wait()
        for k in range(rounds):
            with gcpolicy.graph_out_of_gc():
                if k % 3 == 0:
                    time.sleep(0)  # let the other thread in while this "run" is active
    except BaseException as e:  # surfaced by the test
        errors.append(e)


def test_two_threads_entering_and_leaving_restore_everything_exactly_once(fake_gc):
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=_hammer, args=(300, errors, barrier)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert gcpolicy.active_runs() == 0
    # Restored to what it was, and nothing left frozen.
    assert fake_gc.threshold == (700, 10, 10)
    assert not fake_gc.frozen and fake_gc.double_freeze == 0
    # Every freeze is followed by exactly one restore of the saved threshold, then an
    # unfreeze, before the next freeze: the runs' periods are counted as one.
    calls = fake_gc.calls
    assert calls and calls[0] == "freeze" and calls[-1] == "unfreeze"
    for k in range(0, len(calls), 4):
        assert calls[k:k + 4] == ["freeze", "set(20000, 10, 10)", "set(700, 10, 10)", "unfreeze"], (
            f"out of order at call {k}: {calls[k:k + 8]}")


def test_a_run_inside_another_changes_nothing_until_the_outer_one_ends(fake_gc):
    with gcpolicy.graph_out_of_gc():
        assert fake_gc.threshold == (20000, 10, 10) and fake_gc.frozen
        with gcpolicy.graph_out_of_gc():
            assert gcpolicy.active_runs() == 2
        assert fake_gc.frozen and fake_gc.threshold == (20000, 10, 10)
    assert not fake_gc.frozen and fake_gc.threshold == (700, 10, 10)
    assert fake_gc.calls.count("freeze") == 1 and fake_gc.calls.count("unfreeze") == 1


def test_a_higher_threshold_is_kept_and_restored(fake_gc):
    fake_gc.threshold = (50_000, 5, 5)
    with gcpolicy.graph_out_of_gc():
        assert fake_gc.threshold == (50_000, 5, 5)
    assert fake_gc.threshold == (50_000, 5, 5)


def test_leaving_more_often_than_entering_is_an_error(fake_gc):
    with pytest.raises(RuntimeError, match="without a matching enter"):
        gcpolicy.leave()
    assert gcpolicy.active_runs() == 0


def test_real_runs_in_two_threads_leave_the_collector_as_they_found_it():
    @nf.task
    def inc(x):
        return x + 1

    before = (gc.get_threshold(), gc.get_freeze_count() if hasattr(gc, "get_freeze_count") else None)
    errors: list[BaseException] = []

    def runs() -> None:
        try:
            for _ in range(15):
                with nf.Workflow("gc-threads") as wf:
                    x = inc(0)
                    for _ in range(20):
                        x = inc(x)
                assert wf.run(cache=False)[x] == 21
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=runs) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert gcpolicy.active_runs() == 0
    after = (gc.get_threshold(), gc.get_freeze_count() if hasattr(gc, "get_freeze_count") else None)
    assert after == before
