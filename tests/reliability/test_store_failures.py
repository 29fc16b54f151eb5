"""A store that breaks while a process has it open: the run degrades, it never hangs or spins.

Each test first makes the store usable (one run), then breaks it the way a user or the
system can -- the journal deleted, overwritten with garbage, SQLite or the disk failing
(injected, since root ignores file modes), another process holding the write lock -- and
checks that the next run finishes with correct results and at most one clear
``NbflowStoreWarning``, or fails with an ``NbflowError`` naming the store problem.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings

import pytest

import nbflow as nf
from nbflow.store import get_store, store_home
from nbflow.store.store import Store

from .helpers import chain_workflow, store_warnings

pytestmark = pytest.mark.timeout(120)


def _expected(n: int) -> int:
    return sum(i + 1 for i in range(n))


def _first_run(n: int = 5) -> None:
    wf, refs = chain_workflow(n)
    run = wf.run()
    assert run[refs[-1]] == _expected(n)
    assert get_store() is not None


def _journal_files() -> list[str]:
    home = store_home()
    return [str(home / f"journal.sqlite{s}") for s in ("", "-wal", "-shm")]


@pytest.mark.parametrize("n", [1, 5])
def test_journal_deleted_while_open_degrades_the_run(n):
    _first_run()
    for p in _journal_files():
        if os.path.exists(p):
            os.unlink(p)
    wf, refs = chain_workflow(n)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf.run()
    assert run.status == "completed" and run[refs[-1]] == _expected(n)
    msgs = store_warnings(rec)
    assert len(msgs) == 1, msgs
    assert "journal" in msgs[0] and "without the cache" in msgs[0]
    assert set(run.tasks["reason"].dropna()) <= {"store unusable"}
    # the next run opens the directory afresh: a new journal, caching again
    wf2, refs2 = chain_workflow(n)
    assert wf2.run()[refs2[-1]] == _expected(n)
    wf3, _refs3 = chain_workflow(n)
    assert wf3.run().tasks["cached"].all()


def test_journal_overwritten_with_garbage_names_the_damage():
    _first_run()
    with open(_journal_files()[0], "r+b") as f:
        f.write(os.urandom(4096))
    wf, refs = chain_workflow(5)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf.run()
    assert run[refs[-1]] == _expected(5)
    msgs = store_warnings(rec)
    assert len(msgs) == 1, msgs
    assert "damaged" in msgs[0] and "nbflow doctor" in msgs[0]


@pytest.mark.parametrize("where", ["find", "save", "sync_keys"])
def test_injected_sqlite_error_mid_run(monkeypatch, where):
    """A read-only or failing database (simulated: root ignores file modes) during a run."""
    _first_run()

    def boom(*a, **k):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Store, where, boom)
    wf, refs = chain_workflow(8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf.run()
    assert run.status == "completed" and run[refs[-1]] == _expected(8)
    msgs = store_warnings(rec)
    assert len(msgs) == 1 and "readonly database" in msgs[0], msgs


def test_disk_error_storing_a_result_is_one_warning(monkeypatch):
    _first_run()

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "save", full)
    wf, refs = chain_workflow(6)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf.run()
    assert run[refs[-1]] == _expected(6)
    msgs = store_warnings(rec)
    assert len(msgs) == 1 and "disk is full" in msgs[0]


def test_an_engine_failure_is_one_nbflow_error_not_a_group(monkeypatch):
    from nbflow.core.errors import EngineError
    from nbflow.engine.scheduler import Scheduler

    real = Scheduler._complete
    calls = []

    def broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second completion: the engine itself fails mid-run
            raise RuntimeError("engine bug")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Scheduler, "_complete", broken)
    wf, _ = chain_workflow(3)
    with pytest.raises(EngineError, match="engine bug") as info:
        wf.run()
    assert isinstance(info.value, nf.NbflowError)
    assert nf.last_run().status == "failed"


def test_a_cache_that_raises_anything_degrades_the_run_with_one_warning(monkeypatch):
    from nbflow.store.guard import GuardedRunCache

    async def broken(self, i):
        raise RuntimeError("cache bug")

    monkeypatch.setattr(GuardedRunCache, "lookup", broken)
    wf, refs = chain_workflow(3)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = wf.run()
    assert run.status == "completed" and run[refs[-1]] == _expected(3)
    msgs = store_warnings(rec)
    assert len(msgs) == 1 and "cache bug" in msgs[0] and "without the cache" in msgs[0]


def test_writer_that_cannot_connect_reports_why_and_is_replaced(monkeypatch, caplog):
    _first_run()
    store = get_store()
    journal = store.journal
    from nbflow.store import journal as jmod
    from nbflow.store import parked

    parked.close(journal)  # (the first run's writer connection is kept: this writer must connect)
    real = jmod.connect
    calls = {"n": 0}

    def flaky(path, **kw):
        calls["n"] += 1
        if calls["n"] <= 100:
            raise sqlite3.OperationalError("unable to open database file")
        return real(path, **kw)

    monkeypatch.setenv("NBFLOW_LOCK_TIMEOUT", "0.5")
    monkeypatch.setattr(jmod, "connect", flaky)
    wf, refs = chain_workflow(3, name="lost")
    with caplog.at_level(logging.WARNING, logger="nbflow.store"):
        run = wf.run()
    assert run[refs[-1]] == _expected(3)
    assert journal.failure is not None and "unable to open database file" in journal.failure
    assert "another process holds" not in caplog.text
    assert "unable to open database file" in caplog.text
    # the writer is replaced: once the database can be opened again, runs are journaled
    monkeypatch.setattr(jmod, "connect", real)
    wf2, _ = chain_workflow(3, name="kept")
    run2 = wf2.run()
    assert run2.id in set(nf.runs()["id"])


def test_stale_tmp_files_are_removed_at_open_unless_owned(tmp_path):
    home = tmp_path / "store"
    sub = home / "blobs" / "x12"
    sub.mkdir(parents=True)
    from nbflow.store.tidy import HOST

    dead = sub / f".tmp-999999999@{HOST}-abc"  # no such pid
    live = sub / f".tmp-{os.getpid()}@{HOST}-def"
    other_host = sub / ".tmp-999999999@00000000-ghi"  # cannot be checked from here: kept
    legacy_old = sub / ".tmp-oldname"
    legacy_new = sub / ".tmp-newname"
    for p in (dead, live, legacy_old, legacy_new, other_host):
        p.write_bytes(b"half a result")
    os.utime(legacy_old, (1, 1))
    assert get_store(home) is not None
    assert not dead.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists() and other_host.exists()


def test_tmp_cleanup_never_follows_a_linked_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / ".tmp-999999999-victim"
    victim.write_text("keep me")
    home = tmp_path / "store"
    (home / "blobs").mkdir(parents=True)
    os.symlink(outside, home / "blobs" / "x34")
    assert get_store(home) is not None
    assert victim.read_text() == "keep me"


def test_commit_window_is_configurable(monkeypatch):
    from nbflow.store import settings

    monkeypatch.setenv("NBFLOW_COMMIT_WINDOW", "0.2")
    assert settings.commit_window() == 0.2
    monkeypatch.setenv("NBFLOW_COMMIT_WINDOW", "-1")
    with pytest.raises(nf.WorkflowDefinitionError, match="NBFLOW_COMMIT_WINDOW"):
        settings.commit_window()
    # the writer thread uses the value in force when it starts
    monkeypatch.setenv("NBFLOW_COMMIT_WINDOW", "0.0123")
    wf, _refs = chain_workflow(3)
    wf.run()
    assert get_store().journal.window == 0.0123
