"""Live views and a large history: the fit is bounded, shared, and never blocks a view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.predict import fitting as fit_mod
from nbflow.predict.model import _same_finished_sets


@nf.task
def step(i: int) -> int:
    return i + 1


def _run(n: int = 30) -> nf.Run:
    with nf.Workflow("live-fit") as wf:
        for i in range(n):
            step(i)
    return wf.run(cache=False)


def test_recent_history_keeps_the_newest_runs_per_task_and_spreads_calls() -> None:
    rows = []
    for r in range(30):  # 30 runs of task a (300 calls each), 2 runs of task b
        for k in range(300):
            rows.append({"task": "a", "run_id": f"r{r:02d}", "run_start": float(r),
                         "input_bytes": float(k), "duration_s": 1.0})
    for r in range(2):
        rows.append({"task": "b", "run_id": f"b{r}", "run_start": float(r),
                     "input_bytes": 1.0, "duration_s": 1.0})
    h = pd.DataFrame(rows)
    kept = fit_mod.recent_history(h, runs=20, rows=200)
    a = kept[kept["task"] == "a"]
    assert sorted(a["run_id"].unique()) == [f"r{r:02d}" for r in range(10, 30)]  # the newest 20
    assert a.groupby("run_id").size().max() == 200
    # evenly spread over the sizes, smallest and largest included
    sizes = a[a["run_id"] == "r29"]["input_bytes"]
    assert sizes.min() == 0.0 and sizes.max() == 299.0
    assert len(kept[kept["task"] == "b"]) == 2  # a task with little history keeps all of it


def test_replay_checkpoints_never_show_a_task_the_future() -> None:
    rng = np.random.default_rng(3)
    start = rng.uniform(0, 100, 500)
    end = start + rng.uniform(0.1, 5, 500)
    full = _same_finished_sets(start, end)
    bounded = _same_finished_sets(start, end, max_sets=16)
    assert len(full) > 16 and len(bounded) <= 16
    seen = np.zeros(500, dtype=bool)
    for queries, finished in bounded:
        seen[queries] = True
        for q in queries:  # everything it sees finished before it started
            assert np.all(end[finished] <= start[q])
    assert seen.all()  # every task is still a query


def test_a_large_history_is_fitted_in_the_background_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    _run()  # history
    monkeypatch.setattr(fit_mod, "SYNC_FIT_ROWS", 0)  # treat it as large
    monkeypatch.setattr(fit_mod, "_STORE_FITS", {})
    monkeypatch.setattr(fit_mod, "REFIT_MIN_AGE_S", 0.0)
    monkeypatch.setattr(fit_mod, "FIT_IN_PROCESS", False)  # fitted here, so the fits can be counted
    fits: list[str | None] = []
    real = fit_mod.default_predictor

    def counting(exclude_run: str | None = None, home: object = None) -> object:
        fits.append(exclude_run)
        return real(exclude_run=exclude_run)

    monkeypatch.setattr(fit_mod, "default_predictor", counting)
    second = _run()
    first_look = fit_mod.live_predictor(second)  # starts the fit, does not wait for it
    ready = fit_mod.live_predictor(second, wait=True)
    assert ready is not None and "step" in ready.families
    assert first_look is None or first_look is ready
    assert fits == [second.id]
    third = _run()  # history grew by 50% (30 -> 60 rows... of which the new run's are left out)
    assert fit_mod.live_predictor(third, wait=True) is not None
    assert len(fits) == 2  # grew more than REFIT_GROWTH: fitted again
    monkeypatch.setattr(fit_mod, "REFIT_MIN_AGE_S", 3600.0)  # grew 33% again, but the fit is young
    fourth = _run()
    assert fit_mod.live_predictor(fourth, wait=True) is fit_mod.live_predictor(third)
    assert len(fits) == 2  # shared: no new fit


def test_a_later_run_takes_the_shared_fit_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel's later run on a large history: the fit its earlier run made is still good,
    # so its views have the full predictor from their first look (no background fit to
    # start, no quick estimate to read meanwhile).
    _run()
    monkeypatch.setattr(fit_mod, "SYNC_FIT_ROWS", 0)  # treat it as large
    monkeypatch.setattr(fit_mod, "_STORE_FITS", {})
    monkeypatch.setattr(fit_mod, "FIT_IN_PROCESS", False)
    earlier = _run()
    shared = fit_mod.live_predictor(earlier, wait=True)
    assert shared is not None
    later = _run()
    assert fit_mod.live_predictor(later) is shared
    assert id(later) not in fit_mod._FITTING
    fit_mod.wait_for_fits()


def test_a_snapshot_reads_the_graphs_fixed_parts_once_per_node_count() -> None:
    from nbflow.predict.inflight import snapshot

    run = _run(8)
    a, b = snapshot(run), snapshot(run)
    assert a.keys == [r.key for r in run.nodes] and a.deps == [list(r.deps) for r in run.nodes]
    assert b.keys is a.keys and b.deps is a.deps and b.priorities is a.priorities  # not read again
    assert b.states is not a.states  # what changes is copied every time


class _Fitted:
    """A stand-in for a fitted predictor (weakly referable, picklable)."""

    def __init__(self, families: dict[str, int]) -> None:
        self.families = families


def test_a_fit_from_the_helper_goes_back_to_it_as_the_bytes_it_came_as(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    import cloudpickle

    from nbflow.predict import live as live_mod

    blob = cloudpickle.dumps(_Fitted({"step": 1}))

    class Pool:
        def submit(self, fn: object, *args: object) -> concurrent.futures.Future[tuple[bytes, int]]:
            done: concurrent.futures.Future[tuple[bytes, int]] = concurrent.futures.Future()
            done.set_result((blob, 12345))
            return done

    monkeypatch.setattr(fit_mod, "FIT_IN_PROCESS", True)
    monkeypatch.setattr(fit_mod, "fit_pool", lambda: Pool())
    predictor = fit_mod.fit_in_process("somewhere")
    assert isinstance(predictor, _Fitted)

    def pickled_again(obj: object) -> bytes:
        raise AssertionError("the predictor was pickled again in the kernel")

    monkeypatch.setattr(cloudpickle, "dumps", pickled_again)
    assert live_mod._predictor_blob(predictor) == blob  # type: ignore[arg-type]
