"""Remaining time of a run (``run.eta()``) and makespan forecasts (``nf.forecast(wf)``).

This module is where the rest of nbflow (and user code) finds the ETA's names; each job
lives in a module of its own, re-exported here:

- :mod:`nbflow.predict.eta_types`: the values (:class:`Eta`, :class:`Forecast`,
  :class:`ForecastError`) and how they read as text and HTML;
- :mod:`nbflow.predict.inflight`: a run's state at one moment (:func:`snapshot`) and its
  ETA by simulating what is left (:func:`eta_of`, :func:`run_pace`);
- :mod:`nbflow.predict.forecasting`: the makespan per worker count before a run
  (:func:`forecast`);
- :mod:`nbflow.predict.fitting`: the store's history predictor, shared and fitted in a
  helper process (:func:`default_predictor`, :func:`shared_predictor`,
  :func:`live_predictor`, :func:`drop_fit_pool`);
- :mod:`nbflow.predict.live`: the live views' ETA, re-simulated only when it is due
  (:class:`LiveEta`, :func:`live_eta`, :func:`run_eta_text`).

- :mod:`nbflow.predict.eta_calibration`: how honest the band was on the store's own past
  runs, and the correction that makes it hold;
- :mod:`nbflow.predict.eta_scores`: that correction worked out in a helper process beside
  the fit, kept per store and workflow, and applied by every view (:func:`band_of`).

What is left here is ``run.eta()`` itself (:func:`run_eta`), which puts them together.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from nbflow.predict import fitting, inflight, live
from nbflow.predict.eta_scores import band_of, scores_for, wait_for_scores
from nbflow.predict.eta_types import Eta, Forecast, ForecastError, fmt_seconds
from nbflow.predict.fitting import (
    FIT_IN_PROCESS,
    FIT_NICE,
    HISTORY_RUNS_PER_TASK,
    PREDICTORS,
    REFIT_AFTER_S,
    REFIT_GROWTH,
    REFIT_MIN_AGE_S,
    ROWS_PER_TASK_RUN,
    SYNC_FIT_ROWS,
    default_predictor,
    drop_fit_pool,
    fit_in_process,
    fit_pids,
    fit_pool,
    live_predictor,
    recent_history,
    shared_predictor,
)
from nbflow.predict.forecasting import forecast
from nbflow.predict.inflight import DEFAULT_SAMPLES, PACE_SHRINK, RunSnapshot, eta_of, run_pace, snapshot
from nbflow.predict.live import (
    ETA_BUDGET,
    ETA_FIRST_SAMPLES,
    ETA_GUESS_S_PER_TASK,
    ETA_IN_PROCESS,
    ETA_LOCAL_TASKS,
    ETA_MAX_EVERY,
    ETA_MAX_FINISHED,
    ETA_MIN_EVERY,
    ETA_MIN_EVERY_HERE,
    ETA_RESIM_DONE,
    ETA_WORK,
    FIT_WORTH_S,
    LiveEta,
    live_eta,
    quick_of,
    run_eta_text,
)

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = [
    "DEFAULT_SAMPLES", "ETA_BUDGET", "ETA_FIRST_SAMPLES", "ETA_GUESS_S_PER_TASK", "ETA_IN_PROCESS",
    "ETA_LOCAL_TASKS", "ETA_MAX_EVERY", "ETA_MAX_FINISHED", "ETA_MIN_EVERY", "ETA_MIN_EVERY_HERE",
    "ETA_RESIM_DONE", "ETA_WORK",
    "FIT_IN_PROCESS", "FIT_NICE", "FIT_WORTH_S", "HISTORY_RUNS_PER_TASK", "PACE_SHRINK", "PREDICTORS",
    "REFIT_AFTER_S", "REFIT_GROWTH", "REFIT_MIN_AGE_S", "ROWS_PER_TASK_RUN", "SYNC_FIT_ROWS", "Eta",
    "Forecast", "ForecastError", "LiveEta", "RunSnapshot", "band_of", "default_predictor", "drop_fit_pool",
    "eta_of", "fit_in_process", "fit_pids", "fit_pool", "fmt_seconds", "forecast", "live_eta",
    "live_predictor", "quick_of", "recent_history", "run_eta", "run_eta_text", "run_pace", "shared_predictor",
    "snapshot", "wait_for_scores",
]


class _Knobs(types.ModuleType):
    """This module, whose settings (``eta.FIT_IN_PROCESS = False``, ``eta.FIT_WORTH_S = 0``)
    still reach the code that reads them: the names above are copies, so setting one is
    passed on to the module that owns it (as it was when everything lived here)."""

    def __setattr__(self, name: str, value: Any) -> None:
        for owner in (fitting, live, inflight):
            if name.isupper() and hasattr(owner, name):
                setattr(owner, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Knobs


def run_eta(run: Any, predictor: Predictor | None = None, samples: int = DEFAULT_SAMPLES) -> Eta:
    """``run.eta()``: see :func:`eta_of`.  Without ``predictor``, the store's history
    predictor is used (the one this process's runs share while it is fresh, else one fitted
    once per run, without the run itself, whose finished tasks correct it online: a large
    history in the helper process, :func:`fit_in_process`, while this call waits), and
    the band is corrected by how honest the ETA's band was on the store's own past runs
    (:func:`band_of`, at the share of tasks done).  That correction is worked out in a helper
    process, never in this call: until it is there the band is the simulated one and the
    ETA says so (``calibrated`` False; :func:`wait_for_scores` waits for it).  A given
    ``predictor`` is used as it is: the store's past ETAs say nothing about it."""
    if predictor is not None:
        return eta_of(snapshot(run), predictor, samples=samples)
    scores_for(run)  # started first, so the scoring goes on beside the fit
    if run not in PREDICTORS:
        # a large history is fitted in the helper process (this call waits for it without
        # the GIL, so the run it asks about goes on), a small one here
        where = fitting.history_size(run)
        large = where is not None and where[1] > fitting.SYNC_FIT_ROWS
        PREDICTORS[run] = shared_predictor(exclude_run=run.id, fit=fit_in_process if large else None,
                                           where=where)
    e = eta_of(snapshot(run), PREDICTORS[run], samples=samples)
    if PREDICTORS[run] is None:
        return e
    return band_of(run, e)
