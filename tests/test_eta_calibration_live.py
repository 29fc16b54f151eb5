"""The ETA band's calibration is worked out off the kernel's path and shown by every view.

A store whose replays show the simulated band far too narrow: a workflow whose second stage
took 6x as long in its newest run (its ETAs, scored against the truth, fell far outside
their bands) and three runs of a steady one.  Scoring those past runs is done in a helper
process (:mod:`nbflow.predict.eta_scores`): in this process the scoring function is made to
fail, so a band that comes back corrected was corrected from the helper's work.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

import pytest
from history_edits import replay

import nbflow as nf
from nbflow.predict import eta_calibration, eta_scores, fitting
from nbflow.predict import live as live_mod
from nbflow.predict.eta_calibration import calibration_at
from nbflow.predict.eta_types import Eta


@nf.task
def first(i: int) -> int:
    time.sleep(0.01)
    return i


@nf.task
def second(x: int, scale: float) -> int:
    time.sleep(0.03 * scale)
    return x


@nf.task
def sink(xs: list[int]) -> int:
    return len(xs)


def _workflow(name: str, scale: float) -> nf.Workflow:
    with nf.Workflow(name) as wf:
        sink([second(first(i), scale) for i in range(6)])
    return wf


@pytest.fixture(scope="module", autouse=True)
def _scoring_process() -> Iterator[None]:
    """One scoring process for the module's tests, shut down after them."""
    yield
    eta_scores.drop_score_pool()


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store described in the module docstring; past-run scoring forbidden here."""
    for name, scale in (("shifting", 1.0), ("shifting", 1.0), ("shifting", 6.0),
                        ("steady", 1.0), ("steady", 1.0), ("steady", 1.0)):
        run = _workflow(name, scale).run(cache=False, workers=2)
        _as_the_sleeps_ask(run.id, scale)

    def in_the_kernel(*args: object, **kwargs: object) -> list[float]:
        raise AssertionError("past runs scored in the kernel's process")

    monkeypatch.setattr(eta_calibration, "past_run_scores", in_the_kernel)
    yield
    eta_scores.wait_for_scores()


def _as_the_sleeps_ask(run_id: str, scale: float) -> None:
    """The run's recorded timeline set to what its sleeps ask for (on a busy machine a 10 ms
    sleep measured 100 ms, and the 6x shift the tests rely on looked like 1.7x)."""
    replay(run_id, {"first": 0.01, "second": 0.03 * scale}, workers=2)


def _log_half_width(e: Eta) -> float:
    return math.log(e.remaining_hi / e.remaining_s)


def test_run_eta_never_scores_in_the_kernel_and_says_when_its_band_is_not_calibrated(store: None) -> None:
    run = _workflow("shifting", 1.0).start(cache=False, workers=2)
    try:
        first_eta = run.eta()  # the scoring has only just started, in the helper process
        assert first_eta.calibrated is False
        assert "band not calibrated yet" in str(first_eta)
    finally:
        run.wait()
    eta_scores.wait_for_scores()
    assert eta_scores.score_pids() and eta_scores.score_pids()[-1] != os.getpid()
    got = eta_scores.scores_for(run, start=False)
    assert got is not None and len(got[0]) == 3  # the workflow's three past runs, scored there


def test_the_live_eta_shows_the_band_run_eta_shows_widened_by_the_store(
        store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_mod, "ETA_IN_PROCESS", False)  # (estimated here, to compare)
    # A first run asks for the calibration; the store's next runs have it from their start.
    warm = _workflow("shifting", 1.0).start(cache=False, workers=2)
    warm.eta()
    warm.wait()
    _as_the_sleeps_ask(warm.id, 1.0)
    fitting.wait_for_fits()  # (the scoring too)

    run = _workflow("shifting", 20.0).start(cache=False, workers=2)  # ~2 s: still going below
    try:
        e = run.eta()
        scores = eta_scores.scores_for(run, start=False)
        assert scores is not None
        live = live_mod.LiveEta(run)
        shown = live.current()
        assert shown is not None and live.last is not None
        raw = live.last  # the simulated band the live view estimated
        scale = calibration_at(*scores, done_share=raw.done / raw.total).scale
        assert scale > 2.0  # the store's replays say the simulated band is too narrow
        assert e.calibrated is True and shown.calibrated is True
        # the live band is the simulated one widened by the store's correction, as run.eta()'s
        assert _log_half_width(shown) == pytest.approx(scale * _log_half_width(raw), rel=1e-6)
        assert calibration_at(*scores, done_share=e.done / e.total).scale > 2.0
        text = live_mod.run_eta_text(run)  # the headless progress line and the widget's ETA line
        assert text is not None and text.startswith("ETA ") and "not calibrated" not in text
    finally:
        run.wait()


def test_before_its_calibration_arrives_the_live_band_says_so(store: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_mod, "ETA_IN_PROCESS", False)
    monkeypatch.setattr(eta_scores, "scores_for", lambda run, start=True: None)  # never there
    run = _workflow("shifting", 20.0).start(cache=False, workers=2)
    try:
        live = live_mod.LiveEta(run)
        shown = live.current()
        assert shown is not None and shown.calibrated is False
        assert live.last is not None
        assert (shown.remaining_lo, shown.remaining_hi) == (live.last.remaining_lo, live.last.remaining_hi)
        text = live_mod.run_eta_text(run)
        assert text is not None and "band not calibrated yet" in text
    finally:
        run.wait()


def test_the_calibration_is_kept_with_the_fit_and_dropped_by_its_rule(
        store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _workflow("shifting", 1.0).start(cache=False, workers=2)
    run.eta()
    run.wait()
    eta_scores.wait_for_scores()
    again = _workflow("shifting", 1.0).start(cache=False, workers=2)
    again.wait()
    assert eta_scores.scores_for(again, start=False) is not None  # fresh: shared, nothing to work out
    monkeypatch.setattr(fitting, "REFIT_AFTER_S", 0.0)  # as if the scores were ten minutes old
    later = _workflow("shifting", 1.0).start(cache=False, workers=2)
    later.wait()
    assert eta_scores.scores_for(later, start=False) is None  # too old: worked out again


def test_a_live_fit_starts_the_calibration_with_it(store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fitting, "SYNC_FIT_ROWS", 0)  # a "large" history: fitted in the background
    monkeypatch.setattr(fitting, "_STORE_FITS", {})
    monkeypatch.setattr(fitting, "FIT_IN_PROCESS", False)
    asked: list[tuple[str, str, str | None]] = []

    def scoring(home: str, name: str, exclude_run: str | None = None) -> eta_scores.Scores:
        asked.append((home, name, exclude_run))
        return [[1.0, 1.0, 1.0]], []

    monkeypatch.setattr(eta_scores, "score_in_process", scoring)
    run = _workflow("shifting", 1.0).start(cache=False, workers=2)
    run.wait()
    assert fitting.live_predictor(run, wait=True) is not None
    fitting.wait_for_fits()  # the fit's thread went on to start the scoring: waited for too
    assert [(name, rid) for _, name, rid in asked] == [("shifting", run.id)]
    assert eta_scores.scores_for(run, start=False) == ([[1.0, 1.0, 1.0]], [])


def test_run_eta_fits_a_large_history_in_the_helper_not_the_kernel(
        store: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fitting, "SYNC_FIT_ROWS", 0)  # treat it as large
    monkeypatch.setattr(fitting, "_STORE_FITS", {})

    def in_the_kernel(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitted in the kernel's process")

    monkeypatch.setattr(fitting, "default_predictor", in_the_kernel)  # (only this process sees it)
    run = _workflow("shifting", 1.0).start(cache=False, workers=2)
    try:
        e = run.eta()
    finally:
        run.wait()
    assert e.remaining_s == e.remaining_s  # an ETA from history, not "unknown"
    assert fitting.fit_pids() and fitting.fit_pids()[-1] != os.getpid()
    fitting.drop_fit_pool()
