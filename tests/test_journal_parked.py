"""The journal's writer keeps its connection between runs (``nbflow.store.parked``): the
next run's writer does not open the database again, unless the files changed meanwhile
(another writer committed, the file was replaced), and closing the journal closes it."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest

import nbflow as nf
from nbflow.store import journal as journal_mod
from nbflow.store import parked
from nbflow.store.store import get_store


@nf.task
def inc(x: int) -> int:
    return x + 1


def _run(name: str) -> Any:
    with nf.Workflow(name) as wf:
        inc(inc(1))
    return wf.run()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the journal's writer opened (read-write connections only)."""
    opened: list[str] = []
    real = journal_mod.connect

    def counting(path: Any, **kw: Any) -> sqlite3.Connection:
        if not kw.get("readonly") and threading.current_thread().name == "nbflow-journal":
            opened.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(journal_mod, "connect", counting)
    return opened


def test_the_next_runs_writer_takes_the_parked_connection(connects: list[str]) -> None:
    first = _run("parked-a")
    journal = get_store().journal  # type: ignore[union-attr]
    assert len(connects) == 1
    assert parked.is_parked(journal)  # (the run returned: its writer exited, its connection kept)
    assert not any(t.name == "nbflow-journal" for t in threading.enumerate())
    second = _run("parked-b")
    assert len(connects) == 1  # (no second open)
    ids = set(nf.runs()["id"])
    assert {first.id, second.id} <= ids
    assert len(nf.load_run(second.id).tasks) == 2


def test_another_writers_commits_keep_it_and_a_checkpoint_does_not(connects: list[str]) -> None:
    _run("changed-a")
    journal = get_store().journal  # type: ignore[union-attr]
    other = journal_mod.connect(journal.path)  # (another process, as far as the files tell)
    journal_mod.write_transaction(other, lambda c: c.execute(
        "INSERT OR REPLACE INTO meta VALUES('touched', '1')"), "test write")
    second = _run("changed-b")
    assert len(connects) == 1  # (a commit to the -wal file: SQLite keeps the connection right)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (writes the database file itself)
    other.close()
    third = _run("changed-c")
    assert len(connects) == 2  # (the parked connection was closed, a new one opened)
    assert {second.id, third.id} <= set(nf.runs()["id"])
    assert nf.runs().set_index("id").loc[third.id, "status"] == "completed"


def test_a_replaced_journal_file_gets_a_new_connection(connects: list[str]) -> None:
    _run("replaced-a")
    journal = get_store().journal  # type: ignore[union-attr]
    journal.close()  # (nothing open: the files can be moved, as nbflow doctor --repair does)
    _run("replaced-b")
    assert parked.is_parked(journal)
    fresh = journal.path.with_name("fresh.sqlite")
    journal_mod.Journal(fresh)  # (a new, empty journal of the same schema)
    for suffix in ("-wal", "-shm"):
        journal.path.with_name(journal.path.name + suffix).unlink(missing_ok=True)
    fresh.replace(journal.path)
    third = _run("replaced-c")
    assert len(connects) == 3
    db = sqlite3.connect(journal.path)
    try:  # (the run went to the file now at the path, not to the moved one)
        assert db.execute("SELECT name FROM runs").fetchall() == [("replaced-c",)]
    finally:
        db.close()
    assert third.status == "completed"


def test_closing_the_journal_closes_the_parked_connection() -> None:
    _run("closed")
    journal = get_store().journal  # type: ignore[union-attr]
    assert parked.is_parked(journal)
    journal.close()
    assert not parked.is_parked(journal)
    # and the WAL is checkpointed into the database: a copy of the file alone has the run
    db = sqlite3.connect(f"file:{journal.path}?immutable=1", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM runs WHERE name = 'closed'").fetchone() == (1,)
    finally:
        db.close()


def test_only_one_connection_is_parked_per_process(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _run("one-a")
    first = get_store().journal  # type: ignore[union-attr]
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "other-store"))
    _run("one-b")
    second = get_store().journal  # type: ignore[union-attr]
    assert second is not first
    assert parked.is_parked(second) and not parked.is_parked(first)
