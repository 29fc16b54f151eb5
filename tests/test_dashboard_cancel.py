"""Cancelling through the store, in one process: the watch every run gets (done by the
journal's writer thread: no thread of its own), its lifetime, the switch that turns it off,
the journal table it reads, and the run-id check."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import nbflow_threads

import nbflow as nf
from nbflow.server.cancel import POLL_S, request_cancel
from nbflow.server.ids import BadRunId, check_run_id
from nbflow.store.journal import Journal
from nbflow.store.store import get_store, store_home


def _watchers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("nbflow-cancel-watch-")]


@nf.task
async def nap(i: int) -> int:
    import anyio

    await anyio.sleep(30)
    return i


def _long() -> nf.Workflow:
    with nf.Workflow("naps") as wf:
        for i in range(3):
            nap(i)
    return wf


def _wait_started(run: nf.Run) -> None:
    deadline = time.monotonic() + 30
    while run.count("running") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)


def _journal() -> Journal:
    store = get_store(warn=False)
    assert store is not None
    return store.journal


def test_a_request_in_the_store_cancels_the_run_and_the_watch_ends_with_it() -> None:
    run = _long().start()
    _wait_started(run)
    journal = _journal()
    # watched by the journal's writer: no thread, and no connection, of the watch's own
    assert _watchers() == [] and run.id in journal._cancel_watch
    assert not [n for n in nbflow_threads() if "cancel" in n]
    request_cancel(store_home(), run.id, "tester")
    run.wait(timeout=30, raise_on_error=False)
    assert run.status == "cancelled" and run.count("cancelled") == 3
    assert journal.cancel_polls >= 1 and journal._cancel_watch == {}
    # (the process's lease watcher may outlive a run by design: store.lease)
    assert [n for n in nbflow_threads() if not n.startswith("nbflow-lease")] == []
    assert nf.load_run(run.id).status == "cancelled"
    with sqlite3.connect(store_home() / "journal.sqlite") as db:
        rows = db.execute("SELECT run_id, requested_by FROM cancel_requests").fetchall()
    assert rows == [(run.id, "tester")]


def test_a_request_for_another_run_changes_nothing() -> None:
    run = _long().start()
    _wait_started(run)
    request_cancel(store_home(), "20200101-000000-abcdef")
    time.sleep(POLL_S * 4)  # several polls of the watcher
    assert run.status == "running"
    run.cancel()
    run.wait(timeout=30, raise_on_error=False)
    assert _watchers() == []


def test_watching_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_CANCEL_WATCH", "0")
    run = _long().start()
    _wait_started(run)
    assert _journal()._cancel_watch == {}
    time.sleep(POLL_S * 2)
    assert _journal().cancel_polls == 0
    run.cancel()
    run.wait(timeout=30, raise_on_error=False)


def test_a_run_shorter_than_the_poll_interval_costs_no_query() -> None:
    @nf.task
    def one() -> int:
        return 1

    with nf.Workflow("quick") as wf:
        one()
    for _ in range(3):
        wf.run()
    journal = _journal()
    assert journal.cancel_polls == 0 and journal._cancel_watch == {}


def test_a_request_made_while_the_writer_already_runs_for_another_run_is_seen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_CANCEL_WATCH", "0")
    first = _long().start()  # (the writer is up, watching nothing)
    _wait_started(first)
    monkeypatch.delenv("NBFLOW_CANCEL_WATCH")
    second = _long().start()
    _wait_started(second)
    request_cancel(store_home(), second.id, "tester")
    second.wait(timeout=30, raise_on_error=False)
    assert second.status == "cancelled" and first.status == "running"
    first.cancel()
    first.wait(timeout=30, raise_on_error=False)


def test_a_finished_run_leaves_no_watcher() -> None:
    @nf.task
    def one() -> int:
        return 1

    with nf.Workflow("quick") as wf:
        one()
    wf.run()
    assert _watchers() == []


def test_old_store_gets_the_cancel_table(tmp_path: Path) -> None:
    from nbflow.store.journal import MIGRATIONS, SCHEMA_VERSION, Journal

    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path)
    for sql in MIGRATIONS[1]:
        db.execute(sql)
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    Journal(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    assert db.execute("SELECT name FROM sqlite_master WHERE name='cancel_requests'").fetchone()
    db.close()


@pytest.mark.parametrize("bad", ["", "..", "../journal.sqlite", "20260101-000000-ABCDEF", "2026",
                                 "20260101-000000-abcdef/..", "20260101-000000-abcdef\n", "x" * 500])
def test_run_id_check(bad: str) -> None:
    with pytest.raises(BadRunId, match="is not a run id; run ids look like") as info:
        check_run_id(bad)
    assert isinstance(info.value, nf.NbflowError)


def test_real_run_ids_pass_the_check() -> None:
    run = _long().start()
    run.cancel()
    run.wait(timeout=30, raise_on_error=False)
    assert check_run_id(run.id) == run.id
