"""Remaining time of a run (``run.eta()``) and makespan forecasts (``nf.forecast(wf)``).

Both answer the same question: how long will *this graph* take on *these workers*, given
what history says about each task?  The answer comes from simulating the engine's own
dispatch policy (:func:`nbflow.predict.simulate.simulate`: longest remaining path first,
then priority, then first-come) with predicted durations, many times over:

- each task's duration is drawn from its prediction and the held-out errors of its family
  (:meth:`nbflow.predict.Predictor.sample`), coupled across tasks because one run's tasks
  tend to be slow or fast together;
- the median of the simulated makespans is the estimate, the 10% and 90% quantiles are its
  80% band.

For a run in flight (:func:`snapshot` then :func:`eta_of`), finished tasks are gone from
the graph, and running tasks start at once with their predicted duration minus the time
they have already run (at least a tenth of the prediction: a task past its estimate is
taken to be nearly done, not done).  As tasks finish, fewer unknowns remain and the
finished tasks correct the estimates of the rest (online correction), so the band
narrows.

Nodes that are not task calls (collecting a map, branch gates, constants) take no time.
A ``map`` whose items are not known yet counts as nothing until it expands.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbflow.core.errors import NbflowError
from nbflow.engine.priority import longest_remaining_path
from nbflow.predict.bands import pace_factors
from nbflow.predict.lineage import lineage_keys_of_nodes
from nbflow.predict.simulate import simulate

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["Eta", "Forecast", "ForecastError", "RunSnapshot", "eta_of", "forecast", "run_eta", "snapshot"]

DEFAULT_SAMPLES = 40
PACE_SHRINK = 8.0  # finished tasks that give a run's own pace half its weight in an ETA
_TASK_KINDS = ("task", "undo")
_TERMINAL = ("completed", "failed", "cancelled", "skipped")
_RUNNING = ("running", "retrying")
_PREDICTORS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class ForecastError(NbflowError, ValueError):
    """A forecast or ETA cannot be computed as asked; the message says what is missing."""


@dataclass(frozen=True)
class Eta:
    """Remaining time of a run: ``remaining_s`` (median) within ``[remaining_lo, remaining_hi]``
    (80%), after ``elapsed_s``; ``done`` of ``total`` tasks finished; ``no_history`` lists the
    tasks whose durations are guesses (no history of them)."""

    remaining_s: float
    remaining_lo: float
    remaining_hi: float
    elapsed_s: float
    done: int
    total: int
    no_history: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if math.isnan(self.remaining_s):
            return f"ETA unknown ({self.done}/{self.total} tasks done)"
        return (f"ETA {_fmt(self.remaining_s)} (80%: {_fmt(self.remaining_lo)}–{_fmt(self.remaining_hi)}), "
                f"{self.done}/{self.total} tasks done")


@dataclass(frozen=True)
class Forecast:
    """Predicted makespan per worker count, before running.

    ``table``: one row per worker count (``workers``, ``makespan_s`` median, ``makespan_lo``,
    ``makespan_hi``: 80% band); ``critical_path``: the task keys of the heaviest predicted
    chain and ``critical_path_s`` its predicted length (no worker count beats it);
    ``recommended_workers``: the knee of the curve, the fewest workers whose makespan is
    within 10% of the best; ``no_history``: task names predicted without history of their
    own; ``fallbacks``: for every task name not predicted from its own history (or whose
    code changed since), how it was predicted (``code lineage: <name>``, ``similar name:
    <name>``, ``global prior`` or ``history (code changed)``).
    """

    table: pd.DataFrame
    critical_path: list[str]
    critical_path_s: float
    recommended_workers: int
    no_history: list[str]
    tasks: int
    fallbacks: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"forecast: {self.tasks} tasks, critical path {_fmt(self.critical_path_s)}, "
                 f"recommended workers {self.recommended_workers}"]
        for r in self.table.itertuples():
            lines.append(f"  {r.workers:>4} workers: {_fmt(r.makespan_s)} "
                         f"(80%: {_fmt(r.makespan_lo)}–{_fmt(r.makespan_hi)})")
        lines += [f"  {line}" for line in self._fallback_lines()]
        return "\n".join(lines)

    def _fallback_lines(self) -> list[str]:
        # "no history: a (similar name: b), c (global prior)" and "code changed: d".
        new = [f"{k} ({self.fallbacks.get(k, 'no history')})" for k in self.no_history[:10]]
        changed = [k for k, v in self.fallbacks.items() if v.startswith("history")][:10]
        out = [f"no history: {', '.join(new)}"] if new else []
        if changed:
            out.append(f"code changed (predicted from its earlier versions): {', '.join(changed)}")
        return out

    def _repr_html_(self) -> str:
        head = (f"<b>forecast</b>: {self.tasks} tasks, critical path {_fmt(self.critical_path_s)}, "
                f"recommended workers <b>{self.recommended_workers}</b>")
        note = "".join(f"<br>{html.escape(line)}" for line in self._fallback_lines())
        return head + note + self.table.to_html(index=False, float_format=lambda v: f"{v:.3g}")


def _fmt(s: float) -> str:
    if math.isnan(s):
        return "?"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


@dataclass(frozen=True)
class RunSnapshot:
    """What an ETA needs to know about a run at one moment (cheap to take, on any thread)."""

    keys: list[str]
    names: list[str]
    kinds: list[str]
    deps: list[list[int]]
    states: list[str]
    elapsed: list[float]  # seconds each running task has run; nan otherwise
    durations: list[float]
    input_bytes: list[float]
    priorities: list[int]
    workers: int
    taken_at: float
    run_elapsed_s: float
    levels: list[float] | None = None  # the scheduler's dispatch levels (learned or unit)


def _priority(ref: Any) -> int:
    spec = getattr(getattr(ref, "task", None), "spec", None)
    return int(getattr(spec, "priority", 0) or 0)


def _workers_of(run: Any) -> int:
    if run.workers:
        return int(run.workers)
    from nbflow.engine.backends.local import DEFAULT_THREADS

    return DEFAULT_THREADS


def _state_of(run: Any) -> tuple[list[Any], list[str], list[float], list[float], list[float], Any]:
    """``(nodes, states, starts, durations, input_bytes, levels)`` of a run, as of now.

    A live run gives a cheap copy (``run.state_now()``): a snapshot is taken while the run
    goes on, often from an event subscriber, and building the public ``run.tasks``
    DataFrame there would stall the run for milliseconds.  A stored run gives its table.
    """
    state_now = getattr(run, "state_now", None)
    if state_now is None:
        t = run.tasks
        ib = t["input_bytes"].astype(float).tolist() if "input_bytes" in t.columns else [math.nan] * len(t)
        starts = [x.timestamp() if isinstance(x, pd.Timestamp) and not pd.isna(x) else math.nan
                  for x in t["start"]]
        return (list(run.nodes), t["state"].tolist(), starts, t["duration_s"].astype(float).tolist(), ib,
                None)
    s = state_now()
    return s["nodes"], s["state"], s["start"], s["duration"], s["input_bytes"], s["level"]


def snapshot(run: Any) -> RunSnapshot:
    """Freeze the state of ``run`` for :func:`eta_of` (cheap: a few list copies)."""
    now = time.time()
    nodes, states, starts, durations, ib, levels = _state_of(run)
    n = min(len(nodes), len(states))
    elapsed = [now - starts[i] if states[i] in _RUNNING and starts[i] == starts[i] else math.nan
               for i in range(n)]
    started = getattr(run, "started_at", math.nan)
    return RunSnapshot(
        keys=[r.key for r in nodes[:n]], names=[r.name for r in nodes[:n]], kinds=[r.kind for r in nodes[:n]],
        deps=[list(r.deps) for r in nodes[:n]], states=states[:n], elapsed=elapsed,
        durations=durations[:n], input_bytes=ib[:n],
        priorities=[_priority(r) for r in nodes[:n]], workers=_workers_of(run), taken_at=now,
        run_elapsed_s=now - started if started == started else 0.0,
        levels=levels[:n] if levels is not None else None,
    )


def _topo(ids: list[int], deps: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Renumber ``ids`` (a dependency-closed-downward subset) in a topological order."""
    inside = set(ids)
    succ: dict[int, list[int]] = {i: [] for i in ids}
    indeg = {i: 0 for i in ids}
    for j in ids:
        for d in deps[j]:
            if d in inside:
                succ[d].append(j)
                indeg[j] += 1
    order = [i for i in ids if indeg[i] == 0]
    k = 0
    while k < len(order):
        for j in succ[order[k]]:
            indeg[j] -= 1
            if indeg[j] == 0:
                order.append(j)
        k += 1
    pos = {i: p for p, i in enumerate(order)}
    return order, [sorted(pos[j] for j in succ[i]) for i in order]


