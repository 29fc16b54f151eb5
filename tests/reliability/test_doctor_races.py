"""``nbflow doctor --repair``'s writer check holds until the journal is moved aside.

The repair checks that nobody writes to the damaged journal, then moves it aside.  Between
the two, another process could open it for writing (a kernel starting a run), and its rows
would then land in the journal moved aside, lost to the store; or another ``nbflow doctor
--repair`` could have moved it aside already and started a new journal, which this one
then moved aside in turn as if it were the damaged one.  Now the repair moves aside only
the file it checked (the same file at the same name), and looks again once it is moved:
a process that has it open for writing puts it back, and the repair refuses, as when the
writer was there from the start.

Each race is made to happen at one point: the check is wrapped so the other process (or
the other repair) acts right after it, and waits for it to say it did.  No timing.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from nbflow.store import doctor
from nbflow.store.doctor import diagnose, repair
from nbflow.store.inuse import StoreInUse

from .test_doctor_writers import _damaged_store, _python, _unchanged

pytestmark = pytest.mark.timeout(180)

# Opens the journal for writing (as a kernel's store does), says so, and commits a row when
# the test says, wherever the file it opened is by then.
LATE_WRITER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA user_version").fetchone()  # (a read: the file and its WAL are open)
print("open", flush=True)
sys.stdin.readline()
conn.execute("CREATE TABLE late_rows(x)")
conn.execute("INSERT INTO late_rows VALUES (1)")
print("wrote", flush=True)
sys.stdin.read()
"""


def _late_rows(journal: Path) -> int | None:
    """Rows of the late writer's table in ``journal`` (None: it is not there)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM late_rows").fetchone()[0]
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def _after_the_check(monkeypatch: pytest.MonkeyPatch, act: Any, only: Any = None) -> None:
    """Run ``act()`` right after the repair's writer check passed (in the thread ``only()``
    names, if given)."""
    real = doctor.refuse_if_written

    def checked(journal: Path, report: object = None) -> None:
        real(journal, report)
        if only is None or threading.current_thread() is only():
            act()

    monkeypatch.setattr(doctor, "refuse_if_written", checked)


def test_a_process_that_opens_the_journal_after_the_check_stops_the_repair(
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = _damaged_store()
    journal = home / "journal.sqlite"
    children: list[subprocess.Popen[str]] = []

    def a_writer_opens_it() -> None:
        child = _python(LATE_WRITER, str(journal), stdin=subprocess.PIPE)
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "open\n", (line, child.communicate("", timeout=60))

    _after_the_check(monkeypatch, a_writer_opens_it)
    try:
        with pytest.raises(StoreInUse) as info:
            repair(home)
        (child,) = children
        msg = str(info.value)
        assert f"process {child.pid} (" in msg and "nothing was changed" in msg, msg
        assert _unchanged(home)  # put back where it was, under its own name
        # what the writer commits now lands in the store's journal, not in one moved aside
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("commit\n")
        child.stdin.flush()
        assert child.stdout.readline() == "wrote\n"
        assert _late_rows(journal) == 1
    finally:
        for child in children:
            child.communicate("", timeout=60)
    monkeypatch.undo()
    fixed = repair(home)  # the writer has ended: nothing can be lost now
    assert fixed.moved_to is not None and diagnose(home).journal_ok


def test_a_repair_does_not_move_aside_the_journal_another_repair_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two repairs of one store: the second to move finds the damaged journal gone and a
    new one at its name (the first's), and leaves it alone, saying why."""
    home = _damaged_store()
    checked, go = threading.Event(), threading.Event()
    first: list[Any] = []

    def pause() -> None:
        checked.set()
        assert go.wait(120)

    def slow_repair() -> None:
        try:
            first.append(repair(home))
        except Exception as e:
            first.append(e)

    thread = threading.Thread(target=slow_repair)
    _after_the_check(monkeypatch, pause, only=lambda: thread)
    thread.start()
    try:
        assert checked.wait(120)  # the slow one checked the damaged journal: nobody writes
        other = repair(home)  # another repair goes all the way meanwhile
        assert other.moved_to is not None and diagnose(home).journal_ok
    finally:
        go.set()
        thread.join(120)
    (result,) = first
    assert isinstance(result, StoreInUse), result
    assert "replaced" in str(result) and "nothing was changed" in str(result), result
    # one journal moved aside (the damaged one), the other repair's new journal in place
    assert [p.name for p in home.glob("journal.sqlite.damaged-*") if p.suffix != ".sqlite-wal"
            and not p.name.endswith(("-wal", "-shm"))] == [other.moved_to.name]
    assert diagnose(home).journal_ok and diagnose(home).runs == 1


def test_putting_back_over_a_journal_made_meanwhile_refuses_without_hard_links_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal moved aside is put back only where no file was made meanwhile.  On a file
    system without hard links (``os.link`` raises, say ``EPERM``) the name is checked
    instead: a file made there is refused with the same ``StoreInUse`` (saying where the
    moved journal is), not the file system's bare error; a free name is taken."""
    import errno

    def no_hard_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(doctor.os, "link", no_hard_links)
    path, aside = tmp_path / "journal.sqlite", tmp_path / "journal.sqlite.damaged-1"
    aside.write_text("the damaged journal")
    path.write_text("a new journal another process started")
    report = doctor.DoctorReport(home=tmp_path)
    with pytest.raises(StoreInUse, match="was not put back") as info:
        doctor._put_back(path, aside, [""], report)
    assert str(aside) in str(info.value)
    assert path.read_text() == "a new journal another process started"  # left as it is
    assert aside.read_text() == "the damaged journal"
    path.unlink()
    doctor._put_back(path, aside, [""], report)  # the name is free: put back
    assert path.read_text() == "the damaged journal" and not aside.exists()
