"""Another process holding the journal's write lock: said within seconds, never a stall.

A connection in this test process takes the write lock (``BEGIN IMMEDIATE``) and keeps it
while a new process opens the same store and runs a workflow with a short
``NBFLOW_LOCK_TIMEOUT``.  Opening a store whose schema is current takes no lock at all;
the run's commits wait, a log line says so after ``NBFLOW_LOCK_NOTICE``, and the run
returns with its results once the bounded wait is over.  A store that needs a migration
while locked is used uncached for that run, with a warning naming the lock.
"""

from __future__ import annotations

import sqlite3

import pytest

from nbflow.store import get_store, store_home

from .helpers import chain_workflow, run_python

pytestmark = pytest.mark.timeout(180)

CHILD = """
import warnings, nbflow as nf
warnings.simplefilter("always")
@nf.task
def inc(x): return x + 1
with nf.Workflow("locked") as wf:
    rs = [inc(i) for i in range(3)]
run = wf.run()
print("RESULT", sum(run[r] for r in rs), run.status)
"""


def _hold_lock(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_a_held_lock_is_announced_and_the_run_returns():
    wf, _ = chain_workflow(2)
    wf.run()
    home = store_home()
    get_store().journal.close()
    holder = _hold_lock(home / "journal.sqlite")
    try:
        p = run_python(CHILD, {"NBFLOW_HOME": str(home), "NBFLOW_LOCK_TIMEOUT": "2",
                               "NBFLOW_LOCK_NOTICE": "0.3"}, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert p.returncode == 0, p.stderr
    assert "RESULT 6 completed" in p.stdout
    assert "waiting for the write lock" in p.stderr          # announced while waiting
    assert "stayed locked by another process" in p.stderr    # and the real reason at the end


def test_a_store_needing_migration_while_locked_runs_uncached(tmp_path):
    home = tmp_path / "old"
    home.mkdir(mode=0o700)
    db = home / "journal.sqlite"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE unrelated(x)")  # a journal of an older schema: version 0
    c.commit()
    c.close()
    holder = _hold_lock(db)
    try:
        p = run_python(CHILD, {"NBFLOW_HOME": str(home), "NBFLOW_LOCK_TIMEOUT": "1.5",
                               "NBFLOW_LOCK_NOTICE": "0.3"}, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert p.returncode == 0, p.stderr
    assert "RESULT 6 completed" in p.stdout
    assert "locked by another process" in p.stderr and "not journaled or cached" in p.stderr


def test_opening_a_current_store_takes_no_write_lock(monkeypatch):
    """The schema check is read-only: with the lock held, opening does not wait at all."""
    wf, _ = chain_workflow(2)
    wf.run()
    home = store_home()
    holder = _hold_lock(home / "journal.sqlite")
    statements: list[str] = []
    from nbflow.store import journal as jmod

    real = jmod.connect

    def traced(path, **kw):
        conn = real(path, **kw)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(jmod, "connect", traced)
    monkeypatch.setenv("NBFLOW_LOCK_TIMEOUT", "0.5")
    try:
        jmod.Journal(home / "journal.sqlite")
    finally:
        holder.rollback()
        holder.close()
    assert not [s for s in statements if "BEGIN" in s.upper()], statements