def _draws(
    predictor: Predictor, names: list[str], inputs: list[float], finished: pd.DataFrame | None,
    samples: int, seed: int, codes: list[str | None] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, str]]:
    rows = pd.DataFrame({"task": names, "input_bytes": inputs})
    if codes is not None:
        rows["code"] = codes
    if not len(rows):
        return np.zeros((samples, 0)), np.zeros(0), [], {}
    pred = predictor.predict(rows, finished=finished)
    if hasattr(predictor, "families"):  # a fitted Predictor: its draws reuse the prediction
        from nbflow.predict.sampling import sample as joint_sample

        draws = joint_sample(predictor, rows, n=samples, finished=finished, seed=seed,
                             point=pred["duration_s"].to_numpy())
    else:  # (the quick estimate, or a stand-in)
        draws = predictor.sample(rows, n=samples, finished=finished, seed=seed)
    src = pred["source"].astype(str)
    no_hist = sorted(set(rows.loc[~src.str.startswith("history"), "task"]))
    fallbacks = {str(t): s for t, s in zip(rows["task"], src, strict=True) if s != "history"}
    return draws, pred["duration_s"].to_numpy(), no_hist, dict(sorted(fallbacks.items()))


def run_pace(predictor: Predictor, finished: pd.DataFrame | None,
             predicted: np.ndarray | None = None) -> float:
    """How much slower (> 1) or faster this run's finished tasks were than predicted.

    The predictor corrects each task family from its own finished calls where its history
    showed that this helps; what is left, measured against those corrected predictions, is
    the pace of the run as a whole (a loaded machine, per-task overhead, a bigger data
    set): the ratio of their total actual to their total predicted duration, in log space
    shrunk towards 1 by how few tasks finished (:data:`PACE_SHRINK` of them give it half
    its weight; ``predicted``: the finished tasks' online predictions, when known already).
    """
    if finished is None or not len(finished):
        return 1.0
    p = (predictor.predict(finished, finished=finished)["duration_s"].to_numpy(dtype=float)
         if predicted is None else np.asarray(predicted, dtype=float))
    y = finished["duration_s"].to_numpy(dtype=float)
    ok = (y > 0) & (p > 0)
    n = int(ok.sum())
    if not n:
        return 1.0
    # Total actual over total predicted: what the remaining time is made of is seconds, so
    # a long task's ratio counts for more than a short one's (a median of per-task ratios
    # let tiny tasks with large relative errors set the pace: twice the ETA error).
    lr = math.log(float(y[ok].sum()) / float(p[ok].sum()))
    return math.exp(lr * n / (n + PACE_SHRINK))


