"""The store's history predictor: fitted once, shared, and never in a live view's way.

- :func:`default_predictor` fits a :class:`nbflow.predict.Predictor` on the store's
  history (bounded by :func:`recent_history`, so a fit's cost does not grow with the store);
- :func:`shared_predictor` keeps one fit per store for the runs of this process, refitted
  only once the history grew enough or the fit is old;
- :func:`fit_in_process` fits in a long-lived helper process (:func:`drop_fit_pool` shuts
  it down), because a large fit holds the GIL for seconds and would slow the very run it
  predicts;
- :func:`live_predictor` is what live views ask: a small history is fitted at once, a
  large one in the background, and the view never waits for it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["PREDICTORS", "bounded_history", "default_predictor", "drop_fit_pool", "fit_in_process",
           "fit_pids", "fit_pool", "fit_pool_running", "history_size", "live_predictor", "recent_history",
           "shared_predictor", "still_good", "wait_for_fits"]

# run -> its history predictor (or None: no history), shared by its live views and run.eta()
PREDICTORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


HISTORY_RUNS_PER_TASK = 20  # the newest runs of each task the default predictor learns from
ROWS_PER_TASK_RUN = 200  # and at most this many of a task's calls per run (evenly spread)


def default_predictor(exclude_run: str | None = None, home: Any = None) -> Predictor | None:
    """A predictor fitted on the store's history (minus one run), or None without history."""
    from nbflow.predict.model import Predictor

    try:
        h = bounded_history(exclude_run=exclude_run, home=home)
    except Exception:  # no usable store: no history
        return None
    if h.empty:
        return None
    return Predictor().fit(h)


# What recent_history needs to choose a fit's rows, per completed uncached attempt with a
# duration, in nf.history()'s order (so the choice is the same as on the full read).
_CHOOSE_SQL = """
SELECT t.run_id, t.idx, t.attempt, n.task, t.input_bytes, t.start
FROM task_runs t JOIN runs r ON r.id = t.run_id
LEFT JOIN nodes n ON n.run_id = t.run_id AND n.idx = t.idx
WHERE t.state = 'completed' AND t.cached = 0 AND t.duration_s IS NOT NULL AND t.run_id != ?
ORDER BY r.start, t.run_id, t.idx, t.attempt
"""


def bounded_history(exclude_run: str | None = None, home: Any = None, runs: int = HISTORY_RUNS_PER_TASK,
                    rows: int = ROWS_PER_TASK_RUN) -> pd.DataFrame:
    """The rows a fit learns from: the store's completed, uncached attempts with a duration
    (minus ``exclude_run``), bounded by :func:`recent_history` (``runs``, ``rows``), read
    without reading the rest.

    The choice needs five small columns of every attempt (one light query); only the chosen
    attempts are then read as :func:`nbflow.predict.history` rows (their joins, the code's
    lineage, the DataFrame).  On 30k rows of which a fit keeps 4.6k that halves the read, a
    quarter of what a first run's fit costs in its helper process."""
    import json

    from nbflow.predict.history import HISTORY_COLUMNS, history
    from nbflow.store.history import _require_store

    found = _require_store(home).journal.query(_CHOOSE_SQL, (exclude_run or "",))
    if not found:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    light = pd.DataFrame([list(r) for r in found],
                         columns=["run_id", "idx", "attempt", "task", "input_bytes", "start"])
    light["input_bytes"] = pd.to_numeric(light["input_bytes"], errors="coerce")
    light["start"] = pd.to_numeric(light["start"], errors="coerce")  # (the same order as history's times)
    kept = recent_history(light, runs=runs, rows=rows)
    chosen = json.dumps([[r, int(i), int(a)] for r, i, a in
                         zip(kept["run_id"], kept["idx"], kept["attempt"], strict=True)])
    h = history(home=home, _attempts=chosen)
    return h[(h["state"] == "completed") & ~h["cached"] & h["duration_s"].notna()]




