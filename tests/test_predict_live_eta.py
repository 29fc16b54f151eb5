"""The live ETA is re-simulated only when it is due, and large histories are fitted elsewhere.

:class:`nbflow.predict.eta.LiveEta` is driven here by a fake clock and a fake run (a chain
of task nodes whose states the test sets), with the simulator wrapped to count its calls:
nothing changed -> no simulation (the last estimate counts down); enough tasks finished,
tasks added, or a long time passed -> a new one; and a simulation that was expensive pushes
the next one further out.  A large history is fitted in a separate process, not in the
caller's (also in a real kernel, where that process survives the kernel's interrupt).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import nbflow as nf
from nbflow.predict import Predictor
from nbflow.predict import fitting as fit_mod
from nbflow.predict import history as history_mod
from nbflow.predict import inflight as inflight_mod
from nbflow.predict import live as live_mod


@dataclass
class Node:
    key: str
    name: str = "step"
    kind: str = "task"
    deps: list[int] = field(default_factory=list)
    task: Any = None


class FakeRun:
    """What a LiveEta reads of a run: nodes and their states, counts, workers, start time."""

    def __init__(self, n: int) -> None:
        self.id = "fake"
        self.nodes = [Node(f"step-{i}", deps=[i - 1] if i else []) for i in range(n)]
        self.state = ["pending"] * n
        self.workers = 2
        self.started_at = time.time()

    def finish(self, k: int) -> None:
        """The first ``k`` pending tasks complete."""
        for i in [i for i, s in enumerate(self.state) if s == "pending"][:k]:
            self.state[i] = "completed"

    def add(self, k: int) -> None:
        n = len(self.nodes)
        self.nodes += [Node(f"step-{n + j}", deps=[n + j - 1]) for j in range(k)]
        self.state += ["pending"] * k

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.state:
            out[s] = out.get(s, 0) + 1
        return out

    def state_now(self) -> dict[str, list[Any]]:
        n = len(self.nodes)
        return {"nodes": list(self.nodes), "state": list(self.state), "start": [math.nan] * n,
                "duration": [0.5 if s == "completed" else math.nan for s in self.state],
                "input_bytes": [1.0] * n, "level": [float(n - i) for i in range(n)]}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _predictor() -> Predictor:
    obs = pd.DataFrame({"instance": [f"r{i % 3}" for i in range(30)], "task": "step",
                        "key": [f"step-{i}" for i in range(30)], "input_bytes": 1.0, "output_bytes": 1.0,
                        "duration_s": [0.4 + 0.01 * (i % 7) for i in range(30)], "start_s": 0.0})
    return Predictor().fit(obs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = inflight_mod.simulate

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(inflight_mod, "simulate", counting)
    return calls


def _live(run: FakeRun, clock: Clock, timer: Any = None) -> live_mod.LiveEta:
    fit_mod.PREDICTORS[run] = _predictor()  # as if live_predictor had fitted it
    return live_mod.LiveEta(run, clock=clock, timer=timer or clock)


def test_eta_is_not_simulated_again_when_nothing_relevant_changed(counted: list[int]) -> None:
    run, clock = FakeRun(40), Clock()
    live = _live(run, clock)
    first = live.current()
    assert first is not None and live.simulations == 1
    sims = len(counted)
    assert sims == live_mod.ETA_FIRST_SAMPLES  # the first estimate is a quick one
    clock.t = 5.0  # time passed, no task finished
    aged = live.current()
    assert live.simulations == 1 and len(counted) == sims  # no simulation
    assert aged is not None and aged.remaining_s == pytest.approx(max(first.remaining_s - 5.0, 0.0))
    clock.t = 6.0
    run.finish(1)  # 1 of 40 left: less than a tenth of them
    live.current()
    assert live.simulations == 1 and len(counted) == sims


def test_eta_is_simulated_again_when_enough_finished_or_tasks_were_added(counted: list[int]) -> None:
    run, clock = FakeRun(40), Clock()
    live = _live(run, clock)
    live.current()
    run.finish(4)  # a tenth of the 40 left
    clock.t = live_mod.ETA_MIN_EVERY_HERE / 2  # ... but sooner than the floor after the last one
    live.current()
    assert live.simulations == 1
    clock.t = live_mod.ETA_MIN_EVERY_HERE + 0.01
    e = live.current()
    assert live.simulations == 2 and e is not None and e.done == 4
    run.add(3)  # a map expanded: the graph grew
    clock.t += live_mod.ETA_MIN_EVERY_HERE
    live.current()
    assert live.simulations == 3
    clock.t += live_mod.ETA_MAX_EVERY  # nothing changed, but a long time passed
    live.current()
    assert live.simulations == 4


def test_an_estimate_counted_down_to_nothing_with_tasks_left_is_made_again(counted: list[int]) -> None:
    run, clock = FakeRun(40), Clock()
    live = _live(run, clock)
    first = live.current()
    assert first is not None and live_mod.ETA_MIN_EVERY < first.remaining_s < live_mod.ETA_MAX_EVERY - 1
    clock.t = first.remaining_s + 0.5  # nothing finished, and the estimate has run out
    e = live.current()
    assert live.simulations == 2 and e is not None and e.remaining_s > 0


def test_an_expensive_simulation_pushes_the_next_one_out(counted: list[int]) -> None:
    run, clock = FakeRun(40), Clock()
    cost = 1.0  # every simulation "takes" a second on the timer

    class Timer:
        def __init__(self) -> None:
            self.t = 0.0

        def __call__(self) -> float:
            self.t += cost  # read before and after a simulation: it "took" cost seconds
            return self.t

    live = _live(run, clock, timer=Timer())
    live.current()
    assert live.cost == pytest.approx(cost)
    run.finish(20)  # plenty finished
    clock.t = cost / live_mod.ETA_BUDGET - 1.0  # but the budget says: not yet
    live.current()
    assert live.simulations == 1
    clock.t = cost / live_mod.ETA_BUDGET + 1.0
    live.current()
    assert live.simulations == 2


def test_later_estimates_draw_as_many_samples_as_the_budget_affords() -> None:
    live = live_mod.LiveEta(FakeRun(40))
    assert live.samples(40, 100.0) == live_mod.ETA_FIRST_SAMPLES  # cost unknown yet
    live._per_sample = 1e-6  # cheap simulations: the full count
    assert live.samples(40, 100.0) == live_mod.DEFAULT_SAMPLES
    assert live.samples(100_000, 100.0) == live_mod.ETA_FIRST_SAMPLES  # capped by ETA_WORK on big graphs
    live._per_sample = 0.05  # 2% of 100 s affords 40 of them; of 10 s, only the minimum
    assert live.samples(40, 100.0) == 40 and live.samples(40, 10.0) == live_mod.ETA_FIRST_SAMPLES


def test_a_patient_first_estimate_waits_for_a_run_long_enough_to_need_it(
        counted: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_mod, "ETA_GUESS_S_PER_TASK", 0.01)  # 40 tasks: a 0.4 s guess, 20 s of run
    monkeypatch.setattr(live_mod, "ETA_IN_PROCESS", False)  # estimated here, so it can be counted
    run, clock = FakeRun(40), Clock()
    live = _live(run, clock)
    assert live.current(patient=True) is None and counted == []  # the run is young: no estimate
    run.started_at = time.time() - 30.0
    assert live.current(patient=True) is not None and live.simulations == 1
    young = FakeRun(40)
    assert _live(young, Clock()).current() is not None  # the progress lines' first ask gets one at once


def test_the_widgets_estimates_are_made_in_another_process(
        counted: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    fit_mod.drop_fit_pool()  # (no helper started yet: one is not started for a few tasks)
    small = FakeRun(40)
    small.started_at = time.time() - 60.0
    assert _live(small, Clock()).current(patient=True) is not None  # few tasks left: made here, at once
    assert counted
    counted.clear()
    monkeypatch.setattr(live_mod, "ETA_LOCAL_TASKS", 10)  # (40 tasks count as many now)
    run, clock = FakeRun(40), Clock()
    run.started_at = time.time() - 60.0  # long enough to need an ETA
    live = _live(run, clock)
    assert live.current(patient=True) is None  # handed over: this call does not wait for it
    deadline = time.monotonic() + 120
    e = None
    while e is None and time.monotonic() < deadline:
        time.sleep(0.05)
        e = live.current(patient=True)
    assert e is not None and e.remaining_s > 0 and live.simulations == 1
    assert live.pids and live.pids[0] != os.getpid()
    assert counted == []  # not one simulation ran in this process
    clock.t = 1.0
    assert live.current(patient=True) is not None and live.simulations == 1  # not due: the last one
    # an estimate from the helper costs the kernel a hand-over its budget does not see: the
    # helper is asked again only ETA_MIN_EVERY after, however much finished
    run.finish(20)
    live.cost = 0.0  # (as if the helper's estimate was cheap: its own cost is not what is tested)
    clock.t = live_mod.ETA_MIN_EVERY - 0.5
    assert live.current(patient=True) is not None and live._pending is None and live.simulations == 1
    clock.t = live_mod.ETA_MIN_EVERY + 0.01
    live.current(patient=True)
    assert live._pending is not None  # handed over again


def test_an_estimate_made_here_follows_a_short_run_instead_of_counting_down(counted: list[int]) -> None:
    """A progress line's estimate is made in the kernel, its cost kept within the budget: a
    few-second run whose tasks go faster than predicted gets a new estimate as they finish,
    not one estimate from its start counted down by the clock (it said "24/25 done, ETA
    0.5 s" with a 0.1 s task left)."""
    assert live_mod.ETA_MIN_EVERY_HERE < live_mod.ETA_MIN_EVERY
    run, clock = FakeRun(10), Clock()
    live = _live(run, clock)
    first = live.current()
    assert first is not None and first.done == 0
    run.finish(9)  # all but the last, much sooner than predicted
    clock.t = live_mod.ETA_MIN_EVERY_HERE + 0.01  # (well within ETA_MIN_EVERY)
    e = live.current()
    assert live.simulations == 2 and e is not None and e.done == 9
    assert e.remaining_s < first.remaining_s - clock.t  # not the first estimate counted down


def test_the_views_of_a_run_share_one_live_eta() -> None:
    run = FakeRun(3)
    assert live_mod.live_eta(run) is live_mod.live_eta(run)


@nf.task
def step(i: int) -> int:
    return i + 1


def _run(n: int = 30) -> nf.Run:
    with nf.Workflow("live-eta-fit") as wf:
        for i in range(n):
            step(i)
    return wf.run(cache=False)


def test_a_large_history_is_fitted_in_another_process_not_the_callers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _run()  # history
    monkeypatch.setattr(fit_mod, "SYNC_FIT_ROWS", 0)  # treat it as large
    monkeypatch.setattr(fit_mod, "_STORE_FITS", {})
    in_caller: list[int] = []
    real = fit_mod.default_predictor

    def watched(exclude_run: str | None = None, home: object = None) -> object:
        in_caller.append(threading.get_ident())
        return real(exclude_run=exclude_run, home=home)

    monkeypatch.setattr(fit_mod, "default_predictor", watched)  # (only this process sees it)
    read: list[int] = []
    real_history = history_mod.history

    def reading(*a: Any, **k: Any) -> Any:
        read.append(1)
        return real_history(*a, **k)

    monkeypatch.setattr(history_mod, "history", reading)  # the store's rows, read in this process
    sent: list[tuple[Any, ...]] = []
    pool = fit_mod.fit_pool()
    real_submit = pool.submit

    def submit(fn: Any, *args: Any, **kw: Any) -> Any:
        sent.append(args)
        return real_submit(fn, *args, **kw)

    monkeypatch.setattr(pool, "submit", submit)
    second = _run()
    before = len(fit_mod.fit_pids())
    assert fit_mod.live_predictor(second) is None  # the view does not wait
    ready = fit_mod.live_predictor(second, wait=True)
    assert ready is not None and "step" in ready.families  # it came back from the other process
    assert ready.predict(pd.DataFrame({"task": ["step"], "input_bytes": [8.0]}))["source"][0] == "history"
    pids = fit_mod.fit_pids()[before:]
    assert len(pids) == 1 and pids[0] != os.getpid()
    assert in_caller == []  # no fit ran in this process, on any thread
    assert read == []  # nor was the history read here: the helper reads the store itself
    # what went to the helper is where the store is and which run to leave out, no rows
    assert sent == [(str(fit_mod._history_rows()[0]), second.id)]


def test_the_first_estimate_comes_before_the_fit_and_a_short_run_starts_none(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _run()  # history of the workflow "live-eta-fit": 30 calls of `step`
    monkeypatch.setattr(fit_mod, "SYNC_FIT_ROWS", 0)  # treat it as large
    monkeypatch.setattr(fit_mod, "_STORE_FITS", {})
    monkeypatch.setattr(live_mod, "ETA_IN_PROCESS", False)  # (estimates made here, to look at them)
    # "short" against the history's measured durations, whatever the machine's speed (10 s
    # was not: on a busy machine the 30 recorded calls took long enough for the quick
    # estimate of 40 to say 19 s, and the run counted as long)
    monkeypatch.setattr(live_mod, "FIT_WORTH_S", 1e6)
    gate = threading.Event()
    fits: list[str] = []
    fitted = _predictor()

    def slow_fit(home: str, exclude_run: str | None = None) -> Predictor:
        fits.append(home)
        gate.wait(60)  # the fit takes its time
        return fitted

    monkeypatch.setattr(fit_mod, "fit_in_process", slow_fit)
    short = FakeRun(40)
    short.name = "live-eta-fit"  # type: ignore[attr-defined]
    e = live_mod.LiveEta(short, clock=Clock()).current()
    assert e is not None and 0 < e.remaining_s < live_mod.FIT_WORTH_S  # from the quick estimate
    assert fits == []  # a run this short never pays for the full fit
    long_run = FakeRun(40)
    long_run.name = "live-eta-fit"  # type: ignore[attr-defined]
    long_run.started_at = time.time() - 2 * live_mod.FIT_WORTH_S  # long enough to want the fit
    clock = Clock()
    live = live_mod.LiveEta(long_run, clock=clock)
    first = live.current()
    assert first is not None and not math.isnan(first.remaining_s)  # at once, before the fit
    deadline = time.monotonic() + 30
    while not fits and time.monotonic() < deadline:
        time.sleep(0.01)
        live.current()
    assert len(fits) == 1 and long_run not in fit_mod.PREDICTORS  # started, not arrived yet
    gate.set()
    while long_run not in fit_mod.PREDICTORS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fit_mod.PREDICTORS.get(long_run) is fitted
    clock.t = 0.5  # not due by the clock, but the full predictor replaces the quick one at once
    assert live.current() is not None and live.simulations == 2 and live._used is fitted
    later = FakeRun(40)  # a short run after it: the kernel's fit of this store is used, for free
    later.name = "live-eta-fit"  # type: ignore[attr-defined]
    again = live_mod.LiveEta(later, clock=Clock())
    assert again.current() is not None and again._used is fitted and len(fits) == 1


def test_in_a_kernel_the_fit_runs_in_a_helper_process_that_ignores_interrupts(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "notebooks"))
    import nbharness as h

    nb = h.notebook([
        "import os, signal, nbflow as nf\nfrom nbflow.predict import fitting as eta\n"
        "eta.SYNC_FIT_ROWS = 0  # as if large",
        "@nf.task\ndef step(i):\n    return i",
        "%%workflow k --no-cache --quiet\nparts = [step(i) for i in range(30)]",
        "%%workflow k --no-cache --quiet\nparts = [step(i) for i in range(30)]",
        "r = nf.last_run()\np = eta.live_predictor(r, wait=True)\n"
        "print('fitted', p is not None and 'step' in p.families)\n"
        "print('elsewhere', eta.fit_pids()[-1] != os.getpid())\n"
        "os.kill(eta.fit_pids()[-1], signal.SIGINT)  # what interrupting the kernel's group does",
        "import time\ntime.sleep(0.5)\neta._STORE_FITS.clear()\n"
        "print('again', eta.fit_in_process(str(eta._history_rows()[0])) is not None)\n"
        "print('same helper', eta.fit_pids()[-1] == eta.fit_pids()[-2])",
    ])
    h.execute(nb, tmp_path)
    h.assert_no_errors(nb)
    assert "fitted True" in h.text(nb.cells[4]) and "elsewhere True" in h.text(nb.cells[4])
    out = h.text(nb.cells[5])
    assert "again True" in out and "same helper True" in out  # the interrupt did not kill it


def test_a_fit_that_cannot_be_read_shuts_its_helper_process_down(monkeypatch: pytest.MonkeyPatch) -> None:
    _run()  # history
    home = str(fit_mod._history_rows()[0])
    pool = fit_mod.fit_pool()
    assert pool.submit(os.getpid).result() != os.getpid()  # the helper is up
    helpers = list(pool._processes.values())  # type: ignore[attr-defined]
    assert helpers

    def unreadable(blob: bytes) -> Any:
        raise ValueError("cannot read this fit")

    monkeypatch.setattr(fit_mod, "pickle", types.SimpleNamespace(loads=unreadable))
    predictor = fit_mod.fit_in_process(home)
    assert predictor is not None and "step" in predictor.families  # fitted here instead
    assert fit_mod.fit_pids()[-1] == os.getpid()
    assert fit_mod._POOL is None  # not used again...
    for proc in helpers:  # ...and not left running: shut down
        assert _ended(proc)


def _ended(proc: Any, timeout: float = 60.0) -> bool:
    """Whether the helper process ``proc`` ended (within ``timeout``), and was reaped.

    Not ``proc.join(); proc.is_alive()``: the pool's own manager thread joins its processes
    too, and when its ``waitpid`` reaps the helper first, this thread's gets ECHILD and
    ``is_alive()`` says True until that thread (waiting for the GIL on a busy machine) has
    stored the exit code: the check failed so under CPU stress, within seconds of a helper
    that had ended.  The process's sentinel (its end of a pipe, closed when it exits) says
    it ended whoever reaps it; the exit code, polled, that it was reaped."""
    from multiprocessing.connection import wait

    if not wait([proc.sentinel], timeout):
        return False
    deadline = time.monotonic() + timeout
    while proc.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc.exitcode is not None