def eta_of(snap: RunSnapshot, predictor: Predictor | None, samples: int = DEFAULT_SAMPLES,
           seed: int = 0, pace: bool = True, max_finished: int | None = None) -> Eta:
    """The :class:`Eta` of a run at the moment ``snap`` was taken.

    With ``pace`` (the default) the remaining durations are multiplied by the run's own
    pace so far (:func:`run_pace`).  ``max_finished`` bounds how many of the run's finished
    tasks the online correction and the pace learn from (evenly spread over the graph;
    None: all): predicting with thousands of finished tasks costs far more than the
    simulation, and a few hundred say as much about the run's pace."""
    n = len(snap.keys)
    done = sum(1 for s in snap.states if s in _TERMINAL)
    left = [i for i in range(n) if snap.states[i] not in _TERMINAL]
    if not left:
        return Eta(0.0, 0.0, 0.0, snap.run_elapsed_s, done, n)
    if predictor is None:
        return Eta(math.nan, math.nan, math.nan, snap.run_elapsed_s, done, n)
    order, succs = _topo(left, snap.deps)
    is_task = [snap.kinds[i] in _TASK_KINDS for i in order]
    task_ids = [i for i, t in zip(order, is_task, strict=True) if t]
    fin_ids = [i for i in range(n) if snap.states[i] == "completed" and snap.kinds[i] in _TASK_KINDS
               and snap.durations[i] == snap.durations[i]]
    if max_finished is not None and len(fin_ids) > max_finished:
        fin_ids = [fin_ids[k] for k in np.linspace(0, len(fin_ids) - 1, max_finished).astype(int)]
    finished = pd.DataFrame({
        "task": [snap.names[i] for i in fin_ids],
        "input_bytes": [snap.input_bytes[i] for i in fin_ids],
        "duration_s": [snap.durations[i] for i in fin_ids],
    }) if fin_ids else None
    draws, _, no_hist, _ = _draws(predictor, [snap.names[i] for i in task_ids],
                                   [snap.input_bytes[i] for i in task_ids], finished, samples, seed)
    if pace:  # the run's pace, and how sure it is (its spread: nbflow.predict.bands)
        # (one online prediction of the finished tasks serves both)
        fp = (predictor.predict(finished, finished=finished)["duration_s"].to_numpy(dtype=float)
              if finished is not None and len(finished) else None)
        draws = (draws * run_pace(predictor, finished, fp)
                 * pace_factors(predictor, finished, len(draws), seed, predicted=fp))
    col = {i: c for c, i in enumerate(task_ids)}
    running = [snap.states[i] in _RUNNING for i in order]
    levels = ([snap.levels[i] for i in order] if snap.levels is not None else longest_remaining_path(succs))
    # Running tasks hold their workers from the start of the simulation.
    levels = [lv + 1e12 if r else lv for lv, r in zip(levels, running, strict=True)]
    prios = [snap.priorities[i] for i in order]
    spans = []
    for s in range(draws.shape[0]):
        dur = np.zeros(len(order))
        for p, i in enumerate(order):
            c = col.get(i)
            if c is None:
                continue
            d = float(draws[s, c])
            if running[p] and snap.elapsed[i] == snap.elapsed[i]:
                d = max(d - snap.elapsed[i], 0.1 * d)
            dur[p] = d
        spans.append(simulate(succs, dur.tolist(), snap.workers, priorities=prios, levels=levels).makespan)
    lo, mid, hi = np.quantile(spans, [0.1, 0.5, 0.9])
    return Eta(float(mid), float(lo), float(hi), snap.run_elapsed_s, done, n, no_hist)


