"""A batched map's chunks are journaled as one ``events`` row per chunk and change, and
every reader still sees one event per item and change: ``nf.load_run(...).events``, the
stored task table, ``nf.history``, the dashboard's event feed (also with a cursor inside a
chunk), and the counts of a run that died while a chunk was running.  A version-8 journal
is upgraded; a killed run's committed rows read back whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbflow as nf
from nbflow.core import events as ev
from nbflow.server import reader
from nbflow.store import journal as journal_mod
from nbflow.store.eventrows import BATCH
from nbflow.store.store import get_store


@nf.task
def tenfold(x: int) -> int:
    if x % 50 == 7:
        raise ValueError(f"item {x} is bad")
    return 10 * x


def _run(n: int, *, per_item: bool) -> Any:
    """A batched map; with ``per_item`` a listener that reads no batches is attached, so the
    run sends (and the journal writes) one event per item, as before batch rows existed."""
    with nf.Workflow("journal-batches") as wf:
        tenfold.map(list(range(n)), batch=25)
    unsubscribe = nf.on_run(lambda run: (lambda e: None)) if per_item else None
    try:
        return wf.run(workers=1, cache=False, raise_on_error=False)
    finally:
        if unsubscribe:
            unsubscribe()


def _said(events: list[ev.Event]) -> list[tuple[Any, ...]]:
    """What the journal keeps of each event (no clock readings: two runs never share them)."""
    out = []
    for e in events:
        if type(e) in (ev.TaskReady, ev.RunStarted, ev.RunFinished):
            continue
        out.append((type(e).__name__, getattr(e, "index", None), getattr(e, "key", None),
                    getattr(e, "attempt", None), getattr(e, "executor", None),
                    getattr(e, "cached", None), getattr(e, "output_bytes", None),
                    getattr(e, "reason", None) if type(e) is ev.TaskSkipped else None))
    return out


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "journal.sqlite")


def _home() -> Path:
    store = get_store()
    assert store is not None
    return Path(store.home)


def test_a_chunk_is_one_row_and_reads_back_as_one_event_per_item() -> None:
    batched, legacy = _run(200, per_item=False), _run(200, per_item=True)
    assert any(type(e) is ev.TaskBatch for e in batched._log.raw)
    assert not any(type(e) is ev.TaskBatch for e in legacy._log.raw)
    db = _db(_home())
    try:
        rows = dict(db.execute("SELECT run_id, COUNT(*) FROM events GROUP BY run_id").fetchall())
        items = db.execute("SELECT SUM(items) FROM events WHERE run_id = ? AND type = ?",
                           (batched.id, BATCH)).fetchone()[0]
    finally:
        db.close()
    a, b = nf.load_run(batched.id), nf.load_run(legacy.id)
    assert len(a.events) == len(b.events) > 400  # (200 items started and ended, and the rest)
    assert rows[batched.id] < len(a.events) // 10  # one row per chunk and change
    assert rows[legacy.id] == len(b.events)
    assert items and items > 300
    # The same per-item events, in the same order, saying the same, as the live run said.
    assert _said(a.events) == _said(b.events) == _said(batched.events)
    live = {(e.index, e.attempt): e.duration_s for e in batched.events if type(e) is ev.TaskCompleted}
    stored = {(e.index, e.attempt): e.duration_s for e in a.events if type(e) is ev.TaskCompleted}
    assert stored == live  # (durations exactly, through the batch row's JSON)
    # The stored task table and the history read the same as for per-item rows.
    cols = ["key", "state", "attempts", "cached", "executor", "output_bytes", "error"]
    ta, tb = a.tasks[cols], b.tasks[cols]
    assert ta.astype(str).equals(tb.astype(str))
    assert ta.astype(str).equals(batched.tasks[cols].astype(str))
    h = nf.history(task="tenfold")
    ha = h[h.run_id == batched.id].sort_values("key").reset_index(drop=True)
    hb = h[h.run_id == legacy.id].sort_values("key").reset_index(drop=True)
    same = ["key", "state", "attempt", "executor", "cached", "output_bytes", "input_items"]
    assert ha[same].astype(str).equals(hb[same].astype(str))
    assert len(ha) == 200 and ha.cpu_s.notna().all()  # (metrics in the same row as the attempt)
    # Every task_runs column but the clock readings, row by row.
    db = _db(_home())
    try:
        q = ("SELECT idx, attempt, key, state, executor, cached, output_bytes, error IS NULL, reason, "
             "cache_key, blob, output, cpu_s IS NULL, peak_rss, input_bytes, input_items, input_shape, "
             "start IS NULL, end IS NULL, duration_s IS NULL FROM task_runs WHERE run_id = ? "
             "ORDER BY idx, attempt")
        ra, rb = db.execute(q, (batched.id,)).fetchall(), db.execute(q, (legacy.id,)).fetchall()
    finally:
        db.close()
    assert ra == rb and len(ra) == 201


def test_the_dashboard_feed_pages_through_a_chunk_item_by_item() -> None:
    run = _run(120, per_item=False)
    home = _home()
    whole = reader.events_after(home, run.id, 0, 100_000)
    assert [e["seq"] for e in whole] == list(range(1, len(whole) + 1))  # numbered, no gap
    stored = nf.load_run(run.id).events
    assert [(e["type"], e["index"], e["key"]) for e in whole] == [
        (type(e).__name__, getattr(e, "index", None), getattr(e, "key", None)) for e in stored]
    started = next(e for e in whole if e["type"] == "TaskStarted")
    assert started["data"] == {"attempt": 1, "executor": "thread"}
    done = next(e for e in whole if e["type"] == "TaskCompleted")
    assert set(done["data"]) == {"attempt", "duration_s", "output_bytes", "cached"}
    # Pages of 7 events: the cursor lands inside chunks, and the pages join up exactly.
    got: list[dict[str, Any]] = []
    after = 0
    while True:
        page = reader.events_after(home, run.id, after, 7)
        if not page:
            break
        assert len(page) <= 7
        got += page
        after = page[-1]["seq"]
    assert got == whole


def test_a_run_that_died_in_a_chunk_shows_its_started_items_as_interrupted() -> None:
    run = _run(100, per_item=False)
    home = _home()
    db = _db(home)
    try:  # as if the process had died with the map's items running: no final rows, no end
        db.execute("DELETE FROM task_runs WHERE run_id = ?", (run.id,))
        db.execute("UPDATE runs SET status = 'running', end = NULL, pid = ? WHERE id = ?",
                   (_dead_pid(), run.id))
        db.commit()
    finally:
        db.close()
    stored = nf.load_run(run.id)
    t = stored.tasks.set_index("key")
    items = [k for k in t.index if k.startswith("tenfold-")]
    assert len(items) == 100
    assert (t.loc[items, "state"] == "interrupted").all()  # started (batch rows), not pending
    assert (t.loc[items, "attempts"] == 1).all()
    assert not t.loc[items, "start"].isna().any()
    listed = {r["id"]: r for r in reader.list_runs(home)["runs"]}[run.id]
    assert listed["status"] == "interrupted"
    counts = stored.task_counts.as_row()
    assert {k: listed[k] for k in counts} == counts  # the run list counts as load_run does
    assert listed["pending"] == 1  # only the map node: its items started (batch rows)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_version_8_journal_is_upgraded_and_still_reads(tmp_path: Path) -> None:
    home = tmp_path / "v8"
    home.mkdir(mode=0o700)
    db = sqlite3.connect(home / "journal.sqlite")
    for v in range(1, 9):
        for sql in journal_mod.MIGRATIONS[v]:
            db.execute(sql)
    db.execute("PRAGMA user_version = 8")
    db.execute("INSERT INTO meta VALUES('schema_version', '8')")
    db.commit()
    assert "items" not in {r[1] for r in db.execute("PRAGMA table_info(events)")}
    db.close()
    os.chmod(home / "journal.sqlite", 0o600)
    os.environ["NBFLOW_HOME"] = str(home)  # (conftest's monkeypatch restores it)
    assert get_store(home) is not None
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (journal_mod.SCHEMA_VERSION,) == (11,)
        assert "items" in {r[1] for r in db.execute("PRAGMA table_info(events)")}
    finally:
        db.close()
    run = _run(60, per_item=False)
    assert len(nf.load_run(run.id).events) == len([e for e in run.events if type(e) is not ev.TaskReady])


DRIVER = r'''
import os, sys, time
import nbflow as nf

marks = sys.argv[1]

@nf.task
def slow(x):
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"x\n")
    os.close(fd)
    time.sleep(0.004)
    return x * 3

with nf.Workflow("killed-batches") as wf:
    slow.map(list(range(3000)), batch=50)
wf.run(workers=2)
'''


def test_a_killed_batched_run_keeps_what_it_committed(tmp_path: Path) -> None:
    """SIGKILL in the middle of a batched map: whatever the journal committed reads back
    whole (each completed item has its events, task row and cached result; no event row
    stands for items the task rows do not know), and a resume serves those from the store."""
    home, marks = tmp_path / "home", tmp_path / "marks"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, NBFLOW_HOME=str(home))
    p = subprocess.Popen([sys.executable, str(script), str(marks)], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once ~1/3 of the items ran
        if marks.exists() and len(marks.read_bytes()) >= 2 * 1000:
            break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    db = sqlite3.connect(home / "journal.sqlite")
    try:
        (rid,) = db.execute("SELECT id FROM runs").fetchone()
        done = {k for (k,) in db.execute(
            "SELECT t.key FROM task_runs t JOIN cache c ON c.key = t.cache_key "
            "WHERE t.run_id = ? AND t.state = 'completed'", (rid,))}
    finally:
        db.close()
    assert 0 < len(done) < 3000
    os.environ["NBFLOW_HOME"] = str(home)
    stored = nf.load_run(rid)
    assert stored.status == "interrupted"
    completed = {e.key for e in stored.events if type(e) is ev.TaskCompleted}
    started = {e.key for e in stored.events if type(e) is ev.TaskStarted}
    assert completed == done <= started  # (one transaction: events and task rows together)
    t = stored.tasks.set_index("key")
    assert (t.loc[sorted(done), "state"] == "completed").all()
    before = len(marks.read_bytes()) // 2
    p = subprocess.run([sys.executable, str(script), str(marks)], env=env, cwd=tmp_path, timeout=240)
    assert p.returncode == 0
    ran_again = len(marks.read_bytes()) // 2 - before
    assert ran_again <= 3000 - len(done)  # committed items were served from the store
