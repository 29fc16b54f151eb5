"""The ETA band's calibration, worked out beside the predictor's fit and never in the kernel.

Correcting the band (:mod:`nbflow.predict.eta_calibration`) means scoring the store's past
runs: for each one a predictor fitted without it, and the ETAs it would have given at a
quarter, half and three quarters done.  On a store of 30k task attempts that is seconds of
CPU (7.7 s for four past runs of 2 000 tasks), work of the same kind as the predictor's own
fit and on the same history, so it is done the same way:

- **in a helper process** (:func:`score_pool`: spawned, niced below the fit's helper, which
  also makes the widget's estimates and must not wait behind a scoring), started by the
  live views right after their fit arrives (:func:`nbflow.predict.fitting.live_predictor`)
  and by ``run.eta()``, from a thread of this process that only waits for it;
- **kept per store and workflow** and **dropped by the fit's own rule**: once the store's
  history grew by :data:`~nbflow.predict.fitting.REFIT_GROWTH` (and the scores are at least
  :data:`~nbflow.predict.fitting.REFIT_MIN_AGE_S` old) or they are
  :data:`~nbflow.predict.fitting.REFIT_AFTER_S` old, the next run asking works them out
  again (:func:`nbflow.predict.fitting.still_good`).  A run keeps the scores it first got.

Nothing waits for them: :func:`scores_for` returns the scores when they are there, and
otherwise starts working them out and returns None.  :func:`band_of` applies them to an ETA
(``Eta.calibrated`` True), or leaves the simulated band and says so (``calibrated`` False:
not there yet; None: the store has no past ETA to learn from).  ``run.eta()``, the widget's
ETA line and timeline and the headless progress line all go through it, so they show one
band.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from nbflow.predict import fitting
from nbflow.predict.eta_calibration import calibrate, calibration_at, store_scores
from nbflow.predict.eta_types import Eta

__all__ = ["SCORE_NICE", "Scores", "band_of", "drop_score_pool", "score_in_process", "score_pids",
           "score_pool", "scores_for", "wait_for_scores"]

# (this workflow's past runs, other workflows' past runs), each a list of per-mark scores
Scores = tuple[list[list[float]], list[list[float]]]

SCORE_NICE = 15  # the scoring process's niceness: below the fit's helper (10), far below the run
_LOCK = threading.Lock()
# (store home, workflow) -> (when worked out, rows of history then, scores)
_STORE_SCORES: dict[tuple[str, str], tuple[float, int, Scores]] = {}
_SCORING: dict[tuple[str, str], threading.Thread] = {}  # (home, workflow) -> the thread waiting for them
_RUN_SCORES: weakref.WeakKeyDictionary[Any, Scores] = weakref.WeakKeyDictionary()  # what a run got
_POOL: ProcessPoolExecutor | None = None
_SCORE_PIDS: list[int] = []  # the process each scoring ran in (newest last)
_NOTHING: Scores = ([], [])


def scores_for(run: Any, start: bool = True) -> Scores | None:
    """The scores ``run``'s ETA band is corrected by, or None while they are being worked
    out (``start``: start that, in the helper process, if nothing is doing it yet).  A store
    without history has nothing to score (empty scores, at once)."""
    got = _RUN_SCORES.get(run)
    if got is not None:
        return got
    where = fitting.history_size(run)
    if where is None or where[1] == 0:
        _RUN_SCORES[run] = _NOTHING
        return _NOTHING
    home, rows = where
    key = (home, str(getattr(run, "name", "")))
    with _LOCK:
        cached = _STORE_SCORES.get(key)
        if cached is not None and fitting.still_good(cached[0], cached[1], rows, time.monotonic()):
            _RUN_SCORES[run] = cached[2]
            return cached[2]
        if start and key not in _SCORING:
            thread = threading.Thread(target=_score, args=(key, rows, str(getattr(run, "id", "")) or None),
                                      name=f"nbflow-eta-scores-{key[1]}", daemon=True)
            _SCORING[key] = thread
            thread.start()
    return None


def _score(key: tuple[str, str], rows: int, exclude_run: str | None) -> None:
    """On a thread of this process (which only waits): score ``key``'s past runs in the
    helper process and keep the result for the store's later runs."""
    when = time.monotonic()
    try:
        scores = score_in_process(key[0], key[1], exclude_run)
    except Exception:  # no calibration rather than a broken view
        scores = _NOTHING
    with _LOCK:
        _STORE_SCORES[key] = (when, rows, scores)
        _SCORING.pop(key, None)