def default_predictor(exclude_run: str | None = None, home: Any = None) -> Predictor | None:
    """A predictor fitted on the store's history (minus one run), or None without history."""
    from nbflow.predict.history import history
    from nbflow.predict.model import Predictor

    try:
        h = history(home=home)
    except Exception:  # no usable store: no history
        return None
    if exclude_run is not None:
        h = h[h["run_id"] != exclude_run]
    h = h[(h["state"] == "completed") & ~h["cached"] & h["duration_s"].notna()]
    if h.empty:
        return None
    return Predictor().fit(recent_history(h))


HISTORY_RUNS_PER_TASK = 20  # the newest runs of each task the default predictor learns from
ROWS_PER_TASK_RUN = 200  # and at most this many of a task's calls per run (evenly spread)


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


def _cached_fit(home: str, rows: int, now: float) -> Predictor | None:
    """The fit this process made for the store at ``home``, if still good for ``rows`` rows."""
    with _FIT_LOCK:
        cached = _STORE_FITS.get(home)
    if cached is None:
        return None
    when, fitted_rows, predictor = cached
    age = now - when
    grew = rows > fitted_rows * (1 + REFIT_GROWTH)
    if predictor is not None and age < REFIT_AFTER_S and (not grew or age < REFIT_MIN_AGE_S):
        return predictor
    return None


def shared_predictor(exclude_run: str | None = None,
                     fit: Callable[[str, str | None], Predictor | None] | None = None) -> Predictor | None:
    """The store's history predictor, fitted once and shared by the runs of this process
    until the history grew by :data:`REFIT_GROWTH` (and the fit is at least
    :data:`REFIT_MIN_AGE_S` old) or the fit is :data:`REFIT_AFTER_S` old, so consecutive
    runs in a notebook do not each pay a fit; a store that had no history is looked at
    again on every run.  A fresh fit leaves out
    ``exclude_run`` (the run asking: its rows are being written); a fit made before that
    run started has none of its rows anyway.  ``fit(home, exclude_run)`` makes a fresh one
    (default: :func:`default_predictor` here; live views pass :func:`fit_in_process`)."""
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


def _background_priority() -> None:
    """In the helper process: a lower CPU priority, and deaf to Ctrl-C / the
    kernel's interrupt (sent to its whole process group): interrupting a cell must not kill it.

    Niced by :data:`FIT_NICE`, not put in Linux's idle scheduling class: on a busy machine
    an idle-class process barely runs at all (starting the helper took minutes at a load
    of 12 on two cores), and then no ETA ever arrives."""
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not on every platform
        os.nice(FIT_NICE)
    with contextlib.suppress(OSError, ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fit_job(home: str, exclude_run: str | None) -> tuple[bytes, int]:
    """In the fit process: fit on the store at ``home``; the predictor pickled by value."""
    import cloudpickle

    return cloudpickle.dumps(default_predictor(exclude_run=exclude_run, home=home)), os.getpid()


def _fit_pool() -> ProcessPoolExecutor:
    global _POOL
    import multiprocessing

    with _FIT_LOCK:
        if _POOL is None:
            _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_background_priority)
        return _POOL


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
            blob, pid = _fit_pool().submit(_fit_job, home, exclude_run).result()
            predictor = pickle.loads(blob)
        except Exception:  # a broken pool or a failed unpickle: fit here rather than not at all
            drop_fit_pool()
        else:
            _FIT_PIDS.append(pid)
            return predictor
    _FIT_PIDS.append(os.getpid())
    return default_predictor(exclude_run=exclude_run, home=home)


def fit_pids() -> list[int]:
    """The process ids the live fits of this process ran in, oldest first (for tests and
    profiling: a large history must not be fitted in the caller's process)."""
    return list(_FIT_PIDS)


