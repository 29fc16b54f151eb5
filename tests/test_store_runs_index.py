"""A workflow's runs are found by its name, not by walking every run in the store.

One store holds every workflow of a user or project (papermill batches and sweeps write
hundreds of runs), so a question about one workflow's recent runs must not cost more with
every run of another.  The journal's ``runs_name_start`` index (schema version 11) answers
them, and ``batches_notebook_start`` a notebook's batches; these tests check the query
plans, that the work SQLite does (virtual-machine steps, counted with a progress handler,
never time) stays the same when other workflows' runs are added, and that a store of the
previous schema gains the indexes when opened.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.core.errors import StoreError
from nbflow.predict import memory, quick
from nbflow.server import reader
from nbflow.store import history, map_items, readonly, recent
from nbflow.store import journal as journal_mod
from nbflow.store.store import get_store, store_home
from nbflow.workflow import prepare, run_options

# Every question about one workflow's runs, with arguments (the workflow is "fan").
_BY_NAME = {
    "recent runs": (recent._RUNS_SQL, ("fan", "", 20)),
    "any history": (recent._ANY_SQL, ("fan", "", 20)),
    "any peak": (memory._ANY_AT_LEAST, ("fan", "", 20, 1.0)),
    "peaks": (memory._SQL, ("fan", "", 20)),
    "peaks at least": (memory._SQL_AT_LEAST, ("fan", "", 20, 1.0)),
    "quick estimate": (quick._SQL, ("fan", "", 5)),
    "map items": (map_items._COUNT_SQL, (6, "work[", "fan", 20)),
    "nf.runs(name)": (history._RUNS_SQL.format(where="WHERE r.name = ?"), ("fan",)),
    "nf.runs(name) counts": (history._STATES_SQL.format(join="JOIN runs r ON r.id = n.run_id AND r.name = ?"),
                             ("fan",)),
    "explain: key before": ("SELECT t.run_id, t.cache_key FROM task_runs t JOIN runs r ON r.id = t.run_id "
                            "WHERE r.name = ? AND t.key = ? AND r.start < ? AND t.cache_key IS NOT NULL "
                            "ORDER BY r.start DESC LIMIT 1", ("fan", "leaf-0", 1e12)),
}


@nf.task
def leaf(x: int) -> int:
    return x * 2


@nf.task
def work(x: int) -> int:
    return x + 1


def _fan() -> Any:
    with nf.Workflow("fan") as wf:
        xs = [leaf(i) for i in range(4)]
        work(len(xs))
    return wf


def _add_other_runs(n: int, workflows: int = 50) -> None:
    """``n`` runs of other workflows, all newer than the fan's (the worst case for a walk
    of the runs by start time: every one of them comes before the fan's newest)."""
    store = get_store()
    store.journal.flush()
    now = time.time() + 10.0
    db = sqlite3.connect(store.journal.path)
    try:
        with db:
            db.executemany("INSERT INTO runs(id, name, status, start, end) VALUES(?, ?, 'completed', ?, ?)",
                           [(f"other-{i:06d}", f"other-{i % workflows}", now + i, now + i + 0.5)
                            for i in range(n)])
    finally:
        db.close()


@contextmanager
def _steps(*modules: Any) -> Iterator[dict[str, int]]:
    """SQLite virtual-machine steps (in hundreds) of the connections the block opens
    through ``connect`` of ``modules`` (default: the journal's)."""
    seen = {"steps": 0}
    journal_mod.close_kept_readers()  # (a run's preparation keeps its reader for the next one)
    modules = modules or (journal_mod,)
    real = journal_mod.connect

    def counting(*a: Any, **k: Any) -> sqlite3.Connection:
        conn = real(*a, **k)

        def step() -> int:
            seen["steps"] += 1
            return 0

        conn.set_progress_handler(step, 100)
        return conn

    for m in modules:
        m.connect = counting
    try:
        yield seen
    finally:
        for m in modules:
            m.connect = real
        journal_mod.close_kept_readers()


def _prepare_steps() -> int:
    wf = _fan()
    get_store().journal.flush()
    with _steps() as seen:
        run = prepare(wf, run_options(wf, cache=False))
        assert run.learned_priorities  # (history was read and used)
    run.start_in_thread()  # (a prepared run holds the journal's writer until it ends)
    run.wait()
    return seen["steps"]


def test_every_question_about_one_workflows_runs_uses_the_name_index() -> None:
    _fan().run(cache=False)
    _add_other_runs(10)
    query = get_store().journal.query
    for what, (sql, params) in _BY_NAME.items():
        plan = " | ".join(r[3] for r in query("EXPLAIN QUERY PLAN " + sql, params))
        assert "runs_name_start (name=?" in plan, (what, plan)
        # (no walk of the runs: "SCAN r" only reads a subquery's own result, at most LIMIT rows)
        assert "runs_start" not in plan and "SCAN runs" not in plan, (what, plan)
        assert plan.count("SCAN r") <= plan.count("CO-ROUTINE r"), (what, plan)


