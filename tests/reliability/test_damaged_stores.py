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


def test_doctor_repair_salvages_readable_tables(tmp_path):
    """An old-schema journal missing a table: runs are salvaged into the new journal."""
    _, _, copy = _populate(tmp_path)
    db = sqlite3.connect(copy / "journal.sqlite")
    db.execute("PRAGMA user_version = 99")  # unusable by this nbflow: treated as damaged
    db.commit()
    db.close()
    fixed = repair(copy)
    assert fixed.moved_to is not None
    assert fixed.salvaged.get("runs") == 1
    assert len(nf.runs(home=copy)) == 1


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