def recent_history(h: pd.DataFrame, runs: int = HISTORY_RUNS_PER_TASK,
                   rows: int = ROWS_PER_TASK_RUN) -> pd.DataFrame:
    """Bound what a fit reads, so its cost does not grow with the store: per task, its
    ``runs`` newest runs, and from each run at most ``rows`` calls, evenly spread over its
    input sizes (a 100k-item map says little more than 200 of its items)."""
    if h.empty:
        return h
    start = h["run_start"] if "run_start" in h.columns else h["start"]
    order = start.groupby([h["task"], h["run_id"]]).transform("max")
    rank = order.groupby(h["task"]).rank(method="dense", ascending=False)
    h = h[rank <= runs]
    sizes = h["input_bytes"].astype(float).fillna(0.0) if "input_bytes" in h.columns else None
    keep = []
    for _, idx in h.groupby(["task", "run_id"], sort=False).indices.items():
        if len(idx) > rows:
            by_size = idx[np.argsort(sizes.to_numpy()[idx], kind="stable")] if sizes is not None else idx
            idx = by_size[np.linspace(0, len(idx) - 1, rows).astype(int)]
        keep.append(idx)
    return h.iloc[np.sort(np.concatenate(keep))]


_FITTING: dict[int, Any] = {}  # id(run) -> the thread fitting its predictor
_FIT_LOCK = threading.Lock()


SYNC_FIT_ROWS = 1000  # histories up to this many rows are fitted in the view's own call
REFIT_GROWTH = 0.2  # live views refit once the store's history grew by this fraction
REFIT_AFTER_S = 600.0  # or once the fit is this old
REFIT_MIN_AGE_S = 60.0  # but a fit younger than this is kept (quick runs in a row share one)
_STORE_FITS: dict[str, tuple[float, int, Any]] = {}  # store home -> (when, history rows, fit)


def _history_rows(home: Any = None) -> tuple[str, int] | None:
    from nbflow.store.history import _require_store

    try:
        store = _require_store(home)
        (n,) = store.journal.query("SELECT COUNT(*) FROM task_runs")[0]
    except Exception:  # no usable store: no history
        return None
    return str(store.home), int(n)


def still_good(when: float, fitted_rows: int, rows: int, now: float) -> bool:
    """Whether what was learned at ``when`` (monotonic seconds) from ``fitted_rows`` rows of
    history still stands with ``rows`` rows at ``now``: younger than :data:`REFIT_AFTER_S`,
    and either grown by less than :data:`REFIT_GROWTH` or younger than
    :data:`REFIT_MIN_AGE_S` (the fit's rule; the ETA band's calibration follows it too)."""
    age = now - when
    grew = rows > fitted_rows * (1 + REFIT_GROWTH)
    return age < REFIT_AFTER_S and (not grew or age < REFIT_MIN_AGE_S)


def _cached_fit(home: str, rows: int, now: float) -> Predictor | None:
    """The fit this process made for the store at ``home``, if still good for ``rows`` rows."""
    with _FIT_LOCK:
        cached = _STORE_FITS.get(home)
    if cached is None:
        return None
    when, fitted_rows, predictor = cached
    if predictor is not None and still_good(when, fitted_rows, rows, now):
        return predictor
    return None


def shared_predictor(exclude_run: str | None = None,
                     fit: Callable[[str, str | None], Predictor | None] | None = None,
                     where: tuple[str, int] | None = None) -> Predictor | None:
    """The store's history predictor, fitted once and shared by the runs of this process
    until the history grew by :data:`REFIT_GROWTH` (and the fit is at least
    :data:`REFIT_MIN_AGE_S` old) or the fit is :data:`REFIT_AFTER_S` old, so consecutive
    runs in a notebook do not each pay a fit; a store that had no history is looked at
    again on every run.  A fresh fit leaves out
    ``exclude_run`` (the run asking: its rows are being written); a fit made before that
    run started has none of its rows anyway.  ``fit(home, exclude_run)`` makes a fresh one
    (default: :func:`default_predictor` here; live views pass :func:`fit_in_process`).
    ``where``: the store's home and rows of history when the caller already counted them
    (:func:`history_size`), so they are not counted again."""
    if where is None:
        where = _history_rows()
    if where is None:
        return None
    home, rows = where
    now = time.monotonic()
    predictor = _cached_fit(home, rows, now)
    if predictor is not None:
        return predictor
    predictor = default_predictor(exclude_run=exclude_run) if fit is None else fit(home, exclude_run)
    with _FIT_LOCK:
        _STORE_FITS[home] = (now, rows, predictor)
    return predictor


