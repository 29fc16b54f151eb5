"""run.eta() on a replayed trace, and nf.forecast() before running."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import numpy as np
import pandas as pd
import pytest
from history_edits import replay

import nbflow as nf
from nbflow.predict import Predictor, load_trace, observations_from_wfformat
from nbflow.predict.eta import ForecastError, eta_of, snapshot
from nbflow.predict.eta_calibration import snapshot_at

DATA = Path(__file__).parent / "data" / "wfcommons"
SCALE = 0.002  # trace seconds -> replay seconds


def _replay(trace, name: str = "replay"):
    tasks = {}
    for c in trace.categories():
        @nf.task(name=c)
        async def work(seconds: float, *deps: object) -> None:
            await anyio.sleep(seconds)
        tasks[c] = work
    refs = {}
    with nf.Workflow(name) as wf:
        for tid in trace.topological_order():
            t = trace.task(tid)
            refs[tid] = tasks[t.category](t.runtime_s * SCALE, *[refs[p] for p in t.parents])
    return wf


def _history_predictor() -> Predictor:
    obs = observations_from_wfformat(DATA / "blast-chameleon-small-001.json")
    for c in ("duration_s", "start_s", "end_s"):
        obs[c] *= SCALE
    return Predictor().fit(obs)


def test_eta_on_a_replayed_trace_shrinks_and_narrows() -> None:
    trace = load_trace(DATA / "blast-chameleon-small-002.json")
    wf = _replay(trace)
    p = _history_predictor()
    run = wf.run(workers=4, cache=False)
    # The run's state at a quarter, half and three quarters done, rebuilt from its timeline
    # set to the trace's durations: snapshots of the live run held measured times, which a
    # busy machine stretches (the band at three quarters then came out wider than at one).
    replay(run.id, {r.key: float(r.args[0]) for r in wf.nodes}, workers=4)
    stored = nf.load_run(run.id)
    tasks = stored.tasks
    row = {k: i for i, k in enumerate(tasks["key"])}
    deps = [[row[d] for d in stored.graph.predecessors(k) if d in row] for k in tasks["key"]]
    ends = sorted(e.timestamp() for e in tasks["end"])
    first = min(s.timestamp() for s in tasks["start"])
    marks = [len(trace) // 4, len(trace) // 2, 3 * len(trace) // 4]
    snaps = [snapshot_at(tasks, deps, ends[m - 1], 4, first) for m in marks]
    etas = [eta_of(s, p) for s in snaps]
    assert all(e.done >= m for e, m in zip(etas, marks, strict=True))
    assert etas[0].done < etas[1].done < etas[2].done
    for e in etas:
        assert e.remaining_lo <= e.remaining_s <= e.remaining_hi
        assert e.no_history == []
    assert etas[0].remaining_s > etas[1].remaining_s > etas[2].remaining_s > 0
    assert etas[2].remaining_hi - etas[2].remaining_lo < etas[0].remaining_hi - etas[0].remaining_lo
    finished = run.eta(predictor=p)
    assert finished.remaining_s == 0 and finished.done == len(trace)
    assert "ETA" in str(etas[0])


def test_eta_without_history_is_unknown() -> None:
    @nf.task
    def one() -> int:
        return 1

    with nf.Workflow("fresh") as wf:
        one()
    run = wf.run(cache=False)
    snap = snapshot(run)
    # Pretend nothing finished yet: no predictor, no estimate.
    snap = type(snap)(**{**snap.__dict__, "states": ["pending"] * len(snap.states)})
    e = eta_of(snap, None)
    assert math.isnan(e.remaining_s) and "unknown" in str(e)


def _fitted_on(laws: dict[str, float]) -> Predictor:
    rng = np.random.default_rng(0)
    rows = []
    for r in range(3):
        for name, sec in laws.items():
            for i in range(10):
                d = sec * np.exp(rng.normal(0, 0.02))
                rows.append({"instance": f"r{r}", "task": name, "duration_s": d,
                             "start_s": float(i), "end_s": float(i) + d})
    return Predictor().fit(pd.DataFrame(rows))


def test_forecast_per_worker_count_with_knee_critical_path_and_unknown_tasks() -> None:
    @nf.task
    def prep() -> int:
        return 1

    @nf.task
    def crunch(x: int, i: int) -> int:
        return x + i

    @nf.task
    def brand_new(*xs: int) -> int:
        return sum(xs)

    p = _fitted_on({"prep": 1.0, "crunch": 2.0})
    with nf.Workflow("fc") as wf:
        a = prep()
        parts = [crunch(a, i) for i in range(8)]
        brand_new(*parts)
    fc = nf.forecast(wf, workers=[1, 2, 4, 8, 16], predictor=p)
    t = fc.table.set_index("workers")["makespan_s"]
    # 1 s of prep, then 8 x 2 s of crunch over the workers (brand_new: the global prior).
    assert t[1] == pytest.approx(1 + 16 + t[16] - 3, rel=0.1)
    assert t[1] > t[2] > t[4] > t[8]
    assert t[8] == pytest.approx(t[16], rel=0.02)  # more than 8 workers cannot help
    assert fc.recommended_workers == 8
    assert fc.critical_path[0] == a.key and fc.critical_path[1].startswith("crunch")
    assert fc.no_history == ["brand_new"]
    assert (fc.table["makespan_lo"] <= fc.table["makespan_s"]).all()
    assert (fc.table["makespan_s"] <= fc.table["makespan_hi"]).all()
    assert "recommended workers 8" in str(fc)


def test_forecast_from_the_store_history_and_errors() -> None:
    @nf.task
    def step(x: int) -> int:
        return x + 1

    with nf.Workflow("hist") as wf:
        step(step(1))
    with pytest.raises(ForecastError, match="no history"):
        nf.forecast(wf)
    with pytest.raises(nf.NbflowError, match="workers"):
        nf.forecast(wf, workers=[0], predictor=_fitted_on({"step": 1.0}))
    wf.run(cache=False)
    fc = nf.forecast(wf, workers=[1, 2])
    assert fc.no_history == [] and fc.tasks == 2
    assert len(fc.critical_path) == 2


def test_forecast_takes_one_worker_count_or_a_list_and_refuses_anything_else_by_name() -> None:
    @nf.task
    def step(x: int) -> int:
        return x + 1

    with nf.Workflow("counts") as wf:
        step(step(1))
    p = _fitted_on({"step": 1.0})
    assert nf.forecast(wf, workers=3, predictor=p).table["workers"].tolist() == [3]
    assert nf.forecast(wf, workers=np.int64(2), predictor=p).table["workers"].tolist() == [2]
    assert nf.forecast(wf, workers=None, predictor=p).table["workers"].tolist() == [1, 2, 4, 8, 16]
    text = str(nf.forecast(wf, workers=[1, 2], predictor=p))
    assert "   1 worker:  " in text and "   2 workers: " in text  # (not "1 workers")
    # a string is not read as the counts 1 and 6, a fraction is not rounded down
    for bad in ("16", [2.5], 0, [True], [], [4, -1]):
        with pytest.raises(ForecastError, match=r"workers must be a whole number >= 1.*e\.g\. \[1, 2, 4\]"):
            nf.forecast(wf, workers=bad, predictor=p)
    for bad_samples in (0, -3, 2.5):
        with pytest.raises(ForecastError, match="samples must be a whole number >= 1"):
            nf.forecast(wf, workers=[1], predictor=p, samples=bad_samples)


def test_forecast_counts_a_maps_items_as_in_its_last_run_and_says_so() -> None:
    @nf.task
    def listing(n: int) -> list[int]:
        return list(range(n))

    @nf.task
    def item(i: int) -> int:
        return i

    @nf.task
    def agg(xs: list[int]) -> int:
        return sum(xs)

    with nf.Workflow("fc-map") as wf:
        agg(item.map(listing(12)))
    p = _fitted_on({"listing": 0.1, "item": 1.0, "agg": 0.1})
    before = nf.forecast(wf, workers=[1], predictor=p)
    assert before.maps == {"item.map-0": None} and before.tasks == 2
    assert "not counted" in str(before) and "item.map-0" in str(before)
    wf.run(cache=False)  # the map had 12 items
    fc = nf.forecast(wf, workers=[1, 4], predictor=p)
    assert fc.maps == {"item.map-0": 12} and fc.tasks == 14
    t = fc.table.set_index("workers")["makespan_s"]
    assert t[1] == pytest.approx(0.1 + 12 * 1.0 + 0.1, rel=0.15)  # the items run one by one
    assert t[4] == pytest.approx(0.1 + 3 * 1.0 + 0.1, rel=0.15)  # ... or four at a time
    assert "item.map-0 (12 items, as in its last run)" in str(fc)


def test_eta_follows_the_pace_of_the_runs_finished_tasks() -> None:
    from nbflow.predict.eta import RunSnapshot, run_pace

    p = _fitted_on({"step": 1.0})
    n = 20
    # A chain of 20 calls on one worker; the first 10 took 2 s each where history says 1 s.
    snap = RunSnapshot(
        keys=[f"step-{i}" for i in range(n)], names=["step"] * n, kinds=["task"] * n,
        deps=[[i - 1] if i else [] for i in range(n)],
        states=["completed"] * 10 + ["pending"] * 10, elapsed=[math.nan] * n,
        durations=[2.0] * 10 + [math.nan] * 10, input_bytes=[math.nan] * n, priorities=[0] * n,
        workers=1, taken_at=0.0, run_elapsed_s=20.0,
    )
    paced = eta_of(snap, p).remaining_s
    plain = eta_of(snap, p, pace=False).remaining_s
    truth = 10 * 2.0  # if the rest keeps the pace
    assert plain < paced <= truth * 1.05
    assert abs(paced - truth) < abs(plain - truth)
    assert run_pace(p, None) == 1.0


def test_an_eta_says_which_tasks_it_guessed_without_their_own_history() -> None:
    from nbflow.predict.eta import Eta

    e = Eta(4.0, 3.0, 5.0, 1.0, 2, 10, no_history=["brand_new"])
    assert str(e).endswith("2/10 tasks done; guessed without history of their own: brand_new")
    many = Eta(4.0, 3.0, 5.0, 1.0, 2, 10, no_history=[f"t{i}" for i in range(7)])
    assert str(many).endswith("t0, t1, t2, t3, t4 (+2)")
    assert "guessed" not in str(Eta(4.0, 3.0, 5.0, 1.0, 2, 10))