def test_preparing_a_run_reads_as_much_with_many_other_workflows_runs_as_with_none() -> None:
    for _ in range(recent.RECENT_RUNS + 1):  # (more than are read: one run more reads as much)
        _fan().run(cache=False)
    alone = _prepare_steps()
    _add_other_runs(3000)
    crowded = _prepare_steps()
    # (walking the runs by start time visited the 3 000 others in each of its questions)
    assert crowded <= alone + 2, (alone, crowded)


def test_the_dashboard_and_nf_runs_filtered_by_name_read_as_much_with_many_other_runs() -> None:
    for _ in range(3):
        _fan().run(cache=False)
    get_store().journal.flush()
    home = store_home()

    def cost() -> tuple[int, int]:
        with _steps(reader) as page:
            got = reader.list_runs(home, name="fan", limit=2)
        assert got["total"] == 3 and len(got["runs"]) == 2
        with _steps() as listed:
            assert len(nf.runs("fan")) == 3
        return page["steps"], listed["steps"]

    alone = cost()
    _add_other_runs(3000)
    crowded = cost()
    assert crowded[0] <= alone[0] + 2 and crowded[1] <= alone[1] + 2, (alone, crowded)


def _add_batches(notebook: str, n: int, start: float) -> None:
    store = get_store()
    store.journal.flush()
    db = sqlite3.connect(store.journal.path)
    try:
        with db:
            db.executemany("INSERT INTO batches(id, kind, notebook, status, start, duration_s, parameters) "
                           "VALUES(?, 'run', ?, 'completed', ?, 2.5, '{\"n\": 1}')",
                           [(f"{notebook}-{i:06d}", notebook, start + i) for i in range(n)])
    finally:
        db.close()


def test_a_notebooks_batches_are_found_by_its_name_with_many_other_notebooks_batches() -> None:
    from nbflow.batch import runner

    store = get_store()
    _add_batches("analysis.ipynb", 3, time.time())
    plans = [" | ".join(r[3] for r in store.journal.query(f"EXPLAIN QUERY PLAN {sql}", ("analysis.ipynb",)))
             for sql in ("SELECT duration_s FROM batches WHERE notebook = ? AND status = 'completed' "
                         "ORDER BY start DESC LIMIT 1",
                         "SELECT parameters FROM batches WHERE notebook = ? ORDER BY start DESC LIMIT 1")]
    assert all("batches_notebook_start (notebook=?)" in p for p in plans), plans

    def cost() -> int:
        with _steps() as seen:
            assert runner._last_duration(store, "analysis.ipynb") == 2.5
            assert runner._resume_parameters(store, "analysis.ipynb") == {"n": 1}
        return seen["steps"]

    alone = cost()
    _add_batches("sweep.ipynb", 3000, time.time() + 100)  # (a sweep's children, newer)
    crowded = cost()
    assert crowded <= alone + 2, (alone, crowded)


def _version_10_store(home: Path) -> None:
    home.mkdir(mode=0o700)
    db = sqlite3.connect(home / "journal.sqlite")
    for v in range(1, 11):
        for sql in journal_mod.MIGRATIONS[v]:
            db.execute(sql)
    db.execute("PRAGMA user_version = 10")
    db.execute("INSERT INTO meta VALUES('schema_version', '10')")
    db.execute("INSERT INTO runs(id, name, status, start) VALUES('old-run', 'fan', 'completed', 1.0)")
    db.commit()
    db.close()
    (home / "journal.sqlite").chmod(0o600)


def _indexes(path: Path, table: str = "runs") -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                         "AND tbl_name = ?", (table,))}
    finally:
        db.close()


def test_a_version_10_store_gains_the_index_when_opened_and_keeps_its_runs(tmp_path: Path) -> None:
    home = tmp_path / "v10"
    _version_10_store(home)
    assert "runs_name_start" not in _indexes(home / "journal.sqlite")
    store = get_store(home)
    assert store is not None
    assert "runs_name_start" in _indexes(home / "journal.sqlite")
    assert "batches_notebook_start" in _indexes(home / "journal.sqlite", "batches")
    assert store.journal.query("PRAGMA user_version") == [(journal_mod.SCHEMA_VERSION,)] == [(11,)]
    assert list(nf.runs(home=home)["id"]) == ["old-run"]
    (plan,) = store.journal.query("EXPLAIN QUERY PLAN SELECT id FROM runs WHERE name = ? "
                                  "ORDER BY start DESC LIMIT 5", ("fan",))
    assert "runs_name_start" in plan[3]


def test_an_nbflow_of_schema_10_refuses_a_store_of_schema_11_as_documented(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "v11"
    assert get_store(home) is not None
    monkeypatch.setattr(journal_mod, "SCHEMA_VERSION", 10)
    monkeypatch.setattr(readonly, "SCHEMA_VERSION", 10)
    with pytest.raises(StoreError, match="schema version 11, newer than this nbflow"):
        journal_mod.Journal(home / "journal.sqlite")
    with pytest.raises(StoreError, match="schema version 11, newer than this nbflow"):
        readonly.open_readonly(home)
