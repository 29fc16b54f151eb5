"""Every list of runs is newest first: ``nf.runs()``, ``nbflow runs`` (and its ``--limit``),
``%nbflow runs`` and the dashboard's run list, as ``git log`` and ``mlflow.search_runs`` list
theirs.  ``nf.runs()`` used to be oldest first while the others were newest first."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.cli import main
from nbflow.notebook import session
from nbflow.server.reader import list_runs
from nbflow.store import get_store


@nf.task
def one(tag: str) -> str:
    return tag


def _three_runs() -> list[str]:
    """Three runs, oldest first, whose start times are set apart (so the order is not a tie
    decided by the clock's resolution)."""
    ids = []
    for tag in ("first", "second", "third"):
        with nf.Workflow(tag) as wf:
            one(tag)
        ids.append(wf.run(cache=False).id)
    store = get_store()
    store.journal.flush()
    with sqlite3.connect(store.journal.path) as db:
        for age, rid in zip((300, 200, 100), ids, strict=True):
            db.execute("UPDATE runs SET start = start - ?, end = end - ? WHERE id = ?", (age, age, rid))
    return ids


def test_every_run_list_is_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    first, second, third = _three_runs()
    newest_first = [third, second, first]

    assert list(nf.runs()["id"]) == newest_first
    assert list(nf.runs("second")["id"]) == [second]

    assert main(["runs", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == newest_first
    assert main(["runs", "--json", "--limit", "2"]) == 0  # the two most recent
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [third, second]

    assert list(session.runs_frame()["id"]) == newest_first  # %nbflow runs
    assert list(session.runs_frame(limit=1)["id"]) == [third]

    dash = list_runs(Path(os.environ["NBFLOW_HOME"]))["runs"]
    assert [r["id"] for r in dash] == newest_first
