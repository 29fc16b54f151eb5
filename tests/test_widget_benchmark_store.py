"""``benchmarks/widget.py`` runs every sample on a store of its own, never the caller's.

Its figures depend on the history in the store (the watched runs predict from it), so they
are only reproducible when the store is chosen by the benchmark: an empty one, or a fresh
copy of a store seeded with a known number of rows.  Here the benchmark's helpers run with
no ``NBFLOW_HOME`` in a directory holding a ``.nbflow/`` (where a run would otherwise
write): nothing lands there nor in the repository's ``.nbflow/``, and the seeded store keeps
exactly the rows it was seeded with.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import comm
import pytest

REPO = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    sys.path.insert(0, str(REPO / "benchmarks"))  # (it imports _harness from there)
    spec = importlib.util.spec_from_file_location("bench_widget", REPO / "benchmarks" / "widget.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _listing(d: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(d)), p.stat().st_mtime_ns) for p in d.rglob("*")) if d.exists() else []


def test_the_benchmark_samples_on_its_own_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench()
    monkeypatch.setattr(comm, "create_comm", bench.CountingComm)
    cwd = tmp_path / "cwd"
    (cwd / ".nbflow").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    repo_before = _listing(REPO / ".nbflow")

    seed = tmp_path / "seed"
    rows = bench.seed_store(str(seed), 60, 24, None)
    assert rows >= 60
    res = bench.overhead("noop", 24, None, 1, {"fresh": None, "history": str(seed)})
    for label in ("fresh", "history"):
        assert res[label]["plain_s"] > 0 and res[label]["watched_s"] > 0
        assert res[label]["messages_per_run"] > 0  # the watched runs had a widget

    with bench.sample_store(str(seed)) as copy:  # a copy per sample: the seed itself is untouched
        assert Path(copy) != seed and os.environ["NBFLOW_HOME"] == copy
        assert bench.history_rows() == rows
    with bench._harness.nbflow_home(str(seed)):
        assert bench.history_rows() == rows
    assert "NBFLOW_HOME" not in os.environ
    assert _listing(cwd / ".nbflow") == []  # nothing written where a store-less run would write
    assert _listing(REPO / ".nbflow") == repo_before


def test_the_cold_case_fits_during_the_watched_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--fit-worth-s 0``: the first watched run on a large history starts the full fit
    during the run (in the helper process), and the sample waits for it before the next one
    (a short run used to end before its patient ETA ever asked for a predictor: no fit).

    The fit starts at the widget's first look while the run is running; a 24-task no-op run
    can end before that look on a busy machine (it did, under CPU stress: no fit, and no
    product fault).  So each watched run's last task waits until the live ETA has asked for
    the fit (or two minutes, and then the count below fails): the run is still going at its
    first look whatever the machine's speed, and a fit that is never asked for still fails."""
    import asyncio
    import dataclasses
    import threading

    from nbflow.predict import fitting, live

    bench = _bench()
    monkeypatch.setattr(comm, "create_comm", bench.CountingComm)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NBFLOW_HOME", raising=False)
    monkeypatch.setattr(live, "FIT_WORTH_S", live.FIT_WORTH_S)  # (restored afterwards)
    # a first estimate guessed so costly that a patient view would never ask for it in
    # this short run (as 2 000 tasks in a ~1.5 s quiet sample): set_fit_worth must lift it
    monkeypatch.setattr(live, "ETA_GUESS_S_PER_TASK", 10.0)
    monkeypatch.setattr(fitting, "SYNC_FIT_ROWS", 10)  # 60 rows count as a large history
    seed = tmp_path / "seed"
    bench.seed_store(str(seed), 60, 24, None)  # (before the gate: the seeding runs are plain)

    watching, fit_asked = threading.Event(), threading.Event()
    asks: list[bool] = []

    def asking(run: Any, wait: bool = False, start: bool = True) -> Any:
        if start:
            asks.append(True)
            fit_asked.set()
        return fitting.live_predictor(run, wait=wait, start=start)

    real_watched, sink = bench.run_watched, bench.noop_sink.spec

    def run_watched(wf: Any, workers: int | None) -> Any:
        fit_asked.clear()
        watching.set()
        try:
            return real_watched(wf, workers)
        finally:
            watching.clear()

    async def gated_sink(xs: list[int]) -> int:
        if watching.is_set():  # (a plain run has no view to ask: it is not held)
            await asyncio.to_thread(fit_asked.wait, 120)
        return await sink.fn(xs)

    monkeypatch.setattr(live, "live_predictor", asking)
    monkeypatch.setattr(bench, "run_watched", run_watched)
    monkeypatch.setattr(bench.noop_sink, "spec", dataclasses.replace(sink, fn=gated_sink))
    bench.set_fit_worth(0.0)
    res = bench.overhead("noop", 24, None, 1, {"history-cold": str(seed)})
    assert asks  # the live ETA asked for the fit while a watched run was going...
    assert res["history-cold"]["fits_per_watched_run"] == 1  # ...and the sample's run fitted once
    assert fitting.fit_pids()[-1] != os.getpid()  # fitted in the helper process
