"""How the journal's writer turns queued rows into SQL: statements of a few fixed sizes
(compiled once, then reused by every commit), columns empty in every row of a group left
out (they stay NULL), and an attempt's metrics in its own task row (no update after it).
Whatever the statements, the rows read back exactly as queued."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.store import journal as journal_mod
from nbflow.store.journal import Journal, _write_rows
from nbflow.store.recorder import TASK_RUN


def _conn(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "journal.sqlite"
    Journal(path)  # (creates the schema)
    return journal_mod.connect(path)


def _task_row(i: int, *, error: str | None = None) -> tuple[Any, ...]:
    return ("run-1", i, 1, f"t-{i}", "completed" if error is None else "failed", "thread", 10.0 + i,
            11.0 + i, 1.0, False, None, error, "cache off", None, None, None, (0.5, None, None, None, None))


def test_statements_have_fixed_sizes_and_rows_read_back_exactly(tmp_path: Path) -> None:
    conn = _conn(tmp_path)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    rows_by_commit = [[TASK_RUN.convert(*_task_row(i)) for i in range(start, start + n)]  # type: ignore[misc]
                      for start, n in ((0, 300), (300, 301), (601, 77), (678, 3))]
    for rows in rows_by_commit:
        conn.execute("BEGIN IMMEDIATE")
        _write_rows(conn, TASK_RUN, rows, journal_mod._max_variables(conn))
        conn.execute("COMMIT")
    inserts = [s for s in seen if s.startswith("INSERT")]
    sizes = {s.count("),(") + 1 for s in inserts}
    assert sizes <= {1, 16, 64, 256, 1024}, sizes  # (a statement per commit length: compiled anew each time)
    assert len({s.split(" VALUES")[1].count("?") for s in inserts if s.count("),(")}) <= 3
    got = conn.execute("SELECT * FROM task_runs WHERE run_id = 'run-1' ORDER BY idx").fetchall()
    cols = [r[1] for r in conn.execute("PRAGMA table_info(task_runs)")]
    assert len(got) == 681
    for row in got:
        r = dict(zip(cols, row, strict=True))
        i = r["idx"]
        assert (r["key"], r["state"], r["start"], r["end"], r["reason"], r["cpu_s"]) == (
            f"t-{i}", "completed", 10.0 + i, 11.0 + i, "cache off", 0.5)
        assert r["error"] is r["blob"] is r["peak_rss"] is r["output_bytes"] is None
        assert r["cached"] == 0
    conn.close()


def test_a_column_empty_in_every_row_is_left_out_and_stays_null(tmp_path: Path) -> None:
    conn = _conn(tmp_path)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    rows = [TASK_RUN.convert(*_task_row(i)) for i in range(20)]  # type: ignore[misc]
    conn.execute("BEGIN IMMEDIATE")
    _write_rows(conn, TASK_RUN, rows, journal_mod._max_variables(conn))
    conn.execute("COMMIT")
    inserts = [s for s in seen if s.startswith("INSERT")]
    assert inserts and all("error" not in s.split("VALUES")[0] for s in inserts)
    assert all("cpu_s" in s.split("VALUES")[0] for s in inserts)
    # A group where one row has the column: the column is written for every row.
    seen.clear()
    rows = [TASK_RUN.convert(*_task_row(i, error="boom" if i == 25 else None)) for i in range(20, 40)]  # type: ignore[misc]
    conn.execute("BEGIN IMMEDIATE")
    _write_rows(conn, TASK_RUN, rows, journal_mod._max_variables(conn))
    conn.execute("COMMIT")
    assert all("error" in s.split("VALUES")[0] for s in seen if s.startswith("INSERT"))
    errors = dict(conn.execute("SELECT idx, error FROM task_runs WHERE run_id = 'run-1'").fetchall())
    assert errors[25] == "boom" and errors[24] is None and errors[3] is None and len(errors) == 40
    conn.close()


@nf.task
def small(x: int) -> int:
    return x + 1


def test_an_attempts_metrics_are_written_with_its_row_not_updated_after() -> None:
    seen: list[str] = []
    original = journal_mod.Journal._commit

    def spy(self: Journal, conn: sqlite3.Connection, batch: list[Any]) -> None:
        seen.extend(op.sql for op, _ in batch)
        original(self, conn, batch)

    journal_mod.Journal._commit = spy  # type: ignore[method-assign]
    try:
        with nf.Workflow("metrics-row") as wf:
            small(1)
            small(2)
        run = wf.run(cache=False)
    finally:
        journal_mod.Journal._commit = original  # type: ignore[method-assign]
    assert not [q for q in seen if q.startswith("UPDATE task_runs")]
    h = nf.history(task="small")
    assert len(h[h.run_id == run.id]) == 2 and h[h.run_id == run.id].cpu_s.notna().all()


def test_queries_in_one_reader_block_share_a_connection_and_see_new_commits(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    opened: list[sqlite3.Connection] = []
    original = Journal.reader

    def counting(self: Journal) -> sqlite3.Connection:
        conn = original(self)
        opened.append(conn)
        return conn

    Journal.reader = counting  # type: ignore[method-assign]
    try:
        with journal_mod.one_reader():
            assert j.query("SELECT COUNT(*) FROM runs") == [(0,)]
            w = journal_mod.connect(tmp_path / "journal.sqlite")
            w.execute("INSERT INTO runs(id, name, status) VALUES('r1', 'w', 'completed')")
            w.close()
            assert j.query("SELECT COUNT(*) FROM runs") == [(1,)]  # (each query a fresh read)
            with journal_mod.one_reader():  # (nested: the same connection)
                assert j.query("SELECT id FROM runs") == [("r1",)]
        assert len(opened) == 1
        try:  # closed when the block ended
            opened[0].execute("SELECT 1")
            raise AssertionError("the block's connection is still open")
        except sqlite3.ProgrammingError:
            pass
        j.query("SELECT 1")
        j.query("SELECT 1")
        assert len(opened) == 3  # (outside a block: one connection per query, as before)
    finally:
        Journal.reader = original  # type: ignore[method-assign]


def test_the_lock_settings_are_read_only_when_a_transaction_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbflow.store import settings

    read: list[str] = []
    monkeypatch.setattr(settings, "lock_timeout", lambda: read.append("timeout") or 0.05)
    monkeypatch.setattr(settings, "lock_notice", lambda: read.append("notice") or 10.0)
    assert journal_mod.retrying(lambda: 7, "a query") == 7
    assert read == []  # (most transactions and queries never wait: nothing to read)
    tries = [0]

    def busy_twice() -> int:
        tries[0] += 1
        if tries[0] <= 2:
            raise sqlite3.OperationalError("database is locked")
        return 8

    assert journal_mod.retrying(busy_twice, "a write") == 8
    assert read == ["timeout", "notice"]  # read once, at the first wait

    def always_busy() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(journal_mod.StoreBusy, match="stayed locked"):  # (and the limit holds)
        journal_mod.retrying(always_busy, "a write")