def band_of(run: Any, e: Eta, start: bool = True) -> Eta:
    """``e`` (an ETA of ``run`` from the store's history predictor) with its band corrected
    by the store's past ETAs (:func:`~nbflow.predict.eta_calibration.calibration_at`, at the
    share of tasks done), ``calibrated`` True; or as it is, ``calibrated`` False while the
    scores are being worked out, None when no past ETA could be scored."""
    if not e.total or e.remaining_s != e.remaining_s:
        return e
    scores = scores_for(run, start=start)
    if scores is None:
        return dataclasses.replace(e, calibrated=False)
    cal = calibration_at(*scores, done_share=e.done / e.total)
    if cal.own + cal.pooled == 0:
        return dataclasses.replace(e, calibrated=None)
    return dataclasses.replace(calibrate(e, cal), calibrated=True)


# -- the helper process ----------------------------------------------------------------------


_NICED = False  # (in the scoring process: its priority is lowered)


def _background_priority() -> None:
    """In the scoring process, at the start of each job (the first one acts): the fit
    helper's priority, and lower still: the fit helper makes the widget's live estimates."""
    global _NICED
    import multiprocessing

    if not _NICED and multiprocessing.parent_process() is not None:  # (never the kernel itself)
        _NICED = True
        fitting._background_priority()
        with contextlib.suppress(OSError, AttributeError):  # not on every platform
            os.nice(SCORE_NICE - fitting.FIT_NICE)


def _score_job(home: str, name: str, exclude_run: str | None) -> tuple[Scores, int]:
    """In the scoring process: the scores of ``name``'s past runs on the store at ``home``
    (each past run scored once per process: a later job reuses them)."""
    _background_priority()
    return store_scores(name, exclude_run=exclude_run, home=home), os.getpid()


def score_pool() -> ProcessPoolExecutor:
    """The long-lived scoring process (started at the first scoring)."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = fitting.helper_pool()  # (deaf to interrupts from its start)
        return _POOL


def drop_score_pool() -> None:
    """Shut the scoring process down (a later scoring starts a new one)."""
    global _POOL
    with _LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        helpers = list((getattr(pool, "_processes", None) or {}).values())
        with contextlib.suppress(Exception):  # already broken: nothing left to stop
            pool.shutdown(wait=False, cancel_futures=True)
        for proc in helpers:
            with contextlib.suppress(Exception):
                proc.terminate()


def score_in_process(home: str, name: str, exclude_run: str | None = None) -> Scores:
    """:func:`~nbflow.predict.eta_calibration.store_scores` in the scoring process (the
    calling thread only waits, without the GIL); here only when no process can be used
    (:data:`nbflow.predict.fitting.FIT_IN_PROCESS` false, or the pool broke)."""
    if fitting.FIT_IN_PROCESS:
        try:
            scores, pid = score_pool().submit(_score_job, home, name, exclude_run).result()
        except Exception:  # a broken pool: score here rather than not at all
            drop_score_pool()
        else:
            _SCORE_PIDS.append(pid)
            return scores
    _SCORE_PIDS.append(os.getpid())
    return store_scores(name, exclude_run=exclude_run, home=home)


def score_pids() -> list[int]:
    """The processes the scorings of this process ran in, oldest first (tests: the kernel's
    own id must not be among them)."""
    return list(_SCORE_PIDS)


def wait_for_scores(timeout: float | None = None) -> None:
    """Wait until the scorings started so far have ended (tests, benchmarks: a scoring
    still going must not run into what is measured next)."""
    with _LOCK:
        threads = list(_SCORING.values())
    for thread in threads:
        thread.join(timeout)
