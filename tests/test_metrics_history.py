"""Task metrics (CPU time, peak RSS, input features) in run.tasks, the journal and nf.history."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.engine.metrics import input_features
from nbflow.predict import Predictor


def _spin(seconds: float) -> int:
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


@nf.task
def burn(seconds: float) -> int:
    return _spin(seconds)


@nf.task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@nf.task
def shape_of(df: pd.DataFrame, arr: np.ndarray, items: list[int]) -> int:
    return len(df) + arr.size + len(items)


@nf.task(executor="process")
def burn_in_process(seconds: float) -> bytes:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return b"x" * 1000


def test_cpu_time_tells_computing_from_waiting() -> None:
    with nf.Workflow("cpu") as wf:
        b = burn(0.2)
        s = nap(0.2)
    run = wf.run(cache=False)
    t = run.tasks.set_index("key")
    assert t.loc[b.key, "cpu_s"] >= 0.15
    assert t.loc[s.key, "cpu_s"] < 0.05  # sleeping uses no CPU
    assert t.loc[s.key, "duration_s"] >= 0.2


def test_process_tasks_report_cpu_and_peak_rss() -> None:
    with nf.Workflow("proc") as wf:
        r = burn_in_process(0.1)
    run = wf.run(cache=False)
    row = run.tasks.set_index("key").loc[r.key]
    assert row["cpu_s"] >= 0.08
    assert row["peak_rss"] > 1_000_000  # a Python process is megabytes
    assert run[r] == b"x" * 1000  # the value arrives unwrapped


def test_input_features_of_frames_arrays_lists_and_files(tmp_path) -> None:
    df = pd.DataFrame({"a": range(100), "b": range(100)})
    arr = np.zeros((10, 20))
    f = tmp_path / "data.bin"
    f.write_bytes(b"0" * 1234)
    nbytes, items, shape = input_features((df, arr, [1, 2, 3], f), None)
    assert nbytes == int(df.memory_usage(index=True).sum()) + arr.nbytes + 1234
    assert items == 3
    assert shape == "100x2"  # the larger of 100x2 (200 cells) and 10x20 (200 cells): first wins
    assert input_features((), None) == (None, None, None)

    with nf.Workflow("features") as wf:
        r = shape_of(df, arr, [1, 2, 3])
    run = wf.run(cache=False)
    row = run.tasks.set_index("key").loc[r.key]
    assert row["input_bytes"] == nbytes - 1234
    assert row["input_items"] == 3
    assert row["input_shape"] == "100x2"


def test_history_reads_every_run_and_filters() -> None:
    for seconds in (0.05, 0.1):
        with nf.Workflow("hist") as wf:
            burn(seconds)
            nap(0.01)
        wf.run(cache=False)
    h = nf.history()
    assert set(h["task"]) >= {"burn", "nap"}
    assert h["run_id"].nunique() == 2
    burns = nf.history(task=burn)
    assert set(burns["task"]) == {"burn"} and len(burns) == 2
    assert (burns["cpu_s"] > 0.03).all()
    assert (burns["start_s"] >= 0).all() and (burns["end_s"] >= burns["start_s"]).all()
    assert nf.history(task="burn", since=dt.timedelta(hours=1)).shape[0] == 2
    assert nf.history(since=time.time() + 3600).empty
    with pytest.raises(nf.NbflowError, match="since"):
        nf.history(since=object())
    # The predictor learns from the store's history directly.
    p = Predictor().fit(nf.history())
    out = p.predict(pd.DataFrame({"task": ["burn", "nap"]}))
    assert out.loc[0, "duration_s"] > out.loc[1, "duration_s"]


def test_a_reopened_store_keeps_metrics() -> None:
    with nf.Workflow("stored") as wf:
        b = burn(0.05)
    run = wf.run(cache=False)
    stored = nf.load_run(run.id)
    assert stored.tasks.set_index("key").loc[b.key, "state"] == "completed"
    h = nf.history(task="burn")
    assert h.loc[h["key"] == b.key, "cpu_s"].iloc[0] >= 0.03


def test_a_store_of_the_previous_schema_is_migrated(tmp_path) -> None:
    import sqlite3

    from nbflow.store import journal as journal_mod
    from nbflow.store.store import get_store

    home = tmp_path / "old"
    home.mkdir()
    db = sqlite3.connect(home / "journal.sqlite")
    for sql in journal_mod.MIGRATIONS[1]:
        db.execute(sql)
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    assert get_store(home) is not None
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        cols = {r[1] for r in db.execute("PRAGMA table_info(task_runs)")}
        assert {"cpu_s", "peak_rss", "input_bytes", "input_items", "input_shape"} <= cols
        assert db.execute("PRAGMA user_version").fetchone() == (journal_mod.SCHEMA_VERSION,)
    finally:
        db.close()


def test_tiny_thread_tasks_are_sampled_not_all_timed() -> None:
    from nbflow.engine.metrics import TINY_SAMPLE, TINY_STREAK

    @nf.task
    def tiny(i: int) -> int:
        return i

    with nf.Workflow("tiny") as wf:
        for i in range(200):
            tiny(i)
    run = wf.run(workers=1, cache=False)
    measured = run.tasks["cpu_s"].notna().sum()
    # The first TINY_STREAK calls are measured, then one in TINY_SAMPLE.
    assert TINY_STREAK <= measured <= TINY_STREAK + 200 // TINY_SAMPLE + 1


@nf.task
def burn_anywhere(seconds: float) -> int:
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def test_dask_tasks_report_cpu_and_peak_rss(dask_cluster) -> None:
    # Measured on the worker and sent back with the value: results that come to this process
    # (gather mode).  Results that stay remote record input features only (see scheduler).
    import nbflow.locality as locality

    with nf.Workflow("dask-metrics") as wf:
        r = burn_anywhere(0.1)
    locality.set_default("gather")
    try:
        run = wf.run(backend=dask_cluster.scheduler_address, cache=False)
    finally:
        locality.set_default("locality")
    row = run.tasks.set_index("key").loc[r.key]
    assert row["cpu_s"] >= 0.08
    assert row["peak_rss"] > 1_000_000
    assert run[r] > 0  # the value arrives unwrapped
