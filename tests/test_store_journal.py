"""The journal: what a run leaves in SQLite, and reading it back with runs() / load_run()."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.core import events as ev
from nbflow.store import NbflowStoreWarning, StoredError, StoreError, get_store, load_run, runs
from nbflow.store import journal as journal_mod


@nf.task
def base(x):
    return x + 1


@nf.task
def boom(x):
    raise ValueError(f"bad value {x}")


@nf.task
def after(x):
    return x * 2


@nf.task
def parts(n):
    return list(range(n))


def home() -> Path:
    return Path(os.environ["NBFLOW_HOME"])


def test_runs_lists_runs_with_counts_by_state():
    with nf.Workflow("ok") as wf:
        after(base(1))
    wf.run()
    wf.run()
    with nf.Workflow("bad") as wf:
        after(boom(base(1)))
        base(2)
    wf.run(raise_on_error=False)
    df = runs()
    assert list(df.columns) == ["id", "name", "status", "start", "end", "duration_s", "tasks", "completed",
                                "cached", "failed", "skipped", "cancelled", "backend", "host", "pid"]
    assert list(df["name"]) == ["bad", "ok", "ok"]  # newest first
    assert list(df["status"]) == ["failed", "completed", "completed"]
    assert list(df["completed"]) == [2, 2, 2] and list(df["cached"]) == [1, 2, 0]
    assert list(df["failed"]) == [1, 0, 0] and list(df["skipped"]) == [1, 0, 0]
    assert (df["end"] >= df["start"]).all()
    assert list(runs("bad")["name"]) == ["bad"]


def test_load_run_reads_tasks_graph_events_and_values_back():
    with nf.Workflow("back") as wf:
        b = base(1)
        a = after(b)
        e = boom(b)
        after(e)
    run = wf.run(raise_on_error=False)
    stored = load_run(run.id[:-2])  # a unique prefix is enough
    assert stored.id == run.id and stored.status == "failed" and stored.name == "back"
    live, back = run.tasks.set_index("key"), stored.tasks.set_index("key")
    assert list(back.columns) == list(live.columns)
    assert back["state"].to_dict() == live["state"].to_dict()
    assert back["cached"].to_dict() == live["cached"].to_dict()
    assert back["reason"].to_dict() == live["reason"].to_dict()
    assert back.loc["boom-0", "error"] == "ValueError: bad value 2"
    assert back.loc["after-1", "error"] == live.loc["after-1", "error"]
    assert set(stored.graph.edges) == set(run.graph.edges)
    assert stored.graph.nodes["after-0"]["state"] == "completed"
    assert stored["after-0"] == run[a] == 4
    err = stored.errors()["boom-0"]
    assert isinstance(err, StoredError) and "Traceback" in str(err) and "bad value 2" in str(err)
    kinds = [type(x) for x in stored.events]
    assert kinds[0] is ev.RunStarted and kinds[-1] is ev.RunFinished
    assert ev.TaskReady not in kinds
    live_kinds = [type(x) for x in run.events if type(x) is not ev.TaskReady]
    assert kinds == live_kinds
    failed = [x for x in stored.events if isinstance(x, ev.TaskFailed)]
    assert failed[0].key == "boom-0" and isinstance(failed[0].error, StoredError)
    with pytest.raises(nf.TaskNotFinished):
        stored["after-1"]
    with pytest.raises(KeyError):
        load_run("no-such-run")


def test_each_attempt_is_one_task_run_row():
    tries = home().parent / "tries"

    @nf.task(retries=2, retry_delay=0)
    def flaky():
        n = int(tries.read_text()) if tries.exists() else 0
        tries.write_text(str(n + 1))
        if n < 2:
            raise RuntimeError(f"try {n}")
        return "ok"

    with nf.Workflow("flaky") as wf:
        flaky()
    run = wf.run()
    db = sqlite3.connect(home() / "journal.sqlite")
    try:
        rows = db.execute("SELECT attempt, state, error IS NOT NULL FROM task_runs WHERE run_id = ? "
                          "ORDER BY attempt", (run.id,)).fetchall()
    finally:
        db.close()
    assert rows == [(1, "retried", 1), (2, "retried", 1), (3, "completed", 0)]
    assert load_run(run.id).tasks["attempts"].tolist() == [3]
    assert runs()["completed"].tolist() == [1]


def test_cache_hits_are_attempt_zero_and_map_items_are_in_the_graph():
    def build():
        with nf.Workflow("mapped") as wf:
            after.map(parts(3))
        return wf

    build().run()
    run = build().run()
    stored = load_run(run.id)
    assert set(stored.graph.nodes) == {"parts-0", "after.map-0", "after.map-0[0]", "after.map-0[1]",
                                       "after.map-0[2]"}
    assert ("after.map-0[1]", "after.map-0") in stored.graph.edges
    db = sqlite3.connect(home() / "journal.sqlite")
    try:
        attempts = {a for (a,) in db.execute("SELECT attempt FROM task_runs WHERE run_id = ? AND cached",
                                             (run.id,))}
    finally:
        db.close()
    assert attempts == {0}


def test_schema_version_migration_and_refusal(tmp_path):
    fresh = tmp_path / "fresh"
    store = get_store(fresh)
    db = sqlite3.connect(fresh / "journal.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (journal_mod.SCHEMA_VERSION,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        expected = (str(journal_mod.SCHEMA_VERSION),)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == expected
    finally:
        db.close()
    assert store is get_store(fresh)

    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / "journal.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.warns(NbflowStoreWarning, match="schema version 99"):
        assert get_store(newer) is None
    with pytest.raises(StoreError):
        runs(home=newer)


def test_a_run_without_a_usable_store_still_runs(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    monkeypatch.setenv("NBFLOW_HOME", str(blocked))
    with nf.Workflow("nostore") as wf:
        r = base(1)
    with pytest.warns(NbflowStoreWarning, match="cannot be used"):
        run = wf.run()
    assert run[r] == 2 and run.tasks["reason"].tolist() == ["cache off"]
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "off"))
    monkeypatch.setenv("NBFLOW_STORE", "off")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wf.run()[r] == 2
    assert not (tmp_path / "off").exists()


def test_the_store_directory_is_private():
    with nf.Workflow("perm") as wf:
        after(base(1))
    wf.run()
    assert home().stat().st_mode & 0o777 == 0o700


def test_a_locked_database_delays_writes_but_never_fails_them():
    with nf.Workflow("locked") as wf:
        for i in range(50):
            after(base(i))
    wf.run()  # creates the store
    blocker = sqlite3.connect(home() / "journal.sqlite", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock
    released = threading.Event()

    def release() -> None:
        time.sleep(0.5)
        blocker.execute("COMMIT")
        released.set()

    threading.Thread(target=release).start()
    with nf.Workflow("locked") as wf:
        for i in range(50):
            after(base(i + 100))
    run = wf.run()
    assert released.is_set()
    blocker.close()
    df = runs()
    assert list(df["completed"]) == [100, 100]
    assert len(load_run(run.id).events) == 2 + 2 * 100


def test_journal_flush_and_writer_lifecycle():
    store = get_store()
    j = store.journal
    op = journal_mod.Op("INSERT OR REPLACE INTO meta VALUES(?, ?)")
    for i in range(1000):
        j.put(op, (f"k{i}", str(i)))
    assert j.flush(30)
    assert j.query("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'") == [(1000,)]
    j.close()
    assert not [t for t in threading.enumerate() if t.name == "nbflow-journal"]
