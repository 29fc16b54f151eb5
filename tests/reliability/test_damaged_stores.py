"""Damaged and read-only stores: history stays readable, damage is named, doctor repairs.

Read-only access is simulated by making the writable open fail with EROFS (as root, file
modes are ignored, so a chmod would not stop anything); the read-only path is then the
one a real read-only disk takes.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.store import StoreError, get_store, store_home
from nbflow.store.doctor import diagnose, repair

from .helpers import REPO, chain_workflow

pytestmark = pytest.mark.timeout(120)


def _populate(tmp_path, n: int = 4):
    wf, refs = chain_workflow(n, name="hist")
    run = wf.run()
    get_store().journal.close()
    copy = tmp_path / "copy"
    shutil.copytree(store_home(), copy)
    return run, refs, copy


def _read_only(monkeypatch):
    from nbflow.store import store as store_mod

    def refuse(self, home):
        raise OSError(errno.EROFS, "Read-only file system", str(home))

    monkeypatch.setattr(store_mod.Store, "__init__", refuse)


def test_read_only_store_history_is_readable(tmp_path, monkeypatch):
    run, refs, copy = _populate(tmp_path)
    _read_only(monkeypatch)
    df = nf.runs(home=copy)
    assert run.id in set(df["id"])
    stored = nf.load_run(run.id, home=copy)
    assert stored[refs[0].key] == 1  # a stored result, verified and loaded read-only
    assert len(stored.tasks) == len(run.tasks)


def test_read_only_store_without_writable_wal_index(tmp_path, monkeypatch):
    """No -shm can be created next to it: the journal is read as an immutable file."""
    run, _, copy = _populate(tmp_path)
    for extra in ("journal.sqlite-wal", "journal.sqlite-shm"):
        (copy / extra).unlink(missing_ok=True)
    _read_only(monkeypatch)
    assert run.id in set(nf.runs(home=copy)["id"])


def test_damaged_journal_is_named_as_damage(tmp_path):
    home = tmp_path / "damaged"
    home.mkdir(mode=0o700)
    (home / "journal.sqlite").write_bytes(b"\x00garbage" * 1000)
    with pytest.warns(nf.NbflowStoreWarning, match="damaged.*nbflow doctor"):
        assert get_store(home) is None  # (what a run says)
    with pytest.raises(StoreError, match="damaged") as info:
        nf.runs(home=home)
    assert "nbflow doctor" in str(info.value)
    assert "writable directory" not in str(info.value)


def test_doctor_reports_a_healthy_store(tmp_path):
    _, _, copy = _populate(tmp_path)
    report = diagnose(copy)
    assert report.healthy and report.runs == 1 and report.cache_entries >= 4
    assert "journal      ok" in str(report)


def test_doctor_says_an_older_store_is_migrated_when_opened(tmp_path):
    from nbflow.store.journal import SCHEMA_VERSION

    _, _, copy = _populate(tmp_path)
    db = sqlite3.connect(copy / "journal.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    db.commit()
    db.close()
    report = diagnose(copy)
    assert report.healthy and not report.newer and report.runs == 1
    assert (f"journal      ok (schema {SCHEMA_VERSION - 1}, older than this nbflow's {SCHEMA_VERSION}: "
            "opening it with nbflow migrates it; 1 run(s)") in str(report)
    assert repair(copy).moved_to is None


def test_doctor_repair_moves_the_damaged_journal_aside_and_keeps_results(tmp_path):
    with nf.Workflow("big") as wf:
        from .test_security import big

        big(20_000)
    wf.run()
    home = store_home()
    get_store().journal.close()
    files_before = sorted(p.name for p in (home / "blobs").rglob("*") if p.is_file())
    assert files_before
    (home / "journal.sqlite").write_bytes(b"not a database" * 500)
    for extra in ("journal.sqlite-wal", "journal.sqlite-shm"):
        (home / extra).unlink(missing_ok=True)
    report = diagnose(home)
    assert not report.journal_ok and report.files_ok == len(files_before)
    assert "nbflow doctor --repair" in str(report)
    fixed = repair(home)
    assert fixed.moved_to is not None and fixed.moved_to.exists()
    assert sorted(p.name for p in (home / "blobs").rglob("*") if p.is_file()) == files_before
    assert diagnose(home).journal_ok
    # the store is usable again in a new process
    code = ("import nbflow as nf, numpy as np\n"
            "from tests.reliability.test_security import big\n"
            "with nf.Workflow('big') as wf:\n    r = big(20_000)\n"
            "run = wf.run()\nprint('OK', int(run[r].sum()))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"OK {sum(range(20_000))}" in p.stdout


def _damage_an_index(journal: Path) -> None:
    """Real damage that leaves the tables readable: the root page of the ``runs_start``
    index overwritten (the integrity check fails; a table scan does not use the index)."""
    db = sqlite3.connect(journal)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every committed row in the main file
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs_start'").fetchone()[0]
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(journal, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)


def _fill_empty_tables(journal: Path) -> None:
    """One row in each table the run left empty, made from the table's own columns, so that
    every table of the schema, present and future, has a row to salvage."""
    sample = {"INTEGER": 7, "REAL": 1.5, "BLOB": b"bytes"}
    db = sqlite3.connect(journal)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:
            continue
        cols = db.execute(f"PRAGMA table_info({table})").fetchall()
        row = [sample.get(c[2], f"{table}.{c[1]}") for c in cols]
        db.execute(f"INSERT INTO {table} VALUES({','.join('?' * len(row))})", row)
    db.commit()
    db.close()


def _all_rows(journal: Path) -> dict[str, list[tuple]]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    finally:
        db.close()


def test_doctor_repair_salvages_every_table_of_the_schema(tmp_path):
    """A damaged journal whose tables can still be read: every row of every table (runs,
    task durations, batch records, ...) is in the new journal, not only the runs."""
    from nbflow.batch import records

    wf, _ = chain_workflow(4, name="hist")
    run = wf.run()
    store = get_store()
    records.start_batch(store, "b-1", kind="run", notebook="nb.ipynb", output=None,
                        parameters={"n": 4}, options={})
    records.link_run(store, "b-1", run.id)
    records.record_params(store, run.id, {"n": 4})
    records.finish_batch(store, "b-1", "completed", started=0.0)
    store.journal.close()
    home = store_home()
    journal = home / "journal.sqlite"
    written = _all_rows(journal)
    assert written["runs"] and written["task_means"] and written["batches"]  # by the real journal
    _fill_empty_tables(journal)
    before = _all_rows(journal)
    assert all(before.values())  # (else a table could be left behind unnoticed)
    _damage_an_index(journal)
    report = diagnose(home)
    assert not report.journal_ok and "DAMAGED" in str(report)
    fixed = repair(home)
    assert fixed.moved_to is not None and not fixed.lost
    after = _all_rows(journal)
    assert set(after) == set(before)
    for table, rows in before.items():
        assert after[table] == rows, table
    assert diagnose(home).healthy
    assert len(nf.runs(home=home)) == 1


def test_salvage_follows_the_schema_when_a_table_is_added(tmp_path, monkeypatch):
    """A table a later migration adds is salvaged without anyone listing it in doctor."""
    from nbflow.store import journal as journal_mod

    last = journal_mod.SCHEMA_VERSION
    monkeypatch.setitem(journal_mod.MIGRATIONS, last, [
        *journal_mod.MIGRATIONS[last],
        "CREATE TABLE IF NOT EXISTS added_later(id TEXT PRIMARY KEY, value REAL)",
    ])
    home = tmp_path / "store"
    home.mkdir(mode=0o700)
    journal_mod.Journal(home / "journal.sqlite").close()
    db = sqlite3.connect(home / "journal.sqlite")
    db.executemany("INSERT INTO added_later VALUES(?, ?)", [("a", 1.0), ("b", 2.0)])
    db.commit()
    db.close()
    _damage_an_index(home / "journal.sqlite")
    fixed = repair(home)
    assert fixed.moved_to is not None and fixed.salvaged.get("added_later") == 2
    assert _all_rows(home / "journal.sqlite")["added_later"] == [("a", 1.0), ("b", 2.0)]


def _newer_store(tmp_path, damaged: bool = False) -> tuple[Path, dict[str, bytes]]:
    """A real store, then marked as written by the next nbflow (and damaged, if asked);
    with every file's bytes."""
    from nbflow.store.journal import SCHEMA_VERSION

    _, _, copy = _populate(tmp_path)
    db = sqlite3.connect(copy / "journal.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    if damaged:
        _damage_an_index(copy / "journal.sqlite")
    return copy, _files(copy)


def _files(home: Path) -> dict[str, bytes]:
    """Every file's bytes, but SQLite's -shm index and an empty -wal, which any read-only
    open of a WAL journal leaves (no data in either)."""
    found = {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}
    return {name: data for name, data in found.items()
            if not name.endswith("-shm") and not (name.endswith("-wal") and not data)}


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "damaged"])
def test_doctor_says_a_newer_store_is_newer_and_repair_never_touches_it(tmp_path, damaged):
    """Even a damaged one: its schema is the newer nbflow's to check and repair."""
    from nbflow.store.journal import SCHEMA_VERSION

    home, files = _newer_store(tmp_path, damaged)
    report = diagnose(home)
    text = str(report)
    assert f"schema version {SCHEMA_VERSION + 1}" in text and f"writes schema {SCHEMA_VERSION}" in text
    assert "Upgrade nbflow to open it; nothing was changed" in text
    assert "DAMAGED" not in text and "migrates" not in text and "--repair" not in text
    assert report.newer and not report.healthy and report.schema_version == SCHEMA_VERSION + 1
    fixed = repair(home)
    assert fixed.newer and fixed.repair_refused and fixed.moved_to is None and not fixed.salvaged
    assert "not repaired" in str(fixed)
    assert _files(home) == files  # not moved aside, not rewritten: byte for byte the same


