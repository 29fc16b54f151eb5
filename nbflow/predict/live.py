"""The live ETA of a running run, for the widget and the progress lines (:class:`LiveEta`).

An ETA is dozens of simulations of the remaining graph, in Python, holding the GIL: done
every two seconds on a big graph it slowed the run it was estimating.  The live ETA is
therefore re-simulated only when enough changed, and never more often than its own cost
allows: after a simulation that took ``c`` seconds, the next one waits at least
``c / ETA_BUDGET`` seconds, so simulating takes at most that share of the run's time
whatever the graph's size.  In between, the last estimate counts down with the clock.
Large estimates are made in the fit's helper process (:mod:`nbflow.predict.fitting`), and
until the full history predictor is worth fitting, the quick estimate
(:mod:`nbflow.predict.quick`) stands in for it.  An estimate made in the helper from the
quick estimate is sent there as a :class:`QuickRecipe` (where the store is, which workflow,
which run to leave out): the helper runs the quick estimate's query itself, so the kernel
does not (tens of ms of a first run's CPU), and it is handed over before the fit is
started, so the helper makes it first rather than after seconds of fitting.

The band shown is ``run.eta()``'s: an estimate of the full predictor is corrected by how
honest the band was on the store's past runs once that correction is worked out (in a
helper process: :mod:`nbflow.predict.eta_scores`); until then, and for the quick estimate,
the simulated band is shown and says so (``Eta.calibrated`` False).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.predict import fitting
from nbflow.predict.eta_scores import band_of
from nbflow.predict.eta_types import Eta
from nbflow.predict.fitting import FIT_BLOBS, fit_pool, fit_pool_running, history_size, live_predictor
from nbflow.predict.inflight import DEFAULT_SAMPLES, TERMINAL, RunSnapshot, eta_of, snapshot

if TYPE_CHECKING:
    from nbflow.predict.model import Predictor

__all__ = ["LiveEta", "QuickRecipe", "live_eta", "run_eta_text"]

_LIVE_LOCK = threading.Lock()  # guards the tables of this module

ETA_BUDGET = 0.02  # the share of a run's time the live ETA may spend simulating
ETA_MIN_EVERY = 2.0  # seconds: an estimate made in the helper is not asked for more often
# ... and one made here (the progress lines, a widget's short run): its cost is measured here
# and kept within ETA_BUDGET, so only this floor is added.  At 2 s, a run of a few seconds got
# one estimate, counted down however fast its tasks then went ("24/25 done, ETA 0.5 s" for
# a last task of 0.1 s).
ETA_MIN_EVERY_HERE = 0.25
ETA_MAX_EVERY = 30.0  # seconds: re-simulated at least this often, even when little changed
ETA_RESIM_DONE = 0.1  # re-simulated once this share of the tasks left at the last one finished
ETA_WORK = 200_000  # task-steps per live ETA (samples x remaining tasks): fewer samples on big graphs
ETA_FIRST_SAMPLES = 5  # the first live estimate is a quick one (its cost is not known yet)
ETA_MAX_FINISHED = 200  # finished tasks a live estimate learns the run's pace from (eta_of)
ETA_GUESS_S_PER_TASK = 5e-5  # what a first estimate costs per task left (~0.1 s for 2 000)
FIT_WORTH_S = 10.0  # a run this long (gone, or left by its estimate) is worth the full fit
_UNSET = object()


@dataclasses.dataclass(frozen=True)
class QuickRecipe:
    """What the helper needs to read ``workflow``'s quick estimate itself: the store's home
    and the run asking (left out of it)."""

    home: str
    workflow: str
    exclude_run: str


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
    :data:`ETA_MAX_EVERY` seconds passed, or the last estimate counted down to nothing with
    tasks still left; and in any case not before ``max(floor,
    cost / ETA_BUDGET)`` seconds after the last one (``cost``: how long that one took;
    ``floor``: :data:`ETA_MIN_EVERY` after an estimate made in the helper process,
    :data:`ETA_MIN_EVERY_HERE` after one made here, whose cost the budget already bounds).
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
        self._quick_recipe: QuickRecipe | None = None  # the quick estimate, to be read in the helper
        self._fit_due = False  # the full fit is to be started once this look is done
        self._made_here = False  # the last estimate was simulated in this process (not the helper)
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
        floor = ETA_MIN_EVERY_HERE if self._made_here else ETA_MIN_EVERY
        if age < max(floor, self.cost / ETA_BUDGET):
            return False
        progressed = self._left - left >= max(1.0, ETA_RESIM_DONE * self._left)
        # counted down to its end with tasks left: it is wrong now, whatever finished since
        ran_out = left > 0 and age >= self.last.remaining_s
        return progressed or ran_out or total != self._total or age >= ETA_MAX_EVERY

    def current(self, patient: bool = False) -> Eta | None:
        """The run's ETA now; None without history (or while its predictor is being fitted).

        ``patient`` (the widget): the first estimate waits until the run has gone for as
        long as the budget asks for its guessed cost (:data:`ETA_GUESS_S_PER_TASK` per task
        left), so a run too short to need an ETA pays nothing for one; and with more than
        :data:`ETA_LOCAL_TASKS` tasks left, or any once the helper runs (:meth:`_far`),
        estimates are computed in the helper process
        (:data:`ETA_IN_PROCESS`): this call hands over a snapshot and returns at once, the
        new estimate shows from a later call.  Without it
        (the headless progress lines, at most nine) the estimate is made in this call."""
        try:
            return self._current(patient)
        finally:
            # the full fit, once wanted, is started after this look handed its estimate over
            # (the helper makes that estimate first, not after the fit)
            if self._fit_due:
                self._fit_due = False
                run = self._run()
                if run is not None:
                    live_predictor(run, start=True)

    def _current(self, patient: bool) -> Eta | None:
        run = self._run()
        if run is None:
            return None
        self._collect()
        now = self.clock()
        counts = run.counts if hasattr(run, "counts") else None
        upgrade = False
        if counts is not None:
            total = sum(counts.values())
            left = total - sum(counts.get(s, 0) for s in TERMINAL)
            if self._pending is not None:  # one estimate at a time
                return self._aged(now, total - left, total) if self.last is not None else None
            if self.last is None and patient:
                started = getattr(run, "started_at", math.nan)
                ran = time.time() - started if started == started else 0.0
                if ran < left * ETA_GUESS_S_PER_TASK / ETA_BUDGET:
                    return None
            remote = patient and ETA_IN_PROCESS and self._far(left) and not self._local
            predictor = self._predictor(run, remote=remote)
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
        left = sum(1 for st in snap.states if st not in TERMINAL)
        if not upgrade and not self.due(left, total, now):
            return self._aged(now, total - left, total)
        self._used = predictor
        samples = self.samples(left, snap.run_elapsed_s)
        if (patient and ETA_IN_PROCESS and self._far(left) and not self._local
                and self._submit(predictor, snap, samples, now)):
            return self._aged(now, total - left, total) if self.last is not None else None
        if isinstance(predictor, QuickRecipe):  # made here after all: the quick estimate read here
            predictor = self._used = self.quick()
            if predictor is None:
                return self._aged(now, total - left, total) if self.last is not None else None
        t0 = self.timer()
        e = eta_of(snap, predictor, samples=samples, max_finished=ETA_MAX_FINISHED)
        self._record(e, max(self.timer() - t0, 0.0), samples, now, left, total)
        self._made_here = True
        return self._band(e)

    @staticmethod
    def _far(left: int) -> bool:
        """Whether an estimate with ``left`` tasks left is made in the helper process: with
        more than :data:`ETA_LOCAL_TASKS`, or with any once the helper runs.  A late estimate
        from the full predictor costs 0.05-0.1 s of CPU; made here it is that much of the
        run's own time, made there it costs the kernel a hand-over (only where no helper was
        started yet is it not worth starting one)."""
        return left > ETA_LOCAL_TASKS or fit_pool_running()

    def _band(self, e: Eta) -> Eta:
        """``e`` with the band ``run.eta()`` would show: corrected by the store's past ETAs
        when it comes from the full predictor and that correction is there (:func:`band_of`,
        which starts working it out, off this process's threads, if nothing is yet); the
        quick estimate's band is the simulated one."""
        run = self._run()
        quick = self._used is self._quick or isinstance(self._used, QuickRecipe)
        if run is None or self._used is None or quick:
            return dataclasses.replace(e, calibrated=False) if e.remaining_s == e.remaining_s else e
        return band_of(run, e)

    def _predictor(self, run: Any, remote: bool = False) -> Any:
        """The full history predictor once it is ready, the quick estimate until then
        (``remote``: the estimate is to be made in the helper, so the quick estimate is sent
        there as its :class:`QuickRecipe`, unless this process already read it).

        The full fit (seconds of CPU on a large history, in the helper process) is only
        started once the run has gone for :data:`FIT_WORTH_S` or its ETA says that much is
        left: a shorter run is estimated from the quick one (:mod:`nbflow.predict.quick`,
        one aggregate query) and never pays for a fit.  It is started at the end of the
        look (:meth:`current`), after the estimate was handed over."""
        full = live_predictor(run, start=False)
        if full is not None:
            return full
        self._fit_due = self.fit_wanted
        if remote and self._quick is _UNSET:
            recipe = self._recipe(run)
            if recipe is not None:
                return recipe
        return self.quick()

    def _recipe(self, run: Any) -> QuickRecipe | None:
        """The run's :class:`QuickRecipe` (one per run, so a later look sees the same one)."""
        if self._quick_recipe is None:
            where = history_size(run)
            if where is not None:
                self._quick_recipe = QuickRecipe(where[0], str(getattr(run, "name", "")),
                                                 str(getattr(run, "id", "")))
        return self._quick_recipe

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
            if isinstance(predictor, QuickRecipe):
                job = fit_pool().submit(_quick_eta_job, predictor, snap, samples, ETA_MAX_FINISHED)
            else:
                job = fit_pool().submit(_eta_job, _predictor_blob(predictor), snap, samples, ETA_MAX_FINISHED)
        except Exception:  # no process to use: estimate here from now on
            self._local = True
            return False
        left = sum(1 for st in snap.states if st not in TERMINAL)
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
        self._made_here = False
        if e is None:  # the helper found no quick estimate: there is none to read here either
            self._quick = None
            return
        self._record(e, cost, samples, at, left, total)

    def _aged(self, now: float, done: int, total: int) -> Eta:
        """The last estimate, counted down by the time since it was made."""
        assert self.last is not None
        e = self._band(self.last)  # (corrected as made, then counted down)
        age = max(now - self.at, 0.0)
        return dataclasses.replace(e, remaining_s=max(e.remaining_s - age, 0.0),
                                   remaining_lo=max(e.remaining_lo - age, 0.0),
                                   remaining_hi=max(e.remaining_hi - age, 0.0), elapsed_s=e.elapsed_s + age,
                                   done=done, total=total)


ETA_IN_PROCESS = True  # the widget's estimates are made in the helper process (LiveEta)
ETA_LOCAL_TASKS = 200  # ... unless this few are left and no helper runs yet (not worth starting one)
_BLOBS: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def _predictor_blob(predictor: Predictor) -> bytes:
    """``predictor`` pickled by value for the helper process (once per predictor)."""
    import cloudpickle

    with _LIVE_LOCK:
        blob = _BLOBS.get(predictor)
    if blob is None:
        with contextlib.suppress(TypeError):
            blob = FIT_BLOBS.get(predictor)  # the bytes it came from the helper as
    if blob is None:
        blob = cloudpickle.dumps(predictor)
        with _LIVE_LOCK:
            _BLOBS[predictor] = blob
    return blob


def _eta_job(blob: bytes, snap: RunSnapshot, samples: int,
             max_finished: int | None) -> tuple[Eta, float, int]:
    """In the helper process: one live estimate, what it took, and where it ran."""
    fitting._background_priority()
    t0 = time.perf_counter()
    e = eta_of(snap, pickle.loads(blob), samples=samples, max_finished=max_finished)
    return e, time.perf_counter() - t0, os.getpid()


_HELPER_QUICK: dict[QuickRecipe, Any] = {}  # in the helper: the quick estimates it read


def _quick_eta_job(recipe: QuickRecipe, snap: RunSnapshot, samples: int,
                   max_finished: int | None) -> tuple[Eta | None, float, int]:
    """In the helper process: one live estimate from the quick estimate, which it reads
    from the store itself (once per recipe); None when the store has none."""
    from nbflow.predict.quick import quick_predictor
    from nbflow.store.history import _require_store

    fitting._background_priority()
    t0 = time.perf_counter()
    if recipe not in _HELPER_QUICK:
        if len(_HELPER_QUICK) > 64:  # (a kernel's runs, one each: kept small)
            _HELPER_QUICK.clear()
        try:
            _HELPER_QUICK[recipe] = quick_predictor(recipe.workflow, exclude_run=recipe.exclude_run,
                                                    store=_require_store(recipe.home))
        except Exception:  # an unreadable store: no quick estimate
            _HELPER_QUICK[recipe] = None
    predictor = _HELPER_QUICK[recipe]
    if predictor is None:
        return None, time.perf_counter() - t0, os.getpid()
    e = eta_of(snap, predictor, samples=samples, max_finished=max_finished)
    return e, time.perf_counter() - t0, os.getpid()


_LIVE_ETAS: weakref.WeakKeyDictionary[Any, LiveEta] = weakref.WeakKeyDictionary()


def live_eta(run: Any) -> LiveEta:
    """The :class:`LiveEta` every live view of ``run`` shares (the progress line, the
    timeline's band and the text progress ask the same one)."""
    with _LIVE_LOCK:
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
    return e.band_text()