_HISTORY_SIZE: weakref.WeakKeyDictionary[Any, tuple[str, int] | None] = weakref.WeakKeyDictionary()


def live_predictor(run: Any, wait: bool = False, start: bool = True) -> Predictor | None:
    """The run's history predictor for live views, without ever blocking them.

    A small history (:data:`SYNC_FIT_ROWS`) is fitted at once.  Otherwise the first call
    starts fitting it in the background (in the fit process: :func:`fit_in_process`) and
    returns None (views show no ETA yet, or the quick estimate: :class:`LiveEta`); later
    calls return it once it is ready; ``wait=True`` (a view drawn once the run ended) waits
    for the fit; ``start=False`` returns None rather than start a large fit (the live ETA
    starts it only once the run is long enough to need it).  ``run.eta()`` fits in the
    caller instead (it asked for an answer).  A fit is bounded by :func:`recent_history`."""
    if run in _PREDICTORS:
        return _PREDICTORS[run]
    with _FIT_LOCK:
        running = _FITTING.get(id(run))
    if running is not None:  # (checked before counting history: no journal query per look)
        if wait:
            running.join()
        return _PREDICTORS.get(run)
    if run in _HISTORY_SIZE:  # counted once per run: a view that looks every tick asks no query
        where = _HISTORY_SIZE[run]
    else:
        where = _HISTORY_SIZE[run] = _history_rows()
    if where is not None and where[1] > SYNC_FIT_ROWS and not start and not wait:
        # not worth a fit yet, but one this kernel already made for the store is free
        shared = _cached_fit(where[0], where[1], time.monotonic())
        if shared is not None:
            with _FIT_LOCK:
                _PREDICTORS[run] = shared
        return shared
    if where is None or where[1] <= SYNC_FIT_ROWS:  # a small history fits in milliseconds
        # (no rows at all: nothing to fit, and no second query to find that out)
        predictor = shared_predictor(exclude_run=run.id) if where is not None and where[1] else None
        with _FIT_LOCK:
            _PREDICTORS[run] = predictor
        return predictor
    with _FIT_LOCK:
        if id(run) in _FITTING:
            return None
        run_id = run.id
        ref = weakref.ref(run)

        def fit() -> None:
            try:
                predictor = shared_predictor(exclude_run=run_id, fit=fit_in_process)
            except Exception:  # no prediction rather than a broken view
                predictor = None
            with _FIT_LOCK:
                _FITTING.pop(id_, None)
                live = ref()
                if live is not None:
                    _PREDICTORS[live] = predictor

        id_ = id(run)
        thread = threading.Thread(target=fit, name=f"nbflow-predictor-{run_id}", daemon=True)
        _FITTING[id_] = thread
        thread.start()
    if wait:
        thread.join()
        return _PREDICTORS.get(run)
    return None


def run_eta(run: Any, predictor: Predictor | None = None, samples: int = DEFAULT_SAMPLES) -> Eta:
    """``run.eta()``: see :func:`eta_of`.  Without ``predictor``, one is fitted on the store's
    history once per run (excluding the run itself, whose finished tasks correct it online)."""
    if predictor is None:
        if run not in _PREDICTORS:
            _PREDICTORS[run] = default_predictor(exclude_run=run.id)
        predictor = _PREDICTORS[run]
    return eta_of(snapshot(run), predictor, samples=samples)