# -- fitting in a separate process ---------------------------------------------------------
#
# A fit on a large history is seconds of pandas and numpy work, much of it in Python and
# holding the GIL: on a helper thread it slowed the very run it was predicting (the tasks
# of a thread-backed run wait for the GIL).  Live views therefore fit in one long-lived
# helper process (spawned, so no lock of this process is inherited half-held, at a lower
# CPU priority), which reads the store itself and sends the predictor back pickled by value
# (cloudpickle: its fitted models are closures).  The process is started at the first large
# fit and reused by later ones.

FIT_IN_PROCESS = True  # False: large histories are fitted on a helper thread of this process
FIT_NICE = 10  # how much lower the fit process's CPU priority is
_POOL: ProcessPoolExecutor | None = None
_FIT_PIDS: list[int] = []  # the process id each live fit ran in (newest last)
# predictor -> the bytes the helper sent it as: the widget's estimates, made in the helper,
# send it back as those bytes instead of pickling it again in the kernel (tens of ms)
FIT_BLOBS: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


_NICED = False  # (in the helper: its priority is lowered)


def _background_priority() -> None:
    """In the helper process, at the start of each job (the first one acts): a lower CPU
    priority.  (Deaf to Ctrl-C it already is: :func:`helper_pool`.)

    Niced by :data:`FIT_NICE`, not put in Linux's idle scheduling class: on a busy machine
    an idle-class process barely runs at all (starting the helper took minutes at a load
    of 12 on two cores), and then no ETA ever arrives."""
    global _NICED
    import multiprocessing

    if not _NICED and multiprocessing.parent_process() is not None:  # (never the kernel itself)
        _NICED = True
        with contextlib.suppress(OSError, AttributeError):  # not on every platform
            os.nice(FIT_NICE)


def helper_pool() -> ProcessPoolExecutor:
    """One spawned helper process, deaf to Ctrl-C and to the kernel's interrupts (sent to its
    whole process group: interrupting a cell must not kill it, and jupyter_client interrupts
    the group at every kernel shutdown) from its first moments.  Its initializer is the
    standard library's ``signal.signal``, which a new process unpickles without importing
    nbflow: an initializer of nbflow's own took half a second (more on a busy machine) to
    import, and an interrupt meanwhile killed the helper with a KeyboardInterrupt traceback."""
    import multiprocessing
    import signal

    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))


def _fit_job(home: str, exclude_run: str | None) -> tuple[bytes, int]:
    """In the fit process: fit on the store at ``home``; the predictor pickled by value."""
    import cloudpickle

    _background_priority()
    return cloudpickle.dumps(default_predictor(exclude_run=exclude_run, home=home)), os.getpid()


def fit_pool() -> ProcessPoolExecutor:
    global _POOL
    with _FIT_LOCK:
        if _POOL is None:
            _POOL = helper_pool()
        return _POOL


def fit_pool_running() -> bool:
    """Whether this process's helper is started (and not shut down since)."""
    with _FIT_LOCK:
        return _POOL is not None


def drop_fit_pool() -> None:
    """Shut the helper process down (a later fit starts a new one): after it broke or sent
    back something that cannot be read, it is not trusted again, and it must not be left
    running unowned either."""
    global _POOL
    with _FIT_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        helpers = list((getattr(pool, "_processes", None) or {}).values())
        with contextlib.suppress(Exception):  # already broken: nothing left to stop
            pool.shutdown(wait=False, cancel_futures=True)
        for proc in helpers:  # (an idle helper would exit by itself; a wedged one would not)
            with contextlib.suppress(Exception):
                proc.terminate()


def fit_in_process(home: str, exclude_run: str | None = None) -> Predictor | None:
    """:func:`default_predictor` on the store at ``home``, fitted in the helper process (the
    calling thread only waits, without the GIL).  Falls back to fitting here when a process
    cannot be used (:data:`FIT_IN_PROCESS` false, or the pool broke)."""
    if FIT_IN_PROCESS:
        try:
            blob, pid = fit_pool().submit(_fit_job, home, exclude_run).result()
            predictor = pickle.loads(blob)
        except Exception:  # a broken pool or a failed unpickle: fit here rather than not at all
            drop_fit_pool()
        else:
            _FIT_PIDS.append(pid)
            with contextlib.suppress(TypeError):  # (kept to send it back to the helper unpickled again)
                FIT_BLOBS[predictor] = blob
            return predictor
    _FIT_PIDS.append(os.getpid())
    return default_predictor(exclude_run=exclude_run, home=home)