def test_doctor_repair_cli_refuses_a_newer_store(tmp_path, capsys):
    from nbflow.cli import main

    home, files = _newer_store(tmp_path)
    assert main(["doctor", "--repair", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "NEWER" in out and "Upgrade nbflow to open it; nothing was changed" in out
    assert "moved to" not in out
    assert _files(home) == files


def test_doctor_repair_never_overwrites_a_journal_moved_aside_before(tmp_path, monkeypatch):
    """Two repairs within one second: the first damaged journal is kept, not replaced."""
    from nbflow.store import doctor

    _, _, copy = _populate(tmp_path)
    monkeypatch.setattr(doctor.time, "strftime", lambda fmt: "20260101-000000")
    earlier = copy / "journal.sqlite.damaged-20260101-000000"
    earlier.write_bytes(b"the journal an earlier repair moved aside")
    _damage_an_index(copy / "journal.sqlite")
    fixed = repair(copy)
    assert fixed.moved_to == copy / "journal.sqlite.damaged-20260101-000000-1"
    assert earlier.read_bytes() == b"the journal an earlier repair moved aside"
    assert fixed.salvaged.get("runs") == 1


def test_doctor_cli(tmp_path):
    home = tmp_path / "cli"
    home.mkdir(mode=0o700)
    (home / "journal.sqlite").write_bytes(b"junk" * 100)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "nbflow.cli", "doctor", "--home", str(home)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1 and "DAMAGED" in p.stdout
    p = subprocess.run([sys.executable, "-m", "nbflow.cli", "doctor", "--repair", "--home", str(home)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and "moved to" in p.stdout


def test_salvage_keeps_the_rows_read_before_damage_part_way_through_a_table(tmp_path):
    """A table whose scan fails part-way (a damaged page in the middle): the rows before it
    are salvaged, and the damage is named, rather than the whole table given up."""
    from nbflow.store.doctor import DoctorReport, _read_rows

    class DamagedAfterTwoRows:  # (what a cursor does when it reaches a damaged page)
        def execute(self, sql):
            yield ("r1",)
            yield ("r2",)
            raise sqlite3.DatabaseError("database disk image is malformed")

    report = DoctorReport(tmp_path)
    assert _read_rows(DamagedAfterTwoRows(), "runs", ["id"], report) == [("r1",), ("r2",)]
    assert report.lost["runs"] == "read 2 row(s), then DatabaseError: database disk image is malformed"


def test_doctor_repair_of_a_missing_journal_says_nothing_was_moved(tmp_path):
    """No journal at all: --repair starts a new one and says so; it does not claim to have
    moved one aside (there was none), and no file named as moved aside exists."""
    _, _, copy = _populate(tmp_path)
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (copy / name).unlink(missing_ok=True)
    found = diagnose(copy)
    assert not found.journal_ok and "journal.sqlite is missing" in str(found)
    assert "start a new journal" in str(found) and "move the damaged journal" not in str(found)
    fixed = repair(copy)
    assert fixed.started_new and fixed.moved_to is None and not fixed.salvaged
    out = str(fixed)
    assert "moved to" not in out and "there was no journal, so nothing was moved aside" in out
    assert not [p for p in copy.iterdir() if ".damaged-" in p.name]
    assert diagnose(copy).journal_ok and diagnose(copy).runs == 0
    assert f"kept         {fixed.files_ok} result file(s)" in out


def test_doctor_cli_repair_of_a_missing_journal_exits_0(tmp_path, capsys):
    from nbflow.cli import main

    home = tmp_path / "empty"
    home.mkdir(mode=0o700)
    assert main(["doctor", "--home", str(home)]) == 1
    capsys.readouterr()
    assert main(["doctor", "--repair", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "nothing was moved aside; a new one was started" in out and "moved to" not in out
    assert (home / "journal.sqlite").exists()
