"""A kernel's first watched run on a large history: what its process does for the ETA.

The fit and the first estimates are made in the helper process.  Until the fit arrives the
estimate comes from the quick per-task means; the helper reads those itself (the kernel
sends where the store is, not the numbers), and is handed that estimate before the fit, so
it makes it first.  The fit's thread counts the history no second time, and the fit (in the
helper) reads only the rows it learns from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import nbflow as nf
from nbflow.predict import eta_scores
from nbflow.predict import fitting as fit_mod
from nbflow.predict import history as history_mod
from nbflow.predict import live as live_mod
from nbflow.predict import quick as quick_mod


@nf.task
def step(i: int) -> int:
    return i + 1


def _run(n: int = 30) -> nf.Run:
    with nf.Workflow("live-eta-cold") as wf:
        for i in range(n):
            step(i)
    return wf.run(cache=False)


@pytest.fixture
def large(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A history treated as large (fitted in the helper), no fit of this process kept."""
    _run()
    monkeypatch.setattr(fit_mod, "SYNC_FIT_ROWS", 0)
    monkeypatch.setattr(fit_mod, "_STORE_FITS", {})
    yield
    fit_mod.wait_for_fits()


class _Watching:
    """A run as the live ETA reads it (its nodes' states, counts, start time)."""

    def __init__(self, run: nf.Run) -> None:
        self._run = run
        self.id = "watching"
        self.name = run.name
        self.workers = 2
        self.started_at = time.time() - 2 * live_mod.FIT_WORTH_S  # long enough to want the fit
        n = len(run.nodes)
        self.nodes = run.nodes
        self.state = ["pending"] * n

    @property
    def counts(self) -> dict[str, int]:
        return {"pending": len(self.state)}

    def state_now(self) -> dict[str, list[Any]]:
        n = len(self.nodes)
        nan = float("nan")
        return {"nodes": list(self.nodes), "state": list(self.state), "start": [nan] * n,
                "duration": [nan] * n, "input_bytes": [1.0] * n, "level": [float(n - i) for i in range(n)]}


def test_the_helper_reads_the_quick_estimate_and_makes_it_before_the_fit(
        large: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_mod, "ETA_LOCAL_TASKS", 5)  # (30 tasks count as many: made in the helper)
    read_here: list[int] = []
    real_quick = quick_mod.quick_predictor

    def quick_here(*a: Any, **k: Any) -> Any:
        read_here.append(1)
        return real_quick(*a, **k)

    monkeypatch.setattr(quick_mod, "quick_predictor", quick_here)  # (the helper does not see this)
    pool = fit_mod.fit_pool()
    real_submit = pool.submit
    handed: list[str] = []

    def submit(fn: Any, *args: Any, **kw: Any) -> Any:
        handed.append(fn.__name__)
        return real_submit(fn, *args, **kw)

    monkeypatch.setattr(pool, "submit", submit)
    run = _Watching(_run())
    live = live_mod.LiveEta(run, clock=lambda: 0.0)  # (a still clock: an estimate is not counted down)
    assert live.current(patient=True) is None  # handed over, not waited for
    fitted = fit_mod.live_predictor(run, wait=True)  # (the fit the look started)
    assert fitted is not None
    assert handed == ["_quick_eta_job", "_fit_job"]  # the quick estimate first, then the fit
    first = None
    deadline = time.monotonic() + 120
    while first is None and time.monotonic() < deadline:
        time.sleep(0.02)
        first = live.current(patient=True)
    assert first is not None and first.remaining_s > 0
    assert first.calibrated is False  # the quick estimate's band, and it says so
    while live.simulations < 2 and time.monotonic() < deadline:  # the fit replaces it at once
        time.sleep(0.02)
        live.current(patient=True)
    assert live.simulations == 2 and live._used is fitted
    assert handed[:3] == ["_quick_eta_job", "_fit_job", "_eta_job"]
    assert read_here == []  # the quick estimate's query never ran in this process
    assert live.pids and os.getpid() not in live.pids
    eta_scores.wait_for_scores()