def wait_for_fits(timeout: float | None = None) -> None:
    """Wait until the background fits live views started have ended, and the ETA band's
    calibrations started with them (benchmarks and tests: a fit still going must not run
    into what is measured next)."""
    from nbflow.predict.eta_scores import wait_for_scores

    with _FIT_LOCK:
        threads = list(_FITTING.values())
    for thread in threads:
        thread.join(timeout)
    wait_for_scores(timeout)


def fit_pids() -> list[int]:
    """The process ids the live fits of this process ran in, oldest first (for tests and
    profiling: a large history must not be fitted in the caller's process)."""
    return list(_FIT_PIDS)


_HISTORY_SIZE: weakref.WeakKeyDictionary[Any, tuple[str, int] | None] = weakref.WeakKeyDictionary()


def history_size(run: Any) -> tuple[str, int] | None:
    """``(store home, rows of history)`` as ``run``'s live views first saw it (counted once
    per run: a view that looks every tick asks no query); None without a usable store."""
    if run in _HISTORY_SIZE:
        return _HISTORY_SIZE[run]
    where = _HISTORY_SIZE[run] = _history_rows()
    return where


def live_predictor(run: Any, wait: bool = False, start: bool = True) -> Predictor | None:
    """The run's history predictor for live views, without ever blocking them.

    A small history (:data:`SYNC_FIT_ROWS`) is fitted at once.  Otherwise the first call
    starts fitting it in the background (in the fit process: :func:`fit_in_process`) and
    returns None (views show no ETA yet, or the quick estimate: :class:`LiveEta`); later
    calls return it once it is ready; ``wait=True`` (a view drawn once the run ended) waits
    for the fit; ``start=False`` returns None rather than start a large fit (the live ETA
    starts it only once the run is long enough to need it).  ``run.eta()`` fits in the
    caller instead (it asked for an answer).  A fit is bounded by :func:`recent_history`."""
    if run in PREDICTORS:
        return PREDICTORS[run]
    with _FIT_LOCK:
        running = _FITTING.get(id(run))
    if running is not None:  # (checked before counting history: no journal query per look)
        if wait:
            running.join()
        return PREDICTORS.get(run)
    where = history_size(run)
    if where is not None and where[1] > SYNC_FIT_ROWS:
        # one this kernel already made for the store is free: taken at once, with no
        # background fit to start and no quick estimate to read meanwhile
        shared = _cached_fit(where[0], where[1], time.monotonic())
        if shared is not None or (not start and not wait):
            if shared is not None:
                with _FIT_LOCK:
                    PREDICTORS[run] = shared
            return shared
    if where is None or where[1] <= SYNC_FIT_ROWS:  # a small history fits in milliseconds
        # (no rows at all: nothing to fit, and no second query to find that out)
        predictor = (shared_predictor(exclude_run=run.id, where=where)
                     if where is not None and where[1] else None)
        with _FIT_LOCK:
            PREDICTORS[run] = predictor
        return predictor
    with _FIT_LOCK:
        if id(run) in _FITTING:
            return None
        run_id = run.id
        ref = weakref.ref(run)

        def fit() -> None:
            try:
                # (the history as this run's views counted it: no second count)
                predictor = shared_predictor(exclude_run=run_id, fit=fit_in_process, where=where)
            except Exception:  # no prediction rather than a broken view
                predictor = None
            with _FIT_LOCK:
                _FITTING.pop(id_, None)
                live = ref()
                if live is not None:
                    PREDICTORS[live] = predictor
            if live is not None and predictor is not None:
                # the ETA band's calibration, computed with the fit (in a helper process too)
                from nbflow.predict.eta_scores import scores_for

                with contextlib.suppress(Exception):  # no calibration rather than a broken view
                    scores_for(live)

        id_ = id(run)
        thread = threading.Thread(target=fit, name=f"nbflow-predictor-{run_id}", daemon=True)
        _FITTING[id_] = thread
        thread.start()
    if wait:
        thread.join()
        return PREDICTORS.get(run)
    return None

