"""``nbflow doctor --repair`` never races a process writing to the store.

A repair moves the damaged journal aside; a process with the old file open would go on
committing into it, and its rows would be lost to the store.  So the repair refuses,
changing nothing and naming the writers: a real second process in the middle of a run
(seen in ``/proc`` and in its lease row), a live lease row of another host, somebody
holding the write lock.  A read-only reader (the dashboard's) loses nothing and does not
stop it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbflow.cli import main
from nbflow.store import get_store, inuse, store_home
from nbflow.store.doctor import diagnose, repair
from nbflow.store.inuse import StoreInUse

from .helpers import REPO, chain_workflow
from .test_damaged_stores import _damage_an_index

pytestmark = pytest.mark.timeout(180)

# A run whose one task holds until the test creates the release file: its process has the
# journal open for writing (the journal's writer, the lease row) all the while.
WRITER = r"""
import pathlib, sys, time
import nbflow as nf
started, release = map(pathlib.Path, sys.argv[1:3])

@nf.task
def hold(x):
    started.touch()
    while not release.exists():
        time.sleep(0.05)
    return x

with nf.Workflow("writer") as wf:
    r = hold(1)
run = wf.run()
print("RESULT", run[r], run.status, flush=True)
"""

READER = r"""
import sys
from nbflow.store.journal import connect
conn = connect(sys.argv[1], readonly=True)
print("meta rows", len(conn.execute("SELECT * FROM meta").fetchall()), flush=True)  # (a read)
sys.stdin.read()  # (holds the connection until the test closes stdin)
"""


def _damaged_store() -> Path:
    """The test's store, with a run in it and damage that leaves the tables readable."""
    wf, _ = chain_workflow(3, name="before")
    wf.run()
    get_store().journal.close()
    home = store_home()
    _damage_an_index(home / "journal.sqlite")
    assert not diagnose(home).journal_ok
    return home


def _python(code: str, *args: str, **kw) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # (NBFLOW_HOME: the test's store)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for(path: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not path.exists():
        child.kill()
        raise AssertionError(f"the child never got there: {child.communicate()}")


def _unchanged(home: Path) -> bool:
    return (home / "journal.sqlite").exists() and not list(home.glob("journal.sqlite.damaged-*"))


def test_repair_refuses_while_another_process_writes_to_the_store(tmp_path, capsys):
    home = _damaged_store()
    started, release = tmp_path / "started", tmp_path / "release"
    child = _python(WRITER, str(started), str(release))
    try:
        _wait_for(started, child)  # its run is going: the journal is open for writing there
        with pytest.raises(StoreInUse) as info:
            repair(home)
        msg = str(info.value)
        assert f"process {child.pid} (" in msg, msg
        assert "nothing was changed" in msg and "then run `nbflow doctor --repair` again" in msg
        assert info.value.report is not None and not info.value.report.journal_ok
        assert _unchanged(home)

        capsys.readouterr()
        assert main(["doctor", "--repair", "--home", str(home)]) == 1
        out, err = capsys.readouterr()
        assert "DAMAGED" in out and f"process {child.pid} (" in err
        assert _unchanged(home)
    finally:
        release.touch()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and "RESULT 1 completed" in out, err

    fixed = repair(home)  # the writer has ended: nothing can be lost now
    assert fixed.moved_to is not None and diagnose(home).journal_ok


def test_a_reader_does_not_stop_a_repair(tmp_path):
    """A read-only connection (the dashboard's kind) writes nothing: the repair goes on."""
    home = _damaged_store()
    child = _python(READER, str(home / "journal.sqlite"), stdin=subprocess.PIPE)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("meta rows "), (line, child.communicate("", timeout=60))
        assert inuse.local_writers([home / "journal.sqlite"]) == []
        fixed = repair(home)
        assert fixed.moved_to is not None and fixed.salvaged.get("runs") == 1
    finally:
        child.communicate("", timeout=60)


def test_a_live_lease_row_of_another_host_is_named(tmp_path):
    """A process elsewhere (a shared disk) is seen through its lease row while it is live."""
    home = _damaged_store()
    journal = home / "journal.sqlite"
    db = sqlite3.connect(journal)
    now = time.time()
    db.executemany("INSERT INTO lease_processes(host, pid, started, heartbeat, expires, leasing) "
                   "VALUES(?,?,?,?,?,?)", [("elsewhere", 4242, now, now, now + 600, 1),
                                           ("gone-host", 77, now - 900, now - 900, now - 600, 1)])
    db.commit()
    db.close()
    assert not diagnose(home).journal_ok  # (still damaged)
    with pytest.raises(StoreInUse) as info:
        repair(home)
    msg = str(info.value)
    assert "process 4242 on elsewhere (running cached runs" in msg, msg
    assert "gone-host" not in msg  # expired: not live
    assert _unchanged(home)


def test_a_held_write_lock_refuses_the_repair(tmp_path, monkeypatch):
    """Somebody this machine's processes do not show (another user's, another host's)
    holding the write lock: refused too."""
    monkeypatch.setattr(inuse, "LOCK_WAIT_S", 0.2)
    home = _damaged_store()
    holder = sqlite3.connect(home / "journal.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreInUse) as info:
            repair(home)
        assert "holding its write lock" in str(info.value)
        assert _unchanged(home)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert repair(home).moved_to is not None