def test_once_the_helper_runs_a_late_estimate_is_made_there_too(large: None) -> None:
    run = _Watching(_run())  # 30 tasks left: fewer than ETA_LOCAL_TASKS
    assert run.counts["pending"] <= live_mod.ETA_LOCAL_TASKS
    fit_mod.drop_fit_pool()
    live = live_mod.LiveEta(run, clock=lambda: 0.0)
    live.quick()  # (read here, as a view of a short run does)
    fit_mod.PREDICTORS[run] = None  # (no fit wanted: the quick estimate alone)
    first = live.current(patient=True)
    assert first is not None and live.pids == []  # no helper yet: made here, at once
    fit_mod.fit_pool()  # a helper runs (the kernel's fit started it)
    later = live_mod.LiveEta(run, clock=lambda: 0.0)
    later.quick()
    assert later.current(patient=True) is None  # handed over
    deadline = time.monotonic() + 120
    while later.simulations == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        later.current(patient=True)
    assert later.simulations == 1 and later.pids and os.getpid() not in later.pids


def test_without_history_of_its_workflow_the_helper_says_so_once(
        large: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_mod, "ETA_LOCAL_TASKS", 5)
    monkeypatch.setattr(live_mod, "FIT_WORTH_S", 1e9)  # (no fit: the quick estimate alone)
    run = _Watching(_run())
    run.name = "never-ran"  # a workflow with no runs in the store: no quick estimate
    live = live_mod.LiveEta(run)
    assert live.current(patient=True) is None
    deadline = time.monotonic() + 120
    while live._pending is not None and not live._pending.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.current(patient=True) is None and live._quick is None  # told: nothing to estimate from
    assert live._pending is None and live.simulations == 0  # and nothing more handed over


def test_the_fit_thread_does_not_count_the_history_again(large: None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[int] = []
    real_rows = fit_mod._history_rows

    def counting(home: Any = None) -> Any:
        counted.append(1)
        return real_rows(home)

    monkeypatch.setattr(fit_mod, "_history_rows", counting)
    run = _run()
    assert fit_mod.live_predictor(run, wait=True) is not None
    assert counted == [1]  # the run's views counted it once; the fit took that count


@nf.task
def sized(xs: list[int]) -> int:
    return len(xs)


def _sized_run(k: int) -> nf.Run:
    with nf.Workflow("bounded-read") as wf:
        sized.map([list(range(i % 7 + k)) for i in range(12)])  # 12 calls, inputs of several sizes
    return wf.run(cache=False)


def test_a_fit_reads_only_the_rows_it_keeps_and_keeps_the_same_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [_sized_run(k) for k in range(4)]
    full = history_mod.history()
    full = full[(full["state"] == "completed") & ~full["cached"] & full["duration_s"].notna()]
    read: list[int] = []
    real = history_mod.history

    def reading(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        read.append(len(out))
        return out

    monkeypatch.setattr(history_mod, "history", reading)
    for exclude in (None, runs[-1].id):
        read.clear()
        got = fit_mod.bounded_history(exclude_run=exclude, runs=2, rows=5)
        want = fit_mod.recent_history(full[full["run_id"] != exclude], runs=2, rows=5)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
        assert read == [len(want)] and len(want) < len(full)  # the rows it keeps, and no others
    bounded: list[str | None] = []
    real_bounded = fit_mod.bounded_history

    def spying(exclude_run: str | None = None, home: Any = None) -> Any:
        bounded.append(exclude_run)
        return real_bounded(exclude_run=exclude_run, home=home)

    monkeypatch.setattr(fit_mod, "bounded_history", spying)
    read.clear()
    assert fit_mod.default_predictor(exclude_run=runs[0].id) is not None
    assert bounded == [runs[0].id] and len(read) == 1  # the fit itself reads that way, once