def forecast(
    wf: Any,
    workers: Sequence[int] = (1, 2, 4, 8, 16),
    predictor: Predictor | None = None,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> Forecast:
    """Predict the makespan of workflow ``wf`` on each worker count, without running it.

    ``predictor`` defaults to one fitted on the store's history (:func:`nbflow.history`).
    Raises :class:`ForecastError` when there is no history at all and no predictor.
    """
    from nbflow.engine.metrics import input_features

    ws = [int(w) for w in workers]
    if not ws or any(w < 1 for w in ws):
        raise ForecastError(f"workers must be a non-empty list of whole numbers >= 1, got {list(workers)!r}")
    nodes = list(getattr(wf, "nodes", []))
    if not nodes:
        raise ForecastError("the workflow has no tasks: trace task calls in `with nf.Workflow(...)` first")
    if predictor is None:
        predictor = default_predictor()
        if predictor is None:
            raise ForecastError("no history to predict from: run the workflow once (or pass "
                                "predictor=Predictor().fit(observations))")
    order, succs = _topo(list(range(len(nodes))), [list(r.deps) for r in nodes])
    task_pos = [p for p, i in enumerate(order) if nodes[i].kind in _TASK_KINDS]
    names = [nodes[order[p]].name for p in task_pos]
    inputs = []
    for p in task_pos:
        r = nodes[order[p]]
        b = input_features(r.args, r.kwargs)[0] if r.nested == 0 else None
        inputs.append(float(b) if b is not None else math.nan)
    codes = lineage_keys_of_nodes(nodes, [order[p] for p in task_pos])
    draws, point, no_hist, fallbacks = _draws(predictor, names, inputs, None, samples, seed, codes)
    base = np.zeros((draws.shape[0], len(order)))
    base[:, task_pos] = draws
    point_all = np.zeros(len(order))
    point_all[task_pos] = point
    prios = [_priority(nodes[i]) for i in order]
    rows = []
    for w in ws:
        spans = [simulate(succs, d.tolist(), w, priorities=prios).makespan for d in base]
        lo, mid, hi = np.quantile(spans, [0.1, 0.5, 0.9])
        rows.append({"workers": w, "makespan_s": float(mid), "makespan_lo": float(lo),
                     "makespan_hi": float(hi)})
    table = pd.DataFrame(rows)
    best = float(table["makespan_s"].min())
    knee = int(table.loc[table["makespan_s"] <= 1.1 * best, "workers"].min())
    # Critical path by predicted durations: follow the heaviest successor from the heaviest root.
    level = longest_remaining_path(succs, weights=point_all.tolist())
    indeg = [0] * len(order)
    for out in succs:
        for j in out:
            indeg[j] += 1
    path: list[int] = []
    cur = max((i for i in range(len(order)) if indeg[i] == 0), key=lambda i: level[i], default=None)
    while cur is not None:
        path.append(cur)
        cur = max(succs[cur], key=lambda j: level[j], default=None)
    return Forecast(
        table=table,
        critical_path=[nodes[order[p]].key for p in path if nodes[order[p]].kind in _TASK_KINDS],
        critical_path_s=float(max(level, default=0.0)),
        recommended_workers=knee,
        no_history=no_hist,
        tasks=len(task_pos),
        fallbacks=fallbacks,
    )


# -- the live ETA: simulate again only when it is worth it ------------------------------------
#
# An ETA is dozens of simulations of the remaining graph, in Python, holding the GIL: done
# every two seconds on a big graph it slowed the run it was estimating.  The live ETA is
# therefore re-simulated only when enough changed, and never more often than its own cost
# allows: after a simulation that took ``c`` seconds, the next one waits at least
# ``c / ETA_BUDGET`` seconds, so simulating takes at most that share of the run's time
# whatever the graph's size.  In between, the last estimate counts down with the clock.

ETA_BUDGET = 0.02  # the share of a run's time the live ETA may spend simulating
ETA_MIN_EVERY = 2.0  # seconds: never re-simulated more often than this
ETA_MAX_EVERY = 30.0  # seconds: re-simulated at least this often, even when little changed
ETA_RESIM_DONE = 0.1  # re-simulated once this share of the tasks left at the last one finished
ETA_WORK = 200_000  # task-steps per live ETA (samples x remaining tasks): fewer samples on big graphs
ETA_FIRST_SAMPLES = 5  # the first live estimate is a quick one (its cost is not known yet)
ETA_MAX_FINISHED = 200  # finished tasks a live estimate learns the run's pace from (eta_of)
ETA_GUESS_S_PER_TASK = 5e-5  # what a first estimate costs per task left (~0.1 s for 2 000)
FIT_WORTH_S = 10.0  # a run this long (gone, or left by its estimate) is worth the full fit
_UNSET = object()


def quick_of(run: Any) -> Any:
    """The quick estimate of ``run``'s workflow (:func:`nbflow.predict.quick.quick_predictor`),
    or None (no store, no history, an unreadable store)."""
    from nbflow.predict.quick import quick_predictor

    try:
        return quick_predictor(str(getattr(run, "name", "")), exclude_run=str(getattr(run, "id", "")))
    except Exception:  # an estimate must never break a view
        return None


class LiveEta:
    """The ETA of one running ``run`` for live views, re-simulated only when it is due.

    A new simulation is due when :data:`ETA_RESIM_DONE` of the tasks that were left at the
    last one have finished since, or tasks were added (a map expanded), or
    :data:`ETA_MAX_EVERY` seconds passed; and in any case not before ``max(ETA_MIN_EVERY,
    cost / ETA_BUDGET)`` seconds after the last one (``cost``: how long that one took).
    Otherwise :meth:`current` returns the last estimate minus the time since it was made.
    The first estimate draws few samples (its cost is unknown); later ones as many as the
    budget affords (:meth:`samples`).  ``clock`` (monotonic seconds) and ``timer`` (what a
    simulation's cost is measured with) can be replaced, e.g. by a fake clock in tests.
    ``simulations`` counts the estimates made."""

    def __init__(self, run: Any, clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._run = weakref.ref(run)
        self.clock = clock
        self.timer = timer
        self.simulations = 0
        self.last: Eta | None = None
        self.at = -math.inf  # clock time of the last simulation
        self.cost = 0.0  # seconds the last one took
        self._left = 0  # tasks left and in all at the last one
        self._total = 0
        self._per_sample: float | None = None  # seconds per simulation at the last estimate
        self._pending: Any = None  # the estimate being made in the helper process (a Future)
        self._pending_as_of: tuple[float, int, int, int] = (0.0, 0, 0, 0)  # (clock, left, total, samples)
        self._local = False  # the helper process failed once: estimate in this process
        self._quick: Any = _UNSET  # the quick estimate (nbflow.predict.quick), read once
        self._used: Any = None  # the predictor the last estimate was made with
        self.pids: list[int] = []  # the processes the patient estimates were made in

    def samples(self, left: int, run_elapsed: float) -> int:
        """How many simulations the next estimate draws: :data:`ETA_FIRST_SAMPLES` for the
        first one; then as many as :data:`ETA_BUDGET` of the run's time so far affords at
        the last estimate's cost per simulation, between that and :data:`DEFAULT_SAMPLES`
        (and at most :data:`ETA_WORK` task-steps)."""
        cap = max(ETA_FIRST_SAMPLES, min(DEFAULT_SAMPLES, ETA_WORK // max(left, 1)))
        if self._per_sample is None:
            return min(ETA_FIRST_SAMPLES, cap)
        afford = ETA_BUDGET * max(run_elapsed, ETA_MIN_EVERY) / max(self._per_sample, 1e-9)
        return int(max(ETA_FIRST_SAMPLES, min(cap, afford)))

    def due(self, left: int, total: int, now: float) -> bool:
        """Whether a new simulation is due with ``left`` of ``total`` tasks unfinished."""
        if self.last is None:
            return True
        age = now - self.at
        if age < max(ETA_MIN_EVERY, self.cost / ETA_BUDGET):
            return False
        progressed = self._left - left >= max(1.0, ETA_RESIM_DONE * self._left)
        return progressed or total != self._total or age >= ETA_MAX_EVERY

    def current(self, patient: bool = False) -> Eta | None:
        """The run's ETA now; None without history (or while its predictor is being fitted).

        ``patient`` (the widget): the first estimate waits until the run has gone for as
        long as the budget asks for its guessed cost (:data:`ETA_GUESS_S_PER_TASK` per task
        left), so a run too short to need an ETA pays nothing for one; and with more than
        :data:`ETA_LOCAL_TASKS` tasks left, estimates are computed in the helper process
        (:data:`ETA_IN_PROCESS`): this call hands over a snapshot and returns at once, the
        new estimate shows from a later call.  Without it
        (the headless progress lines, at most nine) the estimate is made in this call."""
        run = self._run()
        if run is None:
            return None
        self._collect()
        now = self.clock()
        counts = run.counts if hasattr(run, "counts") else None
        upgrade = False
        if counts is not None:
            total = sum(counts.values())
            left = total - sum(counts.get(s, 0) for s in _TERMINAL)
            if self._pending is not None:  # one estimate at a time
                return self._aged(now, total - left, total) if self.last is not None else None
            if self.last is None and patient:
                started = getattr(run, "started_at", math.nan)
                ran = time.time() - started if started == started else 0.0
                if ran < left * ETA_GUESS_S_PER_TASK / ETA_BUDGET:
                    return None
            predictor = self._predictor(run)
            if predictor is None:
                return None
            # The full predictor replacing the quick estimate: worth a new estimate at once.
            upgrade = self.last is not None and predictor is not self._used
            if self.last is not None and not upgrade and not self.due(left, total, now):
                return self._aged(now, total - left, total)
        else:
            predictor = self._predictor(run)
            if predictor is None:
                return None
        snap = snapshot(run)
        total = len(snap.states)
        left = sum(1 for st in snap.states if st not in _TERMINAL)
        if not upgrade and not self.due(left, total, now):
            return self._aged(now, total - left, total)
        self._used = predictor
        samples = self.samples(left, snap.run_elapsed_s)
        if (patient and ETA_IN_PROCESS and left > ETA_LOCAL_TASKS and not self._local
                and self._submit(predictor, snap, samples, now)):
            return self._aged(now, total - left, total) if self.last is not None else None
        t0 = self.timer()
        e = eta_of(snap, predictor, samples=samples, max_finished=ETA_MAX_FINISHED)
        self._record(e, max(self.timer() - t0, 0.0), samples, now, left, total)
        return e

    def _predictor(self, run: Any) -> Any:
        """The full history predictor once it is ready, the quick estimate until then.

        The full fit (seconds of CPU on a large history, in the helper process) is only
        started once the run has gone for :data:`FIT_WORTH_S` or its ETA says that much is
        left: a shorter run is estimated from the quick one (:mod:`nbflow.predict.quick`,
        one aggregate query) and never pays for a fit."""
        full = live_predictor(run, start=self.fit_wanted)
        if full is not None:
            return full
        return self.quick()

    def quick(self) -> Any:
        """The run's quick estimate (read once; None without history)."""
        run = self._run()
        if self._quick is _UNSET and run is not None:
            self._quick = quick_of(run)
        return None if self._quick is _UNSET else self._quick

    @property
    def fit_wanted(self) -> bool:
        """Whether the full fit is worth starting: the run went on, or its estimate says
        it will go on, for at least :data:`FIT_WORTH_S`."""
        run = self._run()
        started = getattr(run, "started_at", math.nan)
        ran = time.time() - started if started == started else 0.0
        return ran >= FIT_WORTH_S or (self.last is not None and self.last.remaining_s >= FIT_WORTH_S)

    def _record(self, e: Eta, cost: float, samples: int, at: float, left: int, total: int) -> None:
        self.cost = cost
        self._per_sample = cost / samples
        self.simulations += 1
        self.last, self.at, self._left, self._total = e, at, left, total

    def _submit(self, predictor: Predictor, snap: RunSnapshot, samples: int, now: float) -> bool:
        """Hand the estimate to the helper process; False if that cannot be done."""
        try:
            job = _fit_pool().submit(_eta_job, _predictor_blob(predictor), snap, samples, ETA_MAX_FINISHED)
        except Exception:  # no process to use: estimate here from now on
            self._local = True
            return False
        left = sum(1 for st in snap.states if st not in _TERMINAL)
        self._pending, self._pending_as_of = job, (now, left, len(snap.states), samples)
        return True

    def _collect(self) -> None:
        """Take in the estimate the helper process finished, if any."""
        job = self._pending
        if job is None or not job.done():
            return
        self._pending = None
        at, left, total, samples = self._pending_as_of
        try:
            e, cost, pid = job.result()
        except Exception:  # a broken process: estimate here from now on
            self._local = True
            return
        self.pids.append(pid)
        self._record(e, cost, samples, at, left, total)

    def _aged(self, now: float, done: int, total: int) -> Eta:
        """The last estimate, counted down by the time since it was made."""
        e = self.last
        assert e is not None
        age = max(now - self.at, 0.0)
        return Eta(max(e.remaining_s - age, 0.0), max(e.remaining_lo - age, 0.0),
                   max(e.remaining_hi - age, 0.0), e.elapsed_s + age, done, total, e.no_history)


ETA_IN_PROCESS = True  # the widget's estimates are made in the helper process (LiveEta)
ETA_LOCAL_TASKS = 200  # ... unless this few tasks are left (tens of ms: no process to start for it)
_BLOBS: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def _predictor_blob(predictor: Predictor) -> bytes:
    """``predictor`` pickled by value for the helper process (once per predictor)."""
    import cloudpickle

    with _FIT_LOCK:
        blob = _BLOBS.get(predictor)
    if blob is None:
        blob = cloudpickle.dumps(predictor)
        with _FIT_LOCK:
            _BLOBS[predictor] = blob
    return blob


def _eta_job(blob: bytes, snap: RunSnapshot, samples: int,
             max_finished: int | None) -> tuple[Eta, float, int]:
    """In the helper process: one live estimate, what it took, and where it ran."""
    t0 = time.perf_counter()
    e = eta_of(snap, pickle.loads(blob), samples=samples, max_finished=max_finished)
    return e, time.perf_counter() - t0, os.getpid()


_LIVE_ETAS: weakref.WeakKeyDictionary[Any, LiveEta] = weakref.WeakKeyDictionary()


def live_eta(run: Any) -> LiveEta:
    """The :class:`LiveEta` every live view of ``run`` shares (the progress line, the
    timeline's band and the text progress ask the same one)."""
    with _FIT_LOCK:
        live = _LIVE_ETAS.get(run)
        if live is None:
            live = _LIVE_ETAS[run] = LiveEta(run)
        return live


def run_eta_text(run: Any, patient: bool = False) -> str | None:
    """Short ETA text for progress displays; None when there is no history to go by (or
    while the predictor is still being fitted in the background).  Shared by the run's
    live views and re-simulated only when due (:class:`LiveEta`; ``patient``: see
    :meth:`LiveEta.current`)."""
    e = live_eta(run).current(patient=patient)
    if e is None or math.isnan(e.remaining_s):
        return None
    return f"ETA {_fmt(e.remaining_s)} (80%: {_fmt(e.remaining_lo)}–{_fmt(e.remaining_hi)})"
